//! Tables for people.

use std::fmt::Write as _;

use crate::result::RunReport;
use faultline_detect::Finding;

/// `name  status  time  reason`, one scenario a line, then the findings.
pub fn run_table(report: &RunReport) -> String {
    let width = report
        .scenarios
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "kernel {}, backend {}\n{:width$}  {:6}  {:>8}  REASON\n",
        report.kernel, report.backend, "SCENARIO", "STATUS", "TIME"
    );
    for s in &report.scenarios {
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:>7.1}s  {}",
            s.name,
            s.status.as_str(),
            s.duration_ms as f64 / 1000.0,
            s.reason
        );
        for v in &s.variants {
            if let Some(why) = &v.skipped {
                let _ = writeln!(out, "{:width$}    {:18} skipped: {why}", "", v.variant);
                continue;
            }
            let _ = writeln!(
                out,
                "{:width$}    {:18} expected {:10} reproduced {:5} detected {}",
                "", v.variant, v.expected, v.reproduced, v.detected
            );
        }
    }
    out
}

pub fn findings(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let pid = f.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:8} {:16} {}{}\n         {}\n         remedy: {}",
            format!("{:?}", f.severity).to_lowercase(),
            f.detector,
            f.subject,
            pid,
            f.message,
            f.remedy
        );
    }
    out
}
