//! The FUSE daemon against the real kernel: file operations, locks, a loop device backed by a
//! file on it, injected latency, SIGKILL with the mount kept, and the guard's ownership check.
//! Runs in its own mount namespace (made first thing in `main`), so nothing it mounts can
//! outlive it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use faultline_core::guard::{wait_until, Mount};
use faultline_fuse::{FuseConfig, FuseDaemon};
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};
use libtest_mimic::{Arguments, Failed, Trial};

type R = Result<(), Failed>;
type Test = (&'static str, fn() -> R);

fn fail(msg: impl std::fmt::Display) -> Failed {
    Failed::from(msg.to_string())
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond { return Err(fail(format!($($arg)*))); }
    };
}

struct Scratch {
    _tmp: tempfile::TempDir,
    _mount: Mount,
    root: PathBuf,
}

fn scratch() -> Result<Scratch, Failed> {
    let tmp = tempfile::tempdir().map_err(fail)?;
    let mount = Mount::tmpfs(tmp.path(), "1g").map_err(fail)?;
    let root = tmp.path().to_path_buf();
    Ok(Scratch {
        _tmp: tmp,
        _mount: mount,
        root,
    })
}

fn daemon(s: &Scratch, name: &str) -> Result<(FuseDaemon, PathBuf, PathBuf), Failed> {
    let backing = s.root.join(format!("{name}-backing"));
    let mp = s.root.join(format!("{name}-mnt"));
    fs::create_dir_all(&backing).map_err(fail)?;
    fs::create_dir_all(&mp).map_err(fail)?;
    let d = FuseDaemon::start(&FuseConfig::new(&backing, &mp)).map_err(fail)?;
    Ok((d, backing, mp))
}

/// This namespace's mounts at `mp` (mountinfo's escapes undone, so any path matches).
fn mounts_at(mp: &Path) -> Vec<MountInfo> {
    read_mountinfo(Path::new("/proc"), None)
        .expect("/proc/self/mountinfo parses")
        .into_iter()
        .filter(|m| m.mount_point == mp)
        .collect()
}

fn statx_type(path: &Path, mask: u32, flags: i32) -> Result<u32, i32> {
    faultline_sys::statx::statx(path, flags, mask)
        .map(|s| s.file_type())
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

fn file_ops() -> R {
    let s = scratch()?;
    let (d, backing, mp) = daemon(&s, "ops")?;
    ensure!(
        mounts_at(&mp)
            .iter()
            .any(|m| m.fstype == "fuse.faultline" && m.source == "faultline"),
        "mountinfo does not show fuse.faultline at {}: {:?}",
        mp.display(),
        mounts_at(&mp)
    );
    fs::create_dir(mp.join("dir")).map_err(fail)?;
    let path = mp.join("dir/big");
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    {
        let mut f = File::create(&path).map_err(fail)?;
        for _ in 0..32 {
            f.write_all(&chunk).map_err(fail)?;
        }
        f.sync_all().map_err(fail)?;
    }
    let wrote = start.elapsed();
    let start = Instant::now();
    let mut back = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut back))
        .map_err(fail)?;
    println!(
        "32 MiB through the daemon: write+fsync {:?}, read {:?}",
        wrote,
        start.elapsed()
    );
    ensure!(back.len() == 32 << 20, "read back {} bytes", back.len());
    ensure!(
        back.chunks(1 << 20).all(|c| c == chunk.as_slice()),
        "data read back differs"
    );
    ensure!(
        fs::metadata(backing.join("dir/big")).map_err(fail)?.len() == 32 << 20,
        "backing file has the wrong size"
    );
    // Random-offset rewrite, truncate, rename, links, modes, readdir.
    {
        let f = OpenOptions::new().write(true).open(&path).map_err(fail)?;
        f.write_all_at(b"hello", 4096).map_err(fail)?;
        f.set_len(8192).map_err(fail)?;
    }
    let mut f = File::open(&path).map_err(fail)?;
    f.seek(SeekFrom::Start(4096)).map_err(fail)?;
    let mut five = [0u8; 5];
    f.read_exact(&mut five).map_err(fail)?;
    ensure!(&five == b"hello", "pwrite not visible: {five:?}");
    ensure!(
        fs::metadata(&path).map_err(fail)?.len() == 8192,
        "truncate not visible"
    );
    fs::rename(&path, mp.join("dir/renamed")).map_err(fail)?;
    std::os::unix::fs::symlink("renamed", mp.join("dir/link")).map_err(fail)?;
    ensure!(
        fs::read_link(mp.join("dir/link")).map_err(fail)? == Path::new("renamed"),
        "readlink"
    );
    fs::hard_link(mp.join("dir/renamed"), mp.join("dir/hard")).map_err(fail)?;
    ensure!(
        fs::metadata(mp.join("dir/hard")).map_err(fail)?.nlink() == 2,
        "hard link count"
    );
    fs::set_permissions(mp.join("dir/hard"), fs::Permissions::from_mode(0o600)).map_err(fail)?;
    ensure!(
        fs::metadata(backing.join("dir/renamed"))
            .map_err(fail)?
            .mode()
            & 0o777
            == 0o600,
        "chmod did not reach the backing file"
    );
    let mut names: Vec<String> = fs::read_dir(mp.join("dir"))
        .map_err(fail)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    ensure!(
        names == ["hard", "link", "renamed"],
        "readdir shows {names:?}"
    );
    fs::remove_file(mp.join("dir/hard")).map_err(fail)?;
    fs::remove_file(mp.join("dir/link")).map_err(fail)?;
    fs::remove_file(mp.join("dir/renamed")).map_err(fail)?;
    fs::remove_dir(mp.join("dir")).map_err(fail)?;
    ensure!(
        fs::read_dir(&backing).map_err(fail)?.count() == 0,
        "backing dir not empty"
    );
    drop(d);
    ensure!(mounts_at(&mp).is_empty(), "mount left after teardown");
    Ok(())
}

