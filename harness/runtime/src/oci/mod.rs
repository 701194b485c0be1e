//! Containers started directly through an OCI runtime (runc, crun): a bundle written with
//! the oci-spec crate ([`bundle`]), the runtime's command line driven and bounded
//! ([`runner`]), and which runtime it is and what it said ([`identity`]). The runtime is the
//! one under test (`--runtime … oci=…`, carried in `Context::runtime`), else runc on PATH.

pub mod bundle;
pub mod identity;
pub mod runner;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

pub use bundle::{BindMount, Bundle, BundleError, BundleSpec};
pub use faultline_core::requirement::oci_runtime_binary;
pub use identity::{Identity, Version};
pub use runner::{unique_id, Container, Created, OciError, OciRuntime, Step};

/// Whether `binary` can start a container here, found by trying: a busybox container that
/// runs `/bin/true` (`run`, in a temporary bundle and state directory). `Err` carries the
/// runtime's own words, e.g. crun 1.8.1 on a host with cgroup v1 controllers beside cgroup2:
/// `cgroups in hybrid mode not supported, drop all controllers from cgroupv2`; with only
/// cgroup2 but without CAP_SYS_RESOURCE: `setrlimit (RLIM_MEMLOCK): Operation not permitted`.
/// Tried once per binary and process.
pub fn probe(binary: &Path) -> Result<(), String> {
    static PROBED: Mutex<Vec<(PathBuf, Result<(), String>)>> = Mutex::new(Vec::new());
    let mut probed = PROBED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = probed.iter().find(|(b, _)| b == binary) {
        return r.clone();
    }
    let r = try_container(binary);
    probed.push((binary.to_path_buf(), r.clone()));
    r
}

fn try_container(binary: &Path) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("failed to try {}: {e}", binary.display());
    let dir = tempfile::Builder::new()
        .prefix("faultline-oci-probe-")
        .tempdir()
        .map_err(|e| failed(&e))?;
    let bundle = Bundle::create(
        &dir.path().join("bundle"),
        &BundleSpec {
            args: vec!["/bin/true".into()],
            mounts: Vec::new(),
        },
    )
    .map_err(|e| failed(&faultline_sys::error_chain::error_chain(&e)))?;
    let rt = OciRuntime::new(binary, &dir.path().join("state"))
        .map_err(|e| failed(&faultline_sys::error_chain::error_chain(&e)))?;
    let step = rt
        .run(&unique_id("probe"), &bundle)
        .map_err(|e| failed(&faultline_sys::error_chain::error_chain(&e)))?;
    if step.ok {
        Ok(())
    } else {
        Err(format!(
            "{} cannot start a container here: {}",
            rt.identity(),
            step.error.unwrap_or_default()
        ))
    }
}

/// A new container that reads one file of its volume: `create`, `start`, `exec cat FILE`,
/// each step as it ended, up to the first that failed; deleted at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ReadAttempt {
    pub runtime: Identity,
    pub steps: Vec<Step>,
    /// What `cat` printed, when it worked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl ReadAttempt {
    pub fn failed_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.ok)
    }

    /// The container read its file.
    pub fn read(&self) -> bool {
        self.content.is_some()
    }

    /// The container was made and started, whatever the read did: the read is tried only
    /// then (`exec cat` after `create` and `start`, `ExecSync cat` after CRI's
    /// CreateContainer and StartContainer).
    pub fn started(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.command.starts_with("exec ") || s.command.starts_with("ExecSync "))
    }
}

/// Creates and starts a container from `bundle` (whose process must keep running, e.g.
/// `sleep`) and reads `file` inside it with `exec cat`.
pub fn start_and_read(
    rt: &OciRuntime,
    bundle: &Bundle,
    id: &str,
    file: &str,
) -> Result<ReadAttempt, OciError> {
    let mut attempt = ReadAttempt {
        runtime: rt.identity().clone(),
        steps: Vec::new(),
        content: None,
    };
    let container = match rt.create(id, bundle)? {
        Created::Refused(step) => {
            attempt.steps.push(step);
            return Ok(attempt);
        }
        Created::Container(c) => c,
    };
    attempt.steps.push(Step::done("create"));
    let start = container.start()?;
    let started = start.ok;
    attempt.steps.push(start);
    if started {
        let cat = container.exec(&["cat", file])?;
        if cat.ok {
            attempt.content = Some(cat.stdout.clone());
        }
        attempt.steps.push(cat);
    }
    let deleted = container.delete()?;
    if !deleted.ok {
        tracing::warn!("failed to delete container {id}: {:?}", deleted.error);
    }
    Ok(attempt)
}
