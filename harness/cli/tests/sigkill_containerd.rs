//! A SIGKILL of `faultline run delayed-umount2` while its private containerd has a pod up
//! and the shim's umount2 is held leaves no containerd, shim or container process, no mount
//! and no loop device. The container runs in a pid namespace of its pod, nested in the
//! scenario's: the kernel kills it with the scenario's namespace.
//!
//! cgroups are global and runc's per-container directories stay after a SIGKILL (nobody
//! is left to remove them); the next run's containerd start removes every parent whose owner
//! is gone (`faultline_runtime::cgroups::remove_stale`, which `leftovers::nothing_left`
//! calls as that start would), and then none of the killed run's is left.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Requirement;
use faultline_sys::wait_until;

// Only `require` is used here.
#[allow(dead_code)]
mod common;
mod leftovers;

use leftovers::{cgroups_of, host_mounts, loop_backing_files, pids_in_pid_ns, scenario_pids};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn argv0(pid: i32) -> String {
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(first).into_owned();
    Path::new(&first)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn cmdline(pid: i32) -> String {
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmd).replace('\0', " ")
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Pids in the cgroup directories `dirs` (and below), from the host's view.
fn pids_in_dirs(dirs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        for e in walkdir(Path::new(d)) {
            if let Ok(procs) = fs::read_to_string(e.join("cgroup.procs")) {
                out.extend(procs.lines().map(|p| format!("{p} in {}", e.display())));
            }
        }
    }
    out
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(walkdir(&e.path()));
        }
    }
    all
}

/// `faultline run`, SIGKILLed when dropped (also when an assertion fails first).
struct Run(std::process::Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_mid_containerd_variant_leaves_nothing() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("containerd", "containerd"),
        Requirement::binary("runc", "runc"),
        Requirement::Path {
            path: "/bin/busybox",
            why: "apt-get install busybox-static",
        },
    ]);
    let mounts_before = host_mounts();
    let loops_before = loop_backing_files();
    let run = Run(Command::new(FAULTLINE)
        .args(["run", "delayed-umount2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    // Ours: its parent (ns-init) is our `faultline run`'s child; other runs of the
    // scenario may be under way on this host.
    let ours = |pid: i32| ppid(pid).and_then(ppid) == Some(run.0.id() as i32);
    let scenario = wait_until("the scenario process", Duration::from_secs(30), || {
        scenario_pids("delayed-umount2")
            .into_iter()
            .find(|&p| ours(p))
            .ok_or_else(|| "none yet".to_string())
    })
    .unwrap();
    let ns = fs::metadata(format!("/proc/{scenario}/ns/pid"))
        .unwrap()
        .ino();
    // Wait for cri-shim-v2's shim (the variants run side by side; its shim stays for a
    // minute), then for the stop to be under way (the shim's umount2 held by the injector).
    let shim = wait_until("cri-shim-v2's shim", Duration::from_secs(60), || {
        pids_in_pid_ns(ns)
            .into_iter()
            .find(|&p| {
                // The shim itself: not containerd's `... start` call that forks it, nor a
                // child it forked and has not yet turned into runc.
                let argv = cmdline(p);
                argv0(p) == "containerd-shim-runc-v2"
                    && argv.contains("/cri-shim-v2/")
                    && !argv.trim_end().ends_with(" start")
                    && ppid(p).is_some_and(|pp| argv0(pp) != "containerd-shim-runc-v2")
            })
            .ok_or_else(|| format!("processes: {:?}", pids_in_pid_ns(ns)))
    })
    .unwrap();
    // The stop is under way once the injector traces the shim (it attaches to hold umount2).
    wait_until("the injector on the shim", Duration::from_secs(60), || {
        let traced = fs::read_dir(format!("/proc/{shim}/task"))
            .map_err(|e| e.to_string())?
            .flatten()
            .any(|t| {
                fs::read_to_string(t.path().join("status"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.starts_with("TracerPid:") && l != "TracerPid:\t0")
            });
        traced
            .then_some(())
            .ok_or_else(|| "not traced yet".to_string())
    })
    .unwrap();
    let up = pids_in_pid_ns(ns);
    let names: Vec<String> = up.iter().map(|&p| argv0(p)).collect();
    assert!(
        names.iter().any(|n| n == "containerd") && up.contains(&shim),
        "containerd and its shim should be up when killed: {names:?}"
    );
    let made = cgroups_of(ns);
    assert!(
        made.iter()
            .any(|d| d.contains('/') && walkdir(Path::new(d)).len() > 1),
        "runc made no container cgroup under the run's parent: {made:?}"
    );
    drop(run);

    // The container processes were in the parent's cgroups, in a pid namespace nested in
    // the scenario's: gone with it.
    wait_until(
        "the run's cgroups to hold no process",
        Duration::from_secs(10),
        || {
            let left = pids_in_dirs(&cgroups_of(ns));
            left.is_empty().then_some(()).ok_or_else(|| left.join("; "))
        },
    )
    .unwrap();
    // runc's directories stay; the next start removes them (nothing_left does it as that
    // start would, and checks).
    let stale = cgroups_of(ns);
    eprintln!("cgroup directories the killed run left: {stale:?}");
    assert!(
        !stale.is_empty(),
        "expected runc's cgroup directories to stay after SIGKILL"
    );
    leftovers::nothing_left(
        "delayed-umount2 (killed mid cri-shim-v2)",
        ns,
        &mounts_before,
        &loops_before,
    );
}
