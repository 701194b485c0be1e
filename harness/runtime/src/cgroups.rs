//! A cgroup parent of one private containerd's own (CRI's `cgroup_parent` for its pods), and
//! the removal of what an earlier, killed run left.
//!
//! runc (cgroupfs driver) creates `<hierarchy>/<parent>/<container id>` in every cgroup
//! hierarchy mounted, v1 and v2 alike, and nobody removes those directories when runc, its
//! shim and containerd are SIGKILLed. cgroups are global: a private mount or pid namespace
//! does not take them away. So each run names its parent `faultline-<pid ns inode>-<n>`,
//! creates it in the first hierarchy and holds an flock(2) on that directory for as long as
//! it lives (the kernel drops the lock when the holder dies, whatever kills it). A later run
//! removes every `faultline-*-*` parent whose lock it can take: that owner is gone.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use crate::process::kill_and_reap;

pub const PREFIX: &str = "faultline-";

/// A parent younger than this is left alone even when unlocked: its owner may be between
/// its mkdir and its flock.
const CREATION_GRACE: Duration = Duration::from_secs(2);

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read the cgroup mounts (/proc/self/mountinfo)")]
    Mounts(#[source] faultline_sys::mountinfo::MountInfoError),
    #[error("no cgroup file system is mounted")]
    NoHierarchy,
    #[error("failed to create the cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock the cgroup {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to remove the cgroups {left:?}: still busy after {waited:?} (processes {pids:?} did not die)")]
    Busy {
        left: Vec<PathBuf>,
        pids: Vec<i32>,
        waited: Duration,
    },
}

/// Where cgroup (v1) and cgroup2 file systems are mounted, sorted.
pub fn hierarchies() -> Result<Vec<PathBuf>, CgroupError> {
    let mounts = faultline_sys::mountinfo::read_mountinfo(Path::new("/proc"), None)
        .map_err(CgroupError::Mounts)?;
    let mut h: Vec<PathBuf> = mounts
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    h.sort();
    h.dedup();
    Ok(h)
}

/// One run's cgroup parent, locked while this value lives.
#[derive(Debug)]
pub struct CgroupParent {
    name: String,
    hierarchies: Vec<PathBuf>,
    /// The flock on the parent's directory in the first hierarchy; released on drop.
    _lock: Flock<File>,
    /// Cleared by [`CgroupParent::abandon`].
    remove_on_drop: bool,
}

impl CgroupParent {
    /// Creates and locks `faultline-<pid ns inode>-<n>`, unique among live runs: the pid
    /// namespace's inode is unique while it exists, `n` counts within the process.
    pub fn create() -> Result<CgroupParent, CgroupError> {
        let hierarchies = hierarchies()?;
        let first = hierarchies.first().ok_or(CgroupError::NoHierarchy)?;
        let ns = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or_else(|_| std::process::id().into());
        // A pid namespace's inode is reused once it is gone: a killed run's parent of the
        // same name may still be there (until some start removes it). Take the next `n`.
        let (name, path) = loop {
            let name = format!("{PREFIX}{ns}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
            let path = first.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => break (name, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(CgroupError::Create { path, source }),
            }
        };
        let create = |source| CgroupError::Create {
            path: path.clone(),
            source,
        };
        let dir = File::open(&path).map_err(create)?;
        let lock = Flock::lock(dir, FlockArg::LockExclusiveNonblock).map_err(|(_, source)| {
            CgroupError::Lock {
                path: path.clone(),
                source,
            }
        })?;
        Ok(CgroupParent {
            name,
            hierarchies,
            _lock: lock,
            remove_on_drop: true,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent as CRI takes it (`/faultline-...`).
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The processes (visible to us) in the parent or below it, in any hierarchy.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.name)
    }

    /// Kills what is left in it and removes it from every hierarchy, within `limit`.
    pub fn remove(&self, limit: Duration) -> Result<(), CgroupError> {
        remove_named(&self.hierarchies, &self.name, limit)
    }

    /// Lets go of the parent as a killed owner would: the lock goes, the directories stay
    /// (for tests of [`remove_stale`]).
    pub fn abandon(mut self) {
        self.remove_on_drop = false;
    }

    /// What a run does first: removes the parents earlier, killed runs left
    /// ([`remove_stale`]), then creates its own.
    pub fn claim(limit: Duration) -> Result<CgroupParent, CgroupError> {
        match remove_stale(limit) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!("removed cgroups an earlier run left: {removed:?}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
        CgroupParent::create()
    }
}

/// The parent goes with its owner (removing an already removed parent is a no-op); a
/// parent that stays busy is logged and left to the next run's [`remove_stale`].
impl Drop for CgroupParent {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        if let Err(e) = self.remove(DROP_LIMIT) {
            tracing::warn!("{e}");
        }
    }
}

/// How long dropping a parent may take to kill what is left in it.
const DROP_LIMIT: Duration = Duration::from_secs(5);

/// Pids in `/<name>` or below it, in any hierarchy (each cgroup's `cgroup.procs`, as this
/// pid namespace sees them).
pub fn pids_in(name: &str) -> Vec<i32> {
    fn collect(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&e.path(), out);
            }
        }
    }
    let mut pids = Vec::new();
    for h in hierarchies().unwrap_or_default() {
        collect(&h.join(name), &mut pids);
    }
    pids.retain(|&p| p > 0);
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The `faultline-<n>-<n>` directories under `hierarchy`.
fn parents_in(hierarchy: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(hierarchy) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_parent_name(n))
        .collect()
}

