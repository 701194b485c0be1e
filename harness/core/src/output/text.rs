//! Tables for people.

use std::fmt::Write as _;

use crate::result::RunReport;
use faultline_detect::Finding;

/// What the run ran on: `kernel 6.1.0-56-cloud-amd64, backend vm, runtime containerd
/// 1.6.20~ds1-1+deb12u3 + runc 1.1.5+ds1` (the runtime where one was resolved).
pub fn run_heading(report: &RunReport) -> String {
    let mut out = format!("kernel {}, backend {}", report.kernel, report.backend);
    if let Some(rt) = &report.runtime {
        let _ = write!(out, ", runtime {}", rt.full());
    }
    out
}

/// The heading, then `name  status  time  reason`, one scenario a line, with its variants.
pub fn run_table(report: &RunReport) -> String {
    let width = report
        .scenarios
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{}\n{:width$}  {:6}  {:>8}  REASON\n",
        run_heading(report),
        "SCENARIO",
        "STATUS",
        "TIME"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_under_test::RuntimeVersions;

    #[test]
    fn the_heading_names_the_runtime_when_there_is_one() {
        let mut r = RunReport {
            kernel: "6.1.0-56-cloud-amd64".into(),
            backend: "vm".into(),
            runtime: None,
            scenarios: vec![],
        };
        assert_eq!(run_heading(&r), "kernel 6.1.0-56-cloud-amd64, backend vm");
        r.runtime = Some(RuntimeVersions {
            containerd:
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3".into(),
            oci: "runc version 1.1.5+ds1".into(),
        });
        let table = run_table(&r);
        assert_eq!(
            table.lines().next(),
            Some("kernel 6.1.0-56-cloud-amd64, backend vm, runtime containerd 1.6.20~ds1-1+deb12u3 + runc 1.1.5+ds1")
        );
    }
}
