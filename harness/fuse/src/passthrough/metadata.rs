//! Metadata operations: attributes, symlink targets, permission checks, file system usage.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use fuser::{
    AccessFlags, Errno, FileHandle, INodeNo, ReplyAttr, ReplyData, ReplyEmpty, ReplyStatfs,
    TimeOrNow,
};
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::AccessFlags as NixAccess;

use super::convert::{attr_of, errno, io_errno, proc_fd, stat_of, timespec};
use super::Passthrough;

pub(super) fn getattr(fs: &Passthrough, ino: INodeNo, reply: ReplyAttr) {
    match fs.node_fd(ino).and_then(|fd| stat_of(&fd)) {
        Ok(st) => reply.attr(&fs.ttl, &attr_of(ino.0, &st)),
        Err(e) => reply.error(e),
    }
}

// Mirrors the arguments of fuser's `setattr` that the backing file can honour.
#[allow(clippy::too_many_arguments)]
pub(super) fn setattr(
    fs: &Passthrough,
    ino: INodeNo,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    fh: Option<FileHandle>,
    reply: ReplyAttr,
) {
    let result = (|| -> Result<FileStat, Errno> {
        let fd = fs.node_fd(ino)?;
        let path = proc_fd(&*fd);
        if let Some(mode) = mode {
            nix::sys::stat::fchmodat(
                AT_FDCWD,
                path.as_str(),
                Mode::from_bits_truncate(mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            nix::unistd::fchownat(
                &*fd,
                "",
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let Some(size) = size {
            match fh.map(|h| fs.file(h)) {
                Some(Ok(f)) => f.set_len(size).map_err(io_errno)?,
                _ => nix::unistd::truncate(path.as_str(), size as i64).map_err(errno)?,
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            let c = CString::new(path.as_bytes()).map_err(|_| Errno::EINVAL)?;
            // SAFETY: `c` is a valid C string and `times` two timespecs, both alive for
            // the call.
            let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
            if rc != 0 {
                return Err(io_errno(std::io::Error::last_os_error()));
            }
        }
        stat_of(&fd)
    })();
    match result {
        Ok(st) => reply.attr(&fs.ttl, &attr_of(ino.0, &st)),
        Err(e) => reply.error(e),
    }
}

pub(super) fn readlink(fs: &Passthrough, ino: INodeNo, reply: ReplyData) {
    match fs
        .node_fd(ino)
        .and_then(|fd| nix::fcntl::readlinkat(&*fd, "").map_err(errno))
    {
        Ok(target) => reply.data(target.as_bytes()),
        Err(e) => reply.error(e),
    }
}

pub(super) fn statfs(fs: &Passthrough, reply: ReplyStatfs) {
    let r = fs
        .node_fd(INodeNo(1))
        .and_then(|fd| nix::sys::statvfs::statvfs(proc_fd(&*fd).as_str()).map_err(errno));
    match r {
        Ok(s) => reply.statfs(
            s.blocks(),
            s.blocks_free(),
            s.blocks_available(),
            s.files(),
            s.files_free(),
            s.block_size() as u32,
            s.name_max() as u32,
            s.fragment_size() as u32,
        ),
        Err(e) => reply.error(e),
    }
}

pub(super) fn access(fs: &Passthrough, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
    let r = fs.node_fd(ino).and_then(|fd| {
        nix::unistd::faccessat(
            AT_FDCWD,
            proc_fd(&*fd).as_str(),
            NixAccess::from_bits_truncate(mask.bits()),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(errno)
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
