//! `faultline check ext4-index-full` and `htree-capacity` as a user runs them: real captured
//! kernel logs piped in (`--kmsg-file -`, process substitution), bad `--kmsg-file` values,
//! `--since`, near-miss lines, and a live run that fills a real directory's index on a loop
//! device, then detaches it.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use faultline_core::guard::{Ext4Image, MountedExt4};
use faultline_core::{Finding, Requirement};
use serde_json::Value;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// Fails the test when this host cannot run it: a privileged test that passed without running
/// would hide that it never ran.
fn require(requirements: &[Requirement]) {
    if let Some(reason) = faultline_core::requirement::first_unmet(requirements) {
        panic!("cannot run here: {reason}");
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../detect/tests/fixtures/ext4")
        .join(name)
}

/// `faultline ARGS` with `stdin` written to its standard input.
fn faultline_fed(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(FAULTLINE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run faultline");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Written from another thread: faultline may finish before reading it all.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn json_findings(out: &Output) -> Vec<Finding> {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_value(doc["findings"].clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `dmesg | faultline check ext4-index-full --kmsg-file -`: the old loop0 file systems fold
/// to one finding each, told apart by UUID, each saying it is history.
#[test]
fn a_piped_capture_folds_repeats_and_marks_history() {
    let capture = std::fs::read(fixture("kmsg-dmesg.txt")).unwrap();
    let out = faultline_fed(
        &["check", "ext4-index-full", "--json", "--kmsg-file", "-"],
        &capture,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let f = json_findings(&out);
    assert_eq!(f.len(), 8, "{f:#?}");
    let warnings = String::from_utf8_lossy(&capture)
        .matches("index full")
        .count();
    let counted: u64 = f
        .iter()
        .map(|x| x.evidence["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, warnings);
    let uuids: std::collections::HashSet<_> = f
        .iter()
        .map(|x| x.evidence["filesystem_uuid"].clone())
        .collect();
    assert_eq!(uuids.len(), 8, "one finding per file system");
    for x in &f {
        assert!(x.evidence["first_seen"].is_string() && x.evidence["last_seen"].is_string());
        assert_ne!(x.evidence["still_holds"], true, "{x:#?}");
    }
    // The seven the log shows unmounted are history whatever loop0 holds now; the last one
    // (a4c5c1b7...) is history or unknown, depending on this machine's loop0.
    let unmounted: Vec<_> = f
        .iter()
        .filter(|x| x.evidence["unmounted_since"] == true)
        .collect();
    assert_eq!(unmounted.len(), 7);
    assert!(unmounted.iter().all(|x| x.evidence["history"] == true));

    // The text says what tells them apart.
    let out = faultline_fed(&["check", "ext4-index-full", "--kmsg-file", "-"], &capture);
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "inode 12 on loop0, file system 390c20a9",
        "(file system 390c20a9-ff78-4885-84af-4b94ca02a2ff)",
        "5 kernel warnings, first 425.164876, last 425.167145",
        "history: ",
        "inode 13 on loop0, file system a4c5c1b7",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

/// Process substitution and /dev/stdin are streams too; a non-UTF-8 path is a path.
#[test]
fn process_substitution_dev_stdin_and_odd_paths_work() {
    let fx = fixture("kmsg-journalctl-k.txt");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#""$0" check ext4-index-full --json --kmsg-file <(cat "$1")"#)
        .arg(FAULTLINE)
        .arg(&fx)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_findings(&out).len(), 8);

    let capture = std::fs::read(&fx).unwrap();
    let out = faultline_fed(
        &[
            "check",
            "ext4-index-full",
            "--json",
            "--kmsg-file",
            "/dev/stdin",
        ],
        &capture,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_findings(&out).len(), 8);

    let dir = tempfile::tempdir().unwrap();
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"dmesg-\xff.txt"));
    std::fs::write(&odd, &capture).unwrap();
    let out = Command::new(FAULTLINE)
        .args(["check", "ext4-index-full", "--json", "--kmsg-file"])
        .arg(&odd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// Two detectors that read the kernel log share one stream: the second still sees it all.
#[test]
fn a_stream_read_by_two_detectors_reaches_both() {
    let capture = std::fs::read(fixture("kmsg-dmesg.txt")).unwrap();
    let out = faultline_fed(
        &[
            "check",
            "nfs-lock-manager",
            "ext4-index-full",
            "--json",
            "--kmsg-file",
            "-",
        ],
        &capture,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let f = json_findings(&out);
    assert_eq!(
        f.iter().filter(|x| x.detector == "ext4-index-full").count(),
        8,
        "{f:#?}"
    );
}

#[test]
fn kmsg_file_errors_say_what_is_wrong() {
    let run = |path: &Path| {
        Command::new(FAULTLINE)
            .args(["check", "ext4-index-full", "--kmsg-file"])
            .arg(path)
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    for (path, says) in [
        (dir.path().to_path_buf(), "is a directory"),
        (dir.path().join("missing.txt"), "not found"),
    ] {
        let out = run(&path);
        assert_eq!(out.status.code(), Some(2), "{path:?}");
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{path:?}: {err}");
    }
    // Empty input is no lines, not an error.
    let out = run(Path::new("/dev/null"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no findings");

    // Unreadable, as a user who cannot read it (root reads anything).
    require(&[
        Requirement::Root,
        Requirement::binary("setpriv", "util-linux"),
    ]);
    let secret = dir.path().join("dmesg.txt");
    std::fs::write(&secret, "x\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            FAULTLINE,
        ])
        .args(["check", "ext4-index-full", "--kmsg-file"])
        .arg(&secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
}

/// Lines that look like ext4's but are not (empty device, impossible depths, a device name
/// that is a shell command) are not findings.
#[test]
fn near_miss_lines_are_not_findings() {
    let real = std::fs::read_to_string(fixture("kmsg-dmesg.txt")).unwrap();
    let line = real
        .lines()
        .find(|l| l.contains("(ino: 13) index full"))
        .unwrap();
    let bad = [
        line.replace("(device loop0)", "(device )"),
        line.replace("level :2", "level :0"),
        line.replace("level :2", "level :4294967295"),
        line.replace("loop0", "md10 ; rm -rf /"),
    ]
    .join("\n");
    let out = faultline_fed(
        &["check", "ext4-index-full", "--kmsg-file", "-"],
        bad.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no findings");
}

/// The real capture as `dmesg --time-format iso` would print it had it ended a second ago:
/// `--since` keeps what is recent on the wall clock.
#[test]
fn since_keeps_recent_lines_of_a_capture() {
    let real = std::fs::read_to_string(fixture("kmsg-dmesg.txt")).unwrap();
    let stamp =
        |l: &str| -> Option<f64> { l.strip_prefix('[')?.split(']').next()?.trim().parse().ok() };
    let end = real.lines().filter_map(stamp).fold(0.0, f64::max);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 1.0;
    let iso: String = real
        .lines()
        .filter_map(|l| {
            let t = now - (end - stamp(l)?);
            let msg = l.split_once("] ")?.1;
            let out = Command::new("date")
                .args([
                    "-u",
                    "-d",
                    &format!("@{t:.6}"),
                    "+%Y-%m-%dT%H:%M:%S,%6N+00:00",
                ])
                .output()
                .ok()?;
            Some(format!(
                "{} {msg}\n",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        })
        .collect();
    let run = |since: &str| {
        let out = faultline_fed(
            &[
                "check",
                "ext4-index-full",
                "--json",
                "--kmsg-file",
                "-",
                "--since",
                since,
            ],
            iso.as_bytes(),
        );
        json_findings(&out)
    };
    // The demo file system's warnings are the last lines; the others are 38 s and more older.
    let recent = run("20s");
    assert_eq!(recent.len(), 1, "{recent:#?}");
    assert_eq!(recent[0].evidence["inode"], 13);
    assert_eq!(run("1h").len(), 8);
    let out = faultline_fed(&["check", "ext4-index-full", "--since", "0s"], b"");
    assert_eq!(out.status.code(), Some(2));
}

/// A real index-full event on this machine: a 1 KiB-block image without large_dir, one flat
/// directory filled until create fails. While mounted, the live log's finding is critical and
/// names the directory; htree-capacity says creates fail now, and shows a healthy directory's
/// fill. Once the device is detached, the same warnings are history.
#[test]
fn a_live_index_full_event_then_its_history() {
    require(&[
        Requirement::Root,
        Requirement::binary("mkfs.ext4", "e2fsprogs"),
        Requirement::Path {
            path: "/dev/loop-control",
            why: "loop devices",
        },
        Requirement::Path {
            path: "/dev/kmsg",
            why: "the kernel log",
        },
    ]);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ext4.img");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    Ext4Image::new(24 << 20)
        .block_size(1024)
        .inodes(24_000)
        .reserved_percent(0)
        .feature("^large_dir")
        .create(&image)
        .unwrap();
    let mut fs = MountedExt4::mount(&image, &mnt, None).unwrap();
    let uuid = faultline_sys::ext4::Superblock::read(fs.device().path())
        .unwrap()
        .uuid_string();
    let flat = mnt.join("flat");
    let fresh = mnt.join("fresh");
    std::fs::create_dir(&flat).unwrap();
    std::fs::create_dir(&fresh).unwrap();
    let mut failed = None;
    for i in 0..60_000u32 {
        let name = format!("{i:08}-{}", "x".repeat(246));
        if let Err(e) = std::fs::File::create_new(flat.join(name)) {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("the index never filled");
    assert_eq!(
        failed.raw_os_error(),
        Some(nix::errno::Errno::ENOSPC as i32),
        "{failed}"
    );

    let ours = |out: &Output| -> Finding {
        let f = json_findings(out);
        f.into_iter()
            .find(|x| x.evidence["filesystem_uuid"] == uuid.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "no finding for {uuid}: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
    };
    let check = |args: &[&str]| Command::new(FAULTLINE).args(args).output().unwrap();
    let out = check(&["check", "ext4-index-full", "--json", "--since", "5m"]);
    let live = ours(&out);
    assert_eq!(
        live.severity,
        faultline_core::Severity::Critical,
        "{live:#?}"
    );
    assert_eq!(live.evidence["still_holds"], true, "{live:#?}");
    assert!(
        live.evidence["path"].as_str().unwrap().ends_with("/flat"),
        "{live:#?}"
    );
    assert!(live.evidence["count"].as_u64().unwrap() >= 1);

    // htree-capacity: the full directory fails now; the fresh one is shown, not reported.
    let out = check(&["check", "htree-capacity", "--path", flat.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("creates fail now"), "{text}");
    let out = check(&["check", "htree-capacity", "--path", fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("info     htree-capacity"), "{text}");
    assert!(text.contains("htree index 0.0% used"), "{text}");
    assert!(text.contains("no findings"), "{text}");
    let out = check(&[
        "check",
        "htree-capacity",
        "--json",
        "--path",
        fresh.to_str().unwrap(),
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["findings"], serde_json::json!([]));
    let m = &doc["detectors"][0]["measurements"][0];
    assert_eq!(m["subject"], fresh.to_str().unwrap());
    assert!(m["values"]["percent_used"].as_f64().unwrap() < 1.0, "{m}");

    fs.teardown().unwrap();
    let out = check(&["check", "ext4-index-full", "--json", "--since", "5m"]);
    let old = ours(&out);
    assert_eq!(old.severity, faultline_core::Severity::Warning, "{old:#?}");
    assert_eq!(old.evidence["history"], true, "{old:#?}");
    assert!(old.message.contains("history: "), "{}", old.message);
}
