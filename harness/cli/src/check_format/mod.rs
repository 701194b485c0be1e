//! The machine-facing forms of `faultline check`'s answer: one line for node-problem-detector
//! (`--format npd`) and the Prometheus text exposition format (`--format prometheus`,
//! `--textfile DIR`). The text and JSON forms stay in `check.rs`.

pub mod npd;
pub mod prometheus;
pub mod textfile;

use std::time::Duration;

use faultline_detect::DetectorReport;

/// `check --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people (findings, measurements, what could not be looked at).
    Text,
    /// `{"findings": [...], "detectors": [...]}` (also `--json`).
    Json,
    /// One line of at most 80 bytes for node-problem-detector's custom plugin monitor.
    Npd,
    /// Prometheus text exposition format, one series per detector.
    Prometheus,
}

/// What became of one detector.
pub enum Outcome {
    NotRun(String),
    Ran(DetectorReport),
    /// It failed; the other detectors' answers still stand.
    Failed(String),
}

/// One detector's outcome and how long it took.
pub struct Checked {
    pub name: &'static str,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

impl Checked {
    /// Whether the detector ran but could not give a whole answer (it failed, or was partial).
    pub fn incomplete(&self) -> bool {
        match &self.outcome {
            Outcome::Ran(r) => r.is_partial(),
            Outcome::Failed(_) => true,
            Outcome::NotRun(_) => false,
        }
    }
}
