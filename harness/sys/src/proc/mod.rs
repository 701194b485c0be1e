//! One walk of /proc, on the procfs crate: every process with what the detectors ask about
//! it (command, state, parent, start time, kernel-thread flag, mount namespace, threads), and
//! what could not be read and why.
//!
//! A `faultline check` takes one [`Snapshot`] and every detector works from it, so pids are
//! listed one way and a process that could not be read is counted once. What a detector reads
//! beyond the snapshot (executables, maps, descriptors, kernel stacks) it reads by pid and
//! records in its own [`Gaps`].
//!
//! The command line is not part of the walk: reading `/proc/PID/cmdline` takes the target's
//! `mmap_lock`, which a task stuck in a page fault on a dead FUSE or NFS mount holds forever
//! (proc(5); the reason `ps` hangs on such nodes). It is read on demand, by the one detector
//! that needs it, with [`Snapshot::cmdline`].

mod gaps;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use procfs::process::{Process, Status};
use procfs::{FromRead, ProcError};

use crate::mount_namespace::{path_in_root, MountNamespace};
use crate::mountinfo::{MountInfo, MountInfoError};
pub use gaps::{describe, is_gone, Gaps, Item, MOUNT_NS, MOUNT_TABLE, STAT, TASKS};

/// `PF_KTHREAD` in include/linux/sched.h: the task is a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

#[derive(Debug, thiserror::Error)]
#[error("failed to list processes in {path}")]
pub struct SnapshotError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub tid: i32,
    pub comm: String,
    /// The state letter of its stat line (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// Voluntary plus involuntary context switches, read only for tasks in D (a task that is
    /// still in D later with the same count never ran in between: kernel/hung_task.c's test).
    pub switches: Option<u64>,
}

/// One process as the walk saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// Clock ticks after boot at which it started (stat field 22).
    pub starttime: u64,
    /// `PF_KTHREAD`: a kernel thread, with no user memory, executable or mount table of its own.
    pub kernel_thread: bool,
    /// Inode of `/proc/PID/ns/mnt`; `None` for kernel threads, zombies, and when it could not
    /// be read (the snapshot's gaps say why).
    pub mnt_ns: Option<u64>,
    /// Its threads, the main thread included.
    pub tasks: Vec<TaskEntry>,
}

/// Every process under a procfs mount at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    root: PathBuf,
    taken: Instant,
    processes: Vec<ProcessEntry>,
    vanished: Vec<i32>,
    gaps: Gaps,
    /// Every namespace's mount table, read once for all the detectors of one check.
    tables: std::sync::OnceLock<(Vec<NamespaceTable>, Gaps)>,
}

/// A procfs error as the I/O error under it, so that "gone" and "denied" are told apart alike.
pub fn io_error(e: ProcError) -> std::io::Error {
    use std::io::Error;
    match e {
        ProcError::PermissionDenied(_) => Error::from_raw_os_error(libc::EACCES),
        ProcError::NotFound(_) => Error::from_raw_os_error(libc::ENOENT),
        ProcError::Io(e, _) => e,
        other => Error::other(other.to_string()),
    }
}

impl Snapshot {
    /// Walks `proc_root` once. Fails only when the directory itself cannot be listed.
    pub fn take(proc_root: &Path) -> Result<Snapshot, SnapshotError> {
        let err = |source| SnapshotError {
            path: proc_root.to_path_buf(),
            source,
        };
        let iter =
            procfs::process::all_processes_with_root(proc_root).map_err(|e| err(io_error(e)))?;
        let mut snap = Snapshot {
            root: proc_root.to_path_buf(),
            taken: Instant::now(),
            processes: Vec::new(),
            vanished: Vec::new(),
            gaps: Gaps::new(),
            tables: std::sync::OnceLock::new(),
        };
        for p in iter {
            match p {
                Ok(p) => snap.add(&p),
                // A directory entry that could not be opened: the process is gone, or the
                // entry is not a process.
                Err(e) => {
                    let e = io_error(e);
                    if !is_gone(&e) {
                        return Err(err(e));
                    }
                }
            }
        }
        snap.processes.sort_by_key(|p| p.pid);
        snap.vanished.sort_unstable();
        Ok(snap)
    }

    fn add(&mut self, p: &Process) {
        let pid = p.pid;
        let stat = match p.stat().map_err(io_error) {
            Err(e) if is_gone(&e) => {
                self.vanished.push(pid);
                return;
            }
            stat => match self.gaps.read(STAT, pid.into(), stat) {
                Some(stat) => stat,
                None => return,
            },
        };
        let kernel_thread = stat.flags & PF_KTHREAD != 0;
        let mnt_ns = if kernel_thread || stat.state == 'Z' {
            None
        } else {
            let ns = std::fs::metadata(self.root.join(format!("{pid}/ns/mnt"))).map(|m| m.ino());
            self.gaps.read(MOUNT_NS, pid.into(), ns)
        };
        let tasks = match p.tasks() {
            Ok(tasks) => {
                self.gaps.tried(TASKS);
                tasks.flatten().filter_map(|t| task_entry(&t)).collect()
            }
            Err(e) => {
                let e = io_error(e);
                self.gaps.read::<()>(TASKS, pid.into(), Err(e));
                Vec::new()
            }
        };
        self.processes.push(ProcessEntry {
            pid,
            comm: stat.comm,
            state: stat.state,
            ppid: stat.ppid,
            starttime: stat.starttime,
            kernel_thread,
            mnt_ns,
            tasks,
        });
    }

