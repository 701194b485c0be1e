//! `orphan-shim`: containerd shims that containerd no longer knows.
//!
//! containerd#7496: CRI handles a task's exit under a 10 s deadline (`handleEventTimeout`,
//! pkg/cri/server/events.go). Deleting the task goes to the shim, which unmounts the rootfs
//! first; when that unmount outlasts the deadline (it blocks in `sync_fs` under I/O load, or
//! is held), `shimTask.delete` returns before it shuts the shim down, the retry finds the task
//! NotFound, and nothing ever shuts the shim down. The shim keeps running, with its bundle.
//!
//! So the judge is containerd itself. A shim is recognised by the base name of its argv[0]
//! (`containerd-shim`, `containerd-shim-runc-v1`, `containerd-shim-runc-v2`, plus names in
//! `FAULTLINE_SHIM_NAMES`, comma-separated); the containerd at its `-address` (reached in the
//! shim's mount namespace) is asked, in its `-namespace`, whether a task with its id exists
//! (Tasks.Get; v1's id is its workdir's base name, v2's is `-id`, for runc.v2 the pod's
//! sandbox). A shim that containerd does not know, alive past a grace period (default 30 s,
//! `FAULTLINE_SHIM_GRACE_SECS`: containerd starts a shim before creating its task, and forgets
//! the task a moment before the shim exits), is orphaned.
//!
//! When that containerd does not answer (socket gone, refused, no answer within 2 s), the
//! filesystem decides: a v1 shim whose workdir is gone, or a v2 shim whose bundle is gone, is
//! orphaned, and the evidence says it was judged that way. A bundle that exists decides
//! nothing (containerd#7496's orphans keep theirs): such a shim makes the check partial.

mod args;
mod evidence;
mod judge;
mod probe;

use std::path::Path;
use std::time::Duration;

pub use args::{ShimArgs, ShimKind};
pub use judge::{decide, Answer, Look, Verdict};
pub use probe::{look, Containerds, DEFAULT_STATE, V2_TASK_DIR};

use super::{CheckInput, DetectError, Detector, DetectorReport};
use crate::finding::Finding;
use evidence::Orphan;
use faultline_sys::proc::{Gaps, Item, ProcessEntry, Snapshot, STAT};

pub const NAME: &str = "orphan-shim";

pub const SHIM_NAMES: &[&str] = &[
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
];

/// Seconds a shim unknown to containerd may live before it counts as orphaned.
pub const GRACE_ENV: &str = "FAULTLINE_SHIM_GRACE_SECS";
/// More shim binary names, comma-separated.
pub const NAMES_ENV: &str = "FAULTLINE_SHIM_NAMES";

/// `/proc/PID/cmdline`, read by pid (see `faultline_sys::proc` for why not in the walk).
const CMDLINE: Item = Item {
    what: "the command line (/proc/PID/cmdline)",
    of: "processes",
};

/// A shim neither its containerd nor the filesystem could judge.
const UNDECIDED: Item = Item {
    what: "whether containerd still knows the task",
    of: "shims",
};

/// The detector: the shim names it looks for beyond [`SHIM_NAMES`], the grace period, and the
/// bound of each containerd call.
#[derive(Debug, Clone, Copy)]
pub struct OrphanShim {
    pub extra_names: &'static [&'static str],
    /// How long a shim may be unknown to containerd before it is reported.
    pub grace: Duration,
    /// Bound of each connect and call to a containerd.
    pub call_limit: Duration,
}

impl OrphanShim {
    pub const DEFAULT: OrphanShim = OrphanShim {
        extra_names: &[],
        grace: Duration::from_secs(30),
        call_limit: Duration::from_secs(2),
    };

    /// Every name that marks a shim: the built-in ones, `extra_names`, and
    /// `FAULTLINE_SHIM_NAMES` (comma-separated).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = SHIM_NAMES
            .iter()
            .chain(self.extra_names)
            .map(|s| s.to_string())
            .collect();
        if let Ok(extra) = std::env::var(NAMES_ENV) {
            names.extend(
                extra
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        names
    }

    /// This detector with the grace period `FAULTLINE_SHIM_GRACE_SECS` sets, if set.
    pub fn with_env(&self) -> Result<OrphanShim, DetectError> {
        self.with_grace_text(std::env::var(GRACE_ENV).ok().as_deref())
    }

    /// This detector with the grace period `text` gives (seconds, a decimal number of 0 or
    /// more), or as it is with none.
    pub fn with_grace_text(&self, text: Option<&str>) -> Result<OrphanShim, DetectError> {
        let Some(text) = text else {
            return Ok(*self);
        };
        let secs = text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| {
                DetectError::Usage(format!(
                    "{GRACE_ENV}={text:?}: not a number of seconds (0 or more)"
                ))
            })?;
        Ok(OrphanShim {
            grace: Duration::from_secs_f64(secs),
            ..*self
        })
    }

