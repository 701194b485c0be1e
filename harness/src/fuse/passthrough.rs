//! The file system the FUSE daemon serves: a directory tree passed through to a backing
//! directory. Every node holds an `O_PATH` descriptor of its backing file (not a path), so
//! renames in the tree need no bookkeeping. Locks are delegated to the kernel as open file
//! description (OFD) locks on the backing files, one descriptor per FUSE lock owner, which gives
//! POSIX and flock conflict rules without a lock table of our own. Reads and writes can be
//! slowed down at run time (see [`Latency`]) to make the daemon a slow storage backend.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::fcntl::{openat, FcntlArg, OFlag, AT_FDCWD};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::unistd::{AccessFlags as NixAccess, UnlinkatFlags};

/// Delay added to each read, and to each write/fsync, in microseconds. Shared with the
/// daemon's control loop so it can be changed while the file system serves.
#[derive(Debug, Default)]
pub struct Latency {
    read_us: AtomicU64,
    write_us: AtomicU64,
}

impl Latency {
    pub fn set(&self, read: Duration, write: Duration) {
        self.read_us
            .store(read.as_micros() as u64, Ordering::SeqCst);
        self.write_us
            .store(write.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn get(&self) -> (Duration, Duration) {
        (
            Duration::from_micros(self.read_us.load(Ordering::SeqCst)),
            Duration::from_micros(self.write_us.load(Ordering::SeqCst)),
        )
    }

    // The delay is the injected fault (a slow storage backend), not synchronisation.
    fn read_delay(&self) {
        let us = self.read_us.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    fn write_delay(&self) {
        let us = self.write_us.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}

struct Node {
    /// `O_PATH` descriptor of the backing file.
    fd: Arc<OwnedFd>,
    key: (u64, u64),
    nlookup: u64,
}

#[derive(Default)]
struct Nodes {
    by_id: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next_id: u64,
}

struct DirSnapshot {
    entries: Vec<(OsString, u64, FileType)>,
}

pub struct Passthrough {
    nodes: Mutex<Nodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<DirSnapshot>>>,
    /// One descriptor of the backing file per (node, lock owner): the OFD the owner's locks
    /// live on. Closing it drops them, which is what FUSE asks for on flush and release.
    lock_carriers: Mutex<HashMap<(u64, u64), Arc<File>>>,
    next_fh: AtomicU64,
    ttl: Duration,
    latency: Arc<Latency>,
}

fn errno(e: nix::Error) -> Errno {
    Errno::from_i32(e as i32)
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// `/proc/self/fd/N`: reopens or changes an `O_PATH` descriptor's file through procfs, the
/// way to do what the `f*` calls refuse on `O_PATH`.
fn proc_fd(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn stat_of(fd: &OwnedFd) -> Result<FileStat, Errno> {
    fstatat(
        fd,
        "",
        nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(errno)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

fn attr_of(id: u64, st: &FileStat) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: time(st.st_ctime, st.st_ctime_nsec),
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            }
        }
    }
}

impl Passthrough {
    /// Serves `backing` (a directory). `ttl` is how long the kernel may cache entries and
    /// attributes; zero makes every path walk ask the daemon.
    pub fn new(backing: &Path, ttl: Duration, latency: Arc<Latency>) -> std::io::Result<Self> {
        let fd = openat(
            AT_FDCWD,
            backing,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_of(&fd).map_err(|e| std::io::Error::from_raw_os_error(e.code()))?;
        let key = (st.st_dev, st.st_ino);
        let mut nodes = Nodes {
            next_id: 2,
            ..Default::default()
        };
        nodes.by_key.insert(key, 1);
        nodes.by_id.insert(
            1,
            Node {
                fd: Arc::new(fd),
                key,
                nlookup: 1,
            },
        );
        Ok(Passthrough {
            nodes: Mutex::new(nodes),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            lock_carriers: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            ttl,
            latency,
        })
    }

    fn node_fd(&self, id: INodeNo) -> Result<Arc<OwnedFd>, Errno> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .by_id
            .get(&id.0)
            .map(|n| n.fd.clone())
            .ok_or(Errno::ESTALE)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        self.files
            .lock()
            .unwrap()
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// Looks `name` up in `parent` and counts one kernel reference on the node.
    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let pfd = self.node_fd(parent)?;
        let fd = openat(
            &*pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = stat_of(&fd)?;
        let key = (st.st_dev, st.st_ino);
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(&id) = nodes.by_key.get(&key) {
            let node = nodes.by_id.get_mut(&id).expect("key map and id map agree");
            // An inode number the backing fs reused for a new file must not resurrect the
            // node of the deleted one.
            let alive = stat_of(&node.fd).map(|s| s.st_nlink > 0).unwrap_or(false);
            if alive {
                node.nlookup += 1;
                return Ok(attr_of(id, &st));
            }
            nodes.by_key.remove(&key);
        }
        let id = nodes.next_id;
        nodes.next_id += 1;
        nodes.by_key.insert(key, id);
        nodes.by_id.insert(
            id,
            Node {
                fd: Arc::new(fd),
                key,
                nlookup: 1,
            },
        );
        Ok(attr_of(id, &st))
    }

    fn reply_entry(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn new_fh(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.files.lock().unwrap().insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// The kernel computes offsets itself (also for O_APPEND), and `O_PATH` node descriptors
    /// cannot be reopened with O_NOFOLLOW; strip what would make `pwrite` or the reopen lie.
    fn open_flags(flags: i32) -> OFlag {
        let f = OFlag::from_bits_truncate(flags)
            & !(OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_CREAT | OFlag::O_EXCL);
        f | OFlag::O_CLOEXEC
    }

    fn lock_carrier(&self, ino: INodeNo, owner: LockOwner) -> Result<Arc<File>, Errno> {
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

    fn drop_locks(&self, ino: INodeNo, owner: LockOwner) {
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

impl Filesystem for Passthrough {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for remote POSIX and flock locks so they reach getlk/setlk; an older kernel
        // without them keeps locks local, which is still correct for a single node.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(parent, name, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == 1 {
            return;
        }
        let mut nodes = self.nodes.lock().unwrap();
        let gone = match nodes.by_id.get_mut(&ino.0) {
            Some(n) => {
                n.nlookup = n.nlookup.saturating_sub(nlookup);
                (n.nlookup == 0).then_some(n.key)
            }
            None => None,
        };
        if let Some(key) = gone {
            nodes.by_id.remove(&ino.0);
            if nodes.by_key.get(&key) == Some(&ino.0) {
                nodes.by_key.remove(&key);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node_fd(ino).and_then(|fd| stat_of(&fd)) {
            Ok(st) => reply.attr(&self.ttl, &attr_of(ino.0, &st)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = (|| -> Result<FileStat, Errno> {
            let fd = self.node_fd(ino)?;
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
                match fh.map(|h| self.file(h)) {
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
            Ok(st) => reply.attr(&self.ttl, &attr_of(ino.0, &st)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .node_fd(ino)
            .and_then(|fd| nix::fcntl::readlinkat(&*fd, "").map_err(errno))
        {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.node_fd(parent).and_then(|pfd| {
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
            Ok(()) => self.reply_entry(parent, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.node_fd(parent).and_then(|pfd| {
            nix::sys::stat::mkdirat(&*pfd, name, Mode::from_bits_truncate(mode & !umask))
                .map_err(errno)
        });
        match r {
            Ok(()) => self.reply_entry(parent, name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.node_fd(parent).and_then(|pfd| {
            nix::unistd::unlinkat(&*pfd, name, UnlinkatFlags::NoRemoveDir).map_err(errno)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.node_fd(parent).and_then(|pfd| {
            nix::unistd::unlinkat(&*pfd, name, UnlinkatFlags::RemoveDir).map_err(errno)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .node_fd(parent)
            .and_then(|pfd| nix::unistd::symlinkat(target, &*pfd, link_name).map_err(errno))
        {
            Ok(()) => self.reply_entry(parent, link_name, reply),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let a = self.node_fd(parent)?;
            let b = self.node_fd(newparent)?;
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

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let fd = self.node_fd(ino)?;
            let p = self.node_fd(newparent)?;
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
            Ok(()) => self.reply_entry(newparent, newname, reply),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node_fd(ino).and_then(|fd| {
            nix::fcntl::open(
                proc_fd(&*fd).as_str(),
                Self::open_flags(flags.0),
                Mode::empty(),
            )
            .map_err(errno)
        });
        match r {
            Ok(fd) => reply.opened(self.new_fh(File::from(fd)), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.latency.read_delay();
        let r = self.file(fh).and_then(|f| {
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

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.latency.write_delay();
        match self
            .file(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(io_errno))
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // The kernel leaves POSIX unlock-on-close to the daemon's flush.
        self.drop_locks(ino, lock_owner);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // A lock owner on release means "drop this file's flock locks".
        if let Some(owner) = lock_owner {
            self.drop_locks(ino, owner);
        }
        self.files.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.latency.write_delay();
        let r = self.file(fh).and_then(|f| {
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

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| -> Result<DirSnapshot, Errno> {
            let fd = self.node_fd(ino)?;
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
                let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
                self.dirs.lock().unwrap().insert(fh, Arc::new(snap));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(snap) = self.dirs.lock().unwrap().get(&fh.0).cloned() else {
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

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let r = self
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

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self.node_fd(ino).and_then(|fd| {
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

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let pfd = self.node_fd(parent)?;
            let oflags = (OFlag::from_bits_truncate(flags)
                & !(OFlag::O_APPEND | OFlag::O_NOFOLLOW))
                | OFlag::O_CREAT
                | OFlag::O_CLOEXEC;
            let fd = openat(
                &*pfd,
                name,
                oflags,
                Mode::from_bits_truncate(mode & !umask & 0o7777),
            )
            .map_err(errno)?;
            let attr = self.do_lookup(parent, name)?;
            Ok((fd, attr))
        })();
        match r {
            Ok((fd, attr)) => {
                let fh = self.new_fh(File::from(fd));
                reply.created(&self.ttl, &attr, Generation(0), fh, FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let r = self.lock_carrier(ino, lock_owner).and_then(|f| {
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

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let carrier = match self.lock_carrier(ino, lock_owner) {
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

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.latency.write_delay();
        let r = self.file(fh).and_then(|f| {
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

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.file(fh).and_then(|f| {
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
}
