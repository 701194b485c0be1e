//! Turning variant outcomes into a scenario status. A scenario passes when every variant
//! behaved as expected for this kernel AND the scenario's own detectors reported a finding
//! exactly where the bug reproduced. Only the detectors the scenario declares count: a
//! finding from any other detector fails the variant, so the wrong detector can neither
//! satisfy a reproduced variant nor hide behind a clean one.

use crate::result::{Status, VariantResult};
use crate::scenario::{Expectation, Variant, VariantOutcome};
use faultline_detect::Finding;

/// One finished variant as the verdict sees it.
#[derive(Debug, Clone)]
pub struct Judged {
    pub result: VariantResult,
    /// Detectors that reported on this variant without being among the scenario's, sorted.
    pub undeclared: Vec<String>,
    /// Every finding of the variant, from declared detectors or not.
    pub findings: Vec<Finding>,
}

impl Judged {
    /// `detected` counts only the findings of the `declared` detectors.
    pub fn new(variant: &Variant, outcome: VariantOutcome, declared: &[&str]) -> Judged {
        let is_declared = |f: &Finding| declared.contains(&f.detector.as_str());
        let mut undeclared: Vec<String> = outcome
            .findings
            .iter()
            .filter(|f| !is_declared(f))
            .map(|f| f.detector.clone())
            .collect();
        undeclared.sort();
        undeclared.dedup();
        Judged {
            result: VariantResult {
                variant: variant.name.to_string(),
                reproduced: outcome.reproduced,
                detected: outcome.findings.iter().any(is_declared),
                expected: variant.expected.as_str().to_string(),
                observed: outcome.observed,
                skipped: None,
            },
            undeclared,
            findings: outcome.findings,
        }
    }

