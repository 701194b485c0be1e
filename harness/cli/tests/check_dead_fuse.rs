//! `faultline check dead-fuse` against the live node, with FUSE daemons we did not write:
//! a process in its own mount namespace (util-linux `unshare`) runs two Debian `bindfs`
//! daemons, binds a subdirectory of the first elsewhere (what a CSI publish does), then
//! SIGKILLs the first. The check, run from the host's namespace where none of these mounts
//! is visible, must report the dead mount and its bind with the holder's pid, and say nothing
//! about the healthy bindfs mount. Findings about other mounts on the node are ignored.
//!
//! Everything lives in the holder's namespace and its process group (PDEATHSIG): when the test
//! ends the daemons die and the namespace, with its mounts, goes.

// Each test binary uses part of the shared helpers.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Finding;
use faultline_sys::ChildGroup;

fn require_runnable() {
    common::require(&[
        faultline_core::Requirement::Root,
        faultline_core::Requirement::Path {
            path: "/dev/fuse",
            why: "the FUSE device (modprobe fuse)",
        },
        faultline_core::Requirement::binary("unshare", "util-linux"),
        faultline_core::Requirement::binary("mount", "mount"),
        faultline_core::Requirement::binary("mountpoint", "util-linux"),
        faultline_core::Requirement::binary("bindfs", "bindfs"),
    ]);
}

/// Mounts, binds and kills in a private mount namespace; prints `ready` when done.
const HOLDER: &str = r#"
set -e
src="$1"; dead="$2"; live="$3"; csi="$4"
bindfs -f "$src" "$dead" & dead_pid=$!
bindfs -f "$src" "$live" &
# Wait, with a deadline, for both daemons to have mounted.
i=0
until mountpoint -q "$dead" && mountpoint -q "$live"; do
  i=$((i+1)); [ $i -lt 400 ] || { echo "bindfs did not mount"; exit 1; }
  sleep 0.05
done
mount --bind "$dead/volume" "$csi"
kill -9 $dead_pid
wait $dead_pid || true
echo ready
exec sleep 600
"#;

struct Setup {
    holder: ChildGroup,
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn setup() -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("dead-fuse-test")
        .tempdir()
        .unwrap();
    let d = dir.path();
    for sub in [
        "src/volume",
        "dead",
        "live",
        "pods/u1/volumes/kubernetes.io~csi/vol/mount",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("src/volume/data"), "x").unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", HOLDER, "sh"])
        .arg(d.join("src"))
        .arg(d.join("dead"))
        .arg(d.join("live"))
        .arg(d.join("pods/u1/volumes/kubernetes.io~csi/vol/mount"))
        .stdout(Stdio::piped());
    let mut holder = ChildGroup::spawn("bindfs holder", &mut cmd).expect("failed to spawn unshare");
    common::wait_ready(&mut holder, "holder", Duration::from_secs(30));
    Setup { holder, dir }
}

fn check(args: &[&str]) -> Vec<Finding> {
    common::check_findings("dead-fuse", args)
}

fn assert_reported(findings: &[Finding], s: &Setup) {
    let pid = s.holder.pid();
    let ours = |p: &Path| {
        let subject = p.display().to_string();
        findings
            .iter()
            .find(|f| f.subject == subject)
            .unwrap_or_else(|| panic!("no dead-fuse finding for {subject}: {findings:#?}"))
    };
    let dead = ours(&s.path("dead"));
    assert_eq!(dead.detector, "dead-fuse");
    assert_eq!(dead.severity, faultline_core::Severity::Critical);
    assert_eq!(dead.pid, Some(pid), "{dead:#?}");
    assert_eq!(dead.evidence["probe"], "Dead", "{}", dead.evidence);
    assert_eq!(dead.evidence["fstype"], "fuse", "{}", dead.evidence);
    assert!(dead.message.contains("Transport endpoint is not connected"));

    let bind = ours(&s.path("pods/u1/volumes/kubernetes.io~csi/vol/mount"));
    assert_eq!(bind.severity, faultline_core::Severity::Critical);
    assert_eq!(bind.pid, Some(pid));
    assert_eq!(bind.evidence["root"], "/volume", "{}", bind.evidence);
    assert_eq!(bind.evidence["pod_uid"], "u1");
    assert_eq!(bind.evidence["volume"], "vol");
    assert_eq!(bind.evidence["dev"], dead.evidence["dev"]);

    let live = s.path("live").display().to_string();
    assert!(
        !findings.iter().any(|f| f.subject == live),
        "healthy bindfs mount reported: {findings:#?}"
    );
}

#[test]
fn check_reports_killed_bindfs_and_its_bind_in_another_namespace() {
    require_runnable();
    let s = setup();
    assert_reported(&check(&[]), &s);
    // --path narrows the report to connections with a mount under the path: only ours.
    let narrowed = check(&["--path", s.dir.path().to_str().unwrap()]);
    assert_reported(&narrowed, &s);
    assert!(
        narrowed
            .iter()
            .all(|f| f.subject.starts_with(s.dir.path().to_str().unwrap())),
        "--path let others through: {narrowed:#?}"
    );
}

/// As an unprivileged user the check cannot read the holder's mount namespace: it must not
/// answer "no findings" (exit 0) but report partial and exit 2.
#[test]
fn unprivileged_check_is_partial_never_clean() {
    require_runnable();
    common::require(&[faultline_core::Requirement::binary("setpriv", "util-linux")]);
    let s = setup();
    let dir = s.dir.path().to_str().unwrap();
    assert_reported(&check(&["--path", dir]), &s);

    let (code, doc, stderr) = common::check_unprivileged("dead-fuse", &["--path", dir]);
    let entry = common::detector_entry(&doc, "dead-fuse");
    assert_eq!(entry["partial"], true, "{doc}");
    assert!(
        entry["unreadable"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("mount namespace")),
        "{doc}"
    );
    assert_eq!(doc["findings"], serde_json::json!([]), "{doc}");
    assert_eq!(code, Some(2), "{doc}\n{stderr}");
}