fn is_parent_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let mut parts = rest.split('-');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_none()
}

/// Removes every `faultline-*-*` parent whose owner is gone (its lock is free, or its
/// locked directory is gone) and that is older than [`CREATION_GRACE`]: kills the
/// processes left in it (those visible here) and removes its directories in every
/// hierarchy. Returns the names removed; a parent that stays busy is an error naming it.
pub fn remove_stale(limit: Duration) -> Result<Vec<String>, CgroupError> {
    let hierarchies = hierarchies()?;
    let mut removed = Vec::new();
    let Some(first) = hierarchies.first() else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = hierarchies.iter().flat_map(|h| parents_in(h)).collect();
    names.sort();
    names.dedup();
    for name in names {
        let lock_dir = first.join(&name);
        // Held until the parent is removed, so that no owner can appear meanwhile.
        let _held = match File::open(&lock_dir) {
            Ok(f) => {
                if young(&f) {
                    continue;
                }
                match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    Ok(held) => Some(held),
                    Err(_) => continue, // its owner lives
                }
            }
            Err(_) => None,
        };
        remove_named(&hierarchies, &name, limit)?;
        removed.push(name);
    }
    Ok(removed)
}

fn young(f: &File) -> bool {
    let Ok(m) = f.metadata() else { return false };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(i64::MAX);
    now - m.ctime() < CREATION_GRACE.as_secs() as i64
}

/// Kills the processes in `/name` (and below), then removes its directory tree in every
/// hierarchy, deepest first, retrying while the kernel still counts exiting tasks.
fn remove_named(hierarchies: &[PathBuf], name: &str, limit: Duration) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        let pids = pids_in(name);
        let survivors = kill_and_reap(&pids, limit.saturating_sub(start.elapsed()));
        let left: Vec<PathBuf> = hierarchies
            .iter()
            .map(|h| h.join(name))
            .filter(|dir| !rmdir_tree(dir))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(CgroupError::Busy {
                left,
                pids: survivors,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// rmdir(2) of `dir`'s subdirectories, deepest first, then of `dir` (a cgroup directory's
/// files go with it). `true` when nothing is left.
fn rmdir_tree(dir: &Path) -> bool {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_parent_names_count() {
        assert!(is_parent_name("faultline-4026532177-0"));
        assert!(is_parent_name("faultline-1-12"));
        for other in [
            "faultline-proto-7598",
            "faultline-1",
            "faultline-1-2-3",
            "faultline--1",
            "kubepods",
            "faultline-a-1",
        ] {
            assert!(!is_parent_name(other), "{other}");
        }
    }
}