fn ofd_lock(f: &File, typ: i32, wait: bool) -> Result<(), i32> {
    // SAFETY: flock is plain data; fcntl gets a pointer to it for the call only.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = typ as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = 0;
        fl.l_len = 100;
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        if libc::fcntl(f.as_raw_fd(), cmd, &fl) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }
}

fn locks() -> R {
    let s = scratch()?;
    let (_d, backing, mp) = daemon(&s, "locks")?;
    let path = mp.join("lockfile");
    fs::write(&path, b"x").map_err(fail)?;
    let open = || OpenOptions::new().read(true).write(true).open(&path);
    let a = open().map_err(fail)?;
    let b = open().map_err(fail)?;

    // flock: exclusive on a, then b must not get it until a lets go.
    // SAFETY (all flock calls below): plain syscalls on descriptors we own.
    ensure!(
        unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX) } == 0,
        "flock a"
    );
    let rc = unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    let err = std::io::Error::last_os_error().raw_os_error();
    ensure!(
        rc == -1 && err == Some(libc::EWOULDBLOCK),
        "flock b while a holds it: rc {rc}, {err:?}"
    );
    // The daemon holds the lock on the backing file: the kernel shows an OFD lock on its inode.
    let ino = fs::metadata(backing.join("lockfile")).map_err(fail)?.ino();
    let locks = fs::read_to_string("/proc/locks").map_err(fail)?;
    ensure!(
        locks
            .lines()
            .any(|l| l.contains("OFDLCK") && l.contains(&format!(":{ino} "))),
        "no OFD lock on backing inode {ino} in /proc/locks:\n{locks}"
    );
    ensure!(
        unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_UN) } == 0,
        "unlock a"
    );
    ensure!(
        unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0,
        "flock b after a unlocked: {}",
        std::io::Error::last_os_error()
    );
    unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_UN) };

    // Byte-range locks (OFD flavour, so one process can play both owners).
    ofd_lock(&a, libc::F_WRLCK, false).map_err(|e| fail(format!("lock a: {e}")))?;
    ensure!(
        ofd_lock(&b, libc::F_WRLCK, false) == Err(libc::EAGAIN),
        "b got a write lock a holds"
    );
    // SAFETY: getlk on a descriptor we own into a zeroed flock.
    let conflicting = unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_len = 10;
        libc::fcntl(b.as_raw_fd(), libc::F_OFD_GETLK, &mut fl);
        fl.l_type as i32
    };
    ensure!(
        conflicting == libc::F_WRLCK,
        "getlk reports {conflicting}, not the write lock"
    );
    // A blocking lock waits for the holder and gets it once the holder closes its file.
    let b2 = b.try_clone().map_err(fail)?;
    let waiter = std::thread::spawn(move || ofd_lock(&b2, libc::F_WRLCK, true));
    drop(a);
    let got = wait_until(
        "the blocked lock to be granted",
        Duration::from_secs(10),
        || {
            if waiter.is_finished() {
                Ok(())
            } else {
                Err("still waiting".into())
            }
        },
    );
    got.map_err(fail)?;
    ensure!(
        waiter.join().unwrap().is_ok(),
        "blocking lock failed after the holder closed"
    );
    Ok(())
}

