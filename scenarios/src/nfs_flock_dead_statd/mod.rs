//! `nfs-flock-dead-statd`: on an NFSv3 mount, `flock(LOCK_EX)` hangs in the kernel (D state)
//! or fails because rpc.statd is not running on the client.
//!
//! Symptom: php-fpm workers stuck in D state during their first requests after the cluster
//! moved from NFSv4 to NFSv3; `strace` itself hangs and cannot be killed; the last syscall is
//! `flock(11, LOCK_EX` on a file opened `O_RDONLY`; reads and writes over the same mount work;
//! `dmesg` shows `lockd: server ... not responding`. On the affected nodes
//! `rpc-statd.service` was `inactive (dead)`: nodes that also served NFS had statd running
//! and worked by chance (a public case study, "Resolving frozen processes in kubernetes" by
//! Andrew Howden, andrewhowden.com).
//!
//! Cause: NFSv2/v3 have no locks in the protocol; the kernel's NLM client (lockd,
//! fs/lockd/clntproc.c) first asks the local rpc.statd to monitor the server
//! (`nsm_monitor`, an RPC to program 100024 found through rpcbind) and only then sends
//! the lock. Linux emulates `flock()` on NFS with a whole-file NLM lock, so flock is
//! affected as much as fcntl. Without statd the monitor call does not complete: the task
//! sleeps in `rpc_wait_bit_killable` under `nsm_monitor`/`nlmclnt_lock` until statd
//! appears (it resumes on its own once statd registers), or fails with ENOLCK. This is
//! long-standing behaviour, not a regression, so expectations do not depend on the kernel.
//!
//! Runs in the VM backend (the host kernel has no NFS): the guest runs a kernel nfsd exporting
//! a tmpfs over loopback and mounts it with `mount.nfs -o vers=3` (locking on), like kubelet.
//! Variants:
//! - `statd-running`: statd runs; `LOCK_SH`, `LOCK_UN`, `LOCK_EX` on a file opened
//!   read-only all succeed. Clean.
//! - `statd-dead`: statd ran for the mount (mount.nfs insists on it) and was stopped
//!   (`systemctl stop rpc-statd`) before the first lock: the lock blocks past the deadline or
//!   fails. Records which, the errno, the task's state, wchan and kernel stack, and the
//!   kernel log's lockd lines; then starts statd again and records whether the stuck lock
//!   completes. Reproduced.
//!
//! Files: `build` (server, statd, mount), `locker` (the locking process), `observe` (the
//! detector and the stuck task while the lock is live); the trigger and the verdict are here.

mod build;
mod locker;
mod observe;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_core::guard::nfs::Statd;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantOutcome,
};
use faultline_detect::nfs_lock_manager;
use serde_json::json;

use build::NfsMount;
use locker::Locker;

/// A lock that has not returned by now is blocked, not slow: the statd-running variant
/// shows that a lock normally takes milliseconds, or up to lockd's 5 s retry when the server
/// is still in its (shortened) grace period.
const STUCK_AFTER: Duration = Duration::from_secs(4);
/// statd-running may meet the server's grace period once (lockd retries every 5 s).
const CLEAN_LIMIT: Duration = Duration::from_secs(20);
/// How long a blocked lock may take to complete once statd is back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

pub struct NfsFlockDeadStatd;

faultline_core::variant_kind! {
    enum Kind {
        StatdRunning = "statd-running",
        StatdDead = "statd-dead",
    }
}

