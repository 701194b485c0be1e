//! [`CriPod`]: one pod of a private containerd of the runtime under test, driven through CRI
//! as kubelet drives it: RunPodSandbox on the node's network, then for each container
//! CreateContainer (host paths as CRI mounts), StartContainer, ExecSync to look inside, and
//! RemoveContainer. Every call's outcome is a [`Step`] in containerd's own words, as the OCI
//! runtime's are when it is driven directly, so a scenario records and judges both the same
//! way.
//!
//! containerd runs in a mount namespace of its own, copied from the scenario's when it
//! starts ([`crate::containerd`]): a mount the scenario makes or removes afterwards is not
//! seen by containerd and its containers (on a node they share the host's). A scenario
//! that changes mounts therefore starts the pod after the change, as the node's next pod
//! start comes after it.

use std::path::Path;
use std::time::Duration;

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_sys::containerd::ContainerdError;
use faultline_sys::path::find_on_path;
use serde_json::json;

use crate::config::{ContainerdConfig, Handler};
use crate::containerd::{PrivateContainerd, StartError};
use crate::cri::{ContainerSpec, HostMount, Pod};
use crate::image::{ImageBuilder, ImageError};
use crate::oci::identity::parse_release;
use crate::oci::{Identity, ReadAttempt, Step, Version};
use crate::select::SelectError;

/// The image of the sandbox and of the containers; CRI's command overrides its entrypoint.
pub const IMAGE: &str = "faultline.local/busybox:latest";
/// How long one ExecSync may take.
const EXEC_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("failed to build the pod's image")]
    Image(#[from] ImageError),
    #[error(transparent)]
    Cri(#[from] ContainerdError),
    #[error("no busybox on PATH for the pod's image (apt-get install busybox-static)")]
    NoBusybox,
    #[error("failed to identify the OCI runtime")]
    Identity(#[from] SelectError),
}

/// A pod of a private containerd. Dropping it removes the pod and stops containerd with
/// everything it started ([`PrivateContainerd`]'s teardown).
pub struct CriPod {
    ctd: PrivateContainerd,
    pod: Pod,
    oci: Identity,
}

/// A container of a [`CriPod`], created and started.
pub struct CriContainer<'a> {
    pod: &'a CriPod,
    id: String,
}

impl CriPod {
    /// Starts a containerd of `runtime` under `dir`, imports the busybox image (busybox on
    /// PATH, which must be static, as for the OCI bundles) and runs pod `name` with the runc
    /// v2 shim (which runs the runtime's OCI runtime).
    pub fn start(runtime: &RuntimeUnderTest, dir: &Path, name: &str) -> Result<CriPod, PodError> {
        let oci = Identity::recorded(&runtime.oci, &runtime.versions.oci)?;
        let busybox = find_on_path("busybox").ok_or(PodError::NoBusybox)?;
        let config = ContainerdConfig::new(dir, &runtime.oci, IMAGE);
        let ctd = PrivateContainerd::start(runtime, config)?;
        import_busybox(&ctd, &busybox)?;
        let pod = ctd.cri().run_pod(&ctd.pod_spec(name, Handler::RuncV2))?;
        Ok(CriPod { ctd, pod, oci })
    }

    pub fn containerd(&self) -> &PrivateContainerd {
        &self.ctd
    }

    /// containerd's release as CRI reports it (`1.6.20` of `1.6.20~ds1`).
    pub fn containerd_release(&self) -> Option<Version> {
        parse_release(self.ctd.version())
    }

    /// The OCI runtime the shim runs.
    pub fn oci(&self) -> &Identity {
        &self.oci
    }

    /// What runs the pod, for a result: containerd's version as CRI reports it and the OCI
    /// runtime.
    pub fn describe(&self) -> serde_json::Value {
        json!({"cri": {"containerd": self.ctd.version(), "oci": self.oci, "pod": self.pod.id}})
    }

    /// CreateContainer and StartContainer of container `name` running `sleep` with `mounts`.
    /// `Ok(Err(step))` is CRI's refusal, at the call that refused, in containerd's words.
    pub fn start_container(
        &self,
        name: &str,
        mounts: &[HostMount],
    ) -> Result<Result<CriContainer<'_>, Step>, PodError> {
        let cri = self.ctd.cri();
        let spec = ContainerSpec {
            name: name.into(),
            image: IMAGE.into(),
            command: vec!["sleep".into(), "2147483647".into()],
            mounts: mounts.to_vec(),
        };
        let id = match refusal("CreateContainer", cri.create_container(&self.pod, &spec))? {
            Ok(id) => id,
            Err(step) => return Ok(Err(step)),
        };
        if let Err(step) = refusal("StartContainer", cri.start_container(&id))? {
            // kubelet removes a container that failed to start before it tries again.
            let _ = cri.remove_container(&id);
            return Ok(Err(step));
        }
        Ok(Ok(CriContainer { pod: self, id }))
    }

    /// A new container that reads `file`: CreateContainer, StartContainer, ExecSync `cat`,
    /// each step as it ended, up to the first that failed; removed at the end.
    pub fn start_and_read(
        &self,
        name: &str,
        mounts: &[HostMount],
        file: &str,
    ) -> Result<ReadAttempt, PodError> {
        let mut attempt = ReadAttempt {
            runtime: self.oci.clone(),
            steps: Vec::new(),
            content: None,
        };
        let container = match self.start_container(name, mounts)? {
            Err(step) => {
                attempt.steps.push(step);
                return Ok(attempt);
            }
            Ok(c) => c,
        };
        attempt.steps.push(Step::done("CreateContainer"));
        attempt.steps.push(Step::done("StartContainer"));
        let cat = container.exec(&["cat", file])?;
        if cat.ok {
            attempt.content = Some(cat.stdout.clone());
        }
        attempt.steps.push(cat);
        container.remove()?;
        Ok(attempt)
    }
}

