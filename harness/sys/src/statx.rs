//! One `statx(2)` wrapper, so that the callers differ only in the flags and mask they pass:
//! which fields they need, whether a final symlink is followed, whether the file system may be
//! asked (`AT_STATX_FORCE_SYNC` makes FUSE send a GETATTR; `AT_STATX_DONT_SYNC` answers from
//! the cached inode). See statx(2).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The fields of `struct statx` the callers use. A field the kernel did not fill (its bit is
/// missing from `stx_mask`) reads as `None` where it can be absent on supported kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statx {
    pub mode: u16,
    pub nlink: u32,
    pub ino: u64,
    pub size: u64,
    /// `st_dev` of the file system: (major, minor).
    pub dev: (u32, u32),
    /// `STATX_MNT_ID` (Linux 5.8+): the mount the path resolved into.
    pub mnt_id: Option<u64>,
}

impl Statx {
    /// The file type bits (`mode & S_IFMT`).
    pub fn file_type(&self) -> u32 {
        u32::from(self.mode) & libc::S_IFMT
    }

    /// The file type in words, for messages.
    pub fn kind(&self) -> &'static str {
        match self.file_type() {
            libc::S_IFREG => "regular file",
            libc::S_IFDIR => "directory",
            libc::S_IFSOCK => "socket",
            libc::S_IFCHR => "character device",
            libc::S_IFBLK => "block device",
            libc::S_IFIFO => "fifo",
            libc::S_IFLNK => "symlink",
            _ => "unknown",
        }
    }
}

/// `statx(AT_FDCWD, path, flags, mask)`.
pub fn statx(path: &Path, flags: i32, mask: u32) -> std::io::Result<Statx> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero `struct statx` is a valid value (plain integers).
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string that outlives the call, and `stx` is a properly
    // sized, writable `struct statx` we own.
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), flags, mask, &mut stx) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Statx {
        mode: stx.stx_mode,
        nlink: stx.stx_nlink,
        ino: stx.stx_ino,
        size: stx.stx_size,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
        mnt_id: (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn agrees_with_std_metadata() {
        let dir = std::env::temp_dir();
        let s = statx(
            &dir,
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
        )
        .unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(s.ino, m.ino());
        assert_eq!(u64::from(s.nlink), m.nlink());
        assert_eq!(s.kind(), "directory");
        assert_eq!(
            nix::sys::stat::makedev(u64::from(s.dev.0), u64::from(s.dev.1)),
            m.dev()
        );
        assert!(s.mnt_id.is_some(), "kernel older than 5.8?");
    }

    #[test]
    fn errors_carry_the_errno() {
        let e = statx(Path::new("/nonexistent/faultline"), 0, libc::STATX_TYPE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = statx(Path::new("a\0b"), 0, libc::STATX_TYPE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
