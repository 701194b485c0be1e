//! A stand-in for containerd's v1 shim (`containerd-shim`), with its command line:
//! `containerd-shim -namespace NS -workdir STATE/ID -address SOCKET`, run in the task's
//! bundle directory like the real one. It owns one container: it mounts the container's
//! rootfs (an overlay) at `<bundle>/rootfs`, writes the container's data into it, runs the
//! container's process there, and on `delete` kills that process and unmounts the rootfs with
//! `umount2` — the call that blocks in `sync_fs` when the upper layer's device is slow.
//! Like the real shim after a delete, it then waits for `shutdown`; a runtime that gave up
//! never sends it, and the shim stays.
//!
//! Protocol on the unix socket at `-address`, one line each way (the real shim speaks
//! ttrpc; the order of requests is what matters here):
//! - `create <overlay options> <dirty bytes>` → `ok created pid=<container pid>`
//! - `delete` → `ok deleted umount_ms=<ms>` | `err <what>`
//! - `shutdown` → `ok`, then the shim exits.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use faultline_detect::orphan_shim::ShimArgs;
use faultline_sys::entry::{self, Entry};
use faultline_sys::{wait_until, ChildGroup, WaitError};

pub const ARG0: &str = "containerd-shim";

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("failed to start the shim for {id}")]
    Spawn {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the shim for {id} did not listen on {address}")]
    NotListening {
        id: String,
        address: PathBuf,
        #[source]
        source: WaitError,
    },
    #[error("failed to talk to the shim at {address}")]
    Io {
        address: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the shim's deadline of {0:?} expired: context deadline exceeded")]
    DeadlineExceeded(Duration),
    #[error("the shim answered {0:?}")]
    Refused(String),
}

/// Where a task's shim lives, as containerd lays it out for v1.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    pub namespace: String,
    pub id: String,
    /// containerd's `io.containerd.runtime.v1.linux` state dir; the workdir is `<it>/<ns>/<id>`.
    pub state_root: PathBuf,
    /// The bundle directory (the shim's cwd; the rootfs is mounted at `rootfs` in it).
    pub bundle: PathBuf,
    pub address: PathBuf,
}

impl ShimSpec {
    pub fn workdir(&self) -> PathBuf {
        self.state_root.join(&self.namespace).join(&self.id)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    pub fn argv(&self) -> Vec<String> {
        vec![
            "-namespace".into(),
            self.namespace.clone(),
            "-workdir".into(),
            self.workdir().display().to_string(),
            "-address".into(),
            self.address.display().to_string(),
        ]
    }
}

/// A running shim process (its own process group, dies with us).
#[derive(Debug)]
pub struct Shim {
    group: ChildGroup,
    spec: ShimSpec,
}

impl Shim {
    /// Creates the workdir and bundle (as containerd does), starts the shim, and waits up to
    /// `limit` for its socket.
    pub fn start(spec: &ShimSpec, limit: Duration) -> Result<Shim, ShimError> {
        let spawn_err = |source| ShimError::Spawn {
            id: spec.id.clone(),
            source,
        };
        std::fs::create_dir_all(spec.workdir()).map_err(spawn_err)?;
        std::fs::create_dir_all(spec.rootfs()).map_err(spawn_err)?;
        let mut cmd = ENTRY.command_as(ARG0);
        cmd.args(spec.argv())
            .current_dir(&spec.bundle)
            .stdin(Stdio::null());
        let group = ChildGroup::spawn(&format!("shim {}", spec.id), &mut cmd).map_err(spawn_err)?;
        let shim = Shim {
            group,
            spec: spec.clone(),
        };
        wait_until("the shim's socket", limit, || {
            UnixStream::connect(&spec.address)
                .map(drop)
                .map_err(|e| format!("connect {}: {e}", spec.address.display()))
        })
        .map_err(|source| ShimError::NotListening {
            id: spec.id.clone(),
            address: spec.address.clone(),
            source,
        })?;
        Ok(shim)
    }

    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    pub fn spec(&self) -> &ShimSpec {
        &self.spec
    }

    /// Whether the shim process is still there (not exited and reaped).
    pub fn alive(&mut self) -> bool {
        matches!(self.group.try_wait(), Ok(None))
    }

    pub fn group_mut(&mut self) -> &mut ChildGroup {
        &mut self.group
    }

    pub fn connect(&self) -> Result<ShimClient, ShimError> {
        let io = |source| ShimError::Io {
            address: self.spec.address.clone(),
            source,
        };
        let stream = UnixStream::connect(&self.spec.address).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        Ok(ShimClient {
            stream,
            reader,
            address: self.spec.address.clone(),
        })
    }

