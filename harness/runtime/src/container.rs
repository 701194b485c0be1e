//! A minimal "container": a child process in its own mount namespace that bind-mounts host
//! paths into a root directory the way kubelet and runc do for hostPath volumes (bind, then a
//! read-only remount), chroots into it, and reads files on request, so a scenario observes a
//! volume from the container's side of the namespace boundary.
//!
//! It is internal entry point `container` (started through [`ENTRY`]),
//! dies with its parent (own process group, PDEATHSIG), and answers one JSON line per request
//! on stdout; its binds exist only in its namespace and vanish with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use faultline_sys::entry::{self, Entry};
use faultline_sys::ChildGroup;

/// One bind mount into the container's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    /// Host path (a file or a directory).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's root directory on the host (its "rootfs").
    pub root: PathBuf,
    pub binds: Vec<Bind>,
}

/// What the container saw when it read a file through its own mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub content: String,
    pub nlink: u64,
    pub inode: u64,
    pub device: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("failed to start the container process")]
    Spawn(#[source] std::io::Error),
    #[error("failed to send a request to the container")]
    Send(#[source] std::io::Error),
    #[error("the container did not answer within {0:?} (it exited or hung; see its stderr)")]
    NoAnswer(Duration),
    #[error("failed to decode the container's answer {line:?}")]
    Decode {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the container failed to {what}: {message}")]
    Inside { what: String, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Read { path: PathBuf },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ready { pid_inside: i32 },
    File(FileView),
    Error { what: String, message: String },
}

/// A running container; torn down (SIGTERM, then SIGKILL) on drop.
pub struct Container {
    group: ChildGroup,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    limit: Duration,
}

impl Container {
    /// Starts the container and waits until its binds are in place, up to `limit` (also the
    /// limit for each later request).
    pub fn start(spec: &ContainerSpec, limit: Duration) -> Result<Container, ContainerError> {
        let mut cmd = ENTRY.command();
        cmd.arg(serde_json::to_string(spec).expect("container spec serialises"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut group = ChildGroup::spawn("container", &mut cmd).map_err(ContainerError::Spawn)?;
        let child = group.child_mut().expect("just spawned");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = Container {
            group: group.with_grace(Duration::from_millis(500)),
            stdin,
            replies,
            limit,
        };
        match c.next_reply("set up its mounts")? {
            Reply::Ready { .. } => Ok(c),
            other => Err(unexpected("set up its mounts", other)),
        }
    }

    /// The container's pid (in the caller's pid namespace).
    pub fn pid(&self) -> i32 {
        self.group.pid()
    }

    /// Reads `path` (inside the container) through the container's own mounts, with the link
    /// count and inode of what it opened.
    pub fn read(&mut self, path: &Path) -> Result<FileView, ContainerError> {
        let what = format!("read {}", path.display());
        let req = Request::Read {
            path: path.to_path_buf(),
        };
        let mut line = serde_json::to_string(&req).expect("request serialises");
        line.push('\n');
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| ContainerError::Send(std::io::ErrorKind::BrokenPipe.into()))?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(ContainerError::Send)?;
        match self.next_reply(&what)? {
            Reply::File(v) => Ok(v),
            other => Err(unexpected(&what, other)),
        }
    }

    fn next_reply(&mut self, what: &str) -> Result<Reply, ContainerError> {
        let line = self
            .replies
            .recv_timeout(self.limit)
            .map_err(|_| ContainerError::NoAnswer(self.limit))?;
        let reply: Reply = serde_json::from_str(&line)
            .map_err(|source| ContainerError::Decode { line, source })?;
        match reply {
            Reply::Error { what: w, message } => Err(ContainerError::Inside {
                what: format!("{what} ({w})"),
                message,
            }),
            r => Ok(r),
        }
    }

    /// Stops the container: closes its stdin (it exits), then SIGTERM/SIGKILL if needed.
    pub fn teardown(&mut self) -> std::io::Result<()> {
        self.stdin = None;
        self.group.teardown().map(drop)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("failed to tear down the container: {e}");
        }
    }
}

fn unexpected(what: &str, reply: Reply) -> ContainerError {
    ContainerError::Inside {
        what: what.to_string(),
        message: format!("unexpected answer {reply:?}"),
    }
}

/// Internal entry point `container`: argument 1 is the JSON [`ContainerSpec`].
/// The re-exec entry point that runs this process half.
pub static ENTRY: Entry = Entry::new("container", |args| match entry::utf8_args(args) {
    Ok(args) => container_main(&args),
    Err(e) => {
        eprintln!("faultline container: {e}");
        2
    }
});

fn container_main(args: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut say = |r: &Reply| {
        let mut line = serde_json::to_string(r).expect("reply serialises");
        line.push('\n');
        out.write_all(line.as_bytes()).and_then(|()| out.flush())
    };
    let Some(spec) = args
        .first()
        .and_then(|a| serde_json::from_str::<ContainerSpec>(a).ok())
    else {
        eprintln!("faultline: container started without its spec");
        return 2;
    };
    if let Err((what, e)) = enter(&spec) {
        let _ = say(&Reply::Error {
            what,
            message: e.to_string(),
        });
        return 1;
    }
    if say(&Reply::Ready {
        pid_inside: std::process::id() as i32,
    })
    .is_err()
    {
        return 1;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Read { path }) => match read_file(&path) {
                Ok(v) => Reply::File(v),
                Err(e) => Reply::Error {
                    what: format!("read {}", path.display()),
                    message: e.to_string(),
                },
            },
            Err(e) => Reply::Error {
                what: "decode a request".into(),
                message: e.to_string(),
            },
        };
        if say(&reply).is_err() {
            break;
        }
    }
    0
}

/// New mount namespace, nothing propagating back; the root bound on itself (as runc does
/// before pivot_root), the binds made and remounted read-only, then chroot into the root.
fn enter(spec: &ContainerSpec) -> Result<(), (String, std::io::Error)> {
    let step = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| (what, std::io::Error::from(e))
    };
    faultline_sys::mount_namespace::unshare_private()
        .map_err(step("enter a private mount namespace"))?;
    mount(
        Some(&spec.root),
        &spec.root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(step("bind the root on itself"))?;
    for b in &spec.binds {
        let rel = b.target.strip_prefix("/").unwrap_or(&b.target);
        let target = spec.root.join(rel);
        create_mount_point(&b.source, &target)
            .map_err(|e| (format!("create mount point {}", target.display()), e))?;
        // The bind lives as long as this container's mount namespace.
        faultline_core::guard::Mount::bind(&b.source, &target, b.read_only)
            .map_err(|e| {
                let what = format!("bind {} on {}", b.source.display(), b.target.display());
                (what, std::io::Error::other(e))
            })?
            .forget();
    }
    nix::unistd::chroot(&spec.root).map_err(step("chroot into the root"))?;
    nix::unistd::chdir("/").map_err(step("chdir to /"))?;
    Ok(())
}

/// As kubelet and runc do: an empty file for a file bind, a directory for a directory bind.
fn create_mount_point(source: &Path, target: &Path) -> std::io::Result<()> {
    if std::fs::metadata(source)?.is_dir() {
        return std::fs::create_dir_all(target);
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(target)
        .map(drop)
}

fn read_file(path: &Path) -> std::io::Result<FileView> {
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let mut content = String::new();
    f.read_to_string(&mut content)?;
    Ok(FileView {
        content,
        nlink: meta.nlink(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}
