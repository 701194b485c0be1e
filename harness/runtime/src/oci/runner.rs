//! Driving an OCI runtime binary (runc, crun, or any other that takes runc's command line)
//! through the lifecycle of the runtime spec: `create`, `start`, `state`, `exec`, `kill`,
//! `delete`. Every command is bounded; its state lives under its own `--root` (in the
//! scenario's scratch), so nothing of it is shared with the node's runtime. A [`Container`]
//! deletes itself (`delete --force`) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use faultline_sys::process::{run_bounded, ChildGroup};
use oci_spec::runtime::State;
use serde::Serialize;

use super::bundle::Bundle;
use super::identity::{runtime_message, Identity};
use crate::cgroups::{CgroupError, CgroupParent};

/// How long one runtime command may take. A create whose bind source is a hung FUSE mount
/// would wait for it; past this it is killed and that is an error of the harness.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("failed to run `{binary} {command}`")]
    Spawn {
        binary: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{binary} {command}` did not finish within {limit:?}; killed it")]
    TimedOut {
        binary: String,
        command: String,
        limit: Duration,
    },
    #[error("failed to make the containers' cgroup parent")]
    Cgroup(#[source] CgroupError),
    #[error("failed to prepare {path} for the runtime")]
    Files {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{binary} state {id}` failed: {message}")]
    State {
        binary: String,
        id: String,
        message: String,
    },
    #[error("failed to read `state {id}`'s answer: {source}: {text:?}")]
    StateJson {
        id: String,
        text: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to learn the runtime's version")]
    Version(#[source] crate::select::SelectError),
}

/// One runtime command and how it ended, as the result document records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// `create`, `start`, `exec cat /vol/x`, ...
    pub command: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    /// The runtime's own words (or the exec'd program's) when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stdout: String,
}

impl Step {
    /// A step that failed with `error`, printing nothing.
    pub fn failed(command: &str, exit: Option<i32>, error: String) -> Step {
        Step {
            command: command.into(),
            ok: false,
            exit,
            error: Some(error),
            stdout: String::new(),
        }
    }

    /// A step that worked and printed nothing.
    pub fn done(command: &str) -> Step {
        Step {
            command: command.into(),
            ok: true,
            exit: Some(0),
            error: None,
            stdout: String::new(),
        }
    }

    fn from_output(command: String, out: &Output) -> Step {
        let ok = out.status.success();
        let stderr = String::from_utf8_lossy(&out.stderr);
        Step {
            command,
            ok,
            exit: out.status.code(),
            error: (!ok).then(|| runtime_message(&stderr, &out.status.to_string())),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }
}

/// An OCI runtime binary with its own state directory, and a cgroup parent of its own that
/// every container it creates lives under: runc and crun delete a container's cgroups on
/// `delete`, but a run killed before that leaves them, and without an explicit path runc
/// puts them relative to the caller's own cgroup in each hierarchy (here
/// `memory:/process_api/<id>/<container id>`), where nothing would find them again. Under
/// the parent they go with it, and a later run's [`CgroupParent::claim`] removes a killed
/// run's parent.
#[derive(Debug, Clone)]
pub struct OciRuntime {
    binary: PathBuf,
    root: PathBuf,
    identity: Identity,
    cgroup: Arc<CgroupParent>,
}

/// What `create` gave: a container, or the runtime's refusal.
#[derive(Debug)]
pub enum Created<'a> {
    Container(Container<'a>),
    Refused(Step),
}

impl OciRuntime {
    /// `binary` keeping its state under `root` (created if missing).
    pub fn new(binary: &Path, root: &Path) -> Result<OciRuntime, OciError> {
        std::fs::create_dir_all(root).map_err(|source| OciError::Files {
            path: root.to_path_buf(),
            source,
        })?;
        let identity = Identity::of(binary).map_err(OciError::Version)?;
        let cgroup = CgroupParent::claim(COMMAND_LIMIT).map_err(OciError::Cgroup)?;
        Ok(OciRuntime {
            binary: binary.to_path_buf(),
            root: root.to_path_buf(),
            identity,
            cgroup: Arc::new(cgroup),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    fn bounded(&self, args: &[&str]) -> Result<Output, OciError> {
        let label = args.first().copied().unwrap_or_default();
        let mut cmd = self.command(args);
        run_bounded(label, &mut cmd, COMMAND_LIMIT)
            .map_err(|source| self.spawn_error(args, source))?
            .ok_or_else(|| OciError::TimedOut {
                binary: self.binary.display().to_string(),
                command: args.join(" "),
                limit: COMMAND_LIMIT,
            })
    }

    fn spawn_error(&self, args: &[&str], source: std::io::Error) -> OciError {
        OciError::Spawn {
            binary: self.binary.display().to_string(),
            command: args.join(" "),
            source,
        }
    }

    /// `create --bundle B ID`. The container's process inherits the runtime's stdio and
    /// outlives the command, so stdout and stderr go to files in the bundle rather than to
    /// pipes (a pipe would stay open as long as the container runs); the runtime's error,
    /// if any, is read back from `create.stderr`.
    pub fn create(&self, id: &str, bundle: &Bundle) -> Result<Created<'_>, OciError> {
        self.place(id, bundle)?;
        let file = |name: &str| {
            let path = bundle.dir.join(name);
            File::create(&path).map_err(|source| OciError::Files { path, source })
        };
        let (out, err) = (file("create.stdout")?, file("create.stderr")?);
        let bundle_dir = bundle.dir.to_string_lossy();
        let args = ["create", "--bundle", &bundle_dir, id];
        let mut cmd = self.command(&args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut group = ChildGroup::spawn("runtime create", &mut cmd)
            .map_err(|e| self.spawn_error(&args, e))?;
        let status = group
            .wait_timeout(COMMAND_LIMIT)
            .map_err(|e| self.spawn_error(&args, e))?;
        let Some(status) = status else {
            let _ = group.teardown();
            self.force_delete(id);
            return Err(OciError::TimedOut {
                binary: self.binary.display().to_string(),
                command: args.join(" "),
                limit: COMMAND_LIMIT,
            });
        };
        let container = Container {
            runtime: self,
            id: id.to_string(),
            deleted: false,
        };
        if status.success() {
            return Ok(Created::Container(container));
        }
        let stderr = std::fs::read_to_string(bundle.dir.join("create.stderr")).unwrap_or_default();
        // Dropping the container deletes whatever the failed create left.
        drop(container);
        Ok(Created::Refused(Step::failed(
            "create",
            status.code(),
            runtime_message(&stderr, &status.to_string()),
        )))
    }

    /// `run --bundle B ID` in the foreground: the container runs its process to the end and
    /// is removed; its stdout is the step's.
    pub fn run(&self, id: &str, bundle: &Bundle) -> Result<Step, OciError> {
        self.place(id, bundle)?;
        let bundle_dir = bundle.dir.to_string_lossy();
        let out = self.bounded(&["run", "--bundle", &bundle_dir, id]);
        if out.is_err() {
            self.force_delete(id);
        }
        Ok(Step::from_output("run".into(), &out?))
    }

    /// Container `id` made from `bundle` gets its cgroup under this runtime's parent.
    fn place(&self, id: &str, bundle: &Bundle) -> Result<(), OciError> {
        bundle.set_cgroups_path(&format!("{}/{id}", self.cgroup.path()))
    }

    fn force_delete(&self, id: &str) -> Option<Step> {
        match self.bounded(&["delete", "--force", id]) {
            Ok(out) => Some(Step::from_output("delete --force".into(), &out)),
            Err(e) => {
                tracing::warn!("failed to delete container {id}: {e}");
                None
            }
        }
    }
}

/// A created container; `delete --force` when dropped.
#[derive(Debug)]
pub struct Container<'a> {
    runtime: &'a OciRuntime,
    id: String,
    deleted: bool,
}

impl Container<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn start(&self) -> Result<Step, OciError> {
        let out = self.runtime.bounded(&["start", &self.id])?;
        Ok(Step::from_output("start".into(), &out))
    }

    /// `exec ID ARGS...`: runs `args` in the container and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Step, OciError> {
        let mut all = vec!["exec", self.id.as_str()];
        all.extend_from_slice(args);
        let out = self.runtime.bounded(&all)?;
        Ok(Step::from_output(format!("exec {}", args.join(" ")), &out))
    }

    /// `state ID`, as the runtime spec's state document.
    pub fn state(&self) -> Result<State, OciError> {
        let out = self.runtime.bounded(&["state", &self.id])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(OciError::State {
                binary: self.runtime.binary.display().to_string(),
                id: self.id.clone(),
                message: runtime_message(&String::from_utf8_lossy(&out.stderr), ""),
            });
        }
        serde_json::from_str(&text).map_err(|source| OciError::StateJson {
            id: self.id.clone(),
            text,
            source,
        })
    }

    /// The container's init process as this pid namespace numbers it.
    pub fn pid(&self) -> Result<i32, OciError> {
        Ok(self.state()?.pid().unwrap_or(-1))
    }

    pub fn kill(&self, signal: &str) -> Result<Step, OciError> {
        let out = self.runtime.bounded(&["kill", &self.id, signal])?;
        Ok(Step::from_output(format!("kill {signal}"), &out))
    }

    /// `delete --force`: stops the container's processes and removes its state.
    pub fn delete(mut self) -> Result<Step, OciError> {
        self.deleted = true;
        let out = self.runtime.bounded(&["delete", "--force", &self.id])?;
        Ok(Step::from_output("delete --force".into(), &out))
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            self.runtime.force_delete(&self.id);
        }
    }
}

/// A container ID unique on this machine (cgroups are shared by every scenario process):
/// `faultline-LABEL-PID-NANOS`.
pub fn unique_id(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("faultline-{label}-{}-{nanos:x}", std::process::id())
}