    /// Every orphaned shim in `snap`, and what could not be judged.
    pub fn report(&self, snap: &Snapshot) -> DetectorReport {
        let mut walk = Walk {
            snap,
            uptime: std::fs::read_to_string(snap.proc_root().join("uptime"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok()),
            containerds: Containerds::new(self.call_limit),
            gaps: snap.gaps().select(&[STAT]),
        };
        let names = self.names();
        // The command from stat (the executable's name cut to TASK_COMM_LEN - 1 = 15 bytes)
        // picks the candidates: reading a command line takes the target's mmap_lock (see
        // faultline_sys::proc), so it is read only for processes that run a shim binary.
        let comms: Vec<String> = names.iter().map(|n| comm_of(n)).collect();
        let mut findings = Vec::new();
        for p in snap.user_processes().filter(|p| comms.contains(&p.comm)) {
            let cmdline = snap.cmdline(p.pid);
            let Some(argv) = walk.gaps.read(CMDLINE, p.pid.into(), cmdline) else {
                continue;
            };
            let Some(shim) = ShimArgs::parse(&argv, &names) else {
                continue;
            };
            findings.extend(self.judge(&mut walk, p, &argv, &shim));
        }
        DetectorReport::new(findings, &walk.gaps)
    }

    /// The finding on one shim, if it is orphaned; an undecided one goes to the gaps.
    fn judge(
        &self,
        walk: &mut Walk,
        p: &ProcessEntry,
        argv: &[String],
        shim: &ShimArgs,
    ) -> Option<Finding> {
        let age = age(p, walk.uptime);
        if age.is_some_and(|a| a < self.grace) {
            // Not judged yet (see `Verdict::NotYet`): no question asked.
            return None;
        }
        walk.gaps.tried(UNDECIDED);
        let answer = walk.containerds.ask(walk.snap, p, shim);
        if answer == Answer::Known {
            return None;
        }
        let look = look(walk.snap, p.pid, shim);
        match decide(age, self.grace, &answer, &look) {
            Verdict::Healthy | Verdict::NotYet => None,
            Verdict::Undecided(why) => {
                walk.gaps.failed(UNDECIDED, p.pid.into(), why);
                None
            }
            Verdict::Orphan { fallback } => Some(
                Orphan {
                    p,
                    argv,
                    shim,
                    age,
                    grace: self.grace,
                    containerd: containerd_sentence(shim, &answer),
                    fallback,
                    look: &look,
                }
                .finding(walk.snap),
            ),
        }
    }

    /// [`OrphanShim::report`]'s findings on a fresh walk of `proc_root` (for a scenario; see
    /// [`DetectorReport::into_findings`]).
    pub fn scan(&self, proc_root: &Path) -> Result<Vec<Finding>, DetectError> {
        Ok(self.report(&Snapshot::take(proc_root)?).into_findings(NAME))
    }
}

/// One check's look at the shims: the processes, the connections made so far, what could not
/// be judged.
struct Walk<'a> {
    snap: &'a Snapshot,
    /// Seconds since boot, to date the shims.
    uptime: Option<f64>,
    containerds: Containerds,
    gaps: Gaps,
}

/// How long the process has been alive, from its start in ticks after boot and the uptime.
fn age(p: &ProcessEntry, uptime: Option<f64>) -> Option<Duration> {
    let tps = procfs::ticks_per_second() as f64;
    uptime.map(|up| Duration::from_secs_f64((up - p.starttime as f64 / tps).max(0.0)))
}

/// containerd's answer as the evidence gives it: "containerd at SOCK: no task ID in namespace
/// NS".
fn containerd_sentence(shim: &ShimArgs, answer: &Answer) -> String {
    let address = shim.address.as_deref().unwrap_or("?");
    let id = shim.container_id().unwrap_or_else(|| "?".into());
    let ns = shim.namespace.as_deref().unwrap_or("?");
    match answer {
        Answer::Known => format!("containerd at {address}: task {id} in namespace {ns} exists"),
        Answer::NotFound => format!("containerd at {address}: no task {id} in namespace {ns}"),
        Answer::NoAnswer(why) => format!("containerd at {address} did not answer: {why}"),
    }
}

impl Detector for OrphanShim {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "containerd shims that containerd no longer knows (a task delete outran its deadline; the shim stays forever)"
    }
    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        let this = self.with_env()?;
        Ok(this.report(&*input.processes()?))
    }
}

/// What the kernel keeps as the command of a process running executable `name`
/// (`comm`, at most 15 bytes: `containerd-shim-runc-v2` shows as `containerd-shim`).
fn comm_of(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn shims_are_picked_by_the_kernels_15_byte_command() {
        assert_eq!(comm_of("containerd-shim-runc-v2"), "containerd-shim");
        assert_eq!(comm_of("containerd-shim"), "containerd-shim");
        assert_eq!(comm_of("my-shim"), "my-shim");
    }

    use super::*;

    #[test]
    fn the_grace_period_is_seconds_and_bad_values_are_usage_errors() {
        let d = OrphanShim::DEFAULT;
        assert_eq!(
            d.with_grace_text(None).unwrap().grace,
            Duration::from_secs(30)
        );
        assert_eq!(
            d.with_grace_text(Some("2.5")).unwrap().grace,
            Duration::from_millis(2500)
        );
        assert_eq!(d.with_grace_text(Some("0")).unwrap().grace, Duration::ZERO);
        for bad in ["-1", "soon", "inf", ""] {
            let err = d.with_grace_text(Some(bad)).unwrap_err().to_string();
            assert!(err.contains(GRACE_ENV) && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn the_containerd_sentence_names_socket_task_and_namespace() {
        let shim = ShimArgs {
            binary: "containerd-shim-runc-v2".into(),
            namespace: Some("k8s.io".into()),
            id: Some("abc".into()),
            address: Some("/run/containerd/containerd.sock".into()),
            workdir: None,
        };
        assert_eq!(
            containerd_sentence(&shim, &Answer::NotFound),
            "containerd at /run/containerd/containerd.sock: no task abc in namespace k8s.io"
        );
    }
}