fn loop_device() -> R {
    for bin in ["mkfs.ext4", "mount", "umount"] {
        if faultline_sys::path::find_on_path(bin).is_none() {
            return Err(fail(format!("needs {bin} (run ci/setup)")));
        }
    }
    let s = scratch()?;
    let (_d, _backing, mp) = daemon(&s, "loop")?;
    let image = mp.join("disk.img");
    File::create(&image)
        .and_then(|f| f.set_len(256 << 20))
        .map_err(fail)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&image)
        .output()
        .map_err(fail)?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 on FUSE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = s.root.join("ext4");
    fs::create_dir(&target).map_err(fail)?;
    // mount -o loop attaches with autoclear: the loop device goes with the mount.
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&target)
        .output()
        .map_err(fail)?;
    ensure!(
        out.status.success(),
        "mount -o loop of an image on FUSE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = Mount::adopt(&target);
    let data = vec![7u8; 16 << 20];
    let start = Instant::now();
    fs::write(target.join("payload"), &data).map_err(fail)?;
    File::open(target.join("payload"))
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    // SAFETY: syncfs on a descriptor we own.
    let dir = File::open(&target).map_err(fail)?;
    unsafe { libc::syncfs(dir.as_raw_fd()) };
    println!(
        "16 MiB into ext4 on a loop device on FUSE + syncfs: {:?}",
        start.elapsed()
    );
    ensure!(
        fs::read(target.join("payload")).map_err(fail)? == data,
        "payload differs"
    );
    drop(dir);
    drop(guard);
    ensure!(mounts_at(&target).is_empty(), "ext4 mount left behind");
    Ok(())
}

