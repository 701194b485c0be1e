//! `faultline check orphan-shim` on this live node: a process with containerd's v1 shim
//! command line (argv[0] `containerd-shim`, `-namespace -workdir -address`) whose workdir is
//! gone is reported; one whose workdir exists is not. Asserts only on its own shims (other
//! developers' processes may be visible).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::guard::wait_until;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// Kills and reaps the shim on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_shim(root: &Path, id: &str) -> Proc {
    let workdir = root.join("state/k8s.io").join(id);
    let bundle = root.join("bundle").join(id);
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::create_dir_all(&bundle).unwrap();
    let socket = root.join(format!("{id}.sock"));
    let child = Command::new(FAULTLINE)
        .arg0("containerd-shim")
        .env("FAULTLINE_INTERNAL_ENTRY", "containerd-shim")
        .args(["-namespace", "k8s.io", "-workdir"])
        .arg(&workdir)
        .arg("-address")
        .arg(&socket)
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_until("the shim's socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&socket)
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    p
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
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", orphan.0.id())).unwrap();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(argv[0], b"containerd-shim");
    assert_eq!(argv[1], b"-namespace");
    // containerd gave up on the task and removed its state.
    std::fs::remove_dir_all(dir.path().join("state/k8s.io").join(orphan_id)).unwrap();

    let out = Command::new(FAULTLINE)
        .args(["check", "orphan-shim", "--json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let findings = doc["findings"].as_array().unwrap();
    let pid_of = |f: &serde_json::Value| f["pid"].as_i64();
    let mine: Vec<_> = findings
        .iter()
        .filter(|f| pid_of(f) == Some(orphan.0.id() as i64))
        .collect();
    assert_eq!(mine.len(), 1, "{doc:#}");
    let f = mine[0];
    assert_eq!(f["detector"], "orphan-shim");
    assert_eq!(f["evidence"]["id"], orphan_id);
    assert_eq!(f["evidence"]["namespace"], "k8s.io");
    assert!(f["evidence"]["age_s"].is_u64(), "{f:#}");
    assert!(f["remedy"].as_str().unwrap().contains("kill"), "{f:#}");
    assert!(
        findings
            .iter()
            .all(|f| pid_of(f) != Some(live.0.id() as i64)),
        "the shim with a workdir was reported: {doc:#}"
    );
    // A problem found: exit code 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
