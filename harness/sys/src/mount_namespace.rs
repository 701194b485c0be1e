//! A mount namespace with the processes in it (listed by [`crate::proc::Snapshot`]), so that a
//! detector reads each namespace's mount table once rather than once per process; paths
//! through a process's root; private mount namespaces for the harness.

use std::path::{Path, PathBuf};

use crate::mountinfo::{read_mountinfo, MountInfo, MountInfoError};

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
}