    /// SIGTERM → grace → SIGKILL to the shim and its container.
    pub fn teardown(&mut self) -> std::io::Result<()> {
        self.group.teardown().map(drop)
    }
}

/// One connection to a shim, as the runtime holds it.
pub struct ShimClient {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    address: PathBuf,
}

impl ShimClient {
    /// Sends `line` and waits up to `deadline` for the answer (the runtime's context
    /// deadline); `ok ...` answers come back without the `ok `.
    pub fn request(&mut self, line: &str, deadline: Duration) -> Result<String, ShimError> {
        let io = |source| ShimError::Io {
            address: self.address.clone(),
            source,
        };
        self.stream
            .set_read_timeout(Some(deadline.max(Duration::from_millis(1))))
            .map_err(io)?;
        writeln!(self.stream, "{line}").map_err(io)?;
        let mut answer = String::new();
        match self.reader.read_line(&mut answer) {
            Ok(0) => Err(io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {
                let a = answer.trim_end();
                match a.strip_prefix("ok") {
                    Some(rest) => Ok(rest.trim_start().to_string()),
                    None => Err(ShimError::Refused(a.to_string())),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ShimError::DeadlineExceeded(deadline))
            }
            Err(e) => Err(io(e)),
        }
    }
}

/// The container a shim runs: its process and its rootfs.
struct Task {
    process: Option<ChildGroup>,
    rootfs: PathBuf,
}

/// Entry point `containerd-shim` (argv[0] `containerd-shim`, see [`Entry::command_as`]).
/// The re-exec entry point that runs this process half.
pub static ENTRY: Entry = Entry::new("containerd-shim", |args| match entry::utf8_args(args) {
    Ok(args) => main(&args),
    Err(e) => {
        eprintln!("faultline containerd-shim: {e}");
        2
    }
});

fn main(args: &[String]) -> i32 {
    let mut argv = vec![ARG0.to_string()];
    argv.extend_from_slice(args);
    let Some(parsed) = ShimArgs::parse(&argv, &[ARG0.to_string()]) else {
        eprintln!("containerd-shim: bad arguments {args:?}");
        return 2;
    };
    let Some(address) = parsed.address else {
        eprintln!("containerd-shim: -address is required");
        return 2;
    };
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("containerd-shim: failed to read the bundle directory: {e}");
            return 1;
        }
    };
    let _ = std::fs::remove_file(&address);
    let listener = match UnixListener::bind(&address) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("containerd-shim: failed to listen on {address}: {e}");
            return 1;
        }
    };
    let mut task = Task {
        process: None,
        rootfs: cwd.join("rootfs"),
    };
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        if serve(conn, &mut task) {
            return 0;
        }
    }
    0
}

/// Serves one connection; `true` once told to shut down.
fn serve(conn: UnixStream, task: &mut Task) -> bool {
    let Ok(read_half) = conn.try_clone() else {
        return false;
    };
    let mut out = conn;
    for line in BufReader::new(read_half).lines() {
        let Ok(line) = line else { return false };
        let mut words = line.split_whitespace();
        let answer = match words.next() {
            Some("create") => create(task, words.next(), words.next()),
            Some("delete") => delete(task),
            Some("shutdown") => {
                let _ = writeln!(out, "ok");
                return true;
            }
            other => format!("err unknown request {other:?}"),
        };
        // The runtime may have given up and hung up: then nobody hears the answer.
        let _ = writeln!(out, "{answer}");
    }
    false
}

fn create(task: &mut Task, options: Option<&str>, dirty: Option<&str>) -> String {
    let (Some(options), Some(dirty)) = (options, dirty.and_then(|d| d.parse::<u64>().ok())) else {
        return "err create needs <overlay options> <dirty bytes>".into();
    };
    if let Err(e) = mount(
        Some("overlay"),
        &task.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options),
    ) {
        return format!("err mount overlay: {e}");
    }
    if let Err(e) = write_dirty(&task.rootfs, dirty) {
        return format!("err writing container data: {e}");
    }
    let mut cmd = Command::new("sleep");
    cmd.arg("infinity")
        .current_dir(&task.rootfs)
        .stdin(Stdio::null());
    match ChildGroup::spawn("container", &mut cmd) {
        Ok(g) => {
            let pid = g.pid();
            task.process = Some(g.with_grace(Duration::ZERO));
            format!("ok created pid={pid}")
        }
        Err(e) => format!("err starting the container process: {e}"),
    }
}

/// The container's writes: files in the upper layer, left dirty in the page cache (no
/// fsync), as an application's would be when its pod is deleted.
fn write_dirty(rootfs: &Path, bytes: u64) -> std::io::Result<()> {
    let dir = rootfs.join("var/cache/app");
    std::fs::create_dir_all(&dir)?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut left = bytes;
    let mut n = 0;
    while left > 0 {
        let len = left.min(chunk.len() as u64) as usize;
        std::fs::write(dir.join(format!("blob-{n:04}")), &chunk[..len])?;
        left -= len as u64;
        n += 1;
    }
    Ok(())
}

fn delete(task: &mut Task) -> String {
    if let Some(mut p) = task.process.take() {
        if let Err(e) = p.teardown() {
            return format!("err killing the container process: {e}");
        }
    }
    let start = Instant::now();
    match umount2(&task.rootfs, MntFlags::empty()) {
        Ok(()) => format!("ok deleted umount_ms={}", start.elapsed().as_millis()),
        Err(e) => format!("err umount2 {}: {e}", task.rootfs.display()),
    }
}
