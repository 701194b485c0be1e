//! The finding: what a detector reports, on a live node or inside a scenario.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub detector: String,
    pub severity: Severity,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub message: String,
    #[serde(default)]
    pub evidence: serde_json::Value,
    pub remedy: String,
}

impl Finding {
    pub fn new(
        detector: &str,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Finding {
            detector: detector.to_string(),
            severity,
            subject: subject.into(),
            pid: None,
            message: message.into(),
            evidence: serde_json::Value::Null,
            remedy: remedy.into(),
        }
    }

    pub fn with_pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }

    pub fn with_evidence(mut self, evidence: serde_json::Value) -> Self {
        self.evidence = evidence;
        self
    }
}
