//! `faultline check stale-bind` against the live node: a process in its own mount namespace
//! holds a read-only bind of a file that the test then replaces with rename(2) (what `mv -f`
//! does); another holds a bind whose source is never touched. The first must be reported with
//! its mount point and pid, the second must not.
//!
//! The holders are set up with util-linux's `unshare` and `mount`, independently of the
//! scenario code, and die with the test (PDEATHSIG, own process group).

// Each test binary uses part of the shared helpers.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Finding;
use faultline_sys::ChildGroup;

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
    common::wait_ready(&mut group, label, Duration::from_secs(20));
    group
}

/// Fails the test when this host cannot run it.
fn require_runnable() {
    common::require(&[
        faultline_core::Requirement::Root,
        faultline_core::Requirement::binary("unshare", "util-linux"),
        faultline_core::Requirement::binary("mount", "mount"),
    ]);
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
    assert_eq!(f.severity, faultline_core::Severity::Critical);
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
    require_runnable();
    let s = setup();
    let findings = faultline_detect::stale_bind::scan(Path::new("/proc")).unwrap();
    assert_reported(&findings, &s);
}

#[test]
fn check_cli_reports_stale_bind_and_ignores_healthy_bind() {
    require_runnable();
    let s = setup();
    let findings = common::check_findings("stale-bind", &[]);
    assert_reported(&findings, &s);
}

/// As an unprivileged user the check cannot read root's processes' mount namespaces, so it
/// cannot see the stale bind root sees: it must say its answer is partial, and exit 2
/// (Unknown), never 0 ("no findings").
#[test]
fn unprivileged_check_is_partial_never_clean() {
    require_runnable();
    common::require(&[faultline_core::Requirement::binary("setpriv", "util-linux")]);
    let s = setup();
    // Root sees it (the other tests check the details).
    assert!(!common::check_findings("stale-bind", &[]).is_empty());

    let (code, doc, stderr) = common::check_unprivileged("stale-bind", &[]);
    let entry = common::detector_entry(&doc, "stale-bind");
    assert_eq!(entry["ran"], true, "{doc}");
    assert_eq!(entry["partial"], true, "{doc}");
    let unreadable: Vec<&str> = entry["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        unreadable.iter().any(
            |u| u.contains("mount namespace") && u.ends_with("permission denied (run as root)")
        ),
        "{unreadable:?}"
    );
    let target = s.stale_target().display().to_string();
    assert!(
        !doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["subject"] == target.as_str()),
        "nobody cannot see into the holder's namespace, yet: {doc}"
    );
    assert_eq!(
        code,
        Some(2),
        "a partial answer with nothing found is Unknown: {doc}\n{stderr}"
    );
}
