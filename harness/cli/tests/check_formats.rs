//! `check --format` and `--textfile` at the edges: a check that cannot start still answers
//! node-problem-detector on stdout (NPD shows stdout only), `--json` stays an alias that
//! cannot be combined with another format, and a bad `--textfile` is a one-line error.

use std::process::Output;

#[allow(dead_code)]
mod common;

use common::faultline;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_check_that_cannot_start_answers_unknown_on_stdout_in_npd_format() {
    let out = faultline(&["check", "htree-capacity", "--format", "npd"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stdout),
        "unknown: htree-capacity: needs --path DIR (an ext4 directory to assess)\n"
    );
    assert_eq!(
        text(&out.stderr),
        "faultline: htree-capacity: needs --path DIR (an ext4 directory to assess)\n"
    );
    // Other formats keep stdout for answers only.
    let out = faultline(&["check", "htree-capacity", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn json_is_an_alias_and_conflicts_with_another_format() {
    let kmsg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../detect/tests/fixtures/ext4/kmsg-dmesg-T.txt"
    );
    let args = ["check", "ext4-index-full", "--kmsg-file", kmsg];
    let alias = faultline(&[&args[..], &["--json"]].concat());
    let long = faultline(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(alias.status.code(), Some(1));
    assert_eq!(long.status.code(), Some(1));
    // The same findings (their ages may tick between the two runs).
    let subjects = |out: &Output| -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["subject"].to_string())
            .collect()
    };
    assert!(!subjects(&alias).is_empty());
    assert_eq!(subjects(&alias), subjects(&long));

    let both = faultline(&[&args[..], &["--json", "--format", "npd"]].concat());
    assert_eq!(both.status.code(), Some(2));
    assert!(
        text(&both.stderr).contains("cannot be used with"),
        "{}",
        text(&both.stderr)
    );
}

#[test]
fn a_textfile_directory_that_is_not_one_is_a_usage_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = faultline(&["check", "--textfile", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "faultline: --textfile {}: not a directory\n",
            file.path().display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_npd_line_for_a_capture_fits_and_counts_the_rest() {
    let kmsg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../detect/tests/fixtures/ext4/kmsg-journalctl-k.txt"
    );
    let out = faultline(&[
        "check",
        "ext4-index-full",
        "--format",
        "npd",
        "--kmsg-file",
        kmsg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = text(&out.stdout);
    assert_eq!(line.lines().count(), 1, "{line}");
    let line = line.trim_end();
    assert!(line.len() <= 80, "{} bytes: {line}", line.len());
    assert!(line.starts_with("ext4 dir index was full: "), "{line}");
    assert!(line.ends_with(" more)"), "{line}");
}
