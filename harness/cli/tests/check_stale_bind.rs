//! `faultline check stale-bind` against the live node: a process in its own mount namespace
//! holds a read-only bind of a file that the test then replaces with rename(2) (what `mv -f`
//! does); another holds a bind whose source is never touched. The first must be reported with
//! its mount point and pid, the second must not.
//!
//! The holders are set up with util-linux's `unshare` and `mount`, independently of the
//! scenario code, and die with the test (PDEATHSIG, own process group).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use harness::guard::ChildGroup;
use harness::Finding;

/// A process in a private mount namespace with `src` bound read-only on `dst`.
fn hold_bind(label: &str, src: &Path, dst: &Path) -> ChildGroup {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && echo ready && exec sleep 600"#)
        .arg("sh")
        .arg(src)
        .arg(dst)
        .stdout(Stdio::piped());
    let mut group = ChildGroup::spawn(label, &mut cmd).expect("failed to spawn unshare");
    let stdout = group.child_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{label}: no 'ready' within 20s"));
    assert_eq!(line.trim(), "ready", "{label}: bind setup failed");
    group
}

/// `Some(reason)` when this host cannot run the test.
fn unmet() -> Option<String> {
    harness::requirement::first_unmet(&[
        harness::Requirement::Root,
        harness::Requirement::binary("unshare", "util-linux"),
        harness::Requirement::binary("mount", "mount"),
    ])
}

/// Fields drop in order: the holders die before their tempdir is removed.
struct Setup {
    stale: ChildGroup,
    healthy: ChildGroup,
    dir: tempfile::TempDir,
}

impl Setup {
    fn stale_target(&self) -> PathBuf {
        self.dir.path().join("target.txt")
    }
    fn healthy_target(&self) -> PathBuf {
        self.dir.path().join("healthy-target.txt")
    }
}

fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("stale-bind-test")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::write(d.join("data.txt"), "version1\n").unwrap();
    std::fs::write(d.join("target.txt"), "").unwrap();
    std::fs::write(d.join("healthy.txt"), "healthy\n").unwrap();
    std::fs::write(d.join("healthy-target.txt"), "").unwrap();
    let stale = hold_bind("stale holder", &d.join("data.txt"), &d.join("target.txt"));
    let healthy = hold_bind(
        "healthy holder",
        &d.join("healthy.txt"),
        &d.join("healthy-target.txt"),
    );
    // The host updates the file the way the cronjob in the seed did: new file, mv -f over.
    std::fs::write(d.join("new.txt"), "version2\n").unwrap();
    std::fs::rename(d.join("new.txt"), d.join("data.txt")).unwrap();
    Setup {
        stale,
        healthy,
        dir,
    }
}

fn assert_reported(findings: &[Finding], s: &Setup) {
    let target = s.stale_target().display().to_string();
    let pid = s.stale.pid();
    let f = findings
        .iter()
        .find(|f| f.subject == target && f.pid == Some(pid))
        .unwrap_or_else(|| panic!("no stale-bind finding for {target} pid {pid}: {findings:#?}"));
    assert_eq!(f.detector, "stale-bind");
    assert_eq!(f.severity, harness::Severity::Critical);
    let e = &f.evidence;
    assert_eq!(e["root_deleted"], true, "{e}");
    assert_eq!(e["nlink"], 0, "{e}");
    assert_eq!(e["read_only"], true, "{e}");
    assert!(e["pids"].as_array().unwrap().contains(&pid.into()), "{e}");
    assert_eq!(e["old_content"]["readable"], true, "{e}");
    assert_eq!(
        e["host_path"],
        s.dir.path().join("data.txt").display().to_string(),
        "{e}"
    );
    assert!(f.remedy.contains("parent directory"), "{}", f.remedy);

    // The old content really is what the holder still sees, through its root.
    let via = e["old_content"]["path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(via).unwrap(), "version1\n");

    let healthy = s.healthy_target().display().to_string();
    let pid = s.healthy.pid();
    assert!(
        !findings
            .iter()
            .any(|f| f.subject == healthy || f.pid == Some(pid)),
        "healthy bind reported: {findings:#?}"
    );
}

#[test]
fn detector_reports_stale_bind_and_ignores_healthy_bind() {
    if let Some(reason) = unmet() {
        // A privileged test that cannot run fails: passing without running would hide it.
        panic!("cannot run here: {reason}");
    }
    let s = setup();
    let findings = harness::detect::stale_bind::scan(Path::new("/proc")).unwrap();
    assert_reported(&findings, &s);
}

#[test]
fn check_cli_reports_stale_bind_and_ignores_healthy_bind() {
    if let Some(reason) = unmet() {
        // A privileged test that cannot run fails: passing without running would hide it.
        panic!("cannot run here: {reason}");
    }
    let s = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["check", "stale-bind", "--json"])
        .output()
        .expect("failed to run faultline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A finding (ours, at least) means exit code 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("check --json prints JSON");
    let findings: Vec<Finding> =
        serde_json::from_value(doc["findings"].clone()).expect("findings decode");
    assert_reported(&findings, &s);
}
