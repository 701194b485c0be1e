//! Artifacts kept under `target/faultline/<scenario>/` when a scenario fails (or with --keep):
//! the kernel log since the marker, mountinfo, the process tree, the result itself.
//!
//! A scenario that finished is recorded after its variants released their guards, so its
//! tables show what was left, not the environment at the moment of failure (the result's
//! `observed` holds that). A scenario that timed out is recorded by the host before its
//! namespace is killed: then the tables show the stuck environment, kernel stacks included.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::result::ScenarioResult;
use faultline_sys::kmsg::KmsgRecord;
use faultline_sys::proc::Snapshot;

/// Removes what an earlier run left in a scenario's artifacts directory (the directory
/// itself; it is made again when this run keeps something).
pub fn clear(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `dir` holds anything: what this run kept, as [`clear`] emptied it at the start.
pub fn kept(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

pub fn write(dir: &Path, kmsg: &[KmsgRecord], result: &ScenarioResult) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let log: String = kmsg.iter().map(|r| r.to_dmesg_line() + "\n").collect();
    fs::write(dir.join("kmsg.txt"), log)?;
    if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
        fs::write(dir.join("mountinfo.txt"), mi)?;
    }
    fs::write(dir.join("processes.txt"), process_tree())?;
    fs::write(
        dir.join("result.json"),
        serde_json::to_string_pretty(result).unwrap_or_default(),
    )?;
    Ok(())
}

/// What the host can see of a scenario that ran out of time, taken before its namespace is
/// killed: the mount table and processes of its pid 1 (`init`), their kernel stacks, and the
/// kernel log since the scenario's marker.
pub fn write_on_timeout(dir: &Path, name: &str, init: i32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    fs::create_dir_all(dir)?;
    if let Ok(mi) = fs::read_to_string(format!("/proc/{init}/mountinfo")) {
        fs::write(dir.join("mountinfo.txt"), mi)?;
    }
    let pid_ns = |pid: i32| {
        fs::metadata(format!("/proc/{pid}/ns/pid"))
            .map(|m| m.ino())
            .ok()
    };
    let ns = pid_ns(init);
    let mut tree = process_tree_where(|pid| ns.is_some() && pid_ns(pid) == ns);
    for line in tree.clone().lines().skip(1) {
        let Some(pid) = line.split('\t').next() else {
            continue;
        };
        if let Ok(stack) = fs::read_to_string(format!("/proc/{pid}/stack")) {
            let _ = write!(tree, "\n--- kernel stack of {pid}\n{stack}");
        }
    }
    fs::write(dir.join("processes.txt"), tree)?;
    let marker = format!("faultline: {name} begin ");
    if let Ok(lines) = faultline_detect::kernel_log::read_live() {
        let since = lines
            .iter()
            .rposition(|l| l.message.contains(&marker))
            .map_or(0, |i| i + 1);
        let log: String = lines[since..]
            .iter()
            .map(|l| format!("[{}] {}\n", l.when.as_deref().unwrap_or(""), l.message))
            .collect();
        fs::write(dir.join("kmsg.txt"), log)?;
    }
    Ok(())
}

/// `pid ppid state wchan cmdline` for every process this namespace's /proc shows.
pub fn process_tree() -> String {
    process_tree_where(|_| true)
}

fn process_tree_where(keep: impl Fn(i32) -> bool) -> String {
    let mut out = String::from("PID\tPPID\tSTATE\tWCHAN\tCMDLINE\n");
    // One walk through the shared /proc layer (procfs); a process that cannot be read is
    // left out here, as the artifact is a best-effort picture of a stuck namespace.
    let snap = match Snapshot::take(Path::new("/proc")) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "# failed to read /proc: {e}");
            return out;
        }
    };
    for p in snap.processes().iter().filter(|p| keep(p.pid)) {
        let wchan = fs::read_to_string(snap.dir(p.pid).join("wchan")).unwrap_or_default();
        let cmdline = snap.cmdline(p.pid).map(|c| c.join(" ")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{wchan}\t{}",
            p.pid,
            p.ppid,
            p.state,
            cmdline.trim_end()
        );
    }
    out
}
