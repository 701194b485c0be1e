//! `faultline run` refuses what it cannot use before anything runs (one line, exit 2), and
//! never calls a run where nothing ran a success; arguments that are not UTF-8 are handled,
//! never a panic. None of these needs root: each is refused, or skipped, before a scenario
//! starts.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

#[allow(dead_code)]
mod common;

use common::faultline;

/// Exit 2, one line on stderr containing `what`, and nothing started.
fn refused<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S], what: &str) {
    let out = faultline(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("faultline: "), "{args:?}: {err}");
    assert!(err.contains(what), "{args:?}: {err:?} lacks {what:?}");
    assert!(!err.contains(" ..."), "{args:?}: something started: {err}");
    assert!(
        out.stdout.is_empty(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_run_where_everything_was_skipped_exits_2_and_says_why() {
    // The NFS scenario is VM-only: on the host it is skipped, whoever runs it.
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let out = faultline(&[
        OsStr::new("run"),
        OsStr::new("nfs-flock-dead-statd"),
        OsStr::new("--junit"),
        junit.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "faultline: nothing ran: nfs-flock-dead-statd: runs only in the VM backend"
        ),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("nfs-flock-dead-statd  skip"), "{table}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("nfs-flock-dead-statd") && xml.contains("<skipped"),
        "{xml}"
    );
}

#[test]
fn output_destinations_are_checked_before_anything_runs() {
    // The scenario would run for seconds as root; a bad destination must stop it first.
    refused(
        &["run", "hostpath-rename", "--junit", "/nonexistent/x.xml"],
        "--junit /nonexistent/x.xml",
    );
    refused(
        &["run", "hostpath-rename", "--junit", "/proc/version"],
        "--junit /proc/version",
    );
    refused(
        &["run", "hostpath-rename", "--artifacts", "/proc/x"],
        "--artifacts /proc/x",
    );
    refused(
        &["run", "hostpath-rename", "--artifacts", "/proc"],
        "--artifacts /proc: not writable",
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    refused(
        &[
            OsStr::new("run"),
            OsStr::new("hostpath-rename"),
            OsStr::new("--artifacts"),
            file.path().as_os_str(),
        ],
        "--artifacts",
    );
}

#[test]
fn non_utf8_arguments_are_errors_not_panics() {
    refused(
        &[OsStr::new("run"), OsStr::from_bytes(b"no-such-\xff")],
        "unknown scenario \"no-such-\\xFF\"",
    );
    refused(
        &[
            OsStr::new("run"),
            OsStr::new("hostpath-rename"),
            OsStr::new("--junit"),
            OsStr::from_bytes(b"/nonexistent/\xff.xml"),
        ],
        "--junit /nonexistent/",
    );
    // A non-UTF-8 --artifacts directory is usable: the all-skip run gets that far.
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join(OsStr::from_bytes(b"art-\xff"));
    let out = faultline(&[
        OsStr::new("run"),
        OsStr::new("nfs-flock-dead-statd"),
        OsStr::new("--artifacts"),
        artifacts.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !err.contains("panicked") && err.contains("nothing ran"),
        "{err}"
    );
    assert!(artifacts.is_dir());
    // The VM backend cannot hand such a path to qemu: refused before booting.
    refused(
        &[
            OsStr::new("run"),
            OsStr::new("--vm"),
            OsStr::new("nfs-flock-dead-statd"),
            OsStr::new("--artifacts"),
            artifacts.as_os_str(),
        ],
        "the VM backend needs a UTF-8 path",
    );
}

#[test]
fn meaningless_values_are_refused() {
    for t in ["0", "-1", "1.5", "abc"] {
        refused(
            &["run", "hostpath-rename", "--timeout", t],
            "--timeout takes a whole number of seconds above 0",
        );
    }
    let d = "delayed-umount2";
    refused(&["run", d, "-o", "delay-ms=0"], "must be above 0");
    refused(&["run", d, "-o", "write-latency-ms=0"], "must be above 0");
    refused(&["run", d, "-o", "dirty-mib=0"], "must be above 0");
    refused(&["run", d, "-o", "dirty-mib=1000"], "at most 160 MiB fit");
    // The shim's two held umount2 calls must outlast CRI's 10 s deadline.
    refused(
        &["run", d, "-o", "delay-ms=5000"],
        "delay-ms (5000) must be above 5000",
    );
}

#[test]
fn an_unusable_kernel_fails_before_booting_and_names_what_is_offered() {
    for (spec, what) in [
        ("/etc/passwd", "not a kernel image"),
        ("debian:5.10", "no Debian cloud kernel 5.10"),
    ] {
        let out = faultline(&["run", "--kernel", spec]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{spec}: {err}");
        assert!(
            !err.contains("booting") && !err.contains("console"),
            "{spec}: {err}"
        );
        assert!(err.contains(what), "{spec}: {err}");
        // Debian's archive offers 6.1 and 6.12 (bookworm and its backports).
        assert!(
            err.contains("debian:6.1,") && err.contains("debian:6.12"),
            "{spec}: {err}"
        );
        assert!(!err.contains("apt-get update"), "{spec}: {err}");
    }
}

#[test]
fn help_says_what_the_tool_does() {
    let help = |args: &[&str]| String::from_utf8(faultline(args).stdout).unwrap();
    let run = help(&["run", "--help"]);
    assert!(!run.contains("README"), "{run}");
    for key in ["delay-ms", "write-latency-ms", "dirty-mib", "copier"] {
        assert!(run.contains(key), "run --help lacks {key}: {run}");
    }
    let check = help(&["check", "--help"]);
    let path_help: String = check
        .lines()
        .skip_while(|l| !l.contains("--path"))
        .take(4)
        .collect();
    for detector in ["htree-capacity", "busy-binary", "dead-fuse"] {
        assert!(
            path_help.contains(detector),
            "check --help --path: {path_help}"
        );
    }
    let compare = help(&["compare", "--help"]);
    assert!(compare.contains("1 when some rows differ"), "{compare}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains("`compare` exits 1"),
        "README does not give compare's exit code"
    );
    assert!(
        !readme.contains("show progress and detail"),
        "README still says -v shows progress"
    );
}

#[test]
fn inject_passes_non_utf8_arguments_through() {
    let out = faultline(&[
        OsStr::new("inject"),
        OsStr::new("--syscall"),
        OsStr::new("write"),
        OsStr::new("--delay-enter"),
        OsStr::new("1ms"),
        OsStr::new("--"),
        OsStr::new("/bin/echo"),
        OsStr::from_bytes(b"a\xffb"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"a\xffb\n");
}
