//! Where a run's artifacts go: a scenario that does not pass says where its artifacts are,
//! a scenario's directory holds only its latest run, and a non-UTF-8 `--artifacts` path works.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};

use faultline_core::Requirement;

// Only `require` is used here.
#[allow(dead_code)]
mod common;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn run(artifacts: &Path, args: &[&str]) -> Output {
    Command::new(FAULTLINE)
        .arg("run")
        .args(args)
        .arg("--artifacts")
        .arg(artifacts)
        .output()
        .expect("run faultline")
}

#[test]
fn a_failing_run_says_where_its_artifacts_are_and_old_ones_are_gone() {
    common::require(&[Requirement::Root]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // What an earlier run left: a failed result for a scenario that now passes, and a stray
    // file beside the one that fails again.
    let etxtbsy = root.join("etxtbsy-exec-while-copy");
    let hostpath = root.join("hostpath-rename");
    for d in [&etxtbsy, &hostpath] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(
            d.join("result.json"),
            r#"{"status": "fail", "stale": true}"#,
        )
        .unwrap();
        std::fs::write(d.join("stray.txt"), "from an older run").unwrap();
    }
    // An in-place copier fails the scenario (exit 1); hostpath-rename passes.
    let out = run(
        root,
        &[
            "etxtbsy-exec-while-copy",
            "hostpath-rename",
            "--copier",
            "cp {src} {dst}",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = format!(
        "faultline: artifacts of etxtbsy-exec-while-copy: {}",
        etxtbsy.display()
    );
    assert!(err.lines().any(|l| l == line), "no {line:?} in: {err}");
    assert!(!err.contains("artifacts of hostpath-rename"), "{err}");
    let result = std::fs::read_to_string(etxtbsy.join("result.json")).unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["status"], "fail", "{result}");
    assert!(result.get("stale").is_none(), "{result}");
    assert!(!etxtbsy.join("stray.txt").exists());
    assert!(
        !hostpath.exists(),
        "the passing scenario's old artifacts are still there"
    );
}

#[test]
fn artifacts_go_to_a_non_utf8_directory() {
    common::require(&[Requirement::Root]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(OsStr::from_bytes(b"artifacts-\xff"));
    let out = run(&root, &["hostpath-rename", "--keep", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["scenarios"][0]["status"], "pass", "{doc}");
    assert!(root.join("hostpath-rename/result.json").is_file(), "{err}");
    assert!(
        err.contains("faultline: artifacts of hostpath-rename: "),
        "{err}"
    );
}
