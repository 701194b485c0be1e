//! The finding for an orphaned shim: what containerd said, how old the shim is, whether it
//! sits in D (and where, by its kernel stack), its bundle or workdir, and the remedy.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::{ShimArgs, ShimKind};
use super::judge::Look;
use super::NAME;
use crate::finding::{Finding, Severity};
use crate::hung_task::{classify, kernel_view, parse_stack};
use faultline_sys::proc::{Gaps, ProcessEntry, Snapshot};

/// The upstream bug and its fixes, for the remedy: containerd#7496 (a task delete that
/// outlives CRI's 10 s event deadline returns before the shim is shut down; nothing shuts it
/// down later), fixed for v2 shims by PRs #8954 (2.0), #9003 (1.7.4) and #9004 (1.6.24), and
/// for the v1 shim by PRs #9344/#9345 (issue #9309; 1.6.25, 1.7.9).
fn fixed_in(kind: ShimKind) -> &'static str {
    match kind {
        ShimKind::V2 => {
            "fixed for v2 shims in containerd 1.6.24, 1.7.4 and 2.0 (PRs #9004, #9003, #8954; \
             containerd#7496)"
        }
        ShimKind::V1 => {
            "fixed for the v1 shim in containerd 1.6.25 and 1.7.9 (PRs #9344, #9345, issue \
             #9309; containerd#7496)"
        }
    }
}

/// Everything one orphan's finding is made of.
pub struct Orphan<'a> {
    pub p: &'a ProcessEntry,
    pub argv: &'a [String],
    pub shim: &'a ShimArgs,
    pub age: Option<Duration>,
    pub grace: Duration,
    /// containerd's answer, one sentence.
    pub containerd: String,
    /// `Some(why containerd did not answer)` when the filesystem decided.
    pub fallback: Option<String>,
    pub look: &'a Look,
}

/// The shim's threads in D with wchan and kernel stack (`stack` null and `stack_unreadable`
/// saying why when it could not be read: root only, proc(5)).
fn blocked_threads(snap: &Snapshot, p: &ProcessEntry) -> Vec<Value> {
    p.tasks
        .iter()
        .filter(|t| t.state == 'D')
        .map(|t| {
            let mut gaps = Gaps::new();
            let (wchan, stack) = kernel_view(snap.proc_root(), p.pid, t.tid, &mut gaps);
            let frames = stack.as_deref().map(parse_stack);
            let class = classify(frames.as_deref().unwrap_or(&[]), &wchan);
            json!({
                "tid": t.tid,
                "comm": t.comm,
                "wchan": wchan,
                "stack": frames,
                "stack_unreadable": (!gaps.is_empty()).then(|| gaps.messages().join("; ")),
                "class": class,
            })
        })
        .collect()
}

impl Orphan<'_> {
    pub fn finding(&self, snap: &Snapshot) -> Finding {
        let (p, shim) = (self.p, self.shim);
        let id = shim.container_id().unwrap_or_else(|| "?".into());
        let ns = shim.namespace.clone().unwrap_or_else(|| "?".into());
        let blocked = blocked_threads(snap, p);
        let in_d = !blocked.is_empty();
        let judged_by = match &self.fallback {
            None => "containerd".to_string(),
            Some(why) => format!("filesystem (containerd did not answer: {why})"),
        };
        let why = match (&self.fallback, self.look.path()) {
            (Some(_), Some((what, path, false))) => {
                format!("its {what} {path} is gone and containerd did not answer")
            }
            _ => format!(
                "containerd at {} has no task {id} in namespace {ns}",
                shim.address.as_deref().unwrap_or("?")
            ),
        };
        let age_s = self.age.map(|a| a.as_secs());
        let age_text = age_s
            .map(|a| format!("; alive for {a}s"))
            .unwrap_or_default();
        let d_text = if in_d {
            " and is in D (uninterruptible) now"
        } else {
            ""
        };
        // {"path", "exists"} of what the filesystem look examined; `exists` null (and
        // `unknown` why) when it could not tell.
        let examined = |what: &str| -> Value {
            match self.look {
                Look::Present { what: w, path } | Look::Gone { what: w, path } if *w == what => {
                    json!({"path": path, "exists": matches!(self.look, Look::Present { .. })})
                }
                Look::Unknown(why) => json!({
                    "path": if what == "workdir" { shim.workdir.clone() } else { None },
                    "exists": null,
                    "unknown": why,
                }),
                _ => Value::Null,
            }
        };
        let remedy = format!(
            "containerd forgot this shim after a task delete outran its deadline (look for \
             \"context deadline exceeded\" about {id} in containerd's log); {}: upgrade. Now: \
             wait until the shim is out of D (`grep State /proc/{pid}/status`; a shim stuck \
             in an unmount waits on the I/O under it), then kill it: kill {pid}",
            fixed_in(shim.kind()),
            pid = p.pid
        );
        Finding::new(
            NAME,
            Severity::Warning,
            format!("{} {id}", shim.binary),
            format!(
                "{} pid {} for task {id} (namespace {ns}) is orphaned: {why}{age_text}{d_text}",
                shim.binary, p.pid
            ),
            remedy,
        )
        .with_pid(p.pid)
        .with_evidence(json!({
            "pid": p.pid,
            "id": id,
            "namespace": ns,
            "binary": shim.binary,
            "address": shim.address,
            "cmdline": self.argv,
            "judged_by": judged_by,
            "containerd": self.containerd,
            "age_s": age_s,
            "grace_s": self.grace.as_secs_f64(),
            "state": p.state.to_string(),
            "in_d": in_d,
            "blocked_threads": blocked,
            "bundle": if shim.kind() == ShimKind::V2 { examined("bundle") } else { Value::Null },
            "workdir": if shim.kind() == ShimKind::V1 { examined("workdir") } else { Value::Null },
        }))
    }
}
