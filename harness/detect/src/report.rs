//! What a detector measured on the way, beside its findings (see `DetectorReport`).

use serde::{Deserialize, Serialize};

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
