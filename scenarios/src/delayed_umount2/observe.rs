//! Observing the outcome: the shim blocked in the kernel (D, measured as the hung-task
//! detector measures it), whether the pod's shims outlive the pod, what containerd itself
//! says about the pod's tasks, and what the detectors say about the shims.

use std::path::Path;
use std::time::{Duration, Instant};

use faultline_core::Finding;
use faultline_detect::hung_task::{BlockClass, BlockedTask, DSample};
use faultline_detect::orphan_shim::OrphanShim;
use faultline_runtime::process::{alive, reap, ShimProcess};
use serde::Serialize;
use serde_json::json;

use super::pod::Lab;

/// How long a shim must stay in D, unscheduled, to count as blocked in the kernel.
const BLOCKED_FOR_MS: u64 = 500;

/// Watches one process for a thread blocked in D for [`BLOCKED_FOR_MS`], without waiting:
/// [`DWatch::poll`] is called from a loop that also watches other things.
pub(super) struct DWatch {
    first: Option<DSample>,
    seen: Option<BlockedTask>,
    last: String,
}

impl DWatch {
    pub(super) fn new() -> DWatch {
        DWatch {
            first: None,
            seen: None,
            last: "not sampled".into(),
        }
    }

    /// One look. Keeps the first unmount-sync block seen (or else any block).
    pub(super) fn poll(&mut self, pid: i32) -> anyhow::Result<()> {
        if self
            .seen
            .as_ref()
            .is_some_and(|t| t.class == BlockClass::UnmountSync)
        {
            return Ok(());
        }
        let proc_root = Path::new("/proc");
        let Some(first) = self.first.as_ref() else {
            self.first = Some(DSample::take(proc_root)?);
            return Ok(());
        };
        let mine: Vec<BlockedTask> = first
            .still_blocked(proc_root)?
            .into_iter()
            .filter(|t| t.pid == pid)
            .collect();
        match mine.into_iter().max_by_key(|t| t.blocked_for_ms) {
            Some(t) if t.blocked_for_ms >= BLOCKED_FOR_MS => {
                self.last = format!("blocked {} ms in {}", t.blocked_for_ms, t.wchan);
                if self.seen.is_none() || t.class == BlockClass::UnmountSync {
                    self.seen = Some(t);
                }
            }
            Some(t) => self.last = format!("in D for {} ms so far", t.blocked_for_ms),
            None => {
                // Not in D at the first sample, or it ran since: measure from a new one.
                self.first = Some(DSample::take(proc_root)?);
                self.last = "not continuously in D".into();
            }
        }
        Ok(())
    }

    pub(super) fn into_result(self) -> Result<BlockedTask, String> {
        self.seen.ok_or(self.last)
    }
}

/// `observed["shim_blocked"]`: the blocked task, or why it was not.
pub(super) fn blocked_json(blocked: &Result<BlockedTask, String>) -> serde_json::Value {
    match blocked {
        Ok(t) => json!({
            "state": "D",
            "tid": t.tid,
            "wchan": t.wchan,
            "stack": t.stack,
            "class": t.class,
            "blocked_for_ms": t.blocked_for_ms,
        }),
        Err(why) => json!({"state": "not D", "why": why}),
    }
}

/// What became of one of the pod's shims after the pod was removed.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ShimFate {
    #[serde(flatten)]
    pub(super) shim: ShimProcess,
    /// Still running when the window ended.
    pub(super) alive: bool,
    /// When it exited, after the pod was removed.
    pub(super) exited_after_ms: Option<u64>,
}

/// Watches `shims` for `window` (upstream's test gives the shim 15 s to exit once the pod
/// is gone); returns early once all have exited. Reaps the ones that are our children.
pub(super) fn watch_exit(shims: &[ShimProcess], window: Duration) -> Vec<ShimFate> {
    let start = Instant::now();
    let mut fates: Vec<ShimFate> = shims
        .iter()
        .map(|s| ShimFate {
            shim: s.clone(),
            alive: true,
            exited_after_ms: None,
        })
        .collect();
    loop {
        for f in fates.iter_mut().filter(|f| f.alive) {
            if !alive(f.shim.pid) {
                reap(f.shim.pid);
                f.alive = false;
                f.exited_after_ms = Some(start.elapsed().as_millis() as u64);
            }
        }
        if fates.iter().all(|f| !f.alive) || start.elapsed() >= window {
            return fates;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// containerd's own view after the removal: the pods and containers CRI lists, the tasks
/// containerd has, whether it knows the pod's tasks, and its TaskExit errors.
pub(super) struct ContainerdView {
    pub(super) pod_listed: bool,
    pub(super) pod_task: bool,
    pub(super) container_task: bool,
    pub(super) json: serde_json::Value,
}

pub(super) fn containerd_view(lab: &Lab) -> anyhow::Result<ContainerdView> {
    let cri = lab.ctd.cri();
    let pods = cri.pods()?;
    let containers = cri.containers()?;
    let tasks = lab.ctd.tasks()?;
    let pod_task = lab.ctd.task_exists(&lab.pod.id)?;
    let container_task = lab.ctd.task_exists(&lab.container)?;
    let errors = lab.ctd.log_lines("failed to handle");
    Ok(ContainerdView {
        pod_listed: pods.iter().any(|p| p.id == lab.pod.id),
        pod_task,
        container_task,
        json: json!({
            "pods": pods,
            "containers": containers,
            "tasks": tasks,
            "pod_task_known": pod_task,
            "container_task_known": container_task,
            "task_exit_errors": errors,
        }),
    })
}

/// The findings of the declared detectors about these shims (other processes on the host
/// are not ours to judge): orphan-shim's on a fresh walk, hung-task's from the stall.
pub(super) fn findings(
    shims: &[ShimFate],
    blocked: Option<&Result<BlockedTask, String>>,
) -> anyhow::Result<Vec<Finding>> {
    let pids: Vec<i32> = shims.iter().map(|f| f.shim.pid).collect();
    // The scenario saw the pod removed and waited out upstream's 15 s: no grace period on
    // top (the detector's default 30 s is for a node where nobody watched the removal).
    let detector = OrphanShim {
        grace: Duration::ZERO,
        ..OrphanShim::DEFAULT
    };
    let mut findings: Vec<Finding> = detector
        .scan(Path::new("/proc"))?
        .into_iter()
        .filter(|f| f.pid.is_some_and(|p| pids.contains(&p)))
        .collect();
    if let Some(Ok(t)) = blocked {
        findings.push(t.finding());
    }
    Ok(findings)
}
