//! Launching a private containerd: its directories and config file, the process in a new
//! mount namespace with a /run of its own, and the wait until its CRI plugin answers. A
//! containerd that never answers is killed with its shims.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_sys::process::die_with_parent;
use faultline_sys::wait_until;

use crate::config::ContainerdConfig;
use crate::containerd::{StartError, KILL_LIMIT, START_LIMIT};
use crate::cri::Cri;
use crate::process::{kill_and_reap, shims_of};

/// Prepares containerd's directories and config and starts it.
pub(crate) fn launch(
    runtime: &RuntimeUnderTest,
    config: ContainerdConfig,
) -> Result<Starting, StartError> {
    prepare(&config)?;
    let child = spawn(runtime, &config)?;
    Ok(Starting {
        config,
        child: Some(child),
    })
}

/// The directories containerd writes and its config file.
fn prepare(config: &ContainerdConfig) -> Result<(), StartError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::Prepare { path, source }
    };
    // A state under /run is created by containerd itself, in its own /run.
    let state = Some(config.state()).filter(|s| !s.starts_with("/run"));
    for d in [
        config.dir.clone(),
        config.root.clone(),
        config.dir.join("cni/bin"),
        config.dir.join("cni/conf"),
        config.dir.join("logs"),
    ]
    .into_iter()
    .chain(state)
    {
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }
    let file = config.config_file();
    std::fs::write(&file, config.toml()).map_err(io(&file))
}

/// Starts containerd in a new mount namespace with its own /run, the runtime's directory
/// first on PATH (containerd finds its shims there), its output in its log file.
fn spawn(runtime: &RuntimeUnderTest, config: &ContainerdConfig) -> Result<Child, StartError> {
    let err = |source| StartError::Spawn {
        containerd: runtime.containerd.clone(),
        source,
    };
    let log = std::fs::File::create(config.log_file()).map_err(err)?;
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![runtime.bin_dir()];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).map_err(|e| err(std::io::Error::other(e)))?
        }
        None => runtime.bin_dir().into_os_string(),
    };
    let mut cmd = Command::new(&runtime.containerd);
    cmd.arg("--config")
        .arg(config.config_file())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(err)?)
        .stderr(log);
    die_with_parent(&mut cmd);
    // SAFETY: unshare and mount are async-signal-safe system calls; the closure allocates
    // nothing (the strings are C literals).
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = std::ptr::null();
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ) != 0
                || libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/run".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"mode=755".as_ptr().cast(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(err)
}

/// A containerd started but not yet answering; killed if it never does.
pub(crate) struct Starting {
    pub(crate) config: ContainerdConfig,
    pub(crate) child: Option<Child>,
}

impl Starting {
    pub(crate) fn wait_ready(&mut self) -> Result<(Cri, String), StartError> {
        let socket = self.config.socket();
        let started = Instant::now();
        let result = wait_until("containerd's CRI Version", START_LIMIT, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Ok(Err(format!("containerd exited with {status}")));
            }
            if !socket.exists() {
                return Err("no socket yet".to_string());
            }
            let cri = Cri::connect(&socket).map_err(|e| e.to_string())?;
            let (name, version) = cri.version().map_err(|e| e.to_string())?;
            tracing::info!(
                "{name} {version} answered CRI after {:?}",
                started.elapsed()
            );
            Ok(Ok((cri, version)))
        });
        let why = match result {
            Ok(Ok(ready)) => return Ok(ready),
            Ok(Err(why)) => why,
            Err(e) => e.to_string(),
        };
        Err(StartError::NotReady {
            why,
            log: self.config.log_file(),
            tail: log_tail(&self.config.log_file()),
        })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let mut victims = vec![child.id() as i32];
            victims.extend(shims_of(&self.config.socket()).iter().map(|s| s.pid));
            kill_and_reap(&victims, KILL_LIMIT);
        }
    }
}

/// The last lines of a log file, for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
