//! `nfs-lock-manager`: NFSv2/v3 clients lock through the Network Lock Manager (lockd), and
//! lockd asks the local rpc.statd to monitor the server before every lock (the kernel's
//! `nsm_monitor`). With rpc.statd not running, or not registered with rpcbind, `flock()`
//! and `fcntl()` locks on those mounts hang in the kernel (D state) or fail with ENOLCK,
//! while reads and writes work: the node looks healthy except for whatever takes a lock.
//!
//! Reports, on a live node:
//! - NFSv2/v3 mounts that use the NLM (no `nolock`, and `local_lock` is not `flock` or
//!   `all`) while rpc.statd is not running or not registered with rpcbind (program 100024);
//! - tasks blocked in an NLM lock request (their kernel stack is in `nlmclnt_*`, `nlm_*`,
//!   `nsm_monitor` or lockd: `hung_task::is_nlm_frame`);
//! - the kernel log's `lockd: server ... not responding`, `lockd: cannot monitor ...` and
//!   `VFS is out of sync with lock manager` lines.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::hung_task::{is_nlm_frame, parse_stack};
use crate::kernel_log::{self, LogLine};
use crate::{CheckInput, DetectError, Detector};
use faultline_sys::error_chain::error_chain;
use faultline_sys::mount_namespace::{is_kernel_thread, mount_namespaces};
use faultline_sys::mountinfo::MountInfo;
use faultline_sys::portmap::{self, IPPROTO_UDP, NSM_PROGRAM, NSM_VERSION};

pub const NAME: &str = "nfs-lock-manager";

pub const REMEDY: &str = "run rpc.statd on every node that mounts NFSv3 with locking \
(`systemctl enable --now rpc-statd`, and make it part of the node's configuration); \
blocked tasks continue once it is registered with rpcbind. Where locks need not be \
shared between nodes, mount with `nolock` or `local_lock=flock`";

pub struct NfsLockManager;

/// An NFS mount whose locks go through the NLM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlmMount {
    pub mount_point: String,
    pub source: String,
    pub version: String,
    pub local_lock: String,
}

/// Whether `m` is an NFSv2/v3 mount that sends `flock`/`fcntl` locks to the server's lockd.
/// `local_lock=posix` keeps fcntl locks local but still sends flock locks (emulated as whole-
/// file byte-range locks) to the server, so it counts.
pub fn nlm_mount(m: &MountInfo) -> Option<NlmMount> {
    if m.fstype != "nfs" {
        return None;
    }
    let version = m.super_option("vers").unwrap_or("3");
    if !(version == "2" || version == "3" || version.starts_with("3.") || version.starts_with("2."))
    {
        return None;
    }
    if m.super_option("nolock").is_some() {
        return None;
    }
    let local_lock = m.super_option("local_lock").unwrap_or("none");
    if local_lock == "flock" || local_lock == "all" {
        return None;
    }
    Some(NlmMount {
        mount_point: m.mount_point.display().to_string(),
        source: m.source_lossy().into_owned(),
        version: version.to_string(),
        local_lock: local_lock.to_string(),
    })
}

/// What rpcbind says about rpc.statd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatdRegistration {
    Registered {
        udp_port: u16,
    },
    NotRegistered,
    /// rpcbind itself did not answer.
    RpcbindUnreachable(String),
}

pub fn statd_registration(rpcbind: SocketAddr) -> StatdRegistration {
    match portmap::getport(
        rpcbind,
        NSM_PROGRAM,
        NSM_VERSION,
        IPPROTO_UDP,
        Duration::from_millis(500),
    ) {
        Ok(Some(port)) => StatdRegistration::Registered { udp_port: port },
        Ok(None) => StatdRegistration::NotRegistered,
        Err(e) => StatdRegistration::RpcbindUnreachable(error_chain(&e)),
    }
}

/// Pids whose command is `rpc.statd`.
pub fn statd_pids(proc_root: &Path) -> Vec<i32> {
    pids(proc_root)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(proc_root.join(format!("{pid}/comm")))
                .is_ok_and(|c| c.trim() == "rpc.statd")
        })
        .collect()
}

