//! The injector against real processes: delays measured, errors and return values seen by
//! the program, forks followed, a running process attached to and let go of.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use faultline_inject::{Exit, Injector, Rule};
use faultline_sys::wait_until;

fn argv(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn rule(expr: &str) -> Rule {
    Rule::parse_strace(expr).unwrap()
}

#[test]
fn delay_enter_holds_umount2_of_a_shell_command() {
    let never = AtomicBool::new(false);
    let cmd = argv(&[
        "sh",
        "-c",
        "umount /faultline-no-such-mount 2>/dev/null; exit 3",
    ]);
    // The same command untraced, for the baseline.
    let t0 = Instant::now();
    let status = Command::new(&cmd[0]).args(&cmd[1..]).status().unwrap();
    assert_eq!(status.code(), Some(3));
    let baseline = t0.elapsed();

    let t1 = Instant::now();
    let report = Injector::new(vec![rule("umount2:delay_enter=2s")])
        .run_command(&cmd, &never)
        .unwrap();
    let traced = t1.elapsed();
    assert_eq!(report.exit, Some(Exit::Code(3)));
    assert!(
        traced >= Duration::from_secs(2) && traced >= baseline + Duration::from_millis(1900),
        "traced {traced:?}, untraced {baseline:?}"
    );
    assert_eq!(report.events.len(), 1, "{:?}", report.events);
    assert_eq!(report.events[0].syscall, "umount2");
    assert_eq!(report.events[0].action, "delay_enter=2000ms");
}

#[test]
fn error_injection_fails_the_call_and_follows_forks() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let never = AtomicBool::new(false);
    // rmdir runs in a forked child of the shell.
    let script = format!(
        "rmdir {} 2>/dev/null; echo $? > {}/rc",
        victim.display(),
        dir.path().display()
    );
    let report = Injector::new(vec![rule("rmdir:error=EBUSY")])
        .run_command(&argv(&["sh", "-c", &script]), &never)
        .unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    assert!(victim.is_dir(), "rmdir ran although it was failed");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rc"))
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(report.events.len(), 1);
    assert_eq!(report.events[0].action, "error=EBUSY");
}

#[test]
fn retval_and_when_pick_the_nth_call() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let never = AtomicBool::new(false);
    // Only the second rmdir is tampered with: the first removes a, the second "succeeds"
    // without removing b, the third removes c.
    for d in ["a", "b", "c"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let p = dir.path().display();
    let script = format!(
        "rmdir {p}/a; rmdir {p}/b; rmdir {p}/c; echo done > {}",
        out.display()
    );
    let report = Injector::new(vec![rule("rmdir:retval=0:when=2")])
        .run_command(&argv(&["sh", "-c", &script]), &never)
        .unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    assert!(!dir.path().join("a").exists());
    assert!(dir.path().join("b").is_dir());
    assert!(!dir.path().join("c").exists());
    assert_eq!(report.events.len(), 1);
    assert_eq!(report.events[0].call, 2);
}

#[test]
fn attaches_to_a_running_process_and_detaches_leaving_it_running() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let script = format!(
        "while read line; do rmdir {} 2>/dev/null; echo rc=$?; done",
        victim.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());

    let attached = Injector::new(vec![rule("rmdir:error=EPERM")])
        .attach(pid)
        .unwrap();
    // The tracer is a thread of this process.
    let tracer = tracer_pid(pid).unwrap();
    assert!(std::path::Path::new(&format!("/proc/self/task/{tracer}")).exists());
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "rc=1");
    assert!(victim.is_dir());
    assert_eq!(attached.events().len(), 1);

    let report = attached.detach().unwrap();
    assert_eq!(report.events.len(), 1);
    wait_until(
        "the shell to be untraced",
        Duration::from_secs(5),
        || match tracer_pid(pid) {
            Some(0) => Ok(()),
            other => Err(format!("TracerPid {other:?}")),
        },
    )
    .unwrap();
    // Still running, and no longer tampered with.
    writeln!(stdin, "go").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "rc=0");
    assert!(!victim.exists());
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn detaching_mid_delay_releases_the_held_call() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read x; umount /faultline-no-such-mount 2>/dev/null; exit 7",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let attached = Injector::new(vec![rule("umount2:delay_enter=60s")])
        .attach(pid)
        .unwrap();
    writeln!(stdin, "go").unwrap();
    wait_until("umount2 to be held", Duration::from_secs(10), || {
        let ev = attached.events();
        if ev.is_empty() {
            Err("no injection yet".into())
        } else {
            Ok(())
        }
    })
    .unwrap();
    let t = Instant::now();
    attached.detach().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the held call was not released"
    );
}

#[test]
fn bad_rules_are_refused() {
    assert!(Rule::parse_strace("nosuchcall:error=EIO").is_err());
    let never = AtomicBool::new(false);
    let err = Injector::new(vec![rule("umount2:error=EIO")])
        .run_command(&argv(&["faultline-no-such-program"]), &never)
        .unwrap_err();
    assert!(err.to_string().contains("failed to find program"), "{err}");
}

/// coreutils' `sleep` calls clock_nanosleep (a name the injector knows from the kernel's
/// table): a nanosleep rule sees no call, and the report shows what was called instead; a
/// clock_nanosleep rule delays it.
#[test]
fn counts_every_call_and_names_clock_nanosleep() {
    let never = AtomicBool::new(false);
    let cmd = argv(&["sleep", "0.1"]);
    let report = Injector::new(vec![rule("nanosleep:delay_enter=2s")])
        .run_command(&cmd, &never)
        .unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    assert!(report.events.is_empty(), "{:?}", report.events);
    assert_eq!(report.calls, [0]);
    let clock = report.seen.iter().find(|s| s.syscall == "clock_nanosleep");
    assert!(clock.is_some_and(|s| s.calls >= 1), "{:?}", report.seen);
    assert!(report.total_calls() > 1, "{:?}", report.seen);

    let t = Instant::now();
    let report = Injector::new(vec![rule("clock_nanosleep:delay_enter=500ms")])
        .run_command(&cmd, &never)
        .unwrap();
    assert_eq!(report.exit, Some(Exit::Code(0)));
    assert_eq!(report.events.len(), 1, "{:?}", report.events);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

fn tracer_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}
