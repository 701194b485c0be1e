//! An NFSv3 server and its helpers on loopback, as guards: rpcbind, the kernel's nfsd with
//! one export, rpc.mountd, and rpc.statd on its own (so a scenario can stop and restart it).
//! Each daemon runs in the foreground as a [`ChildGroup`], so it dies with the scenario.
//! Needs a kernel with nfsd (the VM backend's guest) and the Debian packages rpcbind,
//! nfs-kernel-server and nfs-common.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::guard::Mount;
use faultline_sys::portmap::{self, IPPROTO_TCP, IPPROTO_UDP, NSM_PROGRAM, NSM_VERSION};
use faultline_sys::{wait_until, ChildGroup};

pub const MOUNTD_PROGRAM: u32 = 100_005;
pub const NFS_PROGRAM: u32 = 100_003;

/// How long a daemon may take to register with rpcbind under TCG on a busy host.
const READY: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    #[error("failed to start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] crate::guard::mount::MountError),
    #[error(transparent)]
    Wait(#[from] faultline_sys::WaitError),
}

/// The port rpcbind has for `program`, or a description of what it said.
pub fn registered(program: u32, version: u32, protocol: u32) -> Result<u16, String> {
    match portmap::getport(
        faultline_sys::portmap::rpcbind_addr(),
        program,
        version,
        protocol,
        Duration::from_millis(300),
    ) {
        Ok(Some(port)) => Ok(port),
        Ok(None) => Err(format!("program {program} not registered")),
        Err(e) => Err(e.to_string()),
    }
}

/// How long one NFS tool may take: they return at once unless the kernel is wedged, and a
/// guard's teardown must not wait on a wedged kernel.
const TOOL_LIMIT: Duration = Duration::from_secs(20);

