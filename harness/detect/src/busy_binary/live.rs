//! The live-node side of busy-binary: which processes execute a file, which executed or
//! mapped-executable files are open for writing right now, and which processes under the
//! watched directories run a binary that was replaced under them.
//!
//! The processes come from the run's one walk of /proc ([`Snapshot`]); each one's
//! `/proc/PID/exe` is read once. `exe` and the fd links are stat(2)ed directly (the kernel
//! follows them to the inode even when its name is gone); only `/proc/PID/maps` needs
//! parsing, done by procfs. Another user's exe, maps and fds need ptrace read access
//! (proc(5)): without it they are gaps, and the report says so.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, MMPermissions, MMapPath, Process};
use serde_json::json;

use faultline_sys::proc::{io_error, Gaps, Item, Snapshot};

use crate::finding::{Finding, Severity};

use super::NAME;

const DELETED: &str = " (deleted)";

const EXE: Item = Item {
    what: "the executable (/proc/PID/exe)",
    of: "processes",
};
const MAPS: Item = Item {
    what: "the memory maps (/proc/PID/maps)",
    of: "processes",
};
const FDS: Item = Item {
    what: "the open files (/proc/PID/fd)",
    of: "processes",
};

/// Pids whose executable is the inode `dev`/`ino` (read from `proc_root/PID/exe`).
pub fn executors(proc_root: &Path, dev: u64, ino: u64) -> Vec<i32> {
    let Ok(snap) = Snapshot::take(proc_root) else {
        return Vec::new();
    };
    snap.user_processes()
        .filter(|p| {
            std::fs::metadata(snap.dir(p.pid).join("exe"))
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .map(|p| p.pid)
        .collect()
}

fn under_any(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.is_empty() || dirs.iter().any(|d| path.starts_with(d))
}

/// A process's executable: where `/proc/PID/exe` points and the inode behind it.
#[derive(Debug)]
struct Exe {
    pid: i32,
    link: PathBuf,
    dev: u64,
    ino: u64,
    nlink: u64,
}

/// A file some process executes or maps executable.
#[derive(Debug, Default)]
struct RunningFile {
    path: PathBuf,
    dev: u64,
    executing: BTreeSet<i32>,
    mapping: BTreeSet<i32>,
}

fn makedev(major: i32, minor: i32) -> u64 {
    nix::sys::stat::makedev(major as u64, minor as u64)
}

/// What the processes of one snapshot run: every executable, and every file executed or
/// mapped executable (under the directories asked about), keyed by inode number.
#[derive(Debug)]
pub struct Running {
    exes: Vec<Exe>,
    /// `maps` reports the superblock's device, which differs from stat(2)'s on btrfs
    /// subvolumes and overlayfs, so the device is confirmed separately or by path.
    files: BTreeMap<u64, Vec<RunningFile>>,
}

impl Running {
    /// Reads every user-space process's exe and executable mappings once.
    pub fn look(snap: &Snapshot, dirs: &[PathBuf], gaps: &mut Gaps) -> Running {
        let mut running = Running {
            exes: Vec::new(),
            files: BTreeMap::new(),
        };
        for p in snap.user_processes() {
            let pid = p.pid;
            let link = snap.dir(pid).join("exe");
            let exe = std::fs::read_link(&link).and_then(|to| Ok((to, std::fs::metadata(&link)?)));
            if let Some((to, m)) = gaps.read(EXE, pid.into(), exe) {
                // A deleted file has no name a copier could target.
                if m.nlink() > 0 {
                    running.add(to.clone(), m.dev(), m.ino(), pid, true, dirs);
                }
                running.exes.push(Exe {
                    pid,
                    link: to,
                    dev: m.dev(),
                    ino: m.ino(),
                    nlink: m.nlink(),
                });
            }
            let maps = Process::new_with_root(snap.dir(pid)).and_then(|p| p.maps());
            let Some(maps) = gaps.read(MAPS, pid.into(), maps.map_err(io_error)) else {
                continue;
            };
            for map in maps.iter() {
                let MMapPath::Path(path) = &map.pathname else {
                    continue;
                };
                if !map.perms.contains(MMPermissions::EXECUTE)
                    || map.inode == 0
                    || path.to_string_lossy().ends_with(DELETED)
                {
                    continue;
                }
                let dev = makedev(map.dev.0, map.dev.1);
                running.add(path.clone(), dev, map.inode, pid, false, dirs);
            }
        }
        running
    }

    fn add(&mut self, path: PathBuf, dev: u64, ino: u64, pid: i32, exe: bool, dirs: &[PathBuf]) {
        if !under_any(&path, dirs) || path.starts_with("/memfd:") {
            return;
        }
        let list = self.files.entry(ino).or_default();
        let idx = match list.iter().position(|f| f.dev == dev || f.path == path) {
            Some(i) => i,
            None => {
                list.push(RunningFile {
                    path,
                    dev,
                    ..Default::default()
                });
                list.len() - 1
            }
        };
        let f = &mut list[idx];
        if exe {
            f.executing.insert(pid);
        } else {
            f.mapping.insert(pid);
        }
    }

    fn file(&self, dev: u64, ino: u64, path: &Path) -> Option<&RunningFile> {
        self.files
            .get(&ino)?
            .iter()
            .find(|f| f.dev == dev || f.path == path)
    }
}

/// Executed or mapped-executable files that some process holds open for writing. On kernels
/// that deny writes to running executables this can only be a shared library (or any file
/// mapped executable); on 6.11-rc1..6.11.10 and 6.12-rc1..6.12.1 also a running program.
pub fn writers_of_running_files(
    snap: &Snapshot,
    running: &Running,
    gaps: &mut Gaps,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if running.files.is_empty() {
        return findings;
    }
    for p in snap.user_processes() {
        let pid = p.pid;
        let dir = snap.dir(pid);
        let fds = Process::new_with_root(dir.clone()).and_then(|p| p.fd());
        let Some(fds) = gaps.read(FDS, pid.into(), fds.map_err(io_error)) else {
            continue;
        };
        for fd in fds.flatten() {
            // The fd link's owner-write bit is set when the file was opened for writing.
            if fd.mode & 0o200 == 0 {
                continue;
            }
            let FDTarget::Path(target) = &fd.target else {
                continue;
            };
            let Ok(m) = std::fs::metadata(dir.join("fd").join(fd.fd.to_string())) else {
                continue;
            };
            if !m.is_file() || m.nlink() == 0 {
                continue;
            }
            if let Some(file) = running.file(m.dev(), m.ino(), target) {
                findings.push(writer_finding(file, pid, fd.fd, &m));
            }
        }
    }
    findings
}

fn writer_finding(file: &RunningFile, pid: i32, fd: i32, m: &std::fs::Metadata) -> Finding {
    let (how, holders) = if file.executing.is_empty() {
        ("maps it executable", &file.mapping)
    } else {
        ("executes it", &file.executing)
    };
    let holder = *holders.iter().next().expect("a running file has a holder");
    let message = format!(
        "{} is open for writing by pid {pid} (fd {fd}) while pid {holder} {how}: a write changes code under a running process",
        file.path.display(),
    );
    Finding::new(
        NAME,
        Severity::Critical,
        file.path.display().to_string(),
        message,
        format!(
            "do not write {} in place: write the new version to a temporary file in the same directory, fsync it and rename(2) it over the path; restart pid {holder} if its code was already changed",
            file.path.display()
        ),
    )
    .with_pid(holder)
    .with_evidence(json!({
        "kind": "open-for-writing-while-running",
        "writer_pid": pid,
        "writer_fd": fd,
        "executing_pids": file.executing,
        "mapping_pids": file.mapping,
        "dev": m.dev(),
        "inode": m.ino(),
    }))
}

/// Processes whose executable, under one of `dirs`, was unlinked or renamed over while they
/// ran: they keep running the old inode until restarted.
pub fn replaced_under_running(running: &Running, dirs: &[PathBuf]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for exe in &running.exes {
        let link = exe.link.to_string_lossy();
        let Some(path) = link.strip_suffix(DELETED) else {
            continue;
        };
        let path = Path::new(path);
        if !dirs.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        let pid = exe.pid;
        let now = std::fs::metadata(path).ok();
        let what = if now.is_some() { "replaced" } else { "removed" };
        findings.push(
            Finding::new(
                NAME,
                Severity::Warning,
                path.display().to_string(),
                format!(
                    "pid {pid} runs {} but that file was {what} while it ran: it keeps running the old version until restarted",
                    path.display()
                ),
                format!(
                    "restart pid {pid} (or its pod) to run the version now at {}; if the file is replaced by unlink and re-create, switch the installer to a temporary file in the same directory plus rename(2)",
                    path.display()
                ),
            )
            .with_pid(pid)
            .with_evidence(json!({
                "kind": "running-deleted-binary",
                "exe_link": link,
                "old_inode": exe.ino,
                "old_dev": exe.dev,
                "old_nlink": exe.nlink,
                "new_inode": now.map(|m| m.ino()),
            })),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_sys::{wait_until, ChildGroup};
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::time::Duration;

    fn sleep_copy(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let sleep = faultline_sys::path::find_on_path("sleep").expect("sleep on PATH");
        std::fs::copy(sleep, &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Starts the copied binary. Other test threads fork while the copy's write descriptor is
    /// open, and their children hold it until they exec: the exec then fails with ETXTBSY for
    /// a moment, which is the very race this detector is about, not the behaviour under test.
    fn run_copy(bin: &Path) -> ChildGroup {
        wait_until(
            "the copied binary to start",
            Duration::from_secs(10),
            || match ChildGroup::spawn("cdc", Command::new(bin).arg("60")) {
                Ok(c) => Ok(c),
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => Err(e.to_string()),
                Err(e) => panic!("failed to start {}: {e}", bin.display()),
            },
        )
        .unwrap()
    }

    /// A fresh look at the node, as `faultline check busy-binary --path DIR` takes it.
    fn look(dirs: &[PathBuf]) -> (Snapshot, Running, Gaps) {
        let snap = Snapshot::take(Path::new("/proc")).unwrap();
        let mut gaps = Gaps::new();
        let running = Running::look(&snap, dirs, &mut gaps);
        (snap, running, gaps)
    }

    /// Our own processes are always readable (a gap elsewhere, such as a protected pid 1 in
    /// a sandbox, is the node's business).
    fn assert_read_ours(gaps: &Gaps) {
        let me = i64::from(std::process::id());
        for item in [EXE, MAPS, FDS] {
            assert!(
                !gaps.failed_ids(item).contains(&me),
                "{:?}",
                gaps.messages()
            );
        }
    }

    fn replaced(dirs: &[PathBuf]) -> Vec<Finding> {
        let (_, running, gaps) = look(dirs);
        assert_read_ours(&gaps);
        replaced_under_running(&running, dirs)
    }

    fn writers(dirs: &[PathBuf]) -> Vec<Finding> {
        let (snap, running, mut gaps) = look(dirs);
        let found = writers_of_running_files(&snap, &running, &mut gaps);
        assert_read_ours(&gaps);
        found
    }

    #[test]
    fn executors_finds_the_running_copy() {
        let dir = tempfile::tempdir().unwrap();
        let bin = sleep_copy(dir.path(), "cdc");
        let meta = std::fs::metadata(&bin).unwrap();
        let mut child = run_copy(&bin);
        let pids = executors(Path::new("/proc"), meta.dev(), meta.ino());
        assert_eq!(pids, vec![child.pid()]);
        child.teardown().unwrap();
        assert!(executors(Path::new("/proc"), meta.dev(), meta.ino()).is_empty());
    }

    #[test]
    fn reports_a_binary_renamed_over_under_a_running_process() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let bin = sleep_copy(&dir_path, "cdc");
        let mut child = run_copy(&bin);
        let pid = child.pid();
        let mine = |fs: Vec<Finding>| -> Vec<Finding> {
            fs.into_iter().filter(|f| f.pid == Some(pid)).collect()
        };
        assert!(mine(replaced(std::slice::from_ref(&dir_path))).is_empty());

        let tmp = sleep_copy(&dir_path, ".cdc.tmp");
        std::fs::rename(&tmp, &bin).unwrap();
        let found = mine(replaced(std::slice::from_ref(&dir_path)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(found[0].subject, bin.display().to_string());
        assert!(
            found[0].message.contains("replaced"),
            "{}",
            found[0].message
        );
        // Scoped to the directories asked about.
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(mine(replaced(&[elsewhere.path().to_path_buf()])).is_empty());
        child.teardown().unwrap();
    }

    #[test]
    fn reports_a_file_mapped_executable_and_open_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let lib = sleep_copy(&dir_path, "libcdc.so");
        // This process maps the file executable, as the loader maps a shared library.
        let file = std::fs::File::open(&lib).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: a private read+exec mapping of a file we own; it is never dereferenced and
        // is unmapped below. (libc rather than nix: nix's mman feature is not enabled.)
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let quiet = writers(std::slice::from_ref(&dir_path));
        assert!(quiet.is_empty(), "{quiet:?}");

        // Another process holds it open for writing (what `cp` onto a library does).
        let writer_cmd = format!("exec 3>>'{}'; exec sleep 60", lib.display());
        let mut writer =
            ChildGroup::spawn("writer", Command::new("sh").args(["-c", &writer_cmd])).unwrap();
        let writer_pid = writer.pid();
        let found = wait_until(
            "the writer to hold the library open",
            Duration::from_secs(10),
            || {
                let fs: Vec<Finding> = writers(std::slice::from_ref(&dir_path))
                    .into_iter()
                    .filter(|f| f.evidence["writer_pid"] == writer_pid)
                    .collect();
                if fs.is_empty() {
                    Err("no finding for the writer yet".into())
                } else {
                    Ok(fs)
                }
            },
        )
        .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Critical);
        assert_eq!(found[0].pid, Some(std::process::id() as i32));
        assert_eq!(found[0].subject, lib.display().to_string());
        assert!(found[0].message.contains("maps it executable"));
        writer.teardown().unwrap();
        // SAFETY: unmaps the mapping created above, which nothing references.
        assert_eq!(unsafe { libc::munmap(map, 4096) }, 0);
    }
}
