//! What is seen while the lock is live: the detector as `faultline check` runs it, the
//! locking task as the report's engineer looked at it, and the kernel log's NFS lines.

use anyhow::Context as _;
use faultline_core::{Context, Finding};
use faultline_detect::nfs_lock_manager::{self, LockWaiter};
use faultline_detect::{kernel_log, CheckInput};
use serde_json::json;

use super::locker::Locker;

pub(super) struct Live {
    pub(super) findings: Vec<Finding>,
    /// The locking task's state, wchan and kernel stack, when it was blocked.
    pub(super) task: Option<serde_json::Value>,
    pub(super) nfs_log: Vec<String>,
    /// How many NLM waiters the detector counted.
    pub(super) waiters: usize,
}

/// Runs the detector while the problem is live; the kernel log is this scenario's (since
/// its marker), not the guest's whole buffer.
pub(super) fn while_locking(
    ctx: &mut Context,
    locker: &Locker,
    blocked: bool,
) -> anyhow::Result<Live> {
    let input = CheckInput::default();
    let log = kernel_log::from_records(&ctx.kmsg_since_marker());
    let observations =
        nfs_lock_manager::observe_with_log(&input, nfs_lock_manager::lockd_lines(&log))
            .context("failed to run the nfs-lock-manager detector")?;
    let findings = nfs_lock_manager::judge(&observations);
    let task = blocked.then(|| task_view(locker.pid, &observations.waiters));
    let nfs_log = log
        .iter()
        .filter(|l| {
            let m = l.message.as_str();
            m.contains("lockd") || m.contains("statd") || m.contains("nlm") || m.contains("NFSD")
        })
        .map(|l| l.message.clone())
        .collect();
    Ok(Live {
        findings,
        task,
        nfs_log,
        waiters: observations.waiters.len(),
    })
}

/// State, wchan and kernel stack of a task: the detector's entry when it counted the task
/// as an NLM waiter, else read through procfs (the kernel stack, which procfs does not
/// parse, from `/proc/PID/stack`; it needs root).
fn task_view(pid: i32, waiters: &[LockWaiter]) -> serde_json::Value {
    if let Some(w) = waiters.iter().find(|w| w.pid == pid) {
        return json!({
            "pid": pid,
            "state": w.state.to_string(),
            "wchan": w.wchan,
            "stack": w.stack,
            "waiter": true,
        });
    }
    let process = procfs::process::Process::new(pid).ok();
    let state = process
        .as_ref()
        .and_then(|p| p.stat().ok())
        .map(|s| s.state.to_string());
    let wchan = process
        .as_ref()
        .and_then(|p| p.wchan().ok())
        .unwrap_or_default();
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    json!({
        "pid": pid,
        "state": state,
        "wchan": wchan,
        "stack": stack.lines().map(str::trim).collect::<Vec<_>>(),
        "waiter": false,
    })
}
