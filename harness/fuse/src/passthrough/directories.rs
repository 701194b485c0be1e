//! Directory operations: creating, linking, renaming and removing entries, and listing.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, RenameFlags, ReplyCreate,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
};
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use super::convert::{errno, io_errno, proc_fd};
use super::handles::DirSnapshot;
use super::Passthrough;

pub(super) fn mknod(
    fs: &Passthrough,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    rdev: u32,
    reply: ReplyEntry,
) {
    let r = fs.node_fd(parent).and_then(|pfd| {
        nix::sys::stat::mknodat(
            &*pfd,
            name,
            SFlag::from_bits_truncate(mode & libc::S_IFMT),
            Mode::from_bits_truncate(mode & !umask & 0o7777),
            rdev as u64,
        )
        .map_err(errno)
    });
    match r {
        Ok(()) => fs.reply_entry(parent, name, reply),
        Err(e) => reply.error(e),
    }
}

pub(super) fn mkdir(
    fs: &Passthrough,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    reply: ReplyEntry,
) {
    let r = fs.node_fd(parent).and_then(|pfd| {
        nix::sys::stat::mkdirat(&*pfd, name, Mode::from_bits_truncate(mode & !umask)).map_err(errno)
    });
    match r {
        Ok(()) => fs.reply_entry(parent, name, reply),
        Err(e) => reply.error(e),
    }
}

pub(super) fn unlink(fs: &Passthrough, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
    match fs.node_fd(parent).and_then(|pfd| {
        nix::unistd::unlinkat(&*pfd, name, UnlinkatFlags::NoRemoveDir).map_err(errno)
    }) {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn rmdir(fs: &Passthrough, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
    match fs
        .node_fd(parent)
        .and_then(|pfd| nix::unistd::unlinkat(&*pfd, name, UnlinkatFlags::RemoveDir).map_err(errno))
    {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn symlink(
    fs: &Passthrough,
    parent: INodeNo,
    link_name: &OsStr,
    target: &Path,
    reply: ReplyEntry,
) {
    match fs
        .node_fd(parent)
        .and_then(|pfd| nix::unistd::symlinkat(target, &*pfd, link_name).map_err(errno))
    {
        Ok(()) => fs.reply_entry(parent, link_name, reply),
        Err(e) => reply.error(e),
    }
}

pub(super) fn rename(
    fs: &Passthrough,
    parent: INodeNo,
    name: &OsStr,
    newparent: INodeNo,
    newname: &OsStr,
    flags: RenameFlags,
    reply: ReplyEmpty,
) {
    let r = (|| {
        let a = fs.node_fd(parent)?;
        let b = fs.node_fd(newparent)?;
        nix::fcntl::renameat2(
            &*a,
            name,
            &*b,
            newname,
            nix::fcntl::RenameFlags::from_bits_truncate(flags.bits()),
        )
        .map_err(errno)
    })();
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

pub(super) fn link(
    fs: &Passthrough,
    ino: INodeNo,
    newparent: INodeNo,
    newname: &OsStr,
    reply: ReplyEntry,
) {
    let r = (|| {
        let fd = fs.node_fd(ino)?;
        let p = fs.node_fd(newparent)?;
        nix::unistd::linkat(
            AT_FDCWD,
            proc_fd(&*fd).as_str(),
            &*p,
            newname,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(errno)
    })();
    match r {
        Ok(()) => fs.reply_entry(newparent, newname, reply),
        Err(e) => reply.error(e),
    }
}

pub(super) fn create(
    fs: &Passthrough,
    parent: INodeNo,
    name: &OsStr,
    mode: u32,
    umask: u32,
    flags: i32,
    reply: ReplyCreate,
) {
    let r = (|| {
        let pfd = fs.node_fd(parent)?;
        let oflags = (OFlag::from_bits_truncate(flags) & !(OFlag::O_APPEND | OFlag::O_NOFOLLOW))
            | OFlag::O_CREAT
            | OFlag::O_CLOEXEC;
        let fd = openat(
            &*pfd,
            name,
            oflags,
            Mode::from_bits_truncate(mode & !umask & 0o7777),
        )
        .map_err(errno)?;
        let attr = fs.do_lookup(parent, name)?;
        Ok((fd, attr))
    })();
    match r {
        Ok((fd, attr)) => {
            let fh = fs.new_fh(File::from(fd));
            reply.created(&fs.ttl, &attr, Generation(0), fh, FopenFlags::empty());
        }
        Err(e) => reply.error(e),
    }
}

pub(super) fn opendir(fs: &Passthrough, ino: INodeNo, reply: ReplyOpen) {
    let r = (|| -> Result<DirSnapshot, Errno> {
        let fd = fs.node_fd(ino)?;
        let mut entries = vec![
            (OsString::from("."), ino.0, FileType::Directory),
            (OsString::from(".."), 1, FileType::Directory),
        ];
        for e in std::fs::read_dir(proc_fd(&*fd)).map_err(io_errno)? {
            let e = e.map_err(io_errno)?;
            let kind = e
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            use std::os::unix::fs::DirEntryExt;
            entries.push((e.file_name(), e.ino(), kind));
        }
        Ok(DirSnapshot { entries })
    })();
    match r {
        Ok(snap) => {
            let fh = fs.next_fh.fetch_add(1, Ordering::SeqCst);
            fs.dirs.lock().unwrap().insert(fh, Arc::new(snap));
            reply.opened(FileHandle(fh), FopenFlags::empty());
        }
        Err(e) => reply.error(e),
    }
}

pub(super) fn readdir(fs: &Passthrough, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
    let Some(snap) = fs.dirs.lock().unwrap().get(&fh.0).cloned() else {
        reply.error(Errno::EBADF);
        return;
    };
    for (i, (name, ino, kind)) in snap.entries.iter().enumerate().skip(offset as usize) {
        if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
            break;
        }
    }
    reply.ok();
}

pub(super) fn releasedir(fs: &Passthrough, fh: FileHandle, reply: ReplyEmpty) {
    fs.dirs.lock().unwrap().remove(&fh.0);
    reply.ok();
}
