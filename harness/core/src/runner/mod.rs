//! The runner. On the host it checks requirements, then starts each scenario in a child
//! process tree that is crash-safe by construction:
//!
//! ```text
//! faultline run ──► ns-init (new mount ns; its children get a new pid ns; dies with us)
//!                     └─► scenario = pid 1 of the new pid ns (dies with ns-init)
//!                           / made rprivate, fresh /proc, scratch tmpfs on /tmp
//! ```
//!
//! Killing `faultline run` at any moment kills ns-init (PDEATHSIG), which kills pid 1, which
//! makes the kernel kill every process of the pid namespace; the last process leaving the
//! mount namespace releases its mounts, and loop devices attached with autoclear follow.
//! Results come back as JSON lines on the child's stdout: one per finished variant, then the
//! scenario's result, so a timeout still reports the variants that finished.

pub mod artifacts;
pub mod child;
pub mod interrupt;
pub mod verdict;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::requirement::first_unmet_with;
use crate::result::{RunReport, ScenarioResult, Status, VariantResult};
use crate::runtime_under_test::RuntimeUnderTest;
use crate::scenario::Scenario;
use faultline_sys::kernel::KernelVersion;
use faultline_sys::process::ChildGroup;

/// The scenario registry of the binary we run in; set by [`init`].
pub type Registry = fn() -> Vec<&'static dyn Scenario>;
static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Call first in `main` of every binary that can run scenarios, before dispatching re-exec
/// entries: the `scenario` entry looks its scenario up here.
pub fn set_registry(registry: Registry) {
    let _ = REGISTRY.set(registry);
}

pub fn registry() -> Vec<&'static dyn Scenario> {
    REGISTRY.get().map(|r| r()).unwrap_or_default()
}

pub use crate::requirement::{in_vm_guest, GUEST_ENV};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scenario options from the command line (`copier`, ...).
    pub options: BTreeMap<String, String>,
    /// Keep artifacts of passing scenarios too.
    pub keep: bool,
    /// Where `<scenario>/` artifact directories go.
    pub artifacts_root: PathBuf,
    /// Overrides each scenario's own timeout.
    pub timeout: Option<Duration>,
    /// Log filter handed to the scenario processes (`warn`, `info`, `debug`).
    pub log: String,
    /// The container runtime the runtime scenarios drive (`--runtime`); `None` when none
    /// was resolved, and those scenarios skip saying so.
    pub runtime: Option<RuntimeUnderTest>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            options: BTreeMap::new(),
            keep: false,
            artifacts_root: default_artifacts_root(),
            timeout: None,
            log: "warn".into(),
            runtime: None,
        }
    }
}

/// `target/faultline` of the workspace when run from it (cargo sets CARGO_TARGET_DIR or we
/// find `target/` upwards from the current directory), else `./target/faultline`.
pub fn default_artifacts_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("faultline");
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in cwd.ancestors() {
        if dir.join("target").is_dir() && dir.join("Cargo.toml").is_file() {
            return dir.join("target/faultline");
        }
    }
    cwd.join("target/faultline")
}

/// What the host hands the scenario process (one JSON argument).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildArgs {
    pub scenario: String,
    pub options: BTreeMap<String, String>,
    pub keep: bool,
    /// Bytes, not a string: a path on Linux need not be UTF-8.
    #[serde(with = "path_bytes")]
    pub artifacts: PathBuf,
    pub log: String,
    #[serde(default)]
    pub runtime: Option<RuntimeUnderTest>,
}

/// A path as the array of its bytes in JSON (serde's own form of `PathBuf` refuses
/// non-UTF-8 paths).
mod path_bytes {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(path.as_os_str().as_bytes())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Vec::<u8>::deserialize(d).map(|b| PathBuf::from(std::ffi::OsString::from_vec(b)))
    }
}

/// One line of the scenario process's report.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChildLine {
    Variant(Box<VariantResult>),
    Done(Box<ScenarioResult>),
}

/// Why a scenario cannot run here, or `None`.
pub fn skip_reason(s: &dyn Scenario) -> Option<String> {
    skip_reason_with(s, None)
}

/// [`skip_reason`] for a run whose runtime under test is `runtime`.
pub fn skip_reason_with(s: &dyn Scenario, runtime: Option<&RuntimeUnderTest>) -> Option<String> {
    first_unmet_with(&s.requirements(), runtime)
}

/// Runs one scenario in its own namespaces and returns its result; never panics and never
/// outlives the scenario's deadline.
pub fn run_scenario(s: &dyn Scenario, opts: &RunOptions) -> ScenarioResult {
    let start = Instant::now();
    let mut result = match skip_reason_with(s, opts.runtime.as_ref()) {
        Some(reason) => ScenarioResult::without_variants(s.name(), Status::Skip, reason),
        None => run_in_namespaces(s, opts),
    };
    result.duration_ms = start.elapsed().as_millis() as u64;
    result
}

pub fn run_all(scenarios: &[&dyn Scenario], opts: &RunOptions) -> RunReport {
    run_all_reporting(scenarios, opts, |_, _| {})
}

/// [`run_all`], calling `progress` before each scenario (`None`) and after it (its result).
/// After [`interrupt::request`] no further scenario starts: the report holds the scenarios
/// that finished and the one that was interrupted.
pub fn run_all_reporting(
    scenarios: &[&dyn Scenario],
    opts: &RunOptions,
    mut progress: impl FnMut(&dyn Scenario, Option<&ScenarioResult>),
) -> RunReport {
    let mut results = Vec::new();
    for s in scenarios {
        if interrupt::requested().is_some() {
            break;
        }
        progress(*s, None);
        let r = run_scenario(*s, opts);
        progress(*s, Some(&r));
        results.push(r);
    }
    RunReport {
        kernel: KernelVersion::running().release,
        backend: if in_vm_guest() { "vm" } else { "namespace" }.into(),
        runtime: opts.runtime.as_ref().map(|r| r.versions.clone()),
        scenarios: results,
    }
}

