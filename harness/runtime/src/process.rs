//! The processes a private containerd leaves: containerd itself, its shims (found by the
//! `-address <socket>` every shim gets on its command line), and the containers they run.
//! Read from /proc, killed with SIGKILL and, when they are our children (a daemonized shim
//! v2 and the containers of a dead shim are re-parented to pid 1 of the scenario's pid
//! namespace, which is us), reaped.

use std::path::Path;
use std::time::{Duration, Instant};

use faultline_detect::orphan_shim::{ShimArgs, SHIM_NAMES};
use faultline_sys::proc::{stat_state, Snapshot};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// Every process of this pid namespace (as /proc is mounted for it), in one walk of the
/// shared /proc layer; empty when /proc cannot be read.
pub fn snapshot() -> Option<Snapshot> {
    Snapshot::take(Path::new("/proc"))
        .map_err(|e| tracing::warn!("{e}"))
        .ok()
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `D`, `Z`, ...), `None` when gone.
fn state(pid: i32) -> Option<char> {
    stat_state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Running or sleeping: there, and neither a zombie nor dead.
pub fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Collects `pid`'s exit status if it is our child and has exited (a zombie otherwise stays
/// in /proc until the namespace ends). Not our child, or still running: nothing happens.
pub fn reap(pid: i32) {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(_) | Err(Errno::ECHILD) => {}
        Err(e) => tracing::debug!(pid, "waitpid: {e}"),
    }
}

/// SIGKILLs `pids` (again, each round: a process in D only dies on its way out of the
/// kernel) and reaps those that are our children, until none is alive or `limit` passes.
/// Returns the ones still alive then (blocked in the kernel).
pub fn kill_and_reap(pids: &[i32], limit: Duration) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        for &p in pids {
            reap(p);
        }
        if left.is_empty() || start.elapsed() >= limit {
            return left;
        }
        for &p in &left {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Which containerd shim API a shim process speaks, from its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShimKind {
    /// `containerd-shim -namespace NS -workdir ROOT/NS/ID -address SOCK ...`
    /// (io.containerd.runtime.v1.linux): one shim per container.
    V1,
    /// `containerd-shim-runc-v2 -namespace NS -id ID -address SOCK`: one shim per pod.
    V2,
}

/// A shim process of one containerd.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShimProcess {
    pub pid: i32,
    pub kind: ShimKind,
    /// The task it serves: v2's `-id`, v1's workdir base name.
    pub id: String,
    pub argv: Vec<String>,
}

impl ShimProcess {
    /// `None` unless `argv` is a containerd shim's (as orphan-shim parses it, Go's flag
    /// forms included) whose `-address` is `socket`.
    pub fn parse(pid: i32, argv: Vec<String>, socket: &Path) -> Option<ShimProcess> {
        let names: Vec<String> = SHIM_NAMES.iter().map(|n| n.to_string()).collect();
        let args = ShimArgs::parse(&argv, &names)?;
        if args.address.as_deref() != Some(socket.to_str()?) {
            return None;
        }
        // `containerd-shim-runc-v2 ... start` and `... delete` are containerd's short-lived
        // calls of the shim binary (runtime/v2/shim/shim.go: the action is the first
        // argument after the flags), not a shim serving tasks.
        if matches!(argv.last().map(String::as_str), Some("start" | "delete")) {
            return None;
        }
        let kind = if args.id.is_some() {
            ShimKind::V2
        } else {
            ShimKind::V1
        };
        Some(ShimProcess {
            pid,
            kind,
            id: args.container_id()?,
            argv,
        })
    }
}

