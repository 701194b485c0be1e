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
pub mod verdict;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::requirement::first_unmet;
use crate::result::{RunReport, ScenarioResult, Status, VariantResult};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            options: BTreeMap::new(),
            keep: false,
            artifacts_root: default_artifacts_root(),
            timeout: None,
            log: "warn".into(),
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
    pub artifacts: PathBuf,
    pub log: String,
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
    first_unmet(&s.requirements())
}

/// Runs one scenario in its own namespaces and returns its result; never panics and never
/// outlives the scenario's deadline.
pub fn run_scenario(s: &dyn Scenario, opts: &RunOptions) -> ScenarioResult {
    let start = Instant::now();
    let mut result = match skip_reason(s) {
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
pub fn run_all_reporting(
    scenarios: &[&dyn Scenario],
    opts: &RunOptions,
    mut progress: impl FnMut(&dyn Scenario, Option<&ScenarioResult>),
) -> RunReport {
    RunReport {
        kernel: KernelVersion::running().release,
        backend: if in_vm_guest() { "vm" } else { "namespace" }.into(),
        scenarios: scenarios
            .iter()
            .map(|s| {
                progress(*s, None);
                let r = run_scenario(*s, opts);
                progress(*s, Some(&r));
                r
            })
            .collect(),
    }
}

fn run_in_namespaces(s: &dyn Scenario, opts: &RunOptions) -> ScenarioResult {
    let args = ChildArgs {
        scenario: s.name().to_string(),
        options: opts.options.clone(),
        keep: opts.keep,
        artifacts: opts.artifacts_root.join(s.name()),
        log: opts.log.clone(),
    };
    let error = |reason: String| ScenarioResult::without_variants(s.name(), Status::Error, reason);
    let mut cmd = child::NS_INIT.command();
    cmd.arg(serde_json::to_string(&args).expect("child args serialise"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    child::unshare_before_exec(&mut cmd);
    let mut group = match ChildGroup::spawn(&format!("scenario {}", s.name()), &mut cmd) {
        Ok(g) => g.with_grace(Duration::from_millis(200)),
        Err(e) => return error(format!("failed to start the scenario process: {e}")),
    };
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
    let start = Instant::now();
    let mut variants = Vec::new();
    let mut done = None;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => match serde_json::from_str::<ChildLine>(&line) {
                Ok(ChildLine::Variant(v)) => variants.push(*v),
                Ok(ChildLine::Done(r)) => done = Some(*r),
                Err(e) => tracing::warn!("unreadable line from scenario process ({e}): {line}"),
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() >= deadline {
                    timed_out = true;
                    break;
                }
            }
        }
    }
    if timed_out {
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
    if let Some(r) = done {
        return r;
    }
    let mut r = if timed_out {
        error(format!(
            "timed out after {}s; killed its namespace ({} of its variants had finished)",
            deadline.as_secs(),
            variants.len()
        ))
    } else {
        error(format!(
            "scenario process ended without a result ({}); its stderr is above",
            match status {
                Ok(Some(st)) => st.to_string(),
                Ok(None) => "status unknown".into(),
                Err(e) => format!("failed to reap it: {e}"),
            }
        ))
    };
    r.variants = variants;
    r
}
