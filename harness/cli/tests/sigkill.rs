//! A SIGKILL of `faultline run` at any moment leaves nothing behind: no process of the
//! scenario's pid namespace, no new mount on the host, no loop device backed by its scratch.
//! Each runnable scenario is killed at several points of its life, chosen by what it has
//! built (its namespace exists; it has mounted something; it has started a process).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Requirement;
use faultline_sys::wait_until;

// Only `require` is used here.
#[allow(dead_code)]
mod common;
mod leftovers;

use leftovers::{host_mounts, loop_backing_files, pids_in_pid_ns, scenario_pids};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn runnable_namespace_scenarios() -> Vec<String> {
    let out = Command::new(FAULTLINE)
        .args(["list", "--json"])
        .output()
        .expect("faultline list");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list json");
    doc["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["runnable"] == true && s["backend"] == "namespace")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// What the scenario had built when it was killed.
struct Killed {
    pid_ns: u64,
    extra_mounts: usize,
    processes: usize,
}

/// Starts `faultline run name`, lets the scenario run for `delay` after its process appears,
/// then kills the harness with SIGKILL. `None` if the run finished first.
fn kill_after(name: &str, delay: Duration, baseline: usize) -> Option<Killed> {
    let mut child = Command::new(FAULTLINE)
        .args(["run", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = wait_until(
        &format!("{name}'s scenario process"),
        Duration::from_secs(30),
        || match scenario_pids(name).first() {
            Some(&p) => Ok(Some(p)),
            None if matches!(child.try_wait(), Ok(Some(_))) => Ok(None),
            None => Err("no scenario process yet".into()),
        },
    )
    .unwrap();
    let ns = pid.and_then(|p| {
        fs::metadata(format!("/proc/{p}/ns/pid"))
            .ok()
            .map(|m| m.ino())
    });
    // The delay picks the moment to kill; nothing waits on it for synchronisation.
    std::thread::sleep(delay);
    let state = ns.map(|ns| {
        let pids = pids_in_pid_ns(ns);
        // Scenarios mount in nested namespaces too (a container's binds): take the largest
        // mount table any of its processes sees.
        let most_mounts = pids
            .iter()
            .map(|p| {
                fs::read_to_string(format!("/proc/{p}/mountinfo"))
                    .map(|m| m.lines().count())
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        Killed {
            pid_ns: ns,
            extra_mounts: most_mounts.saturating_sub(baseline),
            processes: pids.len(),
        }
    });
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    if finished {
        None
    } else {
        state
    }
}

#[test]
fn sigkill_of_run_leaves_nothing_behind() {
    common::require(&[Requirement::Root]);
    let names = runnable_namespace_scenarios();
    assert!(!names.is_empty(), "no runnable scenario to kill");
    let mounts_before = host_mounts();
    let loops_before = loop_backing_files();
    let mut killed = 0;
    let mut mid_build = 0;
    for name in &names {
        for ms in [0u64, 5, 15, 30, 60, 100, 150, 250, 400, 700] {
            let Some(k) = kill_after(name, Duration::from_millis(ms), mounts_before.len()) else {
                continue;
            };
            let ns = k.pid_ns;
            let stage = format!("{ms} ms");
            killed += 1;
            // /proc and the scratch tmpfs are the runner's; more mounts, or a process beside
            // pid 1, are the scenario's own (a chrooted container sees fewer mounts).
            if k.extra_mounts > 2 || k.processes > 1 {
                mid_build += 1;
            }
            eprintln!(
                "killed faultline run {name} after {ms} ms: +{} mounts, {} processes",
                k.extra_mounts, k.processes
            );
            leftovers::nothing_left(
                &format!("{name} (killed at stage {stage})"),
                ns,
                &mounts_before,
                &loops_before,
            );
        }
    }
    assert!(
        killed > 0,
        "no scenario was killed mid-run (all finished too fast?)"
    );
    assert!(
        mid_build > 0,
        "no kill landed while a scenario had its own mounts or processes up"
    );
}
