//! The mount namespaces on this node, each with the processes in it, so that a detector reads
//! each namespace's mount table once rather than once per process.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::mountinfo::{read_mountinfo, MountInfo, MountInfoError};

/// `PF_KTHREAD` in include/linux/sched.h: the task is a kernel thread.
const PF_KTHREAD: u64 = 0x0020_0000;

#[derive(Debug, thiserror::Error)]
#[error("failed to list processes in {path}")]
pub struct ListError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One mount namespace and the user-space processes in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountNamespace {
    /// Inode of `/proc/PID/ns/mnt` (the number in `mnt:[N]`).
    pub inode: u64,
    /// Its processes, ascending. Kernel threads are left out.
    pub pids: Vec<i32>,
}

impl MountNamespace {
    /// The process whose view a detector reads: the lowest pid, usually the container's init.
    pub fn representative(&self) -> i32 {
        self.pids[0]
    }

    /// The namespace's mount table as `pid` sees it (mount points relative to its root),
    /// trying the next process when one exits meanwhile.
    pub fn mountinfo(&self, proc_root: &Path) -> Result<(i32, Vec<MountInfo>), MountInfoError> {
        let mut last = None;
        for &pid in &self.pids {
            match read_mountinfo(proc_root, Some(pid)) {
                // A zombie's mountinfo reads as empty; its namespace is seen through another.
                Ok(m) if m.is_empty() => continue,
                Ok(m) => return Ok((pid, m)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| MountInfoError::Read {
            path: proc_root.join(format!("{}/mountinfo", self.representative())),
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        }))
    }
}

/// `path` as process `pid` sees it: `<proc_root>/<pid>/root/<path>`, through that process's
/// root directory and so in its mount namespace.
pub fn path_in_root(proc_root: &Path, pid: i32, path: &Path) -> PathBuf {
    proc_root
        .join(pid.to_string())
        .join("root")
        .join(path.strip_prefix("/").unwrap_or(path))
}

/// The mount namespace inode of `pid`.
pub fn mount_namespace_of(proc_root: &Path, pid: i32) -> std::io::Result<u64> {
    Ok(std::fs::metadata(proc_root.join(format!("{pid}/ns/mnt")))?.ino())
}

/// Every mount namespace that has a user-space process, ordered by inode. Processes that exit
/// while being listed, or whose namespace link cannot be read, are left out.
pub fn mount_namespaces(proc_root: &Path) -> Result<Vec<MountNamespace>, ListError> {
    let entries = std::fs::read_dir(proc_root).map_err(|source| ListError {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut by_inode: BTreeMap<u64, Vec<i32>> = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if is_kernel_thread(proc_root, pid) {
            continue;
        }
        match mount_namespace_of(proc_root, pid) {
            Ok(ino) => by_inode.entry(ino).or_default().push(pid),
            Err(e) => tracing::debug!("skipping pid {pid}: failed to read its ns/mnt: {e}"),
        }
    }
    Ok(by_inode
        .into_iter()
        .map(|(inode, mut pids)| {
            pids.sort_unstable();
            MountNamespace { inode, pids }
        })
        .collect())
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD`). Reads the flags field of /proc/PID/stat
/// (the ninth field; the second, `comm`, may contain spaces and parentheses, so count from
/// the last `)`).
pub fn is_kernel_thread(proc_root: &Path, pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))) else {
        return false;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    rest.split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Makes every mount under `/` private to this mount namespace, so nothing mounted here
/// propagates back to the namespace it was copied from.
pub fn make_root_private() -> nix::Result<()> {
    nix::mount::mount(
        None::<&std::path::Path>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// Moves this process (which must have no other threads) into a new mount namespace whose
/// mounts are private: what it mounts from now on dies with the namespace.
pub fn unshare_private() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    make_root_private()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_in_exactly_one_namespace() {
        let proc_root = Path::new("/proc");
        let me = std::process::id() as i32;
        let mine = mount_namespace_of(proc_root, me).unwrap();
        let all = mount_namespaces(proc_root).unwrap();
        let holding: Vec<_> = all.iter().filter(|ns| ns.pids.contains(&me)).collect();
        assert_eq!(holding.len(), 1);
        assert_eq!(holding[0].inode, mine);
        let (pid, mounts) = holding[0].mountinfo(proc_root).unwrap();
        assert!(holding[0].pids.contains(&pid));
        assert!(!mounts.is_empty());
    }

    #[test]
    fn paths_through_a_process_root() {
        let proc_root = Path::new("/proc");
        assert_eq!(
            path_in_root(proc_root, 7, Path::new("/var/lib/x")),
            Path::new("/proc/7/root/var/lib/x")
        );
        assert_eq!(
            path_in_root(proc_root, 7, Path::new("rel")),
            Path::new("/proc/7/root/rel")
        );
    }

    #[test]
    fn kernel_threads_are_left_out() {
        // kthreadd is pid 2 when /proc belongs to the initial pid namespace.
        let proc_root = Path::new("/proc");
        if !is_kernel_thread(proc_root, 2) {
            panic!("cannot run here: pid 2 is not kthreadd (not the initial pid namespace)");
        }
        let all = mount_namespaces(proc_root).unwrap();
        assert!(all.iter().all(|ns| !ns.pids.contains(&2)));
        assert!(!is_kernel_thread(proc_root, std::process::id() as i32));
    }
}
