//! `faultline run etxtbsy-exec-while-copy --copier '...'` judges real third-party copiers:
//! exit 1 with the strategy and a finding for unsafe ones, 0 for temp-file-plus-rename, 2 for
//! a copier that cannot be judged.

use std::process::Command;

use faultline_core::Requirement;

// Only `require` is used here.
#[allow(dead_code)]
mod common;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

struct Run {
    code: Option<i32>,
    scenario: serde_json::Value,
}

fn run_copier(copier: &str) -> Run {
    let out = Command::new(FAULTLINE)
        .args([
            "run",
            "etxtbsy-exec-while-copy",
            "--json",
            "--copier",
            copier,
        ])
        .output()
        .expect("run faultline");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{copier}: no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        code: out.status.code(),
        scenario: doc["scenarios"][0].clone(),
    }
}

#[test]
fn copiers_are_judged_by_how_they_replace_the_running_binary() {
    common::require(&[Requirement::Root]);
    // (copier, exit code, status, strategy, finding severity)
    let cases = [
        ("cp {src} {dst}", 1, "fail", "in-place", Some("critical")),
        (
            "install -m755 {src} {dst}",
            1,
            "fail",
            "unlink-then-create",
            Some("warning"),
        ),
        (
            "cp {src} {dst}.new && mv -f {dst}.new {dst}",
            0,
            "pass",
            "atomic-rename",
            None,
        ),
    ];
    let mut in_place = None;
    for (copier, code, status, strategy, severity) in cases {
        let r = run_copier(copier);
        let s = &r.scenario;
        assert_eq!(r.code, Some(code), "{copier}: {s}");
        assert_eq!(s["status"], status, "{copier}: {s}");
        let variants = s["variants"].as_array().unwrap();
        assert_eq!(variants.len(), 1, "{copier}: {s}");
        assert_eq!(variants[0]["variant"], "copier");
        assert_eq!(
            variants[0]["observed"]["strategy"], strategy,
            "{copier}: {s}"
        );
        let findings = s["findings"].as_array().unwrap();
        match severity {
            Some(sev) => {
                assert_eq!(findings.len(), 1, "{copier}: {s}");
                assert_eq!(findings[0]["severity"], sev);
                assert_eq!(findings[0]["detector"], "busy-binary");
                assert!(findings[0]["pid"].as_i64().unwrap() > 0);
            }
            None => assert!(findings.is_empty(), "{copier}: {s}"),
        }
        if strategy == "in-place" {
            in_place = Some(r);
        }
    }
    // What the in-place copy (`cp`) did to the running binary.
    let r = in_place.expect("the cases include an in-place copier");
    let observed = &r.scenario["variants"][0]["observed"];
    let kernel = faultline_core::KernelVersion::running();
    if scenarios::etxtbsy_exec_while_copy::kernel_denies_writes(&kernel) {
        // Refused by the kernel: the running binary and the path are untouched.
        assert_eq!(observed["errno"], 26, "{observed}");
        assert_eq!(observed["running_version"], "v1");
        assert_eq!(observed["path_version"], "v1");
    } else {
        // Written into the running inode.
        assert_eq!(observed["errno"], serde_json::Value::Null, "{observed}");
        assert_eq!(observed["old_inode"], observed["new_inode"]);
        assert_eq!(observed["path_version"], "v2-new");
    }
}

#[test]
fn a_copier_that_cannot_run_is_an_error() {
    common::require(&[Requirement::Root]);
    let r = run_copier("/nonexistent/copier {src} {dst}");
    assert_eq!(r.code, Some(2), "{}", r.scenario);
    assert_eq!(r.scenario["status"], "error");
    let reason = r.scenario["reason"].as_str().unwrap();
    assert!(reason.contains("did not replace the file"), "{reason}");
}