fn run_in_namespaces(s: &dyn Scenario, opts: &RunOptions) -> ScenarioResult {
    let args = ChildArgs {
        scenario: s.name().to_string(),
        options: opts.options.clone(),
        keep: opts.keep,
        artifacts: opts.artifacts_root.join(s.name()),
        log: opts.log.clone(),
        runtime: opts.runtime.clone(),
    };
    let error = |reason: String| ScenarioResult::without_variants(s.name(), Status::Error, reason);
    // Files of an earlier run must not sit beside this run's result.
    if let Err(e) = artifacts::clear(&args.artifacts) {
        return error(format!(
            "failed to clear the old artifacts in {}: {e}",
            args.artifacts.display()
        ));
    }
    let child_args = match serde_json::to_string(&args) {
        Ok(a) => a,
        Err(e) => return error(format!("failed to encode the scenario's arguments: {e}")),
    };
    let mut cmd = child::NS_INIT.command();
    cmd.arg(child_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    child::unshare_before_exec(&mut cmd);
    let mut group = match ChildGroup::spawn(&format!("scenario {}", s.name()), &mut cmd) {
        Ok(g) => g.with_grace(Duration::from_millis(200)),
        Err(e) => return error(format!("failed to start the scenario process: {e}")),
    };
    let running = interrupt::Running::start(group.pid());
    let stdout = group
        .child_mut()
        .and_then(|c| c.stdout.take())
        .expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = opts.timeout.unwrap_or_else(|| s.timeout());
    let heard = listen(&rx, deadline);
    if heard.end == End::TimedOut {
        // The scenario process is ns-init's only child; record it before it is killed.
        let init = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", group.pid()))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok());
        if let Some(init) = init {
            if let Err(e) = artifacts::write_on_timeout(&args.artifacts, s.name(), init) {
                tracing::warn!("failed to keep the artifacts of {}: {e}", s.name());
            }
        }
    }
    let status = group.teardown();
    drop(running);
    if let Some(r) = heard.done {
        return r;
    }
    let finished = heard.variants.len();
    let mut r = match (heard.end, interrupt::requested()) {
        (End::TimedOut, _) => error(format!(
            "timed out after {}s; killed its namespace ({finished} of its variants had finished)",
            deadline.as_secs(),
        )),
        (_, Some(signal)) => error(format!(
            "interrupted by {}; killed its namespace ({finished} of its variants had finished)",
            signal.as_str()
        )),
        (_, None) => error(format!(
            "scenario process ended without a result ({}); its stderr is above",
            match status {
                Ok(Some(st)) => st.to_string(),
                Ok(None) => "status unknown".into(),
                Err(e) => format!("failed to reap it: {e}"),
            }
        )),
    };
    r.variants = heard.variants;
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The scenario process closed its report (it finished, or was killed).
    Closed,
    TimedOut,
    Interrupted,
}

/// What the scenario process reported before its report ended.
struct Heard {
    variants: Vec<VariantResult>,
    done: Option<ScenarioResult>,
    end: End,
}

/// Reads the scenario's report lines until it closes them, `deadline` passes or the run is
/// interrupted. The wait is cut in short slices so an interrupt is noticed even if some
/// process still holds the report pipe open.
fn listen(rx: &mpsc::Receiver<String>, deadline: Duration) -> Heard {
    let start = Instant::now();
    let mut heard = Heard {
        variants: Vec::new(),
        done: None,
        end: End::Closed,
    };
    loop {
        if interrupt::requested().is_some() {
            heard.end = End::Interrupted;
            // What is already in the pipe still counts.
            while let Ok(line) = rx.try_recv() {
                take_line(&mut heard, &line);
            }
            return heard;
        }
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => take_line(&mut heard, &line),
            Err(mpsc::RecvTimeoutError::Disconnected) => return heard,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() >= deadline {
                    heard.end = End::TimedOut;
                    return heard;
                }
            }
        }
    }
}

fn take_line(heard: &mut Heard, line: &str) {
    match serde_json::from_str::<ChildLine>(line) {
        Ok(ChildLine::Variant(v)) => heard.variants.push(*v),
        Ok(ChildLine::Done(r)) => heard.done = Some(*r),
        Err(e) => tracing::warn!("unreadable line from scenario process ({e}): {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn child_args_carry_a_non_utf8_artifacts_path() {
        let artifacts = PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/art-\xff/s"));
        let args = ChildArgs {
            scenario: "s".into(),
            options: BTreeMap::new(),
            keep: false,
            artifacts: artifacts.clone(),
            log: "warn".into(),
            runtime: None,
        };
        let json = serde_json::to_string(&args).unwrap();
        let back: ChildArgs = serde_json::from_str(&json).unwrap();
        assert_eq!(back.artifacts, artifacts);
    }

    #[test]
    fn clearing_removes_an_earlier_run_and_kept_sees_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("s");
        artifacts::clear(&scenario).unwrap();
        std::fs::create_dir_all(scenario.join("sub")).unwrap();
        std::fs::write(scenario.join("result.json"), "{}").unwrap();
        assert!(artifacts::kept(&scenario));
        artifacts::clear(&scenario).unwrap();
        assert!(!scenario.exists() && !artifacts::kept(&scenario));
    }
}