fn latency() -> R {
    let s = scratch()?;
    let (mut d, _backing, mp) = daemon(&s, "slow")?;
    let path = mp.join("f");
    fs::write(&path, b"before").map_err(fail)?;
    let delay = Duration::from_millis(300);
    d.set_latency(Duration::ZERO, delay).map_err(fail)?;
    let start = Instant::now();
    {
        let f = OpenOptions::new().write(true).open(&path).map_err(fail)?;
        f.write_all_at(b"after!", 0).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    let took = start.elapsed();
    println!("write+fsync with {delay:?} write latency: {took:?}");
    ensure!(
        took >= delay,
        "write+fsync took {took:?}, less than the injected {delay:?}"
    );
    d.set_latency(delay, Duration::ZERO).map_err(fail)?;
    let start = Instant::now();
    let mut buf = [0u8; 6];
    // O_DIRECT would be refused; a fresh open with the page cache dropped by the kernel's
    // open (no keep_cache) reads through the daemon.
    File::open(&path)
        .and_then(|f| f.read_exact_at(&mut buf, 0))
        .map_err(fail)?;
    let took = start.elapsed();
    ensure!(&buf == b"after!", "read {buf:?}");
    ensure!(
        took >= delay,
        "read took {took:?}, less than the injected {delay:?}"
    );
    Ok(())
}

fn kill_keeps_dead_mount() -> R {
    let s = scratch()?;
    let (mut d, _backing, mp) = daemon(&s, "kill")?;
    fs::write(mp.join("f"), b"x").map_err(fail)?;
    let id = d.mnt_id();
    ensure!(id.is_some(), "no mount id recorded");
    d.kill().map_err(fail)?;
    let err = fs::metadata(mp.join("f")).unwrap_err();
    ensure!(
        err.raw_os_error() == Some(libc::ENOTCONN),
        "stat under a dead mount: {err}"
    );
    // An empty mask is answered from the inode; asking for the type goes to the daemon.
    ensure!(
        statx_type(&mp, 0, libc::AT_STATX_FORCE_SYNC).is_ok(),
        "statx with an empty mask failed on the dead mount"
    );
    ensure!(
        statx_type(&mp, libc::STATX_TYPE, libc::AT_STATX_FORCE_SYNC) == Err(libc::ENOTCONN),
        "statx(STATX_TYPE) on the dead mount did not fail with ENOTCONN"
    );
    ensure!(
        faultline_core::guard::mount::mount_id(&mp) == id,
        "mount id changed after the kill"
    );
    ensure!(
        mounts_at(&mp).len() == 1,
        "the dead mount should still be listed"
    );
    d.teardown().map_err(fail)?;
    ensure!(mounts_at(&mp).is_empty(), "dead mount left after teardown");
    Ok(())
}

fn nonempty_and_ownership() -> R {
    let s = scratch()?;
    let backing = s.root.join("b");
    let mp = s.root.join("m");
    fs::create_dir_all(&backing).map_err(fail)?;
    fs::create_dir_all(&mp).map_err(fail)?;
    fs::write(mp.join("already-here"), b"").map_err(fail)?;
    let err = FuseDaemon::start(&FuseConfig::new(&backing, &mp)).unwrap_err();
    ensure!(
        err.to_string().contains("not empty"),
        "mounting on a non-empty dir without nonempty: {err}"
    );
    let mut old =
        FuseDaemon::start(&FuseConfig::new(&backing, &mp).nonempty(true)).map_err(fail)?;
    old.kill().map_err(fail)?;
    // Without nonempty the restart fails the way fusermount did on a dead mount point.
    let err = FuseDaemon::start(&FuseConfig::new(&backing, &mp)).unwrap_err();
    ensure!(
        err.to_string()
            .contains("Transport endpoint is not connected"),
        "restart on the dead mount point without nonempty: {err}"
    );
    let new = FuseDaemon::start(&FuseConfig::new(&backing, &mp).nonempty(true)).map_err(fail)?;
    ensure!(
        mounts_at(&mp).len() == 2,
        "expected two stacked mounts: {:?}",
        mounts_at(&mp)
    );
    // The old guard no longer owns the top mount: it must leave the new one alone.
    drop(old);
    ensure!(
        fs::metadata(mp.join("already-here")).is_err() && fs::read_dir(&mp).is_ok(),
        "the new mount was disturbed by the old guard"
    );
    drop(new);
    let left = mounts_at(&mp);
    ensure!(
        left.len() == 1,
        "expected the old dead mount only: {left:?}"
    );
    // The test's namespace takes the rest; unmount it here to prove it is not stuck.
    Mount::adopt(&mp).teardown().map_err(fail)?;
    ensure!(mounts_at(&mp).is_empty(), "mounts left at {}", mp.display());
    Ok(())
}

/// Runs `f` on its own thread, so a call stuck on a stopped daemon cannot hang the test.
fn in_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

/// The guard's ownership check (`mount_id`) answers while the daemon is stopped and the
/// attribute cache has expired (ttl 0), when a statx of the type, which may sync, waits for
/// the daemon. (Since Linux 6.6 FUSE also ignores a mask of
/// STATX_MNT_ID alone when deciding to sync; older kernels, like the VM's, do not.)
fn mount_id_does_not_wait_on_the_daemon() -> R {
    let s = scratch()?;
    let backing = s.root.join("stopped-backing");
    let mp = s.root.join("stopped-mnt");
    fs::create_dir_all(&backing).map_err(fail)?;
    fs::create_dir_all(&mp).map_err(fail)?;
    let mut config = FuseConfig::new(&backing, &mp);
    config.ttl = Duration::ZERO;
    let d = FuseDaemon::start(&config).map_err(fail)?;
    let id = d.mnt_id();
    ensure!(id.is_some(), "no mount id recorded");
    let pid = nix::unistd::Pid::from_raw(d.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).map_err(fail)?;
    // Attributes fetched within the current jiffy still count as fresh even with ttl 0: ask
    // until a syncing statx is held by the stopped daemon.
    let synced = wait_until(
        "a syncing statx to wait on the stopped daemon",
        Duration::from_secs(5),
        || {
            let p = mp.clone();
            let rx = in_thread(move || statx_type(&p, libc::STATX_TYPE, libc::AT_NO_AUTOMOUNT));
            match rx.recv_timeout(Duration::from_millis(200)) {
                Err(_) => Ok(rx),
                Ok(r) => Err(format!("answered {r:?} from the attribute cache")),
            }
        },
    );
    let p = mp.clone();
    let ours = in_thread(move || faultline_core::guard::mount::mount_id(&p))
        .recv_timeout(Duration::from_secs(5));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).map_err(fail)?;
    let synced = synced.map_err(fail)?;
    ensure!(
        ours == Ok(id),
        "mount_id with the daemon stopped: {ours:?}, want {id:?}"
    );
    let after = synced.recv_timeout(Duration::from_secs(10));
    ensure!(
        after.is_ok(),
        "the syncing statx did not finish after SIGCONT"
    );
    Ok(())
}

