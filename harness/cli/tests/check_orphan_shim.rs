//! `faultline check orphan-shim` on this live node: a process with containerd's v1 shim
//! command line (argv[0] `containerd-shim`, `-namespace -workdir -address`) whose workdir is
//! gone is reported; one whose workdir exists is not. Asserts only on its own shims (other
//! developers' processes may be visible).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use faultline_sys::ChildGroup;

// `require` and `wait_ready` are not used here.
#[allow(dead_code)]
mod common;

/// What containerd names its v1 shim binary.
const ARG0: &str = "containerd-shim";

/// Starts a process with containerd's v1 shim command line for task `id` under `root`
/// (`containerd-shim -namespace k8s.io -workdir ROOT/state/k8s.io/ID -address ...`): a
/// shell that only sleeps, executed with argv[0] `containerd-shim` and the shim's flags
/// after its own (`-c SCRIPT`), which the detector reads past as it reads any unknown
/// flag. It creates the workdir as containerd does, and runs in its own process group,
/// killed with this test (group teardown on drop, PDEATHSIG if the test binary is killed).
fn start_shim(root: &Path, id: &str) -> ChildGroup {
    let workdir = root.join("state/k8s.io").join(id);
    std::fs::create_dir_all(&workdir).unwrap();
    let mut cmd = Command::new("sh");
    // Not `exec sleep`: the shell must stay the process with the shim's command line.
    cmd.arg0(ARG0)
        .args(["-c", "sleep 1000; true", "-namespace", "k8s.io", "-workdir"])
        .arg(&workdir)
        .arg("-address")
        .arg(root.join(format!("{id}.sock")))
        .stdin(Stdio::null());
    ChildGroup::spawn(&format!("shim {id}"), &mut cmd).unwrap()
}

#[test]
fn finds_the_shim_whose_workdir_is_gone_and_ignores_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let live = start_shim(
        dir.path(),
        "c0ffee0000000000000000000000000000000000000000000000000000000001",
    );
    let orphan_id = "513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f";
    let orphan = start_shim(dir.path(), orphan_id);
    // The command line is containerd's, not an internal one.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", orphan.pid())).unwrap();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(argv[0], ARG0.as_bytes());
    assert!(argv.contains(&b"-namespace".as_slice()), "{argv:?}");
    // containerd gave up on the task and removed its state.
    std::fs::remove_dir_all(dir.path().join("state/k8s.io").join(orphan_id)).unwrap();

    // A problem found: exit code 1 (asserted by check_findings).
    let findings = common::check_findings("orphan-shim", &[]);
    let mine: Vec<_> = findings
        .iter()
        .filter(|f| f.pid == Some(orphan.pid()))
        .collect();
    assert_eq!(mine.len(), 1, "{findings:#?}");
    let f = mine[0];
    assert_eq!(f.detector, "orphan-shim");
    assert_eq!(f.evidence["id"], orphan_id);
    assert_eq!(f.evidence["namespace"], "k8s.io");
    assert!(f.evidence["age_s"].is_u64(), "{f:#?}");
    assert!(f.remedy.contains("kill"), "{f:#?}");
    assert!(
        findings.iter().all(|f| f.pid != Some(live.pid())),
        "the shim with a workdir was reported: {findings:#?}"
    );
}
