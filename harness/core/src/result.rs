//! The result document `run --json` prints (its shape is a contract: see the README's
//! "Reading results").

use serde::{Deserialize, Serialize};

use faultline_detect::Finding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    pub variant: String,
    pub reproduced: bool,
    pub detected: bool,
    /// "reproduced" or "clean"
    pub expected: String,
    #[serde(default)]
    pub observed: serde_json::Value,
    /// Why the variant did not run here (the runtime under test lacks what it needs); a
    /// skipped variant is neither a pass nor a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub status: Status,
    #[serde(default)]
    pub reason: String,
    pub duration_ms: u64,
    #[serde(default)]
    pub variants: Vec<VariantResult>,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl ScenarioResult {
    pub fn without_variants(name: &str, status: Status, reason: impl Into<String>) -> Self {
        ScenarioResult {
            name: name.to_string(),
            status,
            reason: reason.into(),
            duration_ms: 0,
            variants: Vec::new(),
            findings: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub kernel: String,
    /// "namespace" or "vm"
    pub backend: String,
    /// The container runtime the runtime scenarios ran on (absent when none was chosen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::runtime_under_test::RuntimeVersions>,
    pub scenarios: Vec<ScenarioResult>,
}
