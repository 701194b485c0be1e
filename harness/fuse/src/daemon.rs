//! The FUSE daemon: internal entry point `fuse-daemon`, run as its own process (so it can be
//! SIGKILLed like an OOM-killed ceph-fuse), and [`FuseDaemon`], the guard that starts it and
//! cleans up after it.
//!
//! The daemon mounts itself without libfuse or fusermount: it opens `/dev/fuse`, calls
//! `mount(2)` with `fd=N,rootmode=40000,user_id=0,group_id=0,...`, and hands the descriptor to
//! fuser's `Session::from_fd`, which performs the INIT handshake the mount queued. It mounts in
//! the mount namespace of whoever started it (the scenario's).
//!
//! Control protocol on the daemon's stdin/stdout, one line each way:
//! - daemon → `ready <pid>` once the handshake is done and requests are being served;
//! - `latency <read_us> <write_us>` → `ok latency <read_us> <write_us>`, in force from then on;
//! - stdin at EOF → the daemon exits (its parent is gone or done with it).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sys::signal::Signal;

use crate::passthrough::{Latency, Passthrough};
use faultline_core::guard::mount::Mount;
use faultline_sys::entry::{self, Entry};
use faultline_sys::ChildGroup;

#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error("failed to start the FUSE daemon for {mount_point}")]
    Spawn {
        mount_point: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the FUSE daemon for {mount_point} exited before it was ready: {stderr}")]
    NotReady {
        mount_point: PathBuf,
        stderr: String,
    },
    #[error("the FUSE daemon for {mount_point} was not ready within {limit:?}: {stderr}")]
    ReadyTimeout {
        mount_point: PathBuf,
        limit: Duration,
        stderr: String,
    },
    #[error("failed to talk to the FUSE daemon for {mount_point}: {what}")]
    Control { mount_point: PathBuf, what: String },
    #[error("failed to kill the FUSE daemon for {mount_point}")]
    Kill {
        mount_point: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to unmount the FUSE mount at {mount_point}")]
    Unmount {
        mount_point: PathBuf,
        #[source]
        source: faultline_core::guard::mount::MountError,
    },
}

/// How to start a daemon. `FuseConfig::new(backing, mount_point)` then the builder methods.
#[derive(Debug, Clone)]
pub struct FuseConfig {
    pub backing: PathBuf,
    pub mount_point: PathBuf,
    /// The mount's source in mountinfo (ceph-fuse shows `ceph-fuse`).
    pub fsname: String,
    /// The `fuse.<subtype>` file system type.
    pub subtype: String,
    /// Mount even if the mount point is not empty (fusermount's `nonempty`; the kernel itself
    /// lets root mount anywhere, so without it the daemon refuses the way fusermount did).
    pub nonempty: bool,
    /// Entry and attribute cache lifetime handed to the kernel.
    pub ttl: Duration,
    pub read_latency: Duration,
    pub write_latency: Duration,
    /// Request-serving threads (each with its own cloned /dev/fuse descriptor).
    pub threads: usize,
    pub ready_timeout: Duration,
}

impl FuseConfig {
    pub fn new(backing: &Path, mount_point: &Path) -> FuseConfig {
        FuseConfig {
            backing: backing.to_path_buf(),
            mount_point: mount_point.to_path_buf(),
            fsname: "faultline".into(),
            subtype: "faultline".into(),
            nonempty: false,
            ttl: Duration::from_secs(1),
            read_latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            threads: 4,
            ready_timeout: Duration::from_secs(10),
        }
    }

    pub fn fsname(mut self, name: &str) -> Self {
        self.fsname = name.into();
        self
    }

    pub fn subtype(mut self, name: &str) -> Self {
        self.subtype = name.into();
        self
    }

    pub fn nonempty(mut self, yes: bool) -> Self {
        self.nonempty = yes;
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--backing".into(),
            self.backing.display().to_string(),
            "--mount".into(),
            self.mount_point.display().to_string(),
            "--fsname".into(),
            self.fsname.clone(),
            "--subtype".into(),
            self.subtype.clone(),
            "--ttl-ms".into(),
            self.ttl.as_millis().to_string(),
            "--read-latency-us".into(),
            self.read_latency.as_micros().to_string(),
            "--write-latency-us".into(),
            self.write_latency.as_micros().to_string(),
            "--threads".into(),
            self.threads.to_string(),
        ];
        if self.nonempty {
            a.push("--nonempty".into());
        }
        a
    }
}

