//! The client half: [`FuseDaemon`], the guard a scenario holds. It starts the daemon process
//! (the `fuse-daemon` entry, see [`crate::process`]), waits until it serves, changes its
//! latency, SIGKILLs it as the OOM killer would, and cleans up after it.
//!
//! Control protocol on the daemon's stdin/stdout, one line each way:
//! - daemon → `ready <pid>` once the handshake is done and requests are being served;
//! - `latency <read_us> <write_us>` → `ok latency <read_us> <write_us>`, in force from then on;
//! - stdin at EOF → the daemon exits (its parent is gone or done with it).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::FuseConfig;
use crate::process::ENTRY;
use faultline_core::guard::mount::Mount;
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
        let lines = read_lines(c.stdout.take().expect("piped"));
        let (stderr, stderr_eof) = collect_stderr(c.stderr.take().expect("piped"));
        let mut d = FuseDaemon {
            child,
            stdin,
            lines,
            stderr,
            mount: None,
            mount_point: mp,
            dev: (0, 0),
        };
        d.wait_ready(config.ready_timeout, &stderr_eof)?;
        d.mount = Some(Mount::adopt(&config.mount_point));
        d.dev = dev_of(&config.mount_point).unwrap_or((0, 0));
        Ok(d)
    }

    /// Waits for the daemon's `ready` line; `stderr_eof` disconnects once its stderr closed.
    fn wait_ready(
        &self,
        limit: Duration,
        stderr_eof: &mpsc::Receiver<()>,
    ) -> Result<(), FuseError> {
        let mount_point = self.mount_point.clone();
        match self.lines.recv_timeout(limit) {
            Ok(line) if line.starts_with("ready") => Ok(()),
            Ok(other) => Err(FuseError::NotReady {
                mount_point,
                stderr: format!("unexpected line {other:?}; {}", self.stderr_text()),
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Let the stderr reader reach EOF, so the daemon's last words are in the error.
                let _ = stderr_eof.recv_timeout(Duration::from_secs(2));
                Err(FuseError::NotReady {
                    mount_point,
                    stderr: self.stderr_text(),
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FuseError::ReadyTimeout {
                mount_point,
                limit,
                stderr: self.stderr_text(),
            }),
        }
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

/// The daemon's stdout, line by line, on a channel (a reader thread ends at EOF).
fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The daemon's stderr, logged and kept (the first 8 KiB) for error messages; the receiver
/// disconnects when the reader reached EOF.
fn collect_stderr(pipe: ChildStderr) -> (Arc<Mutex<String>>, mpsc::Receiver<()>) {
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let (done, eof) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _done = done;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            tracing::debug!(target: "fuse-daemon", "{line}");
            let mut s = sink.lock().unwrap();
            if s.len() < 8192 {
                s.push_str(&line);
                s.push('\n');
            }
        }
    });
    (stderr, eof)
}

/// `st_dev` of what `path` resolves to, without asking a FUSE daemon (statx with an empty
/// mask is answered from the inode; it works on a dead mount too).
pub fn dev_of(path: &Path) -> Option<(u32, u32)> {
    faultline_sys::statx::statx(path, libc::AT_NO_AUTOMOUNT | libc::AT_STATX_DONT_SYNC, 0)
        .ok()
        .map(|s| s.dev)
}
