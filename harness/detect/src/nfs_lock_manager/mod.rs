//! `nfs-lock-manager`: NFSv2/v3 clients lock through the Network Lock Manager (lockd), and
//! lockd asks the local rpc.statd to monitor the server before every lock (the kernel's
//! `nsm_monitor`). With rpc.statd not running, or not registered with rpcbind, `flock()`
//! and `fcntl()` locks on those mounts hang in the kernel (D state) or fail with ENOLCK,
//! while reads and writes work: the node looks healthy except for whatever takes a lock.
//!
//! Reports, on a live node:
//! - NFSv2/v3 mounts that use the NLM (no `nolock`, and `local_lock` is not `flock` or
//!   `all`) while rpc.statd is not running or not registered with rpcbind (program 100024);
//! - tasks blocked in an NLM lock request: among the tasks in D state (hung-task's sample),
//!   those whose kernel stack is in `nlmclnt_*`, `nlm_*`, `nsm_monitor` or lockd
//!   (`hung_task::is_nlm_frame`);
//! - the kernel log's `lockd: server ... not responding`, `lockd: cannot monitor ...` and
//!   `VFS is out of sync with lock manager` lines.

mod findings;
mod log;
mod mounts;
mod statd;
mod waiters;

use faultline_sys::portmap;
use faultline_sys::proc::{Gaps, MOUNT_NS, STAT, TASKS};

use crate::hung_task::DSample;
use crate::kernel_log;
use crate::{CheckInput, DetectError, Detector, DetectorReport};

pub use findings::judge;
pub use log::{lockd_lines, LockdLine, LockdLineKind};
pub use mounts::{nlm_mount, nlm_mounts, NlmMount};
pub use statd::{statd_pids, statd_registration, StatdRegistration};
pub use waiters::{lock_waiters, nlm_frame, stat_state, LockWaiter};

pub const NAME: &str = "nfs-lock-manager";

pub const REMEDY: &str = "run rpc.statd on every node that mounts NFSv3 with locking \
(`systemctl enable --now rpc-statd`, and make it part of the node's configuration); \
blocked tasks continue once it is registered with rpcbind. Where locks need not be \
shared between nodes, mount with `nolock` or `local_lock=flock`";

pub struct NfsLockManager;

/// Everything the detector looks at, so that [`judge`] can be fed captured observations.
pub struct Observations {
    pub mounts: Vec<NlmMount>,
    pub statd_pids: Vec<i32>,
    pub registration: StatdRegistration,
    pub waiters: Vec<LockWaiter>,
    pub log: Vec<LockdLine>,
    /// What could not be read: mount tables, kernel stacks of tasks in D (root only).
    pub gaps: Gaps,
}

/// Everything the detector looks at, read live.
pub fn observe(input: &CheckInput) -> Result<Observations, DetectError> {
    // Streamed: only lockd's lines are kept, whatever the size of the log.
    let mut kept = Vec::new();
    let read = kernel_log::for_each(input, |line| {
        kept.extend(lockd_lines(std::slice::from_ref(&line)));
        Ok(())
    });
    let log = match read {
        Ok(()) => kept,
        // Without the kernel log the other signals still stand; a named file must exist.
        Err(e) if input.kmsg_file.is_none() => {
            tracing::debug!("nfs-lock-manager: no kernel log: {e}");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    observe_with_log(input, log)
}

/// [`observe`] with the kernel log's lockd lines already chosen (a scenario passes the lines
/// since its marker).
pub fn observe_with_log(
    input: &CheckInput,
    log: Vec<LockdLine>,
) -> Result<Observations, DetectError> {
    let snap = input.processes()?;
    let mut gaps = snap.gaps().select(&[STAT, TASKS, MOUNT_NS]);
    let mounts = nlm_mounts(&snap, &mut gaps);
    let waiters = lock_waiters(&DSample::of(&snap), snap.proc_root(), &mut gaps);
    // Only ask rpcbind when something depends on the answer.
    let registration = if mounts.is_empty() && waiters.is_empty() {
        StatdRegistration::NotRegistered
    } else {
        statd_registration(portmap::rpcbind_addr())
    };
    Ok(Observations {
        mounts,
        statd_pids: statd_pids(&snap),
        registration,
        waiters,
        log,
        gaps,
    })
}

impl Detector for NfsLockManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "NFSv3 locking without rpc.statd: mounts that lock through lockd, tasks blocked in lock requests, lockd's kernel log lines"
    }

    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        let o = observe(input)?;
        Ok(DetectorReport::new(judge(&o), &o.gaps))
    }

    fn reads_kernel_log(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
