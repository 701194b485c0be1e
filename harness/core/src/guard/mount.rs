//! A mount that is unmounted on drop, only if it is still the mount this guard made (compared
//! by mount id), and never blocking for long: a stuck unmount falls back to a lazy detach.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("failed to mount {fstype} {source_desc} on {target}")]
    Mount {
        fstype: String,
        source_desc: String,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {target} did not finish within {limit:?}; detached it lazily")]
    UnmountTimedOut { target: PathBuf, limit: Duration },
}

#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
    mnt_id: Option<u64>,
    active: bool,
    limit: Duration,
}

pub use faultline_sys::mount_namespace::{make_root_private, unshare_private};

/// The mount id of the mount that `path` resolves into (statx STATX_MNT_ID, Linux 5.8+).
///
/// `AT_STATX_DONT_SYNC`: the id comes from the mount, never from the file system, and the
/// flag keeps a network or FUSE file system from refreshing attributes first (statx(2)); FUSE
/// otherwise sends GETATTR once its attribute cache has expired (fs/fuse/dir.c
/// fuse_update_get_attr), which waits on the daemon, and a guard's teardown must not.
pub fn mount_id(path: &Path) -> Option<u64> {
    faultline_sys::statx::statx(
        path,
        libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC,
        libc::STATX_MNT_ID,
    )
    .ok()?
    .mnt_id
}

impl Mount {
    /// `mount(2)` with the given arguments, guarded.
    pub fn new(
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<Mount, MountError> {
        mount(source, target, fstype, flags, data).map_err(|e| MountError::Mount {
            fstype: fstype.unwrap_or("bind").to_string(),
            source_desc: source
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| "none".into()),
            target: target.to_path_buf(),
            source: e,
        })?;
        Ok(Mount {
            target: target.to_path_buf(),
            mnt_id: mount_id(target),
            active: true,
            limit: Duration::from_secs(5),
        })
    }

    /// A tmpfs of `size` (e.g. "64m") on `target`.
    pub fn tmpfs(target: &Path, size: &str) -> Result<Mount, MountError> {
        let data = format!("size={size},mode=0755");
        Mount::new(
            Some(Path::new("tmpfs")),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&data),
        )
    }

    /// A bind mount of `source` (a file or a directory) on `target`, optionally read-only
    /// (which needs a remount, as kubelet's and runc's binds do).
    pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<Mount, MountError> {
        let m = Mount::new(Some(source), target, None, MsFlags::MS_BIND, None)?;
        if readonly {
            mount(
                None::<&Path>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| MountError::Mount {
                fstype: "bind,ro".into(),
                source_desc: source.display().to_string(),
                target: target.to_path_buf(),
                source: e,
            })?;
        }
        Ok(m)
    }

    /// Takes ownership of a mount someone else made (e.g. a FUSE daemon's).
    pub fn adopt(target: &Path) -> Mount {
        Mount {
            target: target.to_path_buf(),
            mnt_id: mount_id(target),
            active: true,
            limit: Duration::from_secs(5),
        }
    }

    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn mnt_id(&self) -> Option<u64> {
        self.mnt_id
    }

    /// Stops guarding without unmounting (the mount stays until its namespace goes).
    pub fn forget(mut self) {
        self.active = false;
    }

    /// Unmounts now if the target still resolves to this guard's mount.
    pub fn teardown(&mut self) -> Result<(), MountError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let now = mount_id(&self.target);
        if self.mnt_id.is_some() && now != self.mnt_id {
            tracing::debug!(
                target = %self.target.display(),
                "not unmounting: the mount there is no longer ours (ours {:?}, now {:?})",
                self.mnt_id,
                now
            );
            return Ok(());
        }
        unmount_bounded(&self.target, self.limit)
    }
}

/// `umount2(target, 0)` on a helper thread; past `limit`, or on EBUSY, `MNT_DETACH` instead.
pub fn unmount_bounded(target: &Path, limit: Duration) -> Result<(), MountError> {
    let (tx, rx) = mpsc::channel();
    let t = target.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(umount2(&t, MntFlags::empty()));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(nix::Error::EBUSY)) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(|e| MountError::Unmount {
                target: target.to_path_buf(),
                source: e,
            })
        }
        Ok(Err(e)) => Err(MountError::Unmount {
            target: target.to_path_buf(),
            source: e,
        }),
        Err(_) => {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            Err(MountError::UnmountTimedOut {
                target: target.to_path_buf(),
                limit,
            })
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e}");
        }
    }
}
