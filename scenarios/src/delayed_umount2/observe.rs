//! Observing the orphan: whether the shim is blocked in the kernel (D state, measured as the
//! hung-task detector measures it), and what the orphan-shim detector says about it.

use std::path::Path;
use std::time::Duration;

use faultline_core::Finding;
use faultline_detect::hung_task::{BlockedTask, DSample};
use faultline_detect::orphan_shim::OrphanShim;
use faultline_sys::wait_until;
use serde_json::json;

/// How long the shim must stay in D, unscheduled, to count as blocked in the kernel.
const BLOCKED_FOR_MS: u64 = 500;

/// The shim's state while its unmount is stuck: it must be in D, not scheduled, for
/// [`BLOCKED_FOR_MS`]. `Ok` with the task as hung-task saw it (wchan, stack, class), or
/// `Err` with what was seen instead.
pub(super) fn blocked_shim(pid: i32) -> anyhow::Result<Result<BlockedTask, String>> {
    let proc_root = Path::new("/proc");
    let mut first = DSample::take(proc_root)?;
    let found = wait_until(
        "the shim blocked in D for 500 ms",
        Duration::from_secs(10),
        || {
            let now = first.still_blocked(proc_root).map_err(|e| e.to_string())?;
            match now.into_iter().find(|t| t.pid == pid) {
                Some(t) if t.blocked_for_ms >= BLOCKED_FOR_MS => Ok(t),
                Some(t) => Err(format!("blocked for {} ms so far", t.blocked_for_ms)),
                None => {
                    // Not in D at `first`, or it ran since: measure from a fresh sample.
                    first = DSample::take(proc_root).map_err(|e| e.to_string())?;
                    Err(format!(
                        "shim not continuously in D; now {}",
                        task_state(pid)
                    ))
                }
            }
        },
    );
    Ok(found.map_err(|e| e.to_string()))
}

/// `state S, wchan do_wait` from procfs, for a shim that was not blocked.
fn task_state(pid: i32) -> String {
    let Ok(process) = procfs::process::Process::new(pid) else {
        return "gone".into();
    };
    let state = process
        .stat()
        .map(|s| s.state.to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"));
    let wchan = process.wchan().unwrap_or_default();
    format!("state {state}, wchan {wchan}")
}

/// `observed["shim_blocked"]`: the blocked task, or why it was not.
pub(super) fn blocked_json(blocked: &Result<BlockedTask, String>) -> serde_json::Value {
    match blocked {
        Ok(t) => json!({
            "state": "D",
            "wchan": t.wchan,
            "stack": t.stack,
            "class": t.class,
            "blocked_for_ms": t.blocked_for_ms,
        }),
        Err(why) => json!({"state": "not D", "why": why}),
    }
}

/// orphan-shim's findings about this shim (other shims on the host are not ours). The
/// scenario's shim is seconds old when it looks, so no grace period.
pub(super) fn orphan_findings(shim_pid: i32) -> anyhow::Result<Vec<Finding>> {
    Ok(OrphanShim {
        grace: Duration::ZERO,
        ..OrphanShim::DEFAULT
    }
    .scan(Path::new("/proc"))?
    .into_iter()
    .filter(|f| f.pid == Some(shim_pid))
    .collect())
}
