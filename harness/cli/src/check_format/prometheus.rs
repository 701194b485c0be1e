//! `check --format prometheus` and `--textfile`: the Prometheus text exposition format
//! (https://prometheus.io/docs/instrumenting/exposition_formats/), one series per detector
//! that ran or failed. Detectors that did not apply here are left out: they did not look, and
//! "not up" would page someone for a node without the thing they check.
//!
//! - `faultline_findings{detector,severity}`: problems found (both severities always given,
//!   so a cleared problem reads 0 rather than disappearing); none for a detector that failed,
//!   whose count is unknown.
//! - `faultline_detector_up{detector}`: 1 when the detector looked everywhere it should
//!   have, 0 when it failed or its answer is partial.
//! - `faultline_check_duration_seconds{detector}`: how long it took.

use std::fmt::Write as _;

use faultline_detect::Severity;

use super::{Checked, Outcome};

const SEVERITIES: [(Severity, &str); 2] = [
    (Severity::Critical, "critical"),
    (Severity::Warning, "warning"),
];

pub fn exposition(outcomes: &[Checked]) -> String {
    let ran: Vec<&Checked> = outcomes
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::NotRun(_)))
        .collect();
    let mut out = String::new();
    header(
        &mut out,
        "faultline_findings",
        "Problems faultline check found on this node, by detector and severity.",
    );
    for c in &ran {
        let Outcome::Ran(r) = &c.outcome else {
            continue;
        };
        for (severity, label) in SEVERITIES {
            let n = r.findings.iter().filter(|f| f.severity == severity).count();
            let _ = writeln!(
                out,
                "faultline_findings{{detector=\"{}\",severity=\"{label}\"}} {n}",
                escape(c.name)
            );
        }
    }
    header(
        &mut out,
        "faultline_detector_up",
        "1 if the detector looked everywhere it should have, 0 if it failed or its answer is partial.",
    );
    for c in &ran {
        let up = u8::from(!c.incomplete());
        let _ = writeln!(
            out,
            "faultline_detector_up{{detector=\"{}\"}} {up}",
            escape(c.name)
        );
    }
    header(
        &mut out,
        "faultline_check_duration_seconds",
        "How long the detector took, in seconds.",
    );
    for c in &ran {
        let _ = writeln!(
            out,
            "faultline_check_duration_seconds{{detector=\"{}\"}} {}",
            escape(c.name),
            c.elapsed.as_secs_f64()
        );
    }
    out
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// A label value: backslash, double quote and line feed escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use faultline_detect::{DetectorReport, Finding, Severity};

    use super::*;

    fn checked(name: &'static str, outcome: Outcome) -> Checked {
        Checked {
            name,
            outcome,
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn each_detector_that_ran_has_its_series() {
        let f = |s| Finding::new("stale-bind", s, "/x", "m", "r");
        let out = exposition(&[
            checked(
                "stale-bind",
                Outcome::Ran(DetectorReport::complete(vec![
                    f(Severity::Critical),
                    f(Severity::Critical),
                ])),
            ),
            checked(
                "dead-fuse",
                Outcome::Ran(DetectorReport {
                    unreadable: vec!["could not read".into()],
                    ..DetectorReport::default()
                }),
            ),
            checked("htree-capacity", Outcome::Failed("not ext4".into())),
            checked("hung-task", Outcome::NotRun("no".into())),
        ]);
        for want in [
            "faultline_findings{detector=\"stale-bind\",severity=\"critical\"} 2\n",
            "faultline_findings{detector=\"stale-bind\",severity=\"warning\"} 0\n",
            "faultline_findings{detector=\"dead-fuse\",severity=\"critical\"} 0\n",
            "faultline_detector_up{detector=\"stale-bind\"} 1\n",
            "faultline_detector_up{detector=\"dead-fuse\"} 0\n",
            "faultline_detector_up{detector=\"htree-capacity\"} 0\n",
            "faultline_check_duration_seconds{detector=\"htree-capacity\"} 1.5\n",
            "# TYPE faultline_detector_up gauge\n",
        ] {
            assert!(out.contains(want), "no {want:?} in\n{out}");
        }
        assert!(!out.contains("htree-capacity\",severity"), "{out}");
        assert!(!out.contains("hung-task"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