impl CriContainer<'_> {
    /// ExecSync `args`: a failed command is a step that failed with its stderr.
    pub fn exec(&self, args: &[&str]) -> Result<Step, PodError> {
        let r = self.pod.ctd.cri().exec_sync(&self.id, args, EXEC_LIMIT)?;
        let ok = r.exit_code == 0;
        let stderr = String::from_utf8_lossy(&r.stderr).trim().to_string();
        Ok(Step {
            command: format!("ExecSync {}", args.join(" ")),
            ok,
            exit: Some(r.exit_code),
            error: (!ok).then(|| {
                if stderr.is_empty() {
                    format!("exit code {}", r.exit_code)
                } else {
                    stderr
                }
            }),
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        })
    }

    /// The container's init process, in the pid namespace containerd runs in.
    pub fn pid(&self) -> Result<Option<i32>, PodError> {
        Ok(self.pod.ctd.cri().container_pid(&self.id)?)
    }

    /// RemoveContainer (CRI stops it first).
    pub fn remove(self) -> Result<(), PodError> {
        Ok(self.pod.ctd.cri().remove_container(&self.id)?)
    }
}

/// Builds the image [`IMAGE`] from the static `busybox` (its entrypoint sleeps; CRI's command
/// overrides it) and imports it through containerd's API.
pub fn import_busybox(ctd: &PrivateContainerd, busybox: &Path) -> Result<(), PodError> {
    let image = ImageBuilder::busybox(IMAGE, busybox)
        .entrypoint(&["/bin/sleep", "2147483647"])
        .build()?;
    Ok(ctd.import(&image)?)
}

/// A CRI call's result as a step: a gRPC status from containerd is a refusal in its own
/// words; no answer at all is an error.
fn refusal<T>(
    call: &str,
    result: Result<T, ContainerdError>,
) -> Result<Result<T, Step>, ContainerdError> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(ContainerdError::Call { status, .. }) => {
            Ok(Err(Step::failed(call, None, status.message().to_string())))
        }
        Err(e) => Err(e),
    }
}