fn run(what: &str, cmd: &mut Command) -> Result<String, NfsError> {
    cmd.stdin(Stdio::null());
    let out = faultline_sys::process::run_bounded(what, cmd, TOOL_LIMIT)
        .map_err(|source| NfsError::Spawn {
            what: what.to_string(),
            source,
        })?
        .ok_or_else(|| NfsError::Command {
            what: what.to_string(),
            detail: format!("did not finish within {TOOL_LIMIT:?}; killed it"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NfsError::Command {
            what: what.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn write(path: &str, value: &str) -> Result<(), NfsError> {
    std::fs::write(path, value).map_err(|source| NfsError::Write {
        path: PathBuf::from(path),
        source,
    })
}

fn daemon(what: &str, cmd: &mut Command) -> Result<ChildGroup, NfsError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    ChildGroup::spawn(what, cmd)
        .map(|g| g.with_grace(Duration::from_secs(2)))
        .map_err(|source| NfsError::Spawn {
            what: what.to_string(),
            source,
        })
}

/// Grace periods as short as the kernel allows, so a lock right after the server starts
/// does not wait the default 90 s (NFSv4) or 50 s (lockd). Written before nfsd starts: the
/// kernel reads them when it starts the lock manager.
#[derive(Debug, Clone, Copy)]
pub struct GraceTimes {
    /// /proc/fs/nfsd/nfsv4gracetime and nfsv4leasetime (the kernel's minimum is 10 s).
    pub nfsv4_secs: u32,
    /// fs.nfs.nlm_grace_period; lockd rounds it up to a multiple of nlm_timeout.
    pub nlm_grace_secs: u32,
    /// fs.nfs.nlm_timeout (minimum 3 s).
    pub nlm_timeout_secs: u32,
}

impl Default for GraceTimes {
    fn default() -> Self {
        GraceTimes {
            nfsv4_secs: 10,
            nlm_grace_secs: 1,
            nlm_timeout_secs: 3,
        }
    }
}

/// rpcbind + nfsd + mountd exporting one directory to 127.0.0.1. Drop stops nfsd, removes
/// the export and kills the daemons.
pub struct NfsServer {
    export: PathBuf,
    mountd: Option<ChildGroup>,
    rpcbind: Option<ChildGroup>,
    nfsd_running: bool,
    _nfsd_fs: Option<Mount>,
}

impl NfsServer {
    /// Starts the server exporting `export` (read-write, root not squashed) with `fsid`
    /// (needed because tmpfs has no UUID).
    pub fn start(export: &Path, fsid: u32, grace: GraceTimes) -> Result<NfsServer, NfsError> {
        let mut server = NfsServer {
            export: export.to_path_buf(),
            mountd: None,
            rpcbind: None,
            nfsd_running: false,
            _nfsd_fs: None,
        };
        // The nfsd control file system, in this mount namespace.
        if !Path::new("/proc/fs/nfsd/threads").exists() {
            server._nfsd_fs = Some(Mount::new(
                Some(Path::new("nfsd")),
                Path::new("/proc/fs/nfsd"),
                Some("nfsd"),
                nix::mount::MsFlags::empty(),
                None,
            )?);
        }
        write(
            "/proc/sys/fs/nfs/nlm_timeout",
            &grace.nlm_timeout_secs.to_string(),
        )?;
        write(
            "/proc/sys/fs/nfs/nlm_grace_period",
            &grace.nlm_grace_secs.to_string(),
        )?;
        write(
            "/proc/fs/nfsd/nfsv4gracetime",
            &grace.nfsv4_secs.to_string(),
        )?;
        write(
            "/proc/fs/nfsd/nfsv4leasetime",
            &grace.nfsv4_secs.to_string(),
        )?;

        let _ = std::fs::create_dir_all("/run/rpcbind");
        server.rpcbind = Some(daemon("rpcbind", Command::new("rpcbind").arg("-f"))?);
        wait_until("rpcbind to answer on 127.0.0.1:111", READY, || {
            registered(portmap::PMAP_PROGRAM, portmap::PMAP_VERSION, IPPROTO_UDP).map(|_| ())
        })?;

        let options = format!("rw,sync,no_root_squash,no_subtree_check,insecure,fsid={fsid}");
        run(
            "exportfs",
            Command::new("exportfs")
                .arg("-o")
                .arg(&options)
                .arg(format!("127.0.0.1:{}", export.display())),
        )?;
        server.mountd = Some(daemon(
            "rpc.mountd",
            Command::new("rpc.mountd").args(["-F", "--no-udp"]),
        )?);
        wait_until("rpc.mountd to register with rpcbind", READY, || {
            registered(MOUNTD_PROGRAM, 3, IPPROTO_TCP).map(|_| ())
        })?;
        run("rpc.nfsd", Command::new("rpc.nfsd").args(["--no-udp", "2"]))?;
        server.nfsd_running = true;
        wait_until("nfsd to register with rpcbind", READY, || {
            registered(NFS_PROGRAM, 3, IPPROTO_TCP).map(|_| ())
        })?;
        // NFSv4's grace also holds back NLM locks; nothing here reclaims v4 state.
        let _ = std::fs::write("/proc/fs/nfsd/v4_end_grace", "Y");
        Ok(server)
    }

    /// `127.0.0.1:/export`, as a client mounts it.
    pub fn remote(&self) -> String {
        format!("127.0.0.1:{}", self.export.display())
    }

    /// Mounts the export on `target` with `mount.nfs -o OPTIONS`, as kubelet's mount does,
    /// bounded like the other NFS tools (a server that does not answer would hold it), and
    /// guards the mount.
    pub fn mount_client(&self, target: &Path, options: &str) -> Result<Mount, NfsError> {
        run(
            "mount.nfs",
            Command::new("mount.nfs")
                .arg(self.remote())
                .arg(target)
                .args(["-o", options]),
        )?;
        Ok(Mount::adopt(target))
    }

    pub fn teardown(&mut self) -> Result<(), NfsError> {
        let mut first_err = None;
        if self.nfsd_running {
            self.nfsd_running = false;
            if let Err(e) = run("rpc.nfsd 0", Command::new("rpc.nfsd").arg("0")) {
                first_err.get_or_insert(e);
            }
            if let Err(e) = run(
                "exportfs -u",
                Command::new("exportfs").arg("-u").arg(self.remote()),
            ) {
                first_err.get_or_insert(e);
            }
        }
        for d in [self.mountd.take(), self.rpcbind.take()]
            .into_iter()
            .flatten()
        {
            drop(d);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("failed to stop the NFS server: {e}");
        }
    }
}

/// rpc.statd in the foreground, without notifying peers (there are none).
pub struct Statd {
    group: Option<ChildGroup>,
}

impl Statd {
    pub fn start() -> Result<Statd, NfsError> {
        let group = daemon(
            "rpc.statd",
            Command::new("rpc.statd").args(["-F", "--no-notify"]),
        )?;
        let statd = Statd { group: Some(group) };
        wait_until("rpc.statd to register with rpcbind", READY, || {
            registered(NSM_PROGRAM, NSM_VERSION, IPPROTO_UDP).map(|_| ())
        })?;
        Ok(statd)
    }

    pub fn pid(&self) -> Option<i32> {
        self.group.as_ref().map(ChildGroup::pid)
    }

    /// Stops it as `systemctl stop rpc-statd` does (SIGTERM), and waits until it has exited
    /// and rpcbind no longer lists it. Returns whether rpcbind still listed it after exit.
    pub fn stop(&mut self) -> Result<bool, NfsError> {
        let Some(mut g) = self.group.take() else {
            return Ok(false);
        };
        let _ = g.signal(nix::sys::signal::Signal::SIGTERM);
        let exited = g
            .wait_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .is_some();
        drop(g);
        if !exited {
            return Err(NfsError::Command {
                what: "stopping rpc.statd".into(),
                detail: "it did not exit within 10 s of SIGTERM".into(),
            });
        }
        Ok(registered(NSM_PROGRAM, NSM_VERSION, IPPROTO_UDP).is_ok())
    }
}
