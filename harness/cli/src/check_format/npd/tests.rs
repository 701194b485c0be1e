use std::time::Duration;

use faultline_detect::{DetectorReport, Finding, Severity};
use serde_json::json;

use super::*;
use crate::check_format::{Checked, Outcome};

fn ran(name: &'static str, findings: Vec<Finding>, unreadable: &[&str]) -> Checked {
    Checked {
        name,
        outcome: Outcome::Ran(DetectorReport {
            findings,
            unreadable: unreadable.iter().map(|u| u.to_string()).collect(),
            measurements: Vec::new(),
        }),
        elapsed: Duration::from_millis(3),
    }
}

fn stale(mount_point: &str, ns: u64) -> Finding {
    Finding::new(
        "stale-bind",
        Severity::Critical,
        mount_point,
        "is a stale bind",
        "remedy",
    )
    .with_evidence(json!({ "mnt_ns": ns }))
}

const POD_PATH: &str = "/var/lib/kubelet/pods/0f5ac4e2-4d36-4a53-9f1e-1d1cf5f2f7a0/volumes/kubernetes.io~configmap/config/data.txt";

#[test]
fn a_long_path_keeps_both_ends_and_the_line_fits() {
    let c = [ran(
        "stale-bind",
        vec![stale(POD_PATH, 1), stale(POD_PATH, 2), stale(POD_PATH, 3)],
        &[],
    )];
    let l = line(&c);
    assert!(l.len() <= MAX, "{} bytes: {l}", l.len());
    assert!(l.starts_with("stale bind /var/lib/kubelet/pods/"), "{l}");
    assert!(l.ends_with("/…/data.txt in 3 mount namespaces"), "{l}");
}

#[test]
fn the_most_severe_problem_leads_and_the_rest_are_counted() {
    let warning = Finding::new("busy-binary", Severity::Warning, "/usr/bin/a", "m", "r");
    let c = [
        ran("busy-binary", vec![warning], &[]),
        ran(
            "stale-bind",
            vec![stale("/data.txt", 1), stale("/etc/x", 1)],
            &[],
        ),
    ];
    assert_eq!(line(&c), "stale bind /data.txt (+2 more)");
}

#[test]
fn a_problem_is_shown_even_when_another_detector_is_partial() {
    let c = [
        ran(
            "busy-binary",
            vec![],
            &["could not read x of 1 of 3 processes"],
        ),
        ran("stale-bind", vec![stale("/data.txt", 1)], &[]),
    ];
    assert_eq!(line(&c), "stale bind /data.txt");
}

#[test]
fn partial_or_failed_without_findings_is_unknown_with_the_reason() {
    let c = [ran(
        "stale-bind",
        vec![],
        &["could not read the mount namespace (/proc/PID/ns/mnt) of 1 of 31 processes: permission denied (run as root)"],
    )];
    assert_eq!(
        line(&c),
        "unknown: cannot read mount namespace of 1 of 31 processes: permission denied"
    );

    let failed = [Checked {
        name: "htree-capacity",
        outcome: Outcome::Failed("/x is not on ext4".into()),
        elapsed: Duration::ZERO,
    }];
    assert_eq!(line(&failed), "unknown: failed: /x is not on ext4");
    // With several detectors the line says which one.
    let two = [
        failed.into_iter().next().unwrap(),
        ran("stale-bind", vec![], &[]),
    ];
    assert_eq!(
        line(&two),
        "unknown: htree-capacity: failed: /x is not on ext4"
    );
}

#[test]
fn clean_says_ok_and_who_looked() {
    assert_eq!(
        line(&[ran("stale-bind", vec![], &[])]),
        "OK: stale-bind found no problem"
    );
    let many = [
        ran("stale-bind", vec![], &[]),
        ran("dead-fuse", vec![], &[]),
        Checked {
            name: "htree-capacity",
            outcome: Outcome::NotRun("needs --path".into()),
            elapsed: Duration::ZERO,
        },
    ];
    assert_eq!(line(&many), "OK: 2 detectors found no problem");
}

#[test]
fn shorten_keeps_what_fits_and_never_splits_a_character() {
    assert_eq!(shorten("/a/b/c", 80), "/a/b/c");
    assert_eq!(
        shorten("/var/lib/kubelet/pods/uid/data.txt", 29),
        "/var/lib/kubelet/…/data.txt"
    );
    // A last component too long on its own: both ends of the text.
    let long = format!("/x/{}", "é".repeat(60));
    let s = shorten(&long, 40);
    assert!(s.len() <= 40 && s.contains('…'), "{s}");
    assert!(s.starts_with("/x/é") && s.ends_with('é'), "{s}");
    // Not a path: both ends.
    let s = shorten(&"0123456789".repeat(10), 21);
    assert_eq!(s, "012345678…123456789");
}

#[test]
fn every_detector_gets_a_line_that_fits() {
    let id = "e".repeat(64);
    let cases = [
        (
            "dead-fuse",
            Severity::Critical,
            POD_PATH.to_string(),
            json!({"probe": "Dead"}),
        ),
        (
            "dead-fuse",
            Severity::Warning,
            "/mnt/fuse".into(),
            json!({"probe": "Hung"}),
        ),
        (
            "orphan-shim",
            Severity::Warning,
            format!("containerd-shim-runc-v2 {id}"),
            json!(null),
        ),
        (
            "hung-task",
            Severity::Warning,
            "pid 4242 (kworker/u8:3+flush-8:0)".into(),
            json!(null),
        ),
        (
            "htree-capacity",
            Severity::Warning,
            "/data/flat".into(),
            json!({"percent_used": 87.4}),
        ),
        (
            "ext4-index-full",
            Severity::Critical,
            "/data/flat".into(),
            json!(null),
        ),
        (
            "nfs-lock-manager",
            Severity::Critical,
            "/mnt/nfs".into(),
            json!(null),
        ),
    ];
    for (detector, severity, subject, evidence) in cases {
        let f = Finding::new(detector, severity, subject, "m", "r").with_evidence(evidence);
        let l = line(&[ran("x", vec![f], &[])]);
        assert!(l.len() <= MAX, "{} bytes: {l}", l.len());
        assert!(!l.contains('\n'), "{l}");
    }
    let f = Finding::new("htree-capacity", Severity::Warning, "/d", "m", "r")
        .with_evidence(json!({"percent_used": 87.4}));
    assert_eq!(
        line(&[ran("x", vec![f], &[])]),
        "ext4 dir index 87% full: /d"
    );
}
