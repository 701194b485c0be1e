//! The command-line contract other tools rely on: exit codes, one-line errors, JSON shapes.

use std::process::{Command, Output};

#[allow(dead_code)]
mod common;

use common::faultline;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn unknown_scenario_exits_2_with_the_valid_names() {
    let out = faultline(&["run", "no-such-scenario"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(
        err.contains("unknown scenario \"no-such-scenario\""),
        "{err}"
    );
    assert!(err.contains("valid names:"), "{err}");
}

#[test]
fn unknown_detector_exits_2_with_the_valid_names() {
    let out = faultline(&["check", "no-such-detector"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(
        err.contains("unknown detector \"no-such-detector\""),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    assert_eq!(faultline(&["run", "--no-such-flag"]).status.code(), Some(2));
    assert_eq!(faultline(&["frobnicate"]).status.code(), Some(2));
    let out = faultline(&["run", "--option", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    one_line_error(&out);
    let out = faultline(&["check", "--kmsg-file", "/nonexistent/dmesg.txt"]);
    assert_eq!(out.status.code(), Some(2));
    one_line_error(&out);
}

#[test]
fn list_json_names_every_scenario_with_runnability() {
    let out = faultline(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = doc["scenarios"].as_array().unwrap();
    for s in scenarios {
        assert!(s["name"].is_string() && s["summary"].is_string());
        assert!(s["runnable"].is_boolean());
        if s["runnable"] == false {
            assert!(!s["reason"].as_str().unwrap().is_empty(), "{s}");
        }
        assert!(!s["variants"].as_array().unwrap().is_empty(), "{s}");
    }
    assert!(doc["detectors"].is_array());
}

#[test]
fn ext4_index_full_finds_the_directory_in_saved_kernel_logs() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../detect/tests/fixtures/ext4/"
    );
    for capture in [
        "kmsg-dmesg.txt",
        "kmsg-dmesg-T.txt",
        "kmsg-journalctl-k.txt",
        "kmsg-journalctl-k-precise.txt",
    ] {
        let file = format!("{fixtures}{capture}");
        let out = faultline(&["check", "ext4-index-full", "--kmsg-file", &file, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{capture}: a finding exits 1");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let findings = doc["findings"].as_array().unwrap();
        assert!(
            findings.iter().any(|f| f["evidence"]["device"] == "loop0"
                && f["evidence"]["inode"].as_u64().is_some()
                && f["evidence"]["level"] == 2),
            "{capture}: {findings:#?}"
        );
        // One finding per directory, not per line: the warnings come in bundles.
        let lines = std::fs::read_to_string(&file).unwrap();
        let warnings = lines.matches("index full").count();
        assert!(
            findings.len() < warnings,
            "{capture}: {} findings for {warnings} lines",
            findings.len()
        );
    }
}

#[test]
fn closed_stdout_ends_quietly() {
    use std::io::Read;
    let mut child = Command::new(FAULTLINE)
        .args(["list", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn htree_capacity_rejects_a_directory_not_on_ext4() {
    // /proc is never ext4: an error, one line, exit 2.
    let out = faultline(&["check", "htree-capacity", "--path", "/proc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains("is not on ext4"), "{err}");
}

/// A kernel log captured on a node with lockd trouble and no ext4 warnings.
const CLEAN_EXT4_LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../detect/src/testdata/nfs_lockd_dmesg_howden_case_study.txt"
);

fn detectors(doc: &serde_json::Value) -> &Vec<serde_json::Value> {
    doc["detectors"].as_array().expect("detectors[]")
}

/// One detector's error is recorded on it; the others' answers are printed. With nothing
/// found and one detector failed, the honest summary is Unknown (2).
#[test]
fn one_detector_error_keeps_the_others_answers() {
    let out = faultline(&[
        "check",
        "htree-capacity",
        "ext4-index-full",
        "--path",
        "/proc",
        "--kmsg-file",
        CLEAN_EXT4_LOG,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {stdout:?}"));
    let d = detectors(&doc);
    assert_eq!(d.len(), 2, "{doc}");
    assert_eq!(d[0]["name"], "htree-capacity");
    assert!(
        d[0]["error"].as_str().unwrap().contains("is not on ext4"),
        "{doc}"
    );
    assert_eq!(d[1]["name"], "ext4-index-full");
    assert_eq!(d[1]["ran"], true);
    assert_eq!(d[1]["findings"], 0);
    assert_eq!(d[1]["partial"], false);
    assert_eq!(doc["findings"], serde_json::json!([]));
    assert_eq!(out.status.code(), Some(2), "{doc}");

    // The same as text: the answer on stdout, the failed detector on stderr in one line.
    let out = faultline(&[
        "check",
        "htree-capacity",
        "ext4-index-full",
        "--path",
        "/proc",
        "--kmsg-file",
        CLEAN_EXT4_LOG,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("incomplete"), "{stdout}");
    assert!(!stdout.starts_with("no findings\n"), "{stdout}");
    let err = one_line_error(&out);
    assert!(err.contains("htree-capacity failed: "), "{err}");
}

/// `check --path /proc` used to print nothing: htree-capacity's error hid every other answer.
#[test]
fn check_path_proc_prints_every_detector() {
    let out = faultline(&["check", "--path", "/proc", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {stdout:?}"));
    let d = detectors(&doc);
    let names: Vec<&str> = d.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"stale-bind") && names.contains(&"hung-task"),
        "{names:?}"
    );
    let htree = d.iter().find(|e| e["name"] == "htree-capacity").unwrap();
    assert!(htree["error"].as_str().unwrap().contains("is not on ext4"));
    for e in d
        .iter()
        .filter(|e| e["ran"] == true && e["error"].is_null())
    {
        assert!(e["findings"].is_u64() && e["partial"].is_boolean(), "{e}");
    }
    // A problem found elsewhere on this node makes it 1; otherwise the error makes it 2.
    let found = !doc["findings"].as_array().unwrap().is_empty();
    assert_eq!(out.status.code(), Some(if found { 1 } else { 2 }), "{doc}");
}

#[test]
fn scenario_options_are_checked_before_anything_runs() {
    let out = faultline(&["run", "delayed-umount2", "-o", "delay-ms=abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("not a whole number"));
    let out = faultline(&["run", "delayed-umount2", "-o", "dely-ms=5"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains("delay-ms (delayed-umount2)"), "{err}");
    // Nothing was started: no scenario line on stderr.
    assert!(!err.contains("delayed-umount2 ..."), "{err}");
    for copier in [["-o", "copier=cp"], ["--copier", "cp"]] {
        let out = faultline(&["run", "etxtbsy-exec-while-copy", copier[0], copier[1]]);
        assert_eq!(out.status.code(), Some(2));
        assert!(one_line_error(&out).contains("{src} and {dst}"));
    }
}

#[test]
fn a_timed_out_scenario_leaves_its_stuck_environment_as_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let out = faultline(&[
        "run",
        "delayed-umount2",
        "--timeout",
        "2",
        "--artifacts",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a timeout is a harness error");
    let kept = dir.path().join("delayed-umount2");
    let processes = std::fs::read_to_string(kept.join("processes.txt")).unwrap();
    assert!(
        processes.contains("__faultline-internal scenario"),
        "{processes}"
    );
    assert!(processes.contains("--- kernel stack of"), "{processes}");
    let mounts = std::fs::read_to_string(kept.join("mountinfo.txt")).unwrap();
    assert!(
        mounts.contains(" /tmp "),
        "the scenario's scratch tmpfs: {mounts}"
    );
    assert!(kept.join("kmsg.txt").exists());
}
