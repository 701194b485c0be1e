//! The live-node side of busy-binary: which processes execute a file, which executed or
//! mapped-executable files are open for writing right now, and which processes under the
//! watched directories run a binary that was replaced under them.
//!
//! `/proc/PID/exe` and the fd links are stat(2)ed directly (the kernel follows them to the
//! inode even when its name is gone); only `/proc/PID/maps` needs parsing, done by procfs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, MMPermissions, MMapPath, Process};
use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::{CheckInput, DetectError};

use super::NAME;

const DELETED: &str = " (deleted)";

/// Pids whose executable is the inode `dev`/`ino` (read from `proc_root/PID/exe`).
pub fn executors(proc_root: &Path, dev: u64, ino: u64) -> Vec<i32> {
    let mut pids: Vec<i32> = pids(proc_root)
        .into_iter()
        .filter(|pid| {
            std::fs::metadata(proc_root.join(pid.to_string()).join("exe"))
                .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn pids(proc_root: &Path) -> Vec<i32> {
    std::fs::read_dir(proc_root)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn under_any(path: &Path, dirs: &[PathBuf]) -> bool {
    dirs.is_empty() || dirs.iter().any(|d| path.starts_with(d))
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

/// Every file executed (`exe`) or mapped executable (shared libraries) by a process, keyed by
/// inode number: `maps` reports the superblock's device, which differs from stat(2)'s on
/// btrfs subvolumes and overlayfs, so the device is confirmed separately or by path.
fn running_files(proc_root: &Path, dirs: &[PathBuf]) -> BTreeMap<u64, Vec<RunningFile>> {
    let mut files: BTreeMap<u64, Vec<RunningFile>> = BTreeMap::new();
    let mut add = |path: PathBuf, dev: u64, ino: u64, pid: i32, exe: bool| {
        if !under_any(&path, dirs) || path.starts_with("/memfd:") {
            return;
        }
        let list = files.entry(ino).or_default();
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
    };
    for pid in pids(proc_root) {
        let dir = proc_root.join(pid.to_string());
        if let (Ok(m), Ok(path)) = (
            std::fs::metadata(dir.join("exe")),
            std::fs::read_link(dir.join("exe")),
        ) {
            // A deleted file has no name a copier could target.
            if m.nlink() > 0 {
                add(path, m.dev(), m.ino(), pid, true);
            }
        }
        let Ok(maps) = Process::new_with_root(dir).and_then(|p| p.maps()) else {
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
            add(
                path.clone(),
                makedev(map.dev.0, map.dev.1),
                map.inode,
                pid,
                false,
            );
        }
    }
    files
}

/// Executed or mapped-executable files that some process holds open for writing. On kernels
/// that deny writes to running executables this can only be a shared library (or any file
/// mapped executable); on 6.11-rc1..6.11.10 and 6.12-rc1..6.12.1 also a running program.
pub fn writers_of_running_files(input: &CheckInput) -> Result<Vec<Finding>, DetectError> {
    let proc_root = &input.proc_root;
    if !proc_root.join("self").exists() {
        return Err(DetectError::Read {
            what: format!("{} (procfs)", proc_root.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let running = running_files(proc_root, &input.paths);
    let mut findings = Vec::new();
    if running.is_empty() {
        return Ok(findings);
    }
    for pid in pids(proc_root) {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = Process::new_with_root(dir.clone()).and_then(|p| p.fd()) else {
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
            let Some(file) = running
                .get(&m.ino())
                .and_then(|list| list.iter().find(|f| f.dev == m.dev() || f.path == *target))
            else {
                continue;
            };
            let (how, holders) = if file.executing.is_empty() {
                ("maps it executable", &file.mapping)
            } else {
                ("executes it", &file.executing)
            };
            let holder = *holders.iter().next().expect("a running file has a holder");
            let message = format!(
                "{} is open for writing by pid {pid} (fd {}) while pid {holder} {how}: a write changes code under a running process",
                file.path.display(),
                fd.fd
            );
            findings.push(
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
                    "writer_fd": fd.fd,
                    "executing_pids": file.executing,
                    "mapping_pids": file.mapping,
                    "dev": m.dev(),
                    "inode": m.ino(),
                })),
            );
        }
    }
    Ok(findings)
}

/// Processes whose executable, under one of `dirs`, was unlinked or renamed over while they
/// ran: they keep running the old inode until restarted.
pub fn replaced_under_running(proc_root: &Path, dirs: &[PathBuf]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for pid in pids(proc_root) {
        let Ok(link) = std::fs::read_link(proc_root.join(pid.to_string()).join("exe")) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(path) = link.strip_suffix(DELETED) else {
            continue;
        };
        let path = Path::new(path);
        if !dirs.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        let now = std::fs::metadata(path).ok();
        let what = if now.is_some() { "replaced" } else { "removed" };
        let old_inode = std::fs::metadata(proc_root.join(pid.to_string()).join("exe"))
            .map(|m| m.ino())
            .ok();
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
                "old_inode": old_inode,
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

    fn input(dirs: &[&Path]) -> CheckInput {
        CheckInput {
            paths: dirs.iter().map(|d| d.to_path_buf()).collect(),
            ..CheckInput::default()
        }
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
        assert!(mine(replaced_under_running(
            Path::new("/proc"),
            std::slice::from_ref(&dir_path)
        ))
        .is_empty());

        let tmp = sleep_copy(&dir_path, ".cdc.tmp");
        std::fs::rename(&tmp, &bin).unwrap();
        let found = mine(replaced_under_running(
            Path::new("/proc"),
            std::slice::from_ref(&dir_path),
        ));
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
        assert!(mine(replaced_under_running(
            Path::new("/proc"),
            &[elsewhere.path().to_path_buf()]
        ))
        .is_empty());
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
        let quiet = writers_of_running_files(&input(&[&dir_path])).unwrap();
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
                let fs =
                    writers_of_running_files(&input(&[&dir_path])).map_err(|e| e.to_string())?;
                let fs: Vec<Finding> = fs
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
