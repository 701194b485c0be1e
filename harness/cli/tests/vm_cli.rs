//! The VM backend's command line: bad kernels are usage errors, `compare` prints the matrix
//! with differences first and exits 1 when runs differ, and a SIGKILL of `faultline run --vm`
//! takes its qemu with it.

use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Requirement;
use faultline_sys::wait_until;

// Only `require` is used here.
#[allow(dead_code)]
mod common;

use common::faultline;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

#[test]
fn bad_kernel_specs_exit_2_with_one_line() {
    for args in [
        &["run", "--vm", "--kernel", "debian:6"][..],
        &["run", "--kernel", "/nonexistent/vmlinuz"],
        &["run", "--vm", "--kernel", "host"],
    ] {
        let out = faultline(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

fn report(kernel: &str, naive_reproduced: bool) -> String {
    serde_json::json!({
        "kernel": kernel, "backend": "vm",
        "scenarios": [
            {"name": "etxtbsy-exec-while-copy", "status": if naive_reproduced { "pass" } else { "fail" },
             "reason": "", "duration_ms": 1,
             "variants": [{"variant": "naive", "reproduced": naive_reproduced, "detected": naive_reproduced,
                           "expected": "reproduced", "observed": {}}],
             "findings": []},
            {"name": "nfs-flock-dead-statd", "status": "pass", "reason": "", "duration_ms": 1,
             "variants": [{"variant": "statd-dead", "reproduced": true, "detected": true,
                           "expected": "reproduced", "observed": {}}],
             "findings": []}
        ]
    })
    .to_string()
}

#[test]
fn compare_puts_differences_first_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, report("6.1.0-56-cloud-amd64", true)).unwrap();
    std::fs::write(&b, report("6.12.117+deb12-cloud-amd64", false)).unwrap();
    let out = faultline(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("6.1.0-56-cloud-amd64") && lines[0].contains("6.12.117"));
    assert!(
        lines[1].starts_with("* etxtbsy-exec-while-copy / naive"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("  nfs-flock-dead-statd / statd-dead"),
        "{text}"
    );

    let out = faultline(&[
        "compare",
        "--json",
        a.to_str().unwrap(),
        a.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["rows"].as_array().unwrap().len(), 2);

    let out = faultline(&["compare", a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&b, "not json").unwrap();
    let out = faultline(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Children of `pid` whose command is qemu.
fn qemu_children(pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let ppid = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok());
            comm.contains("qemu-system") && ppid == Some(pid)
        })
        .collect()
}

#[test]
fn sigkill_of_run_vm_takes_qemu_with_it() {
    common::require(&[Requirement::binary("qemu-system-x86_64", "qemu-system-x86")]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(FAULTLINE)
        .args([
            "run",
            "--vm",
            "--kernel",
            "debian:6.1",
            "nfs-flock-dead-statd",
            "--artifacts",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The first boot may fetch the kernel (seconds) and probe KVM (up to 6 s).
    let qemu =
        wait_until(
            "faultline to start qemu",
            Duration::from_secs(120),
            || match qemu_children(pid).first() {
                Some(q) => Ok(*q),
                None => Err(format!("no qemu child of {pid} yet")),
            },
        )
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        "qemu to die with faultline",
        Duration::from_secs(10),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{qemu}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            // Gone, or a zombie waiting for whoever inherited it.
            if matches!(state, Some(s) if s != 'Z') {
                Err(format!("qemu {qemu} still runs (state {state:?})"))
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
}
