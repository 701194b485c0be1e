//! Turning variant outcomes into a scenario status, as DESIGN.md defines pass and fail:
//! every variant behaved as expected for this kernel AND the detector reported a finding
//! exactly where the bug reproduced.

use crate::result::{Status, VariantResult};
use crate::scenario::Expectation;

/// What went wrong with one variant, or `None` when it behaved as expected.
pub fn variant_problem(v: &VariantResult) -> Option<String> {
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
    (!problems.is_empty()).then(|| format!("{}: {}", v.variant, problems.join(", ")))
}

/// Status and one-line reason for a scenario whose variants all ran.
pub fn judge(variants: &[VariantResult]) -> (Status, String) {
    if variants.is_empty() {
        return (Status::Error, "no variant ran".into());
    }
    let problems: Vec<String> = variants.iter().filter_map(variant_problem).collect();
    if problems.is_empty() {
        let reproduced = variants.iter().filter(|v| v.reproduced).count();
        (
            Status::Pass,
            format!(
                "{} variants as expected ({} reproduced and detected, {} clean)",
                variants.len(),
                reproduced,
                variants.len() - reproduced
            ),
        )
    } else {
        (Status::Fail, problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, expected: Expectation, reproduced: bool, detected: bool) -> VariantResult {
        VariantResult {
            variant: name.into(),
            reproduced,
            detected,
            expected: expected.as_str().into(),
            observed: serde_json::Value::Null,
        }
    }

    #[test]
    fn pass_needs_expected_behaviour_and_exact_detection() {
        let ok = [
            v("rename", Expectation::Reproduced, true, true),
            v("in-place", Expectation::Clean, false, false),
        ];
        assert_eq!(judge(&ok).0, Status::Pass);

        let missed = [v("rename", Expectation::Reproduced, true, false)];
        let (s, why) = judge(&missed);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("detector missed it"), "{why}");

        let false_positive = [v("in-place", Expectation::Clean, false, true)];
        let (s, why) = judge(&false_positive);
        assert_eq!(s, Status::Fail);
        assert!(why.contains("false positive"), "{why}");

        let not_reproduced = [v("rename", Expectation::Reproduced, false, false)];
        assert!(judge(&not_reproduced).1.contains("did not reproduce"));

        assert_eq!(judge(&[]).0, Status::Error);
    }
}
