//! What a stopped `faultline run` could leave behind, for the tests that stop it (SIGKILL,
//! SIGTERM, SIGINT): processes of the scenario's pid namespace, mounts on the host, loop
//! devices, and the cgroups of its containers.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use faultline_sys::wait_until;

pub fn host_mounts() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            // Drop the mount id and parent id, which are the only fields that change on their own.
            l.splitn(3, ' ').nth(2).unwrap_or("").to_string()
        })
        .collect()
}

pub fn loop_backing_files() -> BTreeSet<String> {
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
pub fn scenario_pids(name: &str) -> Vec<i32> {
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

pub fn pids_in_pid_ns(ns_ino: u64) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let ino = fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?.ino();
            (ino == ns_ino).then_some(pid)
        })
        .collect()
}

pub fn processes_in_pid_ns(ns_ino: u64) -> Vec<String> {
    pids_in_pid_ns(ns_ino)
        .into_iter()
        .map(|pid| {
            let c = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!("{pid} {}", String::from_utf8_lossy(&c).replace('\0', " "))
        })
        .collect()
}

/// The cgroup directories (in any hierarchy) of the parents a private containerd of the
/// scenario in pid namespace `ns` made (`faultline-<ns>-<n>`, faultline_runtime::cgroups).
pub fn cgroups_of(ns: u64) -> Vec<String> {
    let prefix = format!("{}{ns}-", faultline_runtime::cgroups::PREFIX);
    faultline_runtime::cgroups::hierarchies()
        .unwrap()
        .iter()
        .flat_map(|h| {
            fs::read_dir(h)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path().display().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits (up to 10 s each) until pid namespace `ns` has no process left and the host has no
/// mount or loop device that was not in `mounts_before` and `loops_before`. runc's cgroup
/// directories outlive a killed run by design (nobody is left to remove them); the next
/// private containerd's start removes them, which is done here as that start would.
pub fn nothing_left(
    label: &str,
    ns: u64,
    mounts_before: &BTreeSet<String>,
    loops_before: &BTreeSet<String>,
) {
    wait_until(
        &format!("{label} to leave no process"),
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
        &format!("{label} to leave no mount or loop device"),
        Duration::from_secs(10),
        || {
            let new_mounts: Vec<_> = host_mounts().difference(mounts_before).cloned().collect();
            let new_loops: Vec<_> = loop_backing_files()
                .difference(loops_before)
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
    wait_until(
        &format!("{label}'s cgroups to be removed by the next start's cleanup"),
        Duration::from_secs(10),
        || {
            // A parent younger than 2 s is left alone (its owner may be starting).
            faultline_runtime::cgroups::remove_stale(Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            let left = cgroups_of(ns);
            left.is_empty().then_some(()).ok_or_else(|| left.join(", "))
        },
    )
    .unwrap();
}
