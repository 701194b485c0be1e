//! `hung-task` on a real task in D state: the parent of a `vfork` waits uninterruptibly
//! (killable, shown as D) until its child execs or exits.

use std::path::Path;
use std::time::Duration;

use faultline_detect::hung_task::{BlockClass, DSample};
use faultline_sys::wait_until;

/// Forks a process that clones a `CLONE_VFORK` child (without `CLONE_VM`, so the child has
/// its own memory) which pauses: the forked process sits in D until the child dies.
fn spawn_d_state_task() -> i32 {
    // SAFETY: after fork the child calls only async-signal-safe functions (prctl, clone,
    // pause, _exit); the clone child has a copy-on-write copy of the memory.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            let c = libc::syscall(
                libc::SYS_clone,
                libc::CLONE_VFORK | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            );
            if c == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                libc::pause();
                libc::_exit(0);
            }
            libc::_exit(0);
        }
        pid
    }
}

fn vfork_child_of(pid: i32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Kills the D-state task (its wait is killable) on drop; its child dies with it.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: plain kill/waitpid of the process this test forked.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(self.0, &mut st, 0);
        }
    }
}

#[test]
fn vfork_parent_is_reported_blocked_with_its_stack() {
    let proc_root = Path::new("/proc");
    let parent = spawn_d_state_task();
    let _reap = Reap(parent);
    let _child = wait_until("the vfork child", Duration::from_secs(5), || {
        vfork_child_of(parent).ok_or_else(|| "no child yet".to_string())
    })
    .unwrap();
    let first = wait_until("the vfork parent in D", Duration::from_secs(5), || {
        let s = DSample::take(proc_root).map_err(|e| e.to_string())?;
        let state = std::fs::read_to_string(format!("/proc/{parent}/stat")).unwrap_or_default();
        if state.contains(") D ") {
            Ok(s)
        } else {
            Err(format!("stat: {state}"))
        }
    })
    .unwrap();
    let blocked = wait_until("a measurable interval", Duration::from_secs(5), || {
        let b = first.still_blocked(proc_root).map_err(|e| e.to_string())?;
        match b.iter().find(|t| t.pid == parent) {
            Some(t) if t.blocked_for_ms >= 200 => Ok(t.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    let raw = std::fs::read_to_string(format!("/proc/{parent}/stack")).unwrap();
    eprintln!(
        "captured /proc/{parent}/stack:\n{raw}wchan {}",
        blocked.wchan
    );
    assert_eq!(blocked.class, BlockClass::Other);
    // The vfork wait itself is inlined into kernel_clone.
    assert_eq!(
        blocked.stack.first().map(String::as_str),
        Some("kernel_clone"),
        "{blocked:?}"
    );
    assert_eq!(blocked.wchan, "kernel_clone");
    let f = blocked.finding();
    assert_eq!(f.pid, Some(parent));
    assert!(f.message.contains("D state"), "{}", f.message);
    // A task that ran in between (this test's own thread) is never reported.
    let me = std::process::id() as i32;
    assert!(first
        .still_blocked(proc_root)
        .unwrap()
        .iter()
        .all(|t| t.pid != me));
}
