//! POSIX and flock locks, delegated to the kernel as OFD locks on the backing files: one
//! descriptor (the "carrier") per (node, FUSE lock owner).

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::Arc;

use fuser::{Errno, INodeNo, LockOwner, ReplyEmpty, ReplyLock};
use nix::fcntl::FcntlArg;

use super::convert::{errno, io_errno, proc_fd};
use super::Passthrough;

impl Passthrough {
    pub(super) fn lock_carrier(&self, ino: INodeNo, owner: LockOwner) -> Result<Arc<File>, Errno> {
        let mut carriers = self.lock_carriers.lock().unwrap();
        if let Some(f) = carriers.get(&(ino.0, owner.0)) {
            return Ok(f.clone());
        }
        let fd = self.node_fd(ino)?;
        // Read-write where possible: an OFD write lock needs a descriptor open for writing.
        let file = File::options()
            .read(true)
            .write(true)
            .open(proc_fd(&*fd))
            .or_else(|_| File::open(proc_fd(&*fd)))
            .map_err(io_errno)?;
        let file = Arc::new(file);
        carriers.insert((ino.0, owner.0), file.clone());
        Ok(file)
    }

    pub(super) fn drop_locks(&self, ino: INodeNo, owner: LockOwner) {
        self.lock_carriers.lock().unwrap().remove(&(ino.0, owner.0));
    }
}

fn flock_of(start: u64, end: u64, typ: i32) -> libc::flock {
    // SAFETY: libc::flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start as i64;
    // FUSE sends an inclusive end, OFFSET_MAX for "to the end of file"; fcntl wants a length,
    // 0 meaning "to the end".
    fl.l_len = if end >= i64::MAX as u64 {
        0
    } else {
        (end - start + 1) as i64
    };
    fl
}

pub(super) fn getlk(
    fs: &Passthrough,
    ino: INodeNo,
    lock_owner: LockOwner,
    start: u64,
    end: u64,
    typ: i32,
    reply: ReplyLock,
) {
    let r = fs.lock_carrier(ino, lock_owner).and_then(|f| {
        let mut fl = flock_of(start, end, typ);
        nix::fcntl::fcntl(f.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)).map_err(errno)?;
        Ok(fl)
    });
    match r {
        Ok(fl) => {
            let end = if fl.l_len == 0 {
                i64::MAX as u64
            } else {
                (fl.l_start + fl.l_len - 1) as u64
            };
            // OFD locks have no owning pid; 0 tells the kernel "unknown" (reported as -1).
            reply.locked(fl.l_start as u64, end, fl.l_type as i32, 0)
        }
        Err(e) => reply.error(e),
    }
}

// Mirrors the arguments of fuser's `setlk` that an OFD lock uses.
#[allow(clippy::too_many_arguments)]
pub(super) fn setlk(
    fs: &Passthrough,
    ino: INodeNo,
    lock_owner: LockOwner,
    start: u64,
    end: u64,
    typ: i32,
    sleep: bool,
    reply: ReplyEmpty,
) {
    let carrier = match fs.lock_carrier(ino, lock_owner) {
        Ok(f) => f,
        Err(e) => return reply.error(e),
    };
    let fl = flock_of(start, end, typ);
    if sleep && typ != libc::F_UNLCK {
        // A blocking lock waits on its own thread so the session keeps serving, above all
        // the unlock that will wake it.
        std::thread::spawn(move || {
            match nix::fcntl::fcntl(carrier.as_fd(), FcntlArg::F_OFD_SETLKW(&fl)) {
                Ok(_) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
        return;
    }
    match nix::fcntl::fcntl(carrier.as_fd(), FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}
