//! What one detector run gives `check`: its findings, and what it measured on the way.

use serde::{Deserialize, Serialize};

use crate::finding::Finding;

/// A figure a detector measured, shown whether or not it is a problem (`htree-capacity`'s fill
/// of a healthy directory). Never a finding: it does not change `check`'s exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub detector: String,
    /// What was measured (a path, a device).
    pub subject: String,
    /// One line for people: `htree index 0.2% used (399 of ~179227 directory blocks, ...)`.
    pub summary: String,
    /// The figures, for programs.
    #[serde(default)]
    pub values: serde_json::Value,
}

/// One detector's answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub measurements: Vec<Measurement>,
}

impl From<Vec<Finding>> for Report {
    fn from(findings: Vec<Finding>) -> Self {
        Report {
            findings,
            measurements: Vec::new(),
        }
    }
}