/// A running FUSE daemon and the mount it made. Drop (or [`FuseDaemon::teardown`]) stops the
/// daemon (SIGTERM, grace, SIGKILL) and then unmounts the mount if the mount point still shows
/// the mount this daemon made, falling back to a lazy detach past the time limit.
pub struct FuseDaemon {
    child: ChildGroup,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
    mount: Option<Mount>,
    mount_point: PathBuf,
    dev: (u32, u32),
}

impl std::fmt::Debug for FuseDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuseDaemon")
            .field("pid", &self.child.pid())
            .field("mount_point", &self.mount_point)
            .field("dev", &self.dev)
            .field("mnt_id", &self.mnt_id())
            .finish()
    }
}

impl FuseDaemon {
    /// Starts the daemon and waits until the mount serves requests.
    pub fn start(config: &FuseConfig) -> Result<FuseDaemon, FuseError> {
        let mp = config.mount_point.clone();
        let mut cmd = ENTRY.command();
        cmd.args(config.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            ChildGroup::spawn("fuse daemon", &mut cmd).map_err(|e| FuseError::Spawn {
                mount_point: mp.clone(),
                source: e,
            })?;
        let c = child.child_mut().expect("just spawned");
        let stdin = c.stdin.take();
        let stdout = c.stdout.take().expect("piped");
        let stderr_pipe = c.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let (stderr_done, stderr_eof) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _done = stderr_done;
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                tracing::debug!(target: "fuse-daemon", "{line}");
                let mut s = sink.lock().unwrap();
                if s.len() < 8192 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let mut d = FuseDaemon {
            child,
            stdin,
            lines,
            stderr,
            mount: None,
            mount_point: mp.clone(),
            dev: (0, 0),
        };
        match d.lines.recv_timeout(config.ready_timeout) {
            Ok(line) if line.starts_with("ready") => {}
            Ok(other) => {
                return Err(FuseError::NotReady {
                    mount_point: mp,
                    stderr: format!("unexpected line {other:?}; {}", d.stderr_text()),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Let the stderr reader reach EOF, so the daemon's last words are in the error.
                let _ = stderr_eof.recv_timeout(Duration::from_secs(2));
                return Err(FuseError::NotReady {
                    mount_point: mp,
                    stderr: d.stderr_text(),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(FuseError::ReadyTimeout {
                    mount_point: mp,
                    limit: config.ready_timeout,
                    stderr: d.stderr_text(),
                })
            }
        }
        d.mount = Some(Mount::adopt(&config.mount_point));
        d.dev = dev_of(&config.mount_point).unwrap_or((0, 0));
        Ok(d)
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().trim().to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The mount id of the mount the daemon made (from statx right after it was ready).
    pub fn mnt_id(&self) -> Option<u64> {
        self.mount.as_ref().and_then(Mount::mnt_id)
    }

    /// `st_dev` of the mount: major 0, minor = the connection's name under
    /// /sys/fs/fuse/connections/.
    pub fn dev(&self) -> (u32, u32) {
        self.dev
    }

    /// Changes the delay of every read and of every write/fsync/fallocate from now on; returns
    /// once the daemon has acknowledged it.
    pub fn set_latency(&mut self, read: Duration, write: Duration) -> Result<(), FuseError> {
        let err = |what: String| FuseError::Control {
            mount_point: self.mount_point.clone(),
            what,
        };
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| err("the daemon is not running".into()))?;
        writeln!(stdin, "latency {} {}", read.as_micros(), write.as_micros())
            .and_then(|_| stdin.flush())
            .map_err(|e| err(format!("write failed: {e}")))?;
        match self.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(l) if l.starts_with("ok latency") => Ok(()),
            Ok(l) => Err(err(format!("unexpected answer {l:?}"))),
            Err(e) => Err(err(format!("no answer: {e}"))),
        }
    }

    /// SIGKILLs the daemon, as the OOM killer does, and reaps it. The mount stays, now with no
    /// daemon behind it: every request on it fails with ENOTCONN.
    pub fn kill(&mut self) -> Result<(), FuseError> {
        self.stdin = None;
        self.child
            .signal(Signal::SIGKILL)
            .map_err(|e| FuseError::Kill {
                mount_point: self.mount_point.clone(),
                source: std::io::Error::from_raw_os_error(e as i32),
            })?;
        self.child.teardown().map_err(|e| FuseError::Kill {
            mount_point: self.mount_point.clone(),
            source: e,
        })?;
        Ok(())
    }

    /// Stops the daemon, then unmounts its mount if the mount point still shows it.
    pub fn teardown(&mut self) -> Result<(), FuseError> {
        self.stdin = None;
        // Killing first aborts the connection, so the unmount cannot wait on the daemon.
        self.child.teardown().map_err(|e| FuseError::Kill {
            mount_point: self.mount_point.clone(),
            source: e,
        })?;
        if let Some(mut m) = self.mount.take() {
            m.teardown().map_err(|e| FuseError::Unmount {
                mount_point: self.mount_point.clone(),
                source: e,
            })?;
        }
        Ok(())
    }
}

impl Drop for FuseDaemon {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e}");
        }
    }
}

/// `st_dev` of what `path` resolves to, without asking a FUSE daemon (statx with an empty
/// mask is answered from the inode; it works on a dead mount too).
pub fn dev_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx writes into a zeroed statx we own; `c` outlives the call.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC,
            0,
            &mut stx,
        );
        (rc == 0).then_some((stx.stx_dev_major, stx.stx_dev_minor))
    }
}