fn pids(proc_root: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// The NLM frame of a kernel stack (`/proc/PID/stack`), if the task waits in a lock request:
/// its innermost frame that [`is_nlm_frame`]. The wait itself shows as
/// `rpc_wait_bit_killable` (an RPC to statd or to the server's lockd) or
/// `nlmclnt_block`/`nlmclnt_lock` (a blocking lock queued at the server).
pub fn nlm_frame(stack: &str) -> Option<String> {
    parse_stack(stack).into_iter().find(|f| is_nlm_frame(f))
}

/// A task waiting in the NLM.
#[derive(Debug, Clone, PartialEq)]
pub struct LockWaiter {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub wchan: String,
    pub frame: String,
    pub stack: Vec<String>,
}

/// Every task (threads included) whose kernel stack is in the NLM client.
pub fn lock_waiters(proc_root: &Path) -> Vec<LockWaiter> {
    let mut out = Vec::new();
    for pid in pids(proc_root) {
        // lockd's own kernel thread runs in `lockd`; it requests no lock.
        if is_kernel_thread(proc_root, pid) {
            continue;
        }
        let task_dir = proc_root.join(format!("{pid}/task"));
        let tids = pids(&task_dir);
        for tid in if tids.is_empty() { vec![pid] } else { tids } {
            let dir = task_dir.join(tid.to_string());
            let Ok(stack) = std::fs::read_to_string(dir.join("stack")) else {
                continue;
            };
            let Some(frame) = nlm_frame(&stack) else {
                continue;
            };
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            out.push(LockWaiter {
                pid: tid,
                comm: std::fs::read_to_string(dir.join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                state: stat_state(&stat).unwrap_or('?'),
                wchan: std::fs::read_to_string(dir.join("wchan")).unwrap_or_default(),
                frame,
                stack: stack.lines().map(|l| l.trim().to_string()).collect(),
            });
        }
    }
    out
}

/// The state letter of a `/proc/PID/stat` line (after the parenthesised command, which may
/// itself contain spaces and parentheses).
pub fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A kernel log line about the lock manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockdLine {
    pub when: Option<String>,
    pub message: String,
    /// The server (or host) the line names, if any.
    pub server: Option<String>,
    pub kind: LockdLineKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockdLineKind {
    NotResponding,
    Recovered,
    CannotMonitor,
    OutOfSync,
}

pub fn lockd_lines(lines: &[LogLine]) -> Vec<LockdLine> {
    lines
        .iter()
        .filter_map(|l| {
            let m = l.message.trim();
            let (kind, server) = if let Some(rest) = m.strip_prefix("lockd: server ") {
                let server = rest.split_whitespace().next().map(str::to_string);
                if rest.contains("not responding") {
                    (LockdLineKind::NotResponding, server)
                } else if rest.trim_end().ends_with(" OK") {
                    (LockdLineKind::Recovered, server)
                } else {
                    return None;
                }
            } else if let Some(rest) = m.strip_prefix("lockd: cannot monitor ") {
                (
                    LockdLineKind::CannotMonitor,
                    rest.split_whitespace().next().map(str::to_string),
                )
            } else if m.contains("VFS is out of sync with lock manager") {
                (LockdLineKind::OutOfSync, None)
            } else {
                return None;
            };
            Some(LockdLine {
                when: l.when.clone(),
                message: m.to_string(),
                server,
                kind,
            })
        })
        .collect()
}

/// The detector's judgement, separated from where its inputs come from so that scenarios
/// and tests can feed it what they captured.
pub struct Observations {
    pub mounts: Vec<NlmMount>,
    pub statd_pids: Vec<i32>,
    pub registration: StatdRegistration,
    pub waiters: Vec<LockWaiter>,
    pub log: Vec<LockdLine>,
}

pub fn judge(o: &Observations) -> Vec<Finding> {
    let mut findings = Vec::new();
    let statd_problem = match (&o.registration, o.statd_pids.is_empty()) {
        (StatdRegistration::Registered { .. }, false) => None,
        (StatdRegistration::Registered { udp_port }, true) => Some(format!(
            "rpc.statd is not running, yet rpcbind still lists it on port {udp_port} (it died without unregistering)"
        )),
        (StatdRegistration::NotRegistered, true) => {
            Some("rpc.statd is not running and not registered with rpcbind".to_string())
        }
        (StatdRegistration::NotRegistered, false) => {
            Some("rpc.statd runs but is not registered with rpcbind (program 100024)".to_string())
        }
        (StatdRegistration::RpcbindUnreachable(e), running) => Some(format!(
            "rpcbind does not answer ({e}), so the kernel cannot find rpc.statd{}",
            if running { "" } else { ", which is not running either" }
        )),
    };
    if let Some(problem) = &statd_problem {
        for m in &o.mounts {
            findings.push(
                Finding::new(
                    NAME,
                    Severity::Critical,
                    &m.mount_point,
                    format!(
                        "NFSv{} mount of {} locks through lockd, but {problem}: flock()/fcntl() locks there hang or fail with ENOLCK",
                        m.version, m.source
                    ),
                    REMEDY,
                )
                .with_evidence(json!({
                    "source": m.source,
                    "vers": m.version,
                    "local_lock": m.local_lock,
                    "statd_pids": o.statd_pids,
                    "rpcbind": registration_json(&o.registration),
                })),
            );
        }
    }
    for w in &o.waiters {
        findings.push(
            Finding::new(
                NAME,
                Severity::Critical,
                format!("pid {} ({})", w.pid, w.comm),
                format!(
                    "{} (pid {}) is blocked in an NFS lock request (state {}, in {}, waiting in {}){}",
                    w.comm,
                    w.pid,
                    w.state,
                    w.frame,
                    if w.wchan.is_empty() { "?" } else { &w.wchan },
                    statd_problem
                        .as_deref()
                        .map(|p| format!("; {p}"))
                        .unwrap_or_default()
                ),
                REMEDY,
            )
            .with_pid(w.pid)
            .with_evidence(json!({
                "state": w.state.to_string(),
                "wchan": w.wchan,
                "frame": w.frame,
                "stack": w.stack,
            })),
        );
    }
    // Only the newest line per server matters: "not responding" followed by "OK" is over.
    let mut latest: Vec<&LockdLine> = Vec::new();
    for l in &o.log {
        latest.retain(|x| !(x.server == l.server && x.server.is_some()));
        latest.push(l);
    }
    for l in latest {
        let (severity, what) = match l.kind {
            LockdLineKind::Recovered => continue,
            LockdLineKind::NotResponding => (
                Severity::Warning,
                "lockd gets no answer from the NFS server's lock manager",
            ),
            LockdLineKind::CannotMonitor => (
                Severity::Warning,
                "lockd could not ask rpc.statd to monitor the server, so the lock failed",
            ),
            LockdLineKind::OutOfSync => (
                Severity::Warning,
                "a lock request was interrupted and the client's view of its locks no longer matches the server's",
            ),
        };
        findings.push(
            Finding::new(
                NAME,
                severity,
                l.server.clone().unwrap_or_else(|| "lockd".into()),
                format!("kernel log: {what}: {}", l.message),
                REMEDY,
            )
            .with_evidence(json!({ "when": l.when, "line": l.message })),
        );
    }
    findings
}

fn registration_json(r: &StatdRegistration) -> serde_json::Value {
    match r {
        StatdRegistration::Registered { udp_port } => {
            json!({"statd_registered": true, "udp_port": udp_port})
        }
        StatdRegistration::NotRegistered => json!({"statd_registered": false}),
        StatdRegistration::RpcbindUnreachable(e) => json!({"statd_registered": null, "error": e}),
    }
}

/// NLM mounts in every mount namespace that has a process (kubelet's volumes live in the
/// host's namespace, a pod's own NFS mounts in its own).
pub fn nlm_mounts(proc_root: &Path) -> Vec<NlmMount> {
    let mut out: Vec<NlmMount> = Vec::new();
    let namespaces = mount_namespaces(proc_root).unwrap_or_default();
    let mut tables = Vec::new();
    if namespaces.is_empty() {
        if let Ok(m) = faultline_sys::mountinfo::read_mountinfo(proc_root, None) {
            tables.push(m);
        }
    }
    for ns in &namespaces {
        if let Ok((_, m)) = ns.mountinfo(proc_root) {
            tables.push(m);
        }
    }
    for m in tables.iter().flatten() {
        if let Some(n) = nlm_mount(m) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Everything the detector looks at, read live.
pub fn observe(input: &CheckInput) -> Result<Observations, DetectError> {
    // Streamed: only lockd's lines are kept, whatever the size of the log.
    let mut log = Vec::new();
    let read = kernel_log::for_each(input, |line| {
        log.extend(lockd_lines(std::slice::from_ref(&line)));
        Ok(())
    });
    let log = match read {
        Ok(()) => log,
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
    let mounts = nlm_mounts(&input.proc_root);
    let waiters = lock_waiters(&input.proc_root);
    // Only ask rpcbind when something depends on the answer.
    let registration = if mounts.is_empty() && waiters.is_empty() {
        StatdRegistration::NotRegistered
    } else {
        statd_registration(portmap::rpcbind_addr())
    };
    Ok(Observations {
        mounts,
        statd_pids: statd_pids(&input.proc_root),
        registration,
        waiters,
        log,
    })
}

impl Detector for NfsLockManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "NFSv3 locking without rpc.statd: mounts that lock through lockd, tasks blocked in lock requests, lockd's kernel log lines"
    }

    fn check(&self, input: &CheckInput) -> Result<Vec<Finding>, DetectError> {
        Ok(judge(&observe(input)?))
    }

    fn reads_kernel_log(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "nfs_lock_manager_tests.rs"]
mod tests;
