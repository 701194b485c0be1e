//! `faultline inject` reproduces containerd's strace fault injection
//! (`strace -e inject=umount2:delay_enter=12s`) on an arbitrary command: a shell that mounts
//! and unmounts a tmpfs in its own mount namespace takes the delay longer, measured.

use std::process::Command;
use std::time::{Duration, Instant};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

#[test]
fn delays_a_real_umount_by_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs faultline-inject {d} && umount {d} && echo unmounted",
        d = dir.path().display()
    );
    let start = Instant::now();
    let out = Command::new(FAULTLINE)
        .args([
            "inject",
            "--syscall",
            "umount2",
            "--delay-enter",
            "2s",
            "--",
        ])
        .args([
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unmounted");
    assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
    assert!(
        stderr.contains("umount2 call 1: delay_enter=2000ms"),
        "{stderr}"
    );
}

#[test]
fn passes_the_command_exit_code_through() {
    let out = Command::new(FAULTLINE)
        .args([
            "inject",
            "-e",
            "rmdir:error=EBUSY",
            "--",
            "sh",
            "-c",
            "exit 42",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        &[
            "inject",
            "--syscall",
            "nosuchcall",
            "--error",
            "EIO",
            "--",
            "true",
        ][..],
        &[
            "inject",
            "--syscall",
            "umount2",
            "--delay-enter",
            "12parsecs",
            "--",
            "true",
        ],
        &["inject", "--syscall", "umount2", "--", "true"],
        &["inject", "-e", "umount2:delay_enter=1s"],
        &["inject", "--delay-enter", "1s", "--", "true"],
    ] {
        let out = Command::new(FAULTLINE).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

/// coreutils' `sleep` calls clock_nanosleep, so a rule for nanosleep tampers with nothing:
/// the command still runs and exits 0, and the injector says the rule matched no call and
/// what was called instead.
#[test]
fn a_rule_that_matched_nothing_says_so() {
    let out = Command::new(FAULTLINE)
        .args([
            "inject",
            "--syscall",
            "nanosleep",
            "--delay-enter",
            "1s",
            "--",
            "sleep",
            "0.1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no call matched nanosleep"), "{stderr}");
    assert!(
        stderr.contains("may use clock_nanosleep instead"),
        "{stderr}"
    );
}
