//! JUnit XML through quick-junit: one testsuite per run, one testcase per scenario, with
//! `<skipped>`, `<failure>` and `<error>` elements that ordinary CI tools understand.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::result::{RunReport, Status};

pub fn render(report: &RunReport) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new("faultline");
    let mut suite = TestSuite::new(format!("faultline.{}.{}", report.backend, report.kernel));
    for s in &report.scenarios {
        let mut status = match s.status {
            Status::Pass => TestCaseStatus::success(),
            Status::Skip => TestCaseStatus::skipped(),
            Status::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
            Status::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
        };
        if s.status != Status::Pass {
            status.set_message(s.reason.clone());
            status.set_type(s.status.as_str());
        }
        let mut case = TestCase::new(s.name.clone(), status);
        case.set_classname(format!("faultline.{}", report.backend));
        case.set_time(Duration::from_millis(s.duration_ms));
        let detail = serde_json::to_string_pretty(&s.variants).unwrap_or_default();
        case.set_system_out(detail);
        suite.add_test_case(case);
    }
    junit.add_test_suite(suite);
    junit.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::ScenarioResult;

    #[test]
    fn has_the_elements_ci_tools_read() {
        let report = RunReport {
            runtime: None,
            kernel: "6.18.44".into(),
            backend: "namespace".into(),
            scenarios: vec![
                ScenarioResult::without_variants("a", Status::Pass, "ok"),
                ScenarioResult::without_variants("b", Status::Skip, "needs root"),
                ScenarioResult::without_variants("c", Status::Fail, "detector missed it"),
                ScenarioResult::without_variants("d", Status::Error, "setup broke"),
            ],
        };
        let xml = render(&report).unwrap();
        assert!(xml.contains("<testsuites"), "{xml}");
        assert!(
            xml.contains("<testsuite name=\"faultline.namespace.6.18.44\""),
            "{xml}"
        );
        assert!(xml.contains("tests=\"4\""), "{xml}");
        assert!(xml.contains("<skipped message=\"needs root\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"detector missed it\""),
            "{xml}"
        );
        assert!(xml.contains("<error message=\"setup broke\""), "{xml}");
        let back = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.test_suites[0].test_cases.len(), 4);
    }
}