    /// Where procfs is mounted.
    pub fn proc_root(&self) -> &Path {
        &self.root
    }

    /// When the walk started.
    pub fn taken(&self) -> Instant {
        self.taken
    }

    /// Every process, ascending by pid.
    pub fn processes(&self) -> &[ProcessEntry] {
        &self.processes
    }

    /// The processes that are not kernel threads.
    pub fn user_processes(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.processes.iter().filter(|p| !p.kernel_thread)
    }

    pub fn get(&self, pid: i32) -> Option<&ProcessEntry> {
        self.processes
            .binary_search_by_key(&pid, |p| p.pid)
            .ok()
            .map(|i| &self.processes[i])
    }

    /// Pids listed that exited before they could be read.
    pub fn vanished(&self) -> &[i32] {
        &self.vanished
    }

    /// What the walk could not read ([`STAT`], [`TASKS`], [`MOUNT_NS`]).
    pub fn gaps(&self) -> &Gaps {
        &self.gaps
    }

    /// `/proc/PID`.
    pub fn dir(&self, pid: i32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// `path` as process `pid` sees it, through `/proc/PID/root`.
    pub fn path_in_root(&self, pid: i32, path: &Path) -> PathBuf {
        path_in_root(&self.root, pid, path)
    }

    /// `/proc/PID/cmdline`, read now (see the module documentation for why not in the walk).
    pub fn cmdline(&self, pid: i32) -> std::io::Result<Vec<String>> {
        Process::new_with_root(self.dir(pid))
            .and_then(|p| p.cmdline())
            .map_err(io_error)
    }

    /// Every mount namespace that has a user-space process, ordered by inode, each with its
    /// processes ascending.
    pub fn mount_namespaces(&self) -> Vec<MountNamespace> {
        let mut by_inode: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
        for p in self.user_processes() {
            if let Some(ns) = p.mnt_ns {
                by_inode.entry(ns).or_default().push(p.pid);
            }
        }
        by_inode
            .into_iter()
            .map(|(inode, pids)| MountNamespace { inode, pids })
            .collect()
    }
}

/// One mount namespace's mount table, read through one of its processes.
#[derive(Debug, Clone)]
pub struct NamespaceTable {
    pub ns: MountNamespace,
    /// The process it was read through (mount points are relative to its root).
    pub pid: i32,
    pub mounts: Vec<MountInfo>,
}

impl Snapshot {
    /// Every mount namespace's mount table ([`Snapshot::mount_namespaces`]), read on the
    /// first call and kept for the next detector; a table that could not be read is
    /// recorded in `gaps` ([`MOUNT_TABLE`]) on every call.
    pub fn mount_tables(&self, gaps: &mut Gaps) -> Vec<NamespaceTable> {
        let (tables, missed) = self.tables.get_or_init(|| {
            let mut missed = Gaps::new();
            let mut out = Vec::new();
            for ns in self.mount_namespaces() {
                let read = ns.mountinfo(&self.root).map_err(mount_table_error);
                if let Some((pid, mounts)) =
                    missed.read(MOUNT_TABLE, ns.representative().into(), read)
                {
                    out.push(NamespaceTable { ns, pid, mounts });
                }
            }
            (out, missed)
        });
        gaps.extend(missed);
        tables.clone()
    }
}

/// The I/O error under a mount table that could not be read; a table that does not parse is
/// a gap too, never "gone".
fn mount_table_error(e: MountInfoError) -> std::io::Error {
    match e {
        MountInfoError::Read { source, .. } => source,
        other => std::io::Error::other(crate::error_chain(&other)),
    }
}

fn task_entry(t: &procfs::process::Task) -> Option<TaskEntry> {
    // A thread that exits meanwhile is simply not listed.
    let stat = t.stat().ok()?;
    let switches = (stat.state == 'D')
        .then(|| t.status().ok())
        .flatten()
        .map(|s: Status| {
            s.voluntary_ctxt_switches.unwrap_or(0) + s.nonvoluntary_ctxt_switches.unwrap_or(0)
        });
    Some(TaskEntry {
        tid: t.tid,
        comm: stat.comm,
        state: stat.state,
        switches,
    })
}

/// The state letter of a `/proc/PID/stat` line, parsed by procfs (the command in parentheses
/// may itself contain spaces and parentheses).
pub fn stat_state(stat: &str) -> Option<char> {
    procfs::process::Stat::from_read(stat.as_bytes())
        .ok()
        .map(|s| s.state)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