    /// A variant that did not run here, and why ([`crate::scenario::VariantSkipped`]).
    pub fn skipped(variant: &Variant, reason: String) -> Judged {
        Judged {
            result: VariantResult {
                variant: variant.name.to_string(),
                reproduced: false,
                detected: false,
                expected: variant.expected.as_str().to_string(),
                observed: serde_json::Value::Null,
                skipped: Some(reason),
            },
            undeclared: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// What went wrong with this variant, or `None` when it behaved as expected (or was
    /// skipped: it did nothing that could go wrong).
    pub fn problem(&self) -> Option<String> {
        let v = &self.result;
        if v.skipped.is_some() {
            return None;
        }
        let expected_reproduced = v.expected == Expectation::Reproduced.as_str();
        let mut problems = Vec::new();
        match (expected_reproduced, v.reproduced) {
            (true, false) => problems.push("bug did not reproduce".to_string()),
            (false, true) => problems.push("bug reproduced where it must not".to_string()),
            _ => {}
        }
        match (v.reproduced, v.detected) {
            (true, false) => problems.push("detector missed it".to_string()),
            (false, true) => problems.push("detector reported a false positive".to_string()),
            _ => {}
        }
        if !self.undeclared.is_empty() {
            problems.push(format!(
                "finding from a detector the scenario does not declare: {}",
                self.undeclared.join(", ")
            ));
        }
        (!problems.is_empty()).then(|| format!("{}: {}", v.variant, problems.join(", ")))
    }
}

/// Status and one-line reason for a scenario whose variants all ran. A failure ends with
/// the first finding's own words for each failing variant that has one.
/// Skipped variants neither pass nor fail: a scenario with only skipped variants is a skip,
/// and a pass says which were skipped and why.
pub fn judge(variants: &[Judged]) -> (Status, String) {
    if variants.is_empty() {
        return (Status::Error, "no variant ran".into());
    }
    let skipped = variants
        .iter()
        .filter(|j| j.result.skipped.is_some())
        .count();
    let ran = variants.len() - skipped;
    if ran == 0 {
        return (
            Status::Skip,
            format!("every variant skipped: {}", skip_reasons(variants)),
        );
    }
    let failing: Vec<(&Judged, String)> = variants
        .iter()
        .filter_map(|j| j.problem().map(|p| (j, p)))
        .collect();
    if failing.is_empty() {
        let reproduced = variants.iter().filter(|j| j.result.reproduced).count();
        let mut reason = format!(
            "{ran} variants as expected ({reproduced} reproduced and detected, {} clean)",
            ran - reproduced
        );
        if skipped > 0 {
            reason.push_str(&format!("; {skipped} skipped: {}", skip_reasons(variants)));
        }
        return (Status::Pass, reason);
    }
    let mut reason = failing
        .iter()
        .map(|(_, p)| p.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    for (j, _) in &failing {
        if let Some(f) = j.findings.first() {
            reason.push_str(&format!(" ({}: {})", j.result.variant, f.message));
        }
    }
    (Status::Fail, reason)
}

/// Why variants were skipped, each reason once with the variants it skipped:
/// `needs X (a, b); needs Y (c)`.
fn skip_reasons(variants: &[Judged]) -> String {
    let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
    for j in variants {
        let Some(why) = j.result.skipped.as_deref() else {
            continue;
        };
        match reasons.iter_mut().find(|(r, _)| *r == why) {
            Some((_, names)) => names.push(&j.result.variant),
            None => reasons.push((why, vec![&j.result.variant])),
        }
    }
    reasons
        .iter()
        .map(|(why, names)| format!("{why} ({})", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_detect::Severity;

    const DECLARED: &[&str] = &["stale-bind"];

    fn finding(detector: &str) -> Finding {
        Finding::new(
            detector,
            Severity::Critical,
            "/data.txt",
            format!("{detector} says so"),
            "remount",
        )
    }

    fn v(name: &'static str, expected: Expectation, reproduced: bool, found: &[&str]) -> Judged {
        let variant = Variant {
            name,
            summary: "",
            expected,
        };
        let outcome = VariantOutcome {
            reproduced,
            observed: serde_json::Value::Null,
            findings: found.iter().map(|d| finding(d)).collect(),
        };
        Judged::new(&variant, outcome, DECLARED)
    }

    #[test]
    fn pass_needs_expected_behaviour_and_exact_detection() {
        let ok = [
            v("rename", Expectation::Reproduced, true, &["stale-bind"]),
            v("in-place", Expectation::Clean, false, &[]),
        ];
        let (s, why) = judge(&ok);
        assert_eq!(s, Status::Pass, "{why}");
        assert!(ok[0].result.detected);

        let missed = [v("rename", Expectation::Reproduced, true, &[])];
        let (s, why) = judge(&missed);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("detector missed it"), "{why}");

        let false_positive = [v("in-place", Expectation::Clean, false, &["stale-bind"])];
        let (s, why) = judge(&false_positive);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("false positive"), "{why}");
        assert!(why.ends_with("(in-place: stale-bind says so)"), "{why}");

        let not_reproduced = [v("rename", Expectation::Reproduced, false, &[])];
        assert!(judge(&not_reproduced).1.contains("did not reproduce"));

        assert_eq!(judge(&[]).0, Status::Error);
    }

    #[test]
    fn a_finding_from_an_undeclared_detector_does_not_count_and_fails() {
        // The bug reproduced, but only the wrong detector saw it.
        let wrong = [v("rename", Expectation::Reproduced, true, &["busy-binary"])];
        assert!(!wrong[0].result.detected);
        let (s, why) = judge(&wrong);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("detector missed it"), "{why}");
        assert!(
            why.contains("finding from a detector the scenario does not declare: busy-binary"),
            "{why}"
        );

        // The right detector saw it too: still a fail, naming the intruder once.
        let both = [v(
            "rename",
            Expectation::Reproduced,
            true,
            &["stale-bind", "dead-fuse", "dead-fuse"],
        )];
        assert!(both[0].result.detected);
        let (s, why) = judge(&both);
        assert_eq!(s, Status::Fail);
        assert!(!why.contains("missed"), "{why}");
        assert!(why.contains("does not declare: dead-fuse"), "{why}");
        assert_eq!(why.matches("dead-fuse").count(), 1, "{why}");

        // A clean variant where another detector spoke.
        let clean = [v("in-place", Expectation::Clean, false, &["hung-task"])];
        assert!(!clean[0].result.detected);
        let (s, why) = judge(&clean);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("does not declare: hung-task"), "{why}");
    }

    #[test]
    fn skipped_variants_neither_pass_nor_fail() {
        let lacking = Variant {
            name: "cri-volatile",
            summary: "",
            expected: Expectation::Clean,
        };
        let skipped = Judged::skipped(&lacking, "needs containerd 1.6.24".into());
        assert_eq!(skipped.problem(), None);
        let (s, why) = judge(std::slice::from_ref(&skipped));
        assert_eq!(s, Status::Skip, "{why}");
        assert_eq!(
            why,
            "every variant skipped: needs containerd 1.6.24 (cri-volatile)"
        );
        let other = Variant {
            name: "cri-no-stall",
            ..lacking.clone()
        };
        let both = [
            skipped.clone(),
            Judged::skipped(&other, "needs containerd 1.6.24".into()),
        ];
        assert_eq!(
            judge(&both).1,
            "every variant skipped: needs containerd 1.6.24 (cri-volatile, cri-no-stall)"
        );

        let ran = v("rename", Expectation::Reproduced, true, &["stale-bind"]);
        let (s, why) = judge(&[ran.clone(), skipped.clone()]);
        assert_eq!(s, Status::Pass, "{why}");
        assert!(why.starts_with("1 variants as expected"), "{why}");
        assert!(
            why.ends_with("; 1 skipped: needs containerd 1.6.24 (cri-volatile)"),
            "{why}"
        );

        let missed = v("rename", Expectation::Reproduced, true, &[]);
        assert_eq!(judge(&[missed, skipped]).0, Status::Fail);
    }

    #[test]
    fn every_declared_detector_counts() {
        const TWO: &[&str] = &["ext4-index-full", "htree-capacity"];
        let variant = Variant {
            name: "no-large-dir",
            summary: "",
            expected: Expectation::Reproduced,
        };
        for found in [["htree-capacity"], ["ext4-index-full"]] {
            let outcome = VariantOutcome {
                reproduced: true,
                observed: serde_json::Value::Null,
                findings: found.iter().map(|d| finding(d)).collect(),
            };
            let j = Judged::new(&variant, outcome, TWO);
            assert!(j.result.detected);
            assert_eq!(judge(&[j]).0, Status::Pass);
        }
    }
}
