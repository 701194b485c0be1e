//! A container start reduced to the step that breaks on a stale volume: runc's bind mount of a
//! volume into the container root. Since CVE-2021-30465 runc does not mount paths; it opens
//! the source with `O_PATH` and the destination inside the root with `O_PATH`, then mounts
//! `/proc/self/fd/S` on `/proc/self/fd/T` ("mount through procfd"). Before that it stats the
//! source (`prepareBindMount`). The internal entry point `runc-bind` does these steps in its own
//! mount namespace (the container's, gone when it exits) and reports each one's errno, then
//! lists the volume from inside the container the way the workload would.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use faultline_sys::entry::{self, Entry};
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

/// One step of the start and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole start: every step that could run, in runc's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStart {
    pub steps: Vec<Step>,
    /// The bind was made and the container could list its volume.
    pub started: bool,
}

impl ContainerStart {
    /// The step that failed, if any.
    pub fn failed_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.ok)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuncBindError {
    #[error("failed to run the container start helper")]
    Spawn(#[source] std::io::Error),
    #[error("failed to read the container start helper's report: {0}")]
    Report(String),
}

/// Starts a "container" with root `rootfs` whose `dest` (absolute inside the root) is a bind
/// of `source`, in a child process with its own mount namespace; returns each step's outcome.
pub fn start_container(
    source: &Path,
    rootfs: &Path,
    dest: &str,
) -> Result<ContainerStart, RuncBindError> {
    let mut cmd = ENTRY.command();
    cmd.arg(source).arg(rootfs).arg(dest);
    // A start that hangs on a stuck mount is killed with its process group at the limit.
    let Some(output) = faultline_sys::process::run_bounded(
        "container start",
        &mut cmd,
        std::time::Duration::from_secs(20),
    )
    .map_err(RuncBindError::Spawn)?
    else {
        return Err(RuncBindError::Report(
            "the container start did not finish within 20s".into(),
        ));
    };
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    serde_json::from_str(out.trim())
        .map_err(|e| RuncBindError::Report(format!("{e}: stdout {out:?}, stderr {err:?}")))
}

fn errno_step(step: &str, e: nix::Error) -> Step {
    Step {
        step: step.into(),
        ok: false,
        errno: Some(e as i32),
        error: Some(std::io::Error::from_raw_os_error(e as i32).to_string()),
    }
}

fn ok_step(step: &str) -> Step {
    Step {
        step: step.into(),
        ok: true,
        errno: None,
        error: None,
    }
}

fn stat(path: &Path) -> nix::Result<()> {
    nix::sys::stat::stat(path).map(|_| ())
}

fn open_path(path: &Path, nofollow: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    open(path, flags, Mode::empty())
}

fn run_steps(source: &Path, rootfs: &Path, dest: &str) -> ContainerStart {
    // Every step that can still run after a failure runs, so the report shows the errno of
    // each (runc itself stops at the first; `failed_step` is where it stopped).
    let mut r = ContainerStart::default();
    let mut record = |name: &str, res: nix::Result<()>| {
        r.steps.push(match res {
            Ok(()) => ok_step(name),
            Err(e) => errno_step(name, e),
        });
    };
    let io = |e: std::io::Error| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let target: PathBuf = rootfs.join(dest.trim_start_matches('/'));
    record("stat bind mount source", stat(source));
    record(
        "create mount destination",
        std::fs::create_dir_all(&target).map_err(io),
    );
    let src = open_path(source, false);
    record(
        "open source O_PATH",
        src.as_ref().map(|_| ()).map_err(|e| *e),
    );
    let dst = open_path(&target, true);
    record(
        "open destination O_PATH",
        dst.as_ref().map(|_| ()).map_err(|e| *e),
    );
    let mut mounted = false;
    if let (Ok(src), Ok(dst)) = (&src, &dst) {
        let src_proc = format!("/proc/self/fd/{}", src.as_raw_fd());
        let dst_proc = format!("/proc/self/fd/{}", dst.as_raw_fd());
        let res = mount(
            Some(src_proc.as_str()),
            dst_proc.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        );
        mounted = res.is_ok();
        record("mount through procfd", res);
    }
    if mounted {
        record(
            "container lists its volume",
            std::fs::read_dir(&target)
                .and_then(|d| d.collect::<Result<Vec<_>, _>>())
                .map(|_| ())
                .map_err(io),
        );
    }
    r.started = mounted && r.steps.iter().all(|s| s.ok);
    r
}

/// Entry point `runc-bind SOURCE ROOTFS DEST`: prints one JSON [`ContainerStart`].
/// The re-exec entry point that runs this process half.
pub static ENTRY: Entry = Entry::new("runc-bind", |args| match entry::utf8_args(args) {
    Ok(args) => main(&args),
    Err(e) => {
        eprintln!("faultline runc-bind: {e}");
        2
    }
});

fn main(args: &[String]) -> i32 {
    let [source, rootfs, dest] = args else {
        eprintln!("runc-bind: usage: runc-bind SOURCE ROOTFS DEST");
        return 2;
    };
    // The container's own mount namespace, private so its bind never propagates back.
    if let Err(e) = faultline_sys::mount_namespace::unshare_private() {
        eprintln!("runc-bind: failed to make the container's mount namespace: {e}");
        return 1;
    }
    let r = run_steps(Path::new(source), Path::new(rootfs), dest);
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    0
}
