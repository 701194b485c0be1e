//! The handle tables: open files and directory listings by FUSE file handle.

use std::ffi::OsString;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{Errno, FileHandle, FileType};
use nix::fcntl::OFlag;

use super::Passthrough;

pub(super) struct DirSnapshot {
    pub(super) entries: Vec<(OsString, u64, FileType)>,
}

impl Passthrough {
    pub(super) fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files
            .lock()
            .unwrap()
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    pub(super) fn new_fh(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.files.lock().unwrap().insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// The kernel computes offsets itself (also for O_APPEND), and `O_PATH` node descriptors
    /// cannot be reopened with O_NOFOLLOW; strip what would make `pwrite` or the reopen lie.
    pub(super) fn open_flags(flags: i32) -> OFlag {
        let f = OFlag::from_bits_truncate(flags)
            & !(OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_CREAT | OFlag::O_EXCL);
        f | OFlag::O_CLOEXEC
    }
}
