//! Data I/O on open files: open, read, write, sync, allocate, seek, and closing (which also
//! drops the closer's locks).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;

use fuser::{
    FileHandle, FopenFlags, INodeNo, LockOwner, OpenFlags, ReplyData, ReplyEmpty, ReplyLseek,
    ReplyOpen, ReplyWrite,
};
use nix::sys::stat::Mode;

use super::convert::{errno, io_errno, proc_fd};
use super::Passthrough;

pub(super) fn open(fs: &Passthrough, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
    let r = fs.node_fd(ino).and_then(|fd| {
        nix::fcntl::open(
            proc_fd(&*fd).as_str(),
            Passthrough::open_flags(flags.0),
            Mode::empty(),
        )
        .map_err(errno)
    });
    match r {
        Ok(fd) => reply.opened(fs.new_fh(File::from(fd)), FopenFlags::empty()),
        Err(e) => reply.error(e),
    }
}

pub(super) fn read(fs: &Passthrough, fh: FileHandle, offset: u64, size: u32, reply: ReplyData) {
    fs.latency.read_delay();
    let r = fs.file(fh).and_then(|f| {
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_errno(e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    });
    match r {
        Ok(buf) => reply.data(&buf),
        Err(e) => reply.error(e),
    }
}

pub(super) fn write(fs: &Passthrough, fh: FileHandle, offset: u64, data: &[u8], reply: ReplyWrite) {
    fs.latency.write_delay();
    match fs
        .file(fh)
        .and_then(|f| f.write_all_at(data, offset).map_err(io_errno))
    {
        Ok(()) => reply.written(data.len() as u32),
        Err(e) => reply.error(e),
    }
}

pub(super) fn flush(fs: &Passthrough, ino: INodeNo, lock_owner: LockOwner, reply: ReplyEmpty) {
    // The kernel leaves POSIX unlock-on-close to the daemon's flush.
    fs.drop_locks(ino, lock_owner);
    reply.ok();
}

pub(super) fn release(
    fs: &Passthrough,
    ino: INodeNo,
    fh: FileHandle,
    lock_owner: Option<LockOwner>,
    reply: ReplyEmpty,
) {
    // A lock owner on release means "drop this file's flock locks".
    if let Some(owner) = lock_owner {
        fs.drop_locks(ino, owner);
    }
    fs.files.lock().unwrap().remove(&fh.0);
    reply.ok();
}

pub(super) fn fsync(fs: &Passthrough, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
    fs.latency.write_delay();
    let r = fs.file(fh).and_then(|f| {
        if datasync {
            f.sync_data()
        } else {
            f.sync_all()
        }
        .map_err(io_errno)
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn fallocate(
    fs: &Passthrough,
    fh: FileHandle,
    offset: u64,
    length: u64,
    mode: i32,
    reply: ReplyEmpty,
) {
    fs.latency.write_delay();
    let r = fs.file(fh).and_then(|f| {
        nix::fcntl::fallocate(
            f.as_fd(),
            nix::fcntl::FallocateFlags::from_bits_truncate(mode),
            offset as i64,
            length as i64,
        )
        .map_err(errno)
    });
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn lseek(fs: &Passthrough, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
    let r = fs.file(fh).and_then(|f| {
        // SAFETY: lseek on a descriptor we own; SEEK_DATA/SEEK_HOLE only report offsets
        // (the kernel keeps the FUSE file's own position).
        let off = unsafe { libc::lseek(f.as_raw_fd(), offset, whence) };
        if off < 0 {
            Err(io_errno(std::io::Error::last_os_error()))
        } else {
            Ok(off)
        }
    });
    match r {
        Ok(off) => reply.offset(off),
        Err(e) => reply.error(e),
    }
}
