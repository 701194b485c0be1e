//! The judgement: findings from what was observed, kept apart from where the observations
//! come from so that scenarios and tests can feed it what they captured.

use serde_json::json;

use super::log::{LockdLine, LockdLineKind};
use super::statd::{registration_json, StatdRegistration};
use super::{LockWaiter, NlmMount, Observations, NAME, REMEDY};
use crate::finding::{Finding, Severity};

pub fn judge(o: &Observations) -> Vec<Finding> {
    let statd_problem = statd_problem(o);
    let mut findings = Vec::new();
    if let Some(problem) = &statd_problem {
        findings.extend(o.mounts.iter().map(|m| mount_finding(o, m, problem)));
    }
    findings.extend(
        o.waiters
            .iter()
            .map(|w| waiter_finding(w, statd_problem.as_deref())),
    );
    findings.extend(log_findings(&o.log));
    findings
}

/// What is wrong with rpc.statd, if anything.
fn statd_problem(o: &Observations) -> Option<String> {
    match (&o.registration, o.statd_pids.is_empty()) {
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
    }
}

fn mount_finding(o: &Observations, m: &NlmMount, problem: &str) -> Finding {
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
    }))
}

fn waiter_finding(w: &LockWaiter, statd_problem: Option<&str>) -> Finding {
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
            statd_problem.map(|p| format!("; {p}")).unwrap_or_default()
        ),
        REMEDY,
    )
    .with_pid(w.pid)
    .with_evidence(json!({
        "state": w.state.to_string(),
        "wchan": w.wchan,
        "frame": w.frame,
        "stack": w.stack,
    }))
}

/// Only the newest line per server matters: "not responding" followed by "OK" is over.
fn log_findings(log: &[LockdLine]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut latest: Vec<&LockdLine> = Vec::new();
    for l in log {
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
