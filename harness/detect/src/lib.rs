//! Detectors: the product that runs on live nodes (`faultline check`). Scenarios prove them;
//! a detector never imports a scenario. This crate depends on `faultline-sys` only, so the
//! live-node check links no FUSE daemon, injector, runner, guard, scenario or VM code
//! (`ci/test` checks that with `cargo tree`).

pub mod ext4_index_full;
mod ext4_remedy;
pub mod htree_capacity;
pub mod kernel_log;
pub mod nfs_lock_manager;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use faultline_sys::proc::{Gaps, Snapshot, SnapshotError};

pub mod hung_task;
pub mod orphan_shim;

pub mod finding;

pub use finding::{Finding, Severity};

pub mod report;

pub use report::Measurement;

pub mod busy_binary;
pub mod dead_fuse;
pub mod stale_bind;

/// What `faultline check` hands every detector.
#[derive(Debug, Clone)]
pub struct CheckInput {
    /// A saved kernel log (`dmesg`, `dmesg -T`, `journalctl -k`) instead of live /dev/kmsg;
    /// `-` is standard input, and pipes are read as streams.
    pub kmsg_file: Option<PathBuf>,
    /// `--since`: only kernel-log lines this recent count (where the log carries times).
    pub since: Option<Duration>,
    /// Directories named with `--path`.
    pub paths: Vec<PathBuf>,
    /// Where procfs is mounted (tests point it elsewhere only for unit-level parsing).
    pub proc_root: PathBuf,
    /// The one walk of `proc_root` that every detector of this run shares.
    pub processes: OnceLock<Arc<Snapshot>>,
}

impl Default for CheckInput {
    fn default() -> Self {
        CheckInput {
            kmsg_file: None,
            since: None,
            paths: Vec::new(),
            proc_root: PathBuf::from("/proc"),
            processes: OnceLock::new(),
        }
    }
}

impl CheckInput {
    /// The processes under `proc_root`, walked by the first detector that asks.
    pub fn processes(&self) -> Result<Arc<Snapshot>, DetectError> {
        if let Some(s) = self.processes.get() {
            return Ok(s.clone());
        }
        let snap = Arc::new(Snapshot::take(&self.proc_root)?);
        Ok(self.processes.get_or_init(|| snap).clone())
    }
}

/// What one detector found, and what it could not look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorReport {
    pub findings: Vec<Finding>,
    /// What it could not read, one sentence each ("could not read the mount namespace
    /// (/proc/PID/ns/mnt) of 37 of 212 processes: permission denied (run as root)"). Not
    /// empty means the answer is partial: no finding there is not "nothing wrong".
    pub unreadable: Vec<String>,
    /// Figures measured on the way (`htree-capacity`'s fill of a healthy directory).
    pub measurements: Vec<Measurement>,
}

impl DetectorReport {
    /// Findings from a look that read everything it needed.
    pub fn complete(findings: Vec<Finding>) -> DetectorReport {
        DetectorReport {
            findings,
            unreadable: Vec::new(),
            measurements: Vec::new(),
        }
    }

    /// Findings, partial when `gaps` holds a failed read.
    pub fn new(findings: Vec<Finding>, gaps: &Gaps) -> DetectorReport {
        DetectorReport {
            findings,
            unreadable: gaps.messages(),
            measurements: Vec::new(),
        }
    }

    pub fn is_partial(&self) -> bool {
        !self.unreadable.is_empty()
    }

    /// The findings alone, for a scenario: it runs as root in its own pid namespace, where a
    /// gap means a process exited oddly, so the gaps are logged rather than returned.
    pub fn into_findings(self, detector: &str) -> Vec<Finding> {
        for u in &self.unreadable {
            tracing::warn!("{detector}: partial: {u}");
        }
        self.findings
    }
}

impl From<Vec<Finding>> for DetectorReport {
    fn from(findings: Vec<Finding>) -> Self {
        DetectorReport::complete(findings)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("failed to read {what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Processes(#[from] SnapshotError),
}

pub trait Detector: Sync {
    fn name(&self) -> &'static str;
    fn summary(&self) -> &'static str;
    /// `Err(reason)` when this detector cannot run on this host (or with this input); `check`
    /// with no names skips it then, and names it with the reason.
    fn applicable(&self, input: &CheckInput) -> Result<(), String> {
        let _ = input;
        Ok(())
    }
    /// What the detector finds. A detector that could not read everything it should have
    /// (another user's processes, a kernel stack without root) says so in the report's
    /// `unreadable`, and still returns what it found; what it measured on the way goes in
    /// `measurements` (shown, never a problem).
    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError>;
    /// Whether this detector reads the kernel log (`check` copies a `--kmsg-file` stream once
    /// when more than one does).
    fn reads_kernel_log(&self) -> bool {
        false
    }
}

/// Every detector, in the order the README lists them.
pub fn all() -> Vec<&'static dyn Detector> {
    vec![
        &busy_binary::BusyBinary,
        &stale_bind::StaleBind,
        &dead_fuse::DeadFuse,
        &nfs_lock_manager::NfsLockManager,
        &ext4_index_full::Ext4IndexFull,
        &htree_capacity::HtreeCapacity,
        &orphan_shim::OrphanShim::DEFAULT,
        &hung_task::HungTask::DEFAULT,
    ]
}

pub fn by_name(name: &str) -> Option<&'static dyn Detector> {
    all().into_iter().find(|d| d.name() == name)
}

/// The re-exec entry points this crate owns: the dead-fuse probe process.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&dead_fuse::probe::ENTRY];
