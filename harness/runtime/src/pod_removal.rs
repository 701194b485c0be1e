//! Removing a pod as kubelet does: StopPodSandbox until it succeeds, then RemovePodSandbox
//! until it succeeds, 1 s apart, within 3 minutes, as containerd's regression test for #7496
//! (integration/issue7496_linux_test.go) allows. Every call and its outcome is kept.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cri::Cri;

/// How long the StopPodSandbox + RemovePodSandbox loop may take (upstream's test: 3 min).
pub const REMOVAL_LIMIT: Duration = Duration::from_secs(180);
/// One call's bound: kubelet's default `--runtime-request-timeout` is 2 min; StopPodSandbox
/// took 50 s here while two unmounts were held 2 x 12 s each.
pub const CALL_LIMIT: Duration = Duration::from_secs(90);
/// One call of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub call: &'static str,
    pub at_ms: u64,
    pub took_ms: u64,
    pub error: Option<String>,
}

/// The loop's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub removed: bool,
    pub took_ms: u64,
    pub attempts: Vec<Attempt>,
}

/// StopPodSandbox until it succeeds, then RemovePodSandbox until it succeeds, 1 s apart.
pub fn stop_and_remove(cri: &Cri, pod: &str) -> Removal {
    let start = Instant::now();
    let mut attempts = Vec::new();
    let mut stopped = false;
    while start.elapsed() < REMOVAL_LIMIT {
        let left = REMOVAL_LIMIT
            .saturating_sub(start.elapsed())
            .min(CALL_LIMIT);
        let t = Instant::now();
        let (call, result) = if stopped {
            ("RemovePodSandbox", cri.remove_pod(pod, left))
        } else {
            ("StopPodSandbox", cri.stop_pod(pod, left))
        };
        attempts.push(Attempt {
            call,
            at_ms: t.duration_since(start).as_millis() as u64,
            took_ms: t.elapsed().as_millis() as u64,
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        match (call, result) {
            ("StopPodSandbox", Ok(())) => stopped = true,
            ("RemovePodSandbox", Ok(())) => {
                return Removal {
                    removed: true,
                    took_ms: start.elapsed().as_millis() as u64,
                    attempts,
                }
            }
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    Removal {
        removed: false,
        took_ms: start.elapsed().as_millis() as u64,
        attempts,
    }
}
