//! Detectors: the product that runs on live nodes (`faultline check`). Scenarios prove them;
//! a detector never imports a scenario. This crate depends on `faultline-sys` only, so the
//! live-node check links no FUSE daemon, injector, runner, guard, scenario or VM code
//! (`ci/test` checks that with `cargo tree`).

pub mod ext4_index_full;
pub mod htree_capacity;
pub mod kernel_log;
pub mod nfs_lock_manager;

use std::path::PathBuf;
use std::time::Duration;

pub mod hung_task;
pub mod orphan_shim;

pub mod finding;

pub use finding::{Finding, Severity};

pub mod report;

pub use report::{Measurement, Report};

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
}

impl Default for CheckInput {
    fn default() -> Self {
        CheckInput {
            kmsg_file: None,
            since: None,
            paths: Vec::new(),
            proc_root: PathBuf::from("/proc"),
        }
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
    fn check(&self, input: &CheckInput) -> Result<Vec<Finding>, DetectError>;
    /// [`Detector::check`] plus what the detector measured on the way (shown, never a problem).
    fn report(&self, input: &CheckInput) -> Result<Report, DetectError> {
        self.check(input).map(Report::from)
    }
    /// Whether this detector reads the kernel log (`check` copies a `--kmsg-file` stream once
    /// when more than one does).
    fn reads_kernel_log(&self) -> bool {
        false
    }
}

/// Every detector, in the order DESIGN.md lists them.
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