// ---- the daemon process -------------------------------------------------------------------

/// The daemon's arguments are the parent's `FuseConfig`, with its defaults for what was not given.
fn parse_args(args: &[String]) -> Result<FuseConfig, String> {
    let mut a = FuseConfig::new(Path::new(""), Path::new(""));
    let mut it = args.iter();
    let num = |v: Option<&String>, k: &str| -> Result<u64, String> {
        v.ok_or(format!("{k} needs a value"))?
            .parse()
            .map_err(|e| format!("{k}: {e}"))
    };
    while let Some(k) = it.next() {
        match k.as_str() {
            "--backing" => a.backing = it.next().ok_or("--backing needs a value")?.into(),
            "--mount" => a.mount_point = it.next().ok_or("--mount needs a value")?.into(),
            "--fsname" => a.fsname = it.next().ok_or("--fsname needs a value")?.clone(),
            "--subtype" => a.subtype = it.next().ok_or("--subtype needs a value")?.clone(),
            "--nonempty" => a.nonempty = true,
            "--ttl-ms" => a.ttl = Duration::from_millis(num(it.next(), k)?),
            "--read-latency-us" => a.read_latency = Duration::from_micros(num(it.next(), k)?),
            "--write-latency-us" => a.write_latency = Duration::from_micros(num(it.next(), k)?),
            "--threads" => a.threads = num(it.next(), k)?.max(1) as usize,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.backing.as_os_str().is_empty() || a.mount_point.as_os_str().is_empty() {
        return Err("--backing and --mount are required".into());
    }
    Ok(a)
}

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

/// Entry point `fuse-daemon`.
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
    if let Err(e) = check_mount_point(&a) {
        eprintln!("fuse-daemon: {e}");
        return 1;
    }
    let latency = Arc::new(Latency::default());
    latency.set(a.read_latency, a.write_latency);
    let fs = match Passthrough::new(&a.backing, a.ttl, latency.clone()) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!(
                "fuse-daemon: failed to open backing directory {}: {e}",
                a.backing.display()
            );
            return 1;
        }
    };
    let fd = match mount_dev_fuse(&a) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("fuse-daemon: {e}");
            return 1;
        }
    };
    let mut config = fuser::Config::default();
    config.n_threads = Some(a.threads);
    config.clone_fd = a.threads > 1;
    let session = match fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fuse-daemon: failed to complete the FUSE handshake: {e}");
            return 1;
        }
    };
    let bg = match session.spawn() {
        Ok(bg) => bg,
        Err(e) => {
            eprintln!("fuse-daemon: failed to start serving: {e}");
            return 1;
        }
    };
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
    0
}