/// A writer whose FUSE write the daemon took and holds (30 s write latency) is in D once
/// killed: the kernel waits uninterruptibly for the answer to a request already in
/// userspace (fs/fuse/dev.c, request_wait_answer). Teardown leaves it within its bound and
/// says so; killing the daemon then aborts the connection and the writer exits.
fn teardown_leaves_a_d_state_leader() -> R {
    use faultline_sys::process::Abandoned;
    let s = scratch()?;
    let (mut d, _backing, mp) = daemon(&s, "stuck")?;
    fs::write(mp.join("f"), b"held").map_err(fail)?;
    d.set_latency(Duration::ZERO, Duration::from_secs(30))
        .map_err(fail)?;
    // Without writeback caching each write(2) is a FUSE_WRITE the writer waits for.
    let mut cmd = Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", mp.join("f").display()))
        .args(["bs=4096", "count=1", "conv=notrunc", "status=none"]);
    let mut writer = faultline_sys::ChildGroup::spawn("writer", &mut cmd)
        .map_err(fail)?
        .with_grace(Duration::from_millis(200))
        .with_kill_wait(Duration::from_millis(500));
    let pid = writer.pid();
    wait_until(
        "the writer in its FUSE write",
        Duration::from_secs(10),
        || {
            let stack = fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if syscall.starts_with("1 ") && stack.contains("request_wait_answer") {
                Ok(())
            } else {
                Err(format!("syscall {syscall:?}, stack {stack:?}"))
            }
        },
    )
    .map_err(fail)?;
    let start = Instant::now();
    let result = writer.teardown();
    let took = start.elapsed();
    println!("teardown of a writer stuck in a FUSE write: {result:?} after {took:?}");
    let err = match result {
        Err(e) => e,
        Ok(s) => return Err(fail(format!("teardown reaped the stuck writer: {s:?}"))),
    };
    let abandoned = Abandoned::of(&err).ok_or_else(|| fail(format!("not abandoned: {err}")))?;
    ensure!(abandoned.pid == pid, "{abandoned:?}");
    ensure!(abandoned.state == 'D', "left in state {}", abandoned.state);
    ensure!(took < Duration::from_secs(5), "teardown took {took:?}");
    ensure!(
        err.to_string().contains("left it to be reaped by init"),
        "{err}"
    );
    // The daemon's death aborts the connection: the held request ends, the writer exits.
    d.kill().map_err(fail)?;
    wait_until(
        "the writer to exit",
        Duration::from_secs(10),
        || match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(st) if st.contains(") Z ") => Ok(()),
            Ok(st) => Err(st),
            Err(e) => Err(e.to_string()),
        },
    )
    .map_err(fail)?;
    // It is still this process's child: reap it here rather than leave a zombie.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    Ok(())
}

fn main() {
    faultline_sys::entry::dispatch(&[faultline_fuse::ENTRIES]);
    let args = Arguments::from_args();
    let skip = if !nix::unistd::geteuid().is_root() {
        Some("needs root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("needs /dev/fuse (modprobe fuse)")
    } else {
        None
    };
    if skip.is_none() {
        // Our own mount namespace, before any thread exists: every mount made here dies with
        // this process.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount ns");
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / rprivate");
    }
    let tests: Vec<Test> = vec![
        ("fuse_file_ops", file_ops),
        ("fuse_locks", locks),
        ("fuse_loop_device", loop_device),
        ("fuse_latency", latency),
        ("fuse_kill_keeps_dead_mount", kill_keeps_dead_mount),
        ("fuse_nonempty_and_ownership", nonempty_and_ownership),
        (
            "fuse_mount_id_does_not_wait_on_the_daemon",
            mount_id_does_not_wait_on_the_daemon,
        ),
        (
            "fuse_teardown_leaves_a_d_state_leader",
            teardown_leaves_a_d_state_leader,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, f).with_ignored_flag(skip.is_some()))
        .collect();
    if let Some(why) = skip {
        eprintln!("fuse tests skipped: {why}");
    }
    libtest_mimic::run(&args, trials).exit();
}
