//! What host and guest say to each other. The host puts a [`GuestRequest`] into the
//! initramfs; the guest prints progress markers on its console (ttyS0, which also carries
//! the kernel's messages) and writes its report, framed, on a second serial port (ttyS1)
//! that nothing else writes to, so kernel messages can never interleave with the JSON.

use std::collections::BTreeMap;

use faultline_core::RunReport;
use serde::{Deserialize, Serialize};

/// Printed on the console by guest init as its first act: `<marker> uptime=<secs>`.
pub const INIT_MARKER: &str = "faultline-guest: init reached";
/// Printed when the guest's init is about to power off.
pub const POWEROFF_MARKER: &str = "faultline-guest: powering off";
pub const REPORT_BEGIN: &str = "FAULTLINE-REPORT-BEGIN";
pub const REPORT_END: &str = "FAULTLINE-REPORT-END";
/// The guest's report port.
pub const REPORT_TTY: &str = "/dev/ttyS1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestRequest {
    /// Scenario names to run, in order.
    pub scenarios: Vec<String>,
    /// Scenario options (`-o KEY=VALUE`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Log filter for the guest's processes.
    #[serde(default)]
    pub log: String,
    /// Keep artifacts of passing scenarios (inside the guest; they reach the console log).
    #[serde(default)]
    pub keep: bool,
    /// `faultline run --timeout`: overrides each scenario's own limit in the guest too.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The container runtime under test; its binaries are in the initramfs at these paths.
    #[serde(default)]
    pub runtime: Option<faultline_core::runtime_under_test::RuntimeUnderTest>,
}

impl GuestRequest {
    /// No scenarios: only boot, report, power off (to measure boot time).
    pub fn boot_only(&self) -> bool {
        self.scenarios.is_empty()
    }
}

/// What the guest sends back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestReport {
    pub report: RunReport,
    /// `uname -r` in the guest.
    pub kernel_release: String,
    /// Time since the guest kernel booted when init started (CLOCK_BOOTTIME), in
    /// milliseconds.
    pub init_uptime_ms: u64,
    /// Modules init loaded, and those that failed with the error.
    #[serde(default)]
    pub modules_loaded: Vec<String>,
    #[serde(default)]
    pub module_errors: Vec<String>,
}

pub fn frame(report: &GuestReport) -> String {
    format!(
        "\n{REPORT_BEGIN}\n{}\n{REPORT_END}\n",
        serde_json::to_string(report).expect("guest report serialises")
    )
}

/// The report inside what the report port wrote, if it is complete.
pub fn unframe(text: &str) -> Option<Result<GuestReport, serde_json::Error>> {
    let start = text.find(REPORT_BEGIN)? + REPORT_BEGIN.len();
    let end = start + text[start..].find(REPORT_END)?;
    Some(serde_json::from_str(text[start..end].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_is_none() {
        let r = GuestReport {
            report: RunReport {
                runtime: None,
                kernel: "6.1.0-56-cloud-amd64".into(),
                backend: "vm".into(),
                scenarios: vec![],
            },
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            init_uptime_ms: 1210,
            modules_loaded: vec!["sunrpc".into()],
            module_errors: vec![],
        };
        let text = format!("garbage\r\n{}", frame(&r));
        let back = unframe(&text).unwrap().unwrap();
        assert_eq!(back.kernel_release, r.kernel_release);
        assert_eq!(back.init_uptime_ms, 1210);
        let cut = &text[..text.len() - 10];
        assert!(unframe(cut).is_none());
        assert!(
            unframe("FAULTLINE-REPORT-BEGIN\n{oops\nFAULTLINE-REPORT-END")
                .unwrap()
                .is_err()
        );
    }
}