impl Scenario for NfsFlockDeadStatd {
    fn name(&self) -> &'static str {
        "nfs-flock-dead-statd"
    }

    fn summary(&self) -> &'static str {
        "NFSv3 flock(LOCK_EX) blocks in D state (or fails) because rpc.statd is not running"
    }

    fn detectors(&self) -> &'static [&'static str] {
        &[nfs_lock_manager::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            Requirement::VmBackend {
                why: "needs a kernel NFS server and client; the guest kernel has them",
            },
            Requirement::Filesystem("nfsd"),
            Requirement::Filesystem("nfs"),
            Requirement::binary("rpcbind", "rpcbind"),
            Requirement::binary("rpc.statd", "nfs-common"),
            Requirement::binary("mount.nfs", "nfs-common"),
            Requirement::binary("rpc.nfsd", "nfs-kernel-server"),
            Requirement::binary("rpc.mountd", "nfs-kernel-server"),
            Requirement::binary("exportfs", "nfs-kernel-server"),
        ]
    }

    fn variants(&self, _kernel: &KernelVersion) -> Vec<Variant> {
        vec![
            Variant::new(
                Kind::StatdRunning,
                "rpc.statd runs: LOCK_SH and LOCK_EX on a read-only file succeed",
                Expectation::Clean,
            ),
            Variant::new(
                Kind::StatdDead,
                "rpc.statd stopped before the first lock: LOCK_EX blocks or fails",
                Expectation::Reproduced,
            ),
        ]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(150)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let statd_dead = match variant.kind()? {
            Kind::StatdRunning => false,
            Kind::StatdDead => true,
        };
        let setup = Instant::now();
        ctx.progress(format!("starting the NFS server ({})", variant.name));
        let mut nfs = NfsMount::build(ctx, variant.name, if statd_dead { 2 } else { 1 })?;
        let mut statd_after_stop = json!(null);
        if statd_dead {
            ctx.progress("stopping rpc.statd (systemctl stop rpc-statd)");
            let still_listed = nfs.statd.stop().context("failed to stop rpc.statd")?;
            statd_after_stop = json!({ "rpcbind_still_lists_statd": still_listed });
        }
        let setup_ms = setup.elapsed().as_millis() as u64;

        // The trigger.
        ctx.progress("locking: open O_RDONLY, LOCK_SH, LOCK_UN, LOCK_EX, LOCK_UN");
        let mut locker = Locker::spawn(&nfs.file).context("failed to start the locking process")?;
        let limit = if statd_dead { STUCK_AFTER } else { CLEAN_LIMIT };
        locker.wait(limit);
        let blocked = !locker.finished();
        let live = observe::while_locking(ctx, &locker, blocked)?;

        // The remedy: start statd; a blocked lock should go through by itself.
        let (recovery, restarted) = if statd_dead {
            let (recovery, statd) = recover(&mut locker, blocked)?;
            (recovery, Some(statd))
        } else {
            (json!(null), None)
        };
        let steps = locker.steps_json();
        let succeeded = locker.all_succeeded_before(limit);
        let killed = locker.kill();

        ctx.progress("unmounting and stopping the server");
        let observed = json!({
            "kernel": ctx.kernel.release,
            "mount": nfs.entry,
            "statd_pid_at_mount": nfs.statd_pid_at_mount,
            "statd_stopped": statd_dead,
            "statd_after_stop": statd_after_stop,
            "lock_steps": steps,
            "outcome": if succeeded { "locked" } else if blocked { "blocked" } else { "failed" },
            "deadline_ms": limit.as_millis() as u64,
            "blocked_task": live.task,
            "locker_killed": killed,
            "nfs_kernel_log": live.nfs_log,
            "recovery": recovery,
            "setup_ms": setup_ms,
            "waiters_seen_by_detector": live.waiters,
        });
        nfs.teardown(restarted)?;
        Ok(VariantOutcome {
            reproduced: !succeeded,
            observed,
            findings: live.findings,
        })
    }
}

/// Starts statd again and gives a blocked lock time to complete: what the recovery looked
/// like, and the new statd (kept running until the unmount).
fn recover(locker: &mut Locker, blocked: bool) -> anyhow::Result<(serde_json::Value, Statd)> {
    let t = Instant::now();
    let statd = Statd::start().context("failed to start rpc.statd again")?;
    if blocked {
        locker.wait(RECOVERY_LIMIT);
    }
    let recovery = json!({
        "lock_completed_after_statd_started": locker.finished(),
        "ms": t.elapsed().as_millis() as u64,
        "steps": locker.steps_json(),
    });
    Ok((recovery, statd))
}
