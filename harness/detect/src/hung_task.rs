//! `hung-task`: tasks stuck in uninterruptible sleep (D state), with wchan and kernel stack,
//! classified by what the stack waits on.
//!
//! How long has a task been in D? `/proc` has no "D since" (`schedstat` has no sleep start,
//! and `sched`'s `block_start` needs `kernel.sched_schedstats=1`, off by default). We use the
//! kernel's own hung-task method (`kernel/hung_task.c`): a task is blocked for the whole of an
//! interval if it is in D at both ends and its context-switch count (the sum of
//! `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches`) did not move, i.e. it was never
//! scheduled in between. So
//! the check samples twice, `FAULTLINE_HUNG_TASK_SECS` apart (default 2 s), and reports
//! tasks blocked for at least that long. (A task that woke and slept again changed its count
//! and is not reported.)

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::{CheckInput, DetectError, Detector, DetectorReport};
use crate::finding::{Finding, Severity};
use faultline_sys::proc::{Gaps, Item, Snapshot, STAT, TASKS};

pub const NAME: &str = "hung-task";

/// What a blocked task waits on, from its kernel stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockClass {
    /// Unmounting flushes the file system (`sync_filesystem` under `cleanup_mnt`/umount).
    UnmountSync,
    /// Writeback/sync outside an unmount (`syncfs`, `sync`, waiting for flusher work).
    Sync,
    /// Waiting for a FUSE daemon's answer (`request_wait_answer`, `fuse_*`).
    FuseRequest,
    /// Waiting for the NFS lock manager (`nlmclnt_*`, lockd).
    NfsLock,
    Other,
}

/// The evidence's `class` is the name the message and the README use.
impl Serialize for BlockClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl BlockClass {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockClass::UnmountSync => "umount-sync",
            BlockClass::Sync => "sync",
            BlockClass::FuseRequest => "fuse-request",
            BlockClass::NfsLock => "nfs-lock",
            BlockClass::Other => "other",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            BlockClass::UnmountSync => "the unmount is flushing dirty data of the file system under it (overlay upper layer): find the I/O load on that device; a runtime waiting on it will give up at its deadline and orphan the shim (see orphan-shim); consider overlay `volatile` for container rootfs",
            BlockClass::Sync => "the task waits for writeback: find what saturates the device (iostat, /proc/pressure/io)",
            BlockClass::FuseRequest => "the FUSE daemon is not answering: check that the daemon process is alive and responsive; abort a dead connection via /sys/fs/fuse/connections/N/abort",
            BlockClass::NfsLock => "NFS lock requests are not being answered: check rpc.statd and lockd on this host and the server (rpcinfo -p)",
            BlockClass::Other => "inspect the kernel stack for what the task waits on",
        }
    }
}

/// Function names of a `/proc/PID/stack` text (`[<0>] func+0x1f/0x30` per line).
pub fn parse_stack(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f = l.trim().rsplit("] ").next()?.split('+').next()?.trim();
            (!f.is_empty()).then(|| f.to_string())
        })
        .collect()
}

/// A kernel function of the NFS lock manager's client path: `nlmclnt_*` and `nlm_*` (a lock
/// request, `nlm_wait_on_grace`), `nsm_monitor` (lockd asking rpc.statd to monitor the
/// server before the first lock), and anything named after lockd.
pub fn is_nlm_frame(func: &str) -> bool {
    func.starts_with("nlmclnt_")
        || func.starts_with("nlm_")
        || func == "nsm_monitor"
        || func.contains("lockd")
}

pub fn classify(stack: &[String], wchan: &str) -> BlockClass {
    let frames: Vec<&str> = stack
        .iter()
        .map(String::as_str)
        .chain((!wchan.is_empty() && wchan != "0").then_some(wchan))
        .collect();
    let any = |pred: &dyn Fn(&str) -> bool| frames.iter().any(|f| pred(f));
    if any(&is_nlm_frame) {
        return BlockClass::NfsLock;
    }
    if any(&|f| f.starts_with("fuse_") || f == "request_wait_answer" || f == "__fuse_request_send")
    {
        return BlockClass::FuseRequest;
    }
    let syncing = any(&|f| {
        matches!(
            f,
            "sync_filesystem"
                | "sync_inodes_sb"
                | "wb_wait_for_completion"
                | "__writeback_inodes_sb_nr"
                | "ovl_sync_fs"
                | "ext4_sync_fs"
                | "ksys_sync"
                | "__x64_sys_syncfs"
                | "__x64_sys_sync"
        )
    });
    let unmounting = any(&|f| {
        matches!(
            f,
            "cleanup_mnt"
                | "deactivate_super"
                | "deactivate_locked_super"
                | "generic_shutdown_super"
                | "path_umount"
                | "__x64_sys_umount"
        )
    });
    match (syncing, unmounting) {
        (true, true) => BlockClass::UnmountSync,
        (true, false) => BlockClass::Sync,
        _ => BlockClass::Other,
    }
}

