//! A SIGKILL of `faultline run` at any moment leaves nothing behind: no process of the
//! scenario's pid namespace, no new mount on the host, no loop device backed by its scratch.
//! Each runnable scenario is killed at several points of its life, chosen by what it has
//! built (its namespace exists; it has mounted something; it has started a process).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::guard::wait_until;

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

fn host_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            // Drop the mount id and parent id, which are the only fields that change on their own.
            l.splitn(3, ' ').nth(2).unwrap_or("").to_string()
        })
        .collect()
}

fn loop_backing_files() -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    if let Ok(rd) = fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
                set.insert(format!("{}:{}", e.file_name().to_string_lossy(), b.trim()));
            }
        }
    }
    set
}

/// Pids of processes that started as the scenario process of `name`.
fn scenario_pids(name: &str) -> Vec<i32> {
    let needle = format!("\"scenario\":\"{name}\"");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("__faultline-internal\0scenario\0") && cmd.contains(&needle)
        })
        .collect()
}

fn processes_in_pid_ns(ns_ino: u64) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let ino = fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?.ino();
            (ino == ns_ino).then(|| {
                let c = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid} {}", String::from_utf8_lossy(&c).replace('\0', " "))
            })
        })
        .collect()
}

/// Starts `faultline run name`, waits until the scenario reached `stage`, kills the harness
/// with SIGKILL and returns the scenario's pid namespace inode (None if it finished first).
fn kill_at(name: &str, stage: usize) -> Option<u64> {
    let mut child = Command::new(FAULTLINE)
        .args(["run", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let baseline = host_mounts().len();
    let reached = wait_until(
        &format!("{name} to reach stage {stage}"),
        Duration::from_secs(60),
        || {
            let pids = scenario_pids(name);
            let Some(&pid) = pids.first() else {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(None);
                }
                return Err("no scenario process yet".into());
            };
            let ns = fs::metadata(format!("/proc/{pid}/ns/pid"))
                .map_err(|e| e.to_string())?
                .ino();
            let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            let extra_mounts = mounts.lines().count().saturating_sub(baseline);
            let procs = processes_in_pid_ns(ns).len();
            let at = match stage {
                0 => true,
                // /proc and the scratch tmpfs are the runner's; anything beyond is the scenario's.
                1 => extra_mounts > 2,
                _ => procs > 1 && extra_mounts > 2,
            };
            if at {
                Ok(Some(ns))
            } else {
                Err(format!("mounts +{extra_mounts}, processes {procs}"))
            }
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    // A scenario that finished before reaching this stage had nothing to kill mid-way.
    reached.ok().flatten()
}

#[test]
fn sigkill_of_run_leaves_nothing_behind() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: needs root to create namespaces");
        return;
    }
    let names = runnable_namespace_scenarios();
    assert!(!names.is_empty(), "no runnable scenario to kill");
    let mounts_before = host_mounts();
    let loops_before = loop_backing_files();
    let mut killed = 0;
    for name in &names {
        for stage in 0..3 {
            let Some(ns) = kill_at(name, stage) else {
                continue;
            };
            killed += 1;
            wait_until(
                &format!("{name} (killed at stage {stage}) to leave no process"),
                Duration::from_secs(10),
                || {
                    let left = processes_in_pid_ns(ns);
                    if left.is_empty() {
                        Ok(())
                    } else {
                        Err(left.join("; "))
                    }
                },
            )
            .unwrap();
            wait_until(
                &format!("{name} (killed at stage {stage}) to leave no mount or loop device"),
                Duration::from_secs(10),
                || {
                    let new_mounts: Vec<_> =
                        host_mounts().difference(&mounts_before).cloned().collect();
                    let new_loops: Vec<_> = loop_backing_files()
                        .difference(&loops_before)
                        .cloned()
                        .collect();
                    if new_mounts.is_empty() && new_loops.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("mounts {new_mounts:?}, loop devices {new_loops:?}"))
                    }
                },
            )
            .unwrap();
        }
    }
    assert!(
        killed > 0,
        "no scenario was killed mid-run (all finished too fast?)"
    );
}