/// The live shims of the containerd listening on `socket`, from one walk of /proc. A
/// shim's child between its fork and its exec of runc still shows the shim's command line;
/// a process whose parent is one of the shims found is such a child, not a shim.
pub fn shims_of(socket: &Path) -> Vec<ShimProcess> {
    let Some(snap) = snapshot() else {
        return Vec::new();
    };
    let found: Vec<(ShimProcess, i32)> = snap
        .user_processes()
        .filter(|p| p.state != 'Z' && p.state != 'X')
        .filter_map(|p| {
            let shim = ShimProcess::parse(p.pid, snap.cmdline(p.pid).ok()?, socket)?;
            Some((shim, p.ppid))
        })
        .collect();
    let pids: Vec<i32> = found.iter().map(|(s, _)| s.pid).collect();
    found
        .into_iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(s, _)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn v2_and_v1_shims_of_our_socket_are_told_apart() {
        let sock = Path::new("/tmp/d/containerd.sock");
        // As containerd 1.6.20 started them (captured with ps on this machine).
        let v2 = ShimProcess::parse(
            7,
            argv("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -id 3f2a -address /tmp/d/containerd.sock"),
            sock,
        )
        .unwrap();
        assert_eq!((v2.kind, v2.id.as_str()), (ShimKind::V2, "3f2a"));
        let v1 = ShimProcess::parse(
            8,
            argv("containerd-shim -namespace k8s.io -workdir /tmp/d/root/io.containerd.runtime.v1.linux/k8s.io/9c1e -address /tmp/d/containerd.sock -containerd-binary /usr/bin/containerd -runtime-root /tmp/d/runc-v1"),
            sock,
        )
        .unwrap();
        assert_eq!((v1.kind, v1.id.as_str()), (ShimKind::V1, "9c1e"));
    }

    #[test]
    fn other_containerds_shims_and_other_programs_are_not_ours() {
        let sock = Path::new("/tmp/d/containerd.sock");
        let theirs = argv("containerd-shim-runc-v2 -namespace k8s.io -id x -address /run/containerd/containerd.sock");
        assert_eq!(ShimProcess::parse(1, theirs, sock), None);
        let not_a_shim = argv("sleep -address /tmp/d/containerd.sock -id x");
        assert_eq!(ShimProcess::parse(1, not_a_shim, sock), None);
        // containerd starting a v2 shim: the helper that forks the shim and exits.
        let start = argv("/usr/bin/containerd-shim-runc-v2 -namespace k8s.io -address /tmp/d/containerd.sock -publish-binary /usr/bin/containerd -id 3f2a start");
        assert_eq!(ShimProcess::parse(1, start, sock), None);
    }

    #[test]
    fn a_shims_forked_child_is_not_a_shim() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock");
        // A "shim" (a shell with the v2 shim's argv[0] and flags) that forks a child which
        // keeps its command line (a subshell), as the shim's fork before it execs runc.
        let mut cmd = std::process::Command::new("sh");
        cmd.arg0("containerd-shim-runc-v2")
            .args([
                "-c",
                "(sleep 100; true) & sleep 100; true",
                "-namespace",
                "k8s.io",
                "-id",
                "x",
                "-address",
            ])
            .arg(&sock);
        // Its own process group, killed whole on drop: the subshell and the sleeps too.
        let shim = faultline_sys::ChildGroup::spawn("shim", &mut cmd).unwrap();
        let shim_pid = shim.pid();
        faultline_sys::wait_until("the forked child", Duration::from_secs(10), || {
            let snap = snapshot().unwrap();
            let n = snap
                .processes()
                .iter()
                .filter(|p| {
                    p.ppid == shim_pid
                        && snap.cmdline(p.pid).is_ok_and(|a| {
                            a.first().map(String::as_str) == Some("containerd-shim-runc-v2")
                        })
                })
                .count();
            (n > 0)
                .then_some(())
                .ok_or_else(|| "not forked yet".to_string())
        })
        .unwrap();
        let shims = shims_of(&sock);
        drop(shim);
        assert_eq!(shims.len(), 1, "{shims:?}");
        assert_eq!(shims[0].pid, shim_pid);
    }

    #[test]
    fn a_killed_child_is_reaped_and_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        assert_eq!(
            kill_and_reap(&[pid], Duration::from_secs(5)),
            Vec::<i32>::new()
        );
        assert_eq!(state(pid), None, "reaped, so gone from /proc");
        // Already reaped: std's wait finds no child left.
        assert!(child.wait().is_err());
    }
}
