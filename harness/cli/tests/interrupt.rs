//! SIGTERM or SIGINT during `faultline run`: the running scenario is torn down with nothing
//! left behind, the results of the scenarios that finished are printed (the interrupted one
//! as an `error`), the JUnit file is written, and the exit code is 143 or 130.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use faultline_core::Requirement;
use faultline_sys::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

// Only `require` is used here.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod leftovers;

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// A `faultline run --json` whose stderr lines arrive on a channel.
struct Run {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn start(names: &[&str], junit: &Path, artifacts: &Path) -> Run {
        let mut child = Command::new(FAULTLINE)
            .arg("run")
            .args(names)
            .arg("--json")
            .arg("--junit")
            .arg(junit)
            .arg("--artifacts")
            .arg(artifacts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Run {
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for the stderr line `line`, with what came before it kept in `seen`.
    fn wait_for(&mut self, line: &str, within: Duration) {
        while !self.seen.iter().any(|l| l == line) {
            match self.stderr.recv_timeout(within) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no {line:?} within {within:?}; stderr: {:#?}", self.seen),
            }
        }
    }

    /// The pid namespace of `name`'s scenario process, once it runs.
    fn scenario_ns(&self, name: &str) -> u64 {
        wait_until(
            &format!("{name}'s scenario process"),
            Duration::from_secs(30),
            || {
                let pid = leftovers::scenario_pids(name).first().copied();
                let ns = pid.and_then(|p| std::fs::metadata(format!("/proc/{p}/ns/pid")).ok());
                ns.map(|m| m.ino()).ok_or("not yet".to_string())
            },
        )
        .unwrap()
    }

    /// Sends `sig`, waits for the exit and returns (exit code, JSON on stdout).
    fn stop(mut self, sig: Signal) -> (Option<i32>, serde_json::Value, Vec<String>) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.stderr.iter());
        let doc = serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("no JSON on stdout ({e}): {out:?}; stderr: {:#?}", self.seen)
        });
        (status.code(), doc, self.seen)
    }
}

#[test]
fn a_stopped_run_prints_what_finished_and_leaves_nothing_behind() {
    common::require(&[Requirement::Root]);
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    let mounts_before = leftovers::host_mounts();
    let loops_before = leftovers::loop_backing_files();

    // SIGTERM while the second scenario builds its slow storage and shims.
    let junit = dir.path().join("term.xml");
    let mut run = Run::start(&["hostpath-rename", "delayed-umount2"], &junit, &artifacts);
    run.wait_for("faultline: delayed-umount2 ...", Duration::from_secs(120));
    let ns = run.scenario_ns("delayed-umount2");
    // The moment to stop it; nothing waits on this for synchronisation.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, doc, stderr) = run.stop(Signal::SIGTERM);
    assert_eq!(code, Some(143), "stderr: {stderr:#?}");
    let scenarios = doc["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 2, "{doc}");
    assert_eq!(scenarios[0]["name"], "hostpath-rename");
    assert!(
        matches!(scenarios[0]["status"].as_str(), Some("pass" | "fail")),
        "the first scenario finished: {doc}"
    );
    assert_eq!(scenarios[1]["name"], "delayed-umount2");
    assert_eq!(scenarios[1]["status"], "error");
    let reason = scenarios[1]["reason"].as_str().unwrap();
    assert!(reason.starts_with("interrupted by SIGTERM"), "{reason}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("hostpath-rename") && xml.contains("interrupted by SIGTERM"),
        "{xml}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l == "faultline: interrupted by SIGTERM"),
        "{stderr:#?}"
    );
    leftovers::nothing_left(
        "the run stopped by SIGTERM",
        ns,
        &mounts_before,
        &loops_before,
    );

    // SIGINT (Ctrl-C) in the only scenario: its result alone, exit 130.
    let junit = dir.path().join("int.xml");
    let mut run = Run::start(&["delayed-umount2"], &junit, &artifacts);
    let ns = run.scenario_ns("delayed-umount2");
    run.wait_for("faultline: delayed-umount2 ...", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(800));
    let (code, doc, stderr) = run.stop(Signal::SIGINT);
    assert_eq!(code, Some(130), "stderr: {stderr:#?}");
    let reason = doc["scenarios"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("interrupted by SIGINT"), "{doc}");
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("interrupted by SIGINT"));
    leftovers::nothing_left(
        "the run stopped by SIGINT",
        ns,
        &mounts_before,
        &loops_before,
    );
}
