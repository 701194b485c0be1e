//! The process half: the re-exec entry `fuse-daemon`, run as its own process (so it can be
//! SIGKILLed like an OOM-killed ceph-fuse). It mounts in the mount namespace of whoever
//! started it, then serves from a namespace of its own (see `leave_mount_namespace`).
//!
//! It mounts without libfuse or fusermount: it opens `/dev/fuse`, calls `mount(2)` with
//! `fd=N,rootmode=40000,user_id=0,group_id=0,...`, and hands the descriptor to fuser's
//! `Session::from_fd`, which performs the INIT handshake the mount queued. Then it serves the
//! passthrough tree and answers the control lines of [`crate::client`] on stdin/stdout.

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::mount::MsFlags;

use crate::config::{parse_args, FuseConfig};
use crate::passthrough::{Latency, Passthrough};
use faultline_sys::entry::{self, Entry};

/// What fusermount checked before mounting: the mount point must be reachable and empty.
/// `nonempty` skips both: mount(2) itself only needs the path to resolve, which the root of a
/// dead FUSE mount still does, so the new mount lands on top of the dead one.
fn check_mount_point(a: &FuseConfig) -> Result<(), String> {
    if a.nonempty {
        return Ok(());
    }
    let meta = std::fs::metadata(&a.mount_point).map_err(|e| {
        format!(
            "failed to access mountpoint {}: {e}",
            a.mount_point.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!(
            "mountpoint {} is not a directory",
            a.mount_point.display()
        ));
    }
    let mut entries = std::fs::read_dir(&a.mount_point)
        .map_err(|e| format!("failed to read mountpoint {}: {e}", a.mount_point.display()))?;
    if entries.next().is_some() {
        return Err(format!(
            "mountpoint {} is not empty (use nonempty to mount over it)",
            a.mount_point.display()
        ));
    }
    Ok(())
}

fn mount_dev_fuse(a: &FuseConfig) -> Result<OwnedFd, String> {
    let fd = nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("failed to open /dev/fuse: {e}"))?;
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other",
        fd.as_raw_fd()
    );
    let fstype = format!("fuse.{}", a.subtype);
    nix::mount::mount(
        Some(a.fsname.as_str()),
        &a.mount_point,
        Some(fstype.as_str()),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| {
        format!(
            "failed to mount {fstype} on {}: {e}",
            a.mount_point.display()
        )
    })?;
    Ok(fd)
}

/// Moves the daemon into a mount namespace of its own, without the mount it serves. Where a
/// file system is stacked on this one (ext4 on a loop device whose backing file is here),
/// the daemon must never be what releases that stack: an exiting task runs its deferred work
/// last in, first out, so if the daemon's exit dropped the last reference to the namespace
/// holding the ext4 mount, the ext4 unmount (queued after the daemon's files were closed)
/// would run before /dev/fuse is released and the connection aborted, and its flush would
/// wait forever for requests only the dead daemon could answer (seen: a SIGKILLed scenario
/// leaving `jbd2/loopN` and a kworker in `request_wait_answer` until the connection was
/// aborted by hand through fusectl). The copy is made private first, so that dropping the
/// mount here never propagates to the namespace the daemon was started in.
fn leave_mount_namespace(a: &FuseConfig) -> Result<(), String> {
    faultline_sys::mount_namespace::unshare_private()
        .map_err(|e| format!("failed to make a private mount namespace of its own: {e}"))?;
    nix::mount::umount2(&a.mount_point, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        format!(
            "failed to drop its copy of {}: {e}",
            a.mount_point.display()
        )
    })
}

/// The re-exec entry point that runs this process half.
pub static ENTRY: Entry = Entry::new("fuse-daemon", |args| match entry::utf8_args(args) {
    Ok(args) => main(&args),
    Err(e) => {
        eprintln!("faultline fuse-daemon: {e}");
        2
    }
});

fn main(args: &[String]) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fuse-daemon: {e}");
            return 2;
        }
    };
    match serve(&a) {
        Ok(latency) => {
            control(&latency);
            0
        }
        Err(e) => {
            eprintln!("fuse-daemon: {e}");
            1
        }
    }
}

/// Mounts and starts serving on fuser's threads; returns the latency the control loop sets.
fn serve(a: &FuseConfig) -> Result<Arc<Latency>, String> {
    check_mount_point(a)?;
    let latency = Arc::new(Latency::default());
    latency.set(a.read_latency, a.write_latency);
    let fs = Passthrough::new(&a.backing, a.ttl, latency.clone()).map_err(|e| {
        format!(
            "failed to open backing directory {}: {e}",
            a.backing.display()
        )
    })?;
    let fd = mount_dev_fuse(a)?;
    leave_mount_namespace(a)?;
    let mut config = fuser::Config::default();
    config.n_threads = Some(a.threads);
    config.clone_fd = a.threads > 1;
    let session = fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config)
        .map_err(|e| format!("failed to complete the FUSE handshake: {e}"))?;
    let bg = session
        .spawn()
        .map_err(|e| format!("failed to start serving: {e}"))?;
    // The session ends when the mount goes away (ENODEV); nothing is left to serve then.
    std::thread::spawn(move || {
        let code = match bg.join() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("fuse-daemon: session ended: {e}");
                1
            }
        };
        std::process::exit(code);
    });
    Ok(latency)
}

/// Says `ready`, then answers control lines until stdin closes.
fn control(latency: &Latency) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", std::process::id());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["latency", r, w] => match (r.parse::<u64>(), w.parse::<u64>()) {
                (Ok(r), Ok(w)) => {
                    latency.set(Duration::from_micros(r), Duration::from_micros(w));
                    let _ = writeln!(out, "ok latency {r} {w}");
                }
                _ => {
                    let _ = writeln!(out, "error bad latency {line:?}");
                }
            },
            _ => {
                let _ = writeln!(out, "error unknown command {line:?}");
            }
        }
        let _ = out.flush();
    }
}
