//! Helpers shared by the live-node `faultline check` tests: the privileged-test guard, holder
//! processes that report `ready`, and running `faultline check --json`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use faultline_core::{Finding, Requirement};
use faultline_sys::ChildGroup;

/// `faultline ARGS`, run to the end, its output captured.
pub fn faultline<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .output()
        .expect("run faultline")
}

/// Fails the test when this host cannot run it: a privileged test that passed without running
/// would hide that it never ran.
pub fn require(requirements: &[Requirement]) {
    if let Some(reason) = faultline_core::requirement::first_unmet(requirements) {
        panic!("cannot run here: {reason}");
    }
}

/// Waits, up to `within`, for the first line `group`'s (piped) stdout prints to be `ready`.
pub fn wait_ready(group: &mut ChildGroup, label: &str, within: Duration) {
    let stdout = group.child_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("{label}: no 'ready' within {within:?}"));
    assert_eq!(line.trim(), "ready", "{label}: setup failed");
}

/// Runs `faultline check DETECTOR --json ARGS...`, which must exit 1 (a finding, ours at
/// least), and returns its findings.
pub fn check_findings(detector: &str, args: &[&str]) -> Vec<Finding> {
    let all: Vec<&str> = ["check", detector, "--json"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let out = faultline(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a finding must make check {detector} exit 1; stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("check --json prints JSON");
    serde_json::from_value(doc["findings"].clone()).expect("findings decode")
}

/// Runs `faultline check DETECTOR --json ARGS...` as uid/gid 65534 (nobody) through util-linux
/// `setpriv`, from a copy of the binary that nobody may execute wherever the build lives, and
/// returns its exit code, JSON document and stderr.
pub fn check_unprivileged(
    detector: &str,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("faultline-nobody")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("faultline");
    std::fs::copy(env!("CARGO_BIN_EXE_faultline"), &bin).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["check", detector, "--json"])
        .args(args)
        .current_dir("/")
        .output()
        .expect("failed to run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code(), doc, stderr)
}

/// The `detectors[]` entry of `name` in a `check --json` document.
pub fn detector_entry<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["detectors"]
        .as_array()
        .expect("detectors[]")
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no detectors[] entry for {name}: {doc}"))
}

/// `faultline check orphan-shim --json` with grace period `grace_secs`: exit code and JSON.
pub fn check_orphan_shim(grace_secs: u64) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["check", "orphan-shim", "--json"])
        .env("FAULTLINE_SHIM_GRACE_SECS", grace_secs.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

/// The finding about process `pid` in a `check --json` document.
pub fn finding_of(doc: &serde_json::Value, pid: i32) -> Option<&serde_json::Value> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["pid"] == pid)
}