/// A task in D state at one moment.
#[derive(Debug, Clone)]
struct DTask {
    pid: i32,
    comm: String,
    switches: Option<u64>,
    kernel_thread: bool,
}

/// The tasks in D state at one moment; see the module doc for how a second look turns this
/// into "blocked for at least".
#[derive(Debug, Clone)]
pub struct DSample {
    taken: Instant,
    tasks: HashMap<i32, DTask>,
}

/// A task in D in a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DTaskId<'a> {
    pub pid: i32,
    pub tid: i32,
    pub comm: &'a str,
    pub kernel_thread: bool,
}

/// A task blocked for at least `blocked_for`.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedTask {
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub wchan: String,
    pub stack: Vec<String>,
    pub class: BlockClass,
    pub blocked_for_ms: u64,
}

/// `/proc/PID/task/TID/stack`: readable by root only (CAP_SYS_ADMIN, proc(5)).
pub const KERNEL_STACK: Item = Item {
    what: "the kernel stack (/proc/PID/task/TID/stack)",
    of: "tasks in D state",
};

/// What the kernel says a task waits in: its wchan (`0` or empty without ptrace access) and
/// its kernel stack's functions, innermost first (empty when it could not be read; `gaps`
/// says why).
pub fn kernel_view(
    proc_root: &Path,
    pid: i32,
    tid: i32,
    gaps: &mut Gaps,
) -> (String, Option<String>) {
    let dir = proc_root
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string());
    let wchan = std::fs::read_to_string(dir.join("wchan")).unwrap_or_default();
    let stack = gaps.read(
        KERNEL_STACK,
        tid.into(),
        std::fs::read_to_string(dir.join("stack")),
    );
    (wchan.trim().to_string(), stack)
}

impl DSample {
    /// A fresh walk of `proc_root`.
    pub fn take(proc_root: &Path) -> Result<DSample, DetectError> {
        Ok(DSample::of(&Snapshot::take(proc_root)?))
    }

    /// The tasks in D in `snap`.
    pub fn of(snap: &Snapshot) -> DSample {
        let mut tasks = HashMap::new();
        for p in snap.processes() {
            for t in p.tasks.iter().filter(|t| t.state == 'D') {
                tasks.insert(
                    t.tid,
                    DTask {
                        pid: p.pid,
                        comm: t.comm.clone(),
                        switches: t.switches,
                        kernel_thread: p.kernel_thread,
                    },
                );
            }
        }
        DSample {
            taken: snap.taken(),
            tasks,
        }
    }

    /// How many tasks were in D.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The tasks in D, by tid.
    pub fn tasks(&self) -> Vec<DTaskId<'_>> {
        let mut out: Vec<DTaskId> = self
            .tasks
            .iter()
            .map(|(tid, t)| DTaskId {
                pid: t.pid,
                tid: *tid,
                comm: &t.comm,
                kernel_thread: t.kernel_thread,
            })
            .collect();
        out.sort_by_key(|t| t.tid);
        out
    }

    /// Tasks in D now that were in D at this sample and never ran since.
    pub fn still_blocked(&self, proc_root: &Path) -> Result<Vec<BlockedTask>, DetectError> {
        let now = DSample::take(proc_root)?;
        Ok(self.blocked_until(&now, proc_root, &mut Gaps::new()))
    }

    /// Tasks in D at `now` that were in D at this sample and never ran in between, with
    /// their kernel stacks (`gaps` records those that could not be read).
    pub fn blocked_until(
        &self,
        now: &DSample,
        proc_root: &Path,
        gaps: &mut Gaps,
    ) -> Vec<BlockedTask> {
        let blocked_for = now.taken.saturating_duration_since(self.taken);
        let mut out = Vec::new();
        for (tid, t) in &now.tasks {
            let Some(before) = self.tasks.get(tid) else {
                continue;
            };
            if before.switches.is_none() || before.switches != t.switches {
                continue;
            }
            let (wchan, stack) = kernel_view(proc_root, t.pid, *tid, gaps);
            // Without the stack the class comes from wchan alone.
            let stack = stack.map(|s| parse_stack(&s)).unwrap_or_default();
            out.push(BlockedTask {
                pid: t.pid,
                tid: *tid,
                comm: t.comm.clone(),
                class: classify(&stack, &wchan),
                wchan,
                stack,
                blocked_for_ms: blocked_for.as_millis() as u64,
            });
        }
        out.sort_by_key(|b| b.tid);
        out
    }
}

impl BlockedTask {
    pub fn finding(&self) -> Finding {
        let secs = self.blocked_for_ms as f64 / 1000.0;
        Finding::new(
            NAME,
            Severity::Warning,
            format!("pid {} ({})", self.pid, self.comm),
            format!(
                "task {} pid {} tid {} in D state for at least {secs:.1}s: {} (wchan {})",
                self.comm,
                self.pid,
                self.tid,
                self.class.as_str(),
                if self.wchan.is_empty() {
                    "?"
                } else {
                    &self.wchan
                }
            ),
            self.class.remedy(),
        )
        .with_pid(self.pid)
        .with_evidence(json!({
            "tid": self.tid,
            "comm": self.comm,
            "state": "D",
            "wchan": self.wchan,
            "stack": self.stack,
            "class": self.class,
            "blocked_for_ms": self.blocked_for_ms,
        }))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HungTask {
    /// How far apart the two samples are (overridden by `FAULTLINE_HUNG_TASK_SECS`).
    pub interval: Duration,
}

impl HungTask {
    pub const DEFAULT: HungTask = HungTask {
        interval: Duration::from_secs(2),
    };

    fn interval(&self) -> Duration {
        std::env::var("FAULTLINE_HUNG_TASK_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(self.interval)
    }
}

impl Detector for HungTask {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "tasks in uninterruptible sleep (D) for longer than a threshold, classified by kernel stack"
    }
    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        let snap = input.processes()?;
        let mut gaps = snap.gaps().select(&[STAT, TASKS]);
        let first = DSample::of(&snap);
        if first.is_empty() {
            return Ok(DetectorReport::new(Vec::new(), &gaps));
        }
        // The measurement interval itself, not a synchronisation sleep; the run's shared
        // snapshot may be older than that already.
        if let Some(rest) = self.interval().checked_sub(first.taken.elapsed()) {
            std::thread::sleep(rest);
        }
        let now = DSample::take(&input.proc_root)?;
        let findings = first
            .blocked_until(&now, &input.proc_root, &mut gaps)
            .iter()
            .map(BlockedTask::finding)
            .collect();
        Ok(DetectorReport::new(findings, &gaps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The containerd task's kernel stack from the Cốc Cốc report, as `psn -G kstack`
    /// printed it (outermost first).
    const SEED_PSN_KSTACK: &str = "syscall_exit_to_user_mode()->exit_to_user_mode_prepare()->task_work_run()->cleanup_mnt()->deactivate_locked_super()->kill_anon_super()->generic_shutdown_super()->sync_filesystem()->ovl_sync_fs()->sync_filesystem()->__writeback_inodes_sb_nr()->wb_wait_for_completion()";

    /// `/proc/PID/stack` of a vfork parent, captured on 6.18 (harness/tests/hung_task.rs).
    const VFORK_STACK: &str = "[<0>] kernel_clone+0x1d3/0x400\n[<0>] __do_sys_clone+0x8d/0xc0\n[<0>] do_syscall_64+0x71/0x280\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";

    /// `/proc/PID/stack` of the shim stuck in `umount2` in `delayed-umount2`'s `real-stall`
    /// variant (overlay upper on ext4 on a loop device on slow FUSE), captured on 6.18.
    const REAL_STALL_STACK: &str = "[<0>] folio_wait_bit+0x120/0x250\n[<0>] folio_wait_writeback+0x2a/0x90\n[<0>] __filemap_fdatawait_range+0xac/0x110\n[<0>] filemap_fdatawait_keep_errors+0x1a/0x60\n[<0>] sync_inodes_sb+0x227/0x2e0\n[<0>] sync_filesystem+0x64/0xa0\n[<0>] ovl_sync_fs+0x4f/0x70\n[<0>] sync_filesystem+0x7e/0xa0\n[<0>] generic_shutdown_super+0x26/0x130\n[<0>] kill_anon_super+0x12/0x40\n[<0>] deactivate_locked_super+0x2f/0xb0\n[<0>] cleanup_mnt+0xb4/0x140\n[<0>] task_work_run+0x59/0x90\n[<0>] exit_to_user_mode_loop+0xbb/0xe0\n[<0>] do_syscall_64+0x23b/0x280\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";

    /// Captured on 6.18 from `cat` killed while its open waited on a slow faultline FUSE
    /// daemon (state D: after a fatal signal the kernel waits uninterruptibly for the answer).
    const FUSE_KILLED_WAITER_STACK: &str = "[<0>] request_wait_answer+0x1d8/0x290\n[<0>] __fuse_simple_request+0x120/0x330\n[<0>] fuse_lookup_name+0xea/0x250\n[<0>] fuse_lookup+0xb2/0x1e0\n[<0>] fuse_atomic_open+0x124/0x190\n[<0>] path_openat+0xbca/0x12f0\n[<0>] do_filp_open+0x106/0x1c0\n[<0>] do_sys_openat2+0x88/0xe0\n[<0>] __x64_sys_openat+0x5d/0xa0\n[<0>] do_syscall_64+0x71/0x280\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";

    fn psn_frames(s: &str) -> Vec<String> {
        let mut frames: Vec<String> = s
            .split("->")
            .map(|f| f.trim_end_matches("()").to_string())
            .collect();
        frames.reverse();
        frames
    }

    #[test]
    fn evidence_and_message_spell_the_class_alike() {
        assert_eq!(
            serde_json::to_value(BlockClass::UnmountSync).unwrap(),
            "umount-sync"
        );
        assert_eq!(
            serde_json::to_value(BlockClass::FuseRequest).unwrap(),
            "fuse-request"
        );
    }

    #[test]
    fn parses_proc_stack() {
        assert_eq!(
            parse_stack(VFORK_STACK),
            [
                "kernel_clone",
                "__do_sys_clone",
                "do_syscall_64",
                "entry_SYSCALL_64_after_hwframe"
            ]
        );
        assert!(parse_stack("").is_empty());
    }

    #[test]
    fn nlm_frames() {
        for f in [
            "nlmclnt_proc",
            "nlm_wait_on_grace",
            "nsm_monitor",
            "lockd",
            "lockd_up",
        ] {
            assert!(is_nlm_frame(f), "{f}");
        }
        for f in [
            "rpc_wait_bit_killable",
            "do_setlk",
            "nfs_lock",
            "nsm_mon_unmon",
        ] {
            assert!(!is_nlm_frame(f), "{f}");
        }
        let flock = ["nsm_monitor", "nlmclnt_proc", "do_setlk"].map(String::from);
        assert_eq!(
            classify(&flock, "rpc_wait_bit_killable"),
            BlockClass::NfsLock
        );
    }

    #[test]
    fn classifies_real_stacks() {
        let seed = psn_frames(SEED_PSN_KSTACK);
        assert_eq!(seed[0], "wb_wait_for_completion");
        assert_eq!(classify(&seed, ""), BlockClass::UnmountSync);
        assert_eq!(
            classify(&parse_stack(VFORK_STACK), "kernel_clone"),
            BlockClass::Other
        );
        assert_eq!(
            classify(&[], "request_wait_answer"),
            BlockClass::FuseRequest
        );
        let fuse = parse_stack(FUSE_KILLED_WAITER_STACK);
        assert_eq!(fuse[0], "request_wait_answer");
        // wchan reads 0 for such a task on 6.18: the stack alone must classify it.
        assert_eq!(classify(&fuse, "0"), BlockClass::FuseRequest);
        let stall = parse_stack(REAL_STALL_STACK);
        assert_eq!(stall.len(), 16);
        assert_eq!(stall[0], "folio_wait_bit");
        assert_eq!(classify(&stall, "folio_wait_bit"), BlockClass::UnmountSync);
    }
}
