//! A blocking CRI client (k8s-cri's RuntimeService and ImageService over containerd's
//! socket), making the calls kubelet makes, each bounded. The deadline also travels to
//! containerd as the gRPC timeout, as kubelet's `--runtime-request-timeout` does, so the
//! handler's context ends with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_sys::containerd::{ContainerdError, GrpcSocket};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListContainersRequest, ListPodSandboxRequest, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};

use crate::config::Handler;

/// The bound of a call that has no reason to be slow.
pub const CALL_LIMIT: Duration = Duration::from_secs(30);

/// The Kubernetes namespace faultline's pods claim in their metadata.
const POD_NAMESPACE: &str = "faultline";

/// A pod as kubelet would ask for a host-network pod.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    /// CRI's `linux.cgroup_parent` ([`crate::cgroups::CgroupParent::path`]).
    pub cgroup_parent: String,
    /// Where CRI writes the containers' logs (`log_path`s are relative to it).
    pub log_directory: PathBuf,
    pub handler: Handler,
}

impl PodSpec {
    /// The sandbox config: the node's network namespace (no CNI), its own pid and IPC
    /// namespaces. The hostname stays empty: with the node's network the pod also has the
    /// node's UTS namespace, and runc refuses to set a hostname there ("unable to set
    /// hostname without a private UTS namespace").
    pub fn config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: format!("faultline-{}", self.name),
                namespace: POD_NAMESPACE.into(),
                attempt: 0,
            }),
            log_directory: self.log_directory.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Pod as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// A pod CRI runs: its id and the config it was made with (CreateContainer needs both).
#[derive(Debug, Clone)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

/// A host path mounted into a container.
#[derive(Debug, Clone)]
pub struct HostMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
}

/// A container of a pod: image, command (overrides the image's entrypoint), mounts.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub mounts: Vec<HostMount>,
}

/// What ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A pod or container as the List calls show it: id, and its state's CRI name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub id: String,
    pub pod_id: String,
    pub state: String,
}

/// A CRI client on one containerd socket.
pub struct Cri {
    grpc: GrpcSocket,
}

impl Cri {
    pub fn connect(socket: &Path) -> Result<Cri, ContainerdError> {
        Ok(Cri {
            grpc: GrpcSocket::connect(socket, CALL_LIMIT)?,
        })
    }

    pub fn socket(&self) -> &Path {
        self.grpc.socket()
    }

    fn runtime(&self) -> RuntimeServiceClient<tonic::transport::Channel> {
        RuntimeServiceClient::new(self.grpc.channel())
    }

    /// The request, carrying `limit` as its gRPC timeout.
    fn req<T>(message: T, limit: Duration) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(limit);
        r
    }

    /// `(runtime name, runtime version)`, e.g. `("containerd", "1.6.20~ds1")`.
    pub fn version(&self) -> Result<(String, String), ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            VersionRequest {
                version: "v1".into(),
            },
            CALL_LIMIT,
        );
        let v = self
            .grpc
            .call("Version", async move { rs.version(req).await })?;
        let v = v.into_inner();
        Ok((v.runtime_name, v.runtime_version))
    }

    /// Whether CRI knows `image` (ImageStatus).
    pub fn image_present(&self, image: &str) -> Result<bool, ContainerdError> {
        let mut is = ImageServiceClient::new(self.grpc.channel());
        let req = Self::req(
            ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            },
            CALL_LIMIT,
        );
        let r = self
            .grpc
            .call("ImageStatus", async move { is.image_status(req).await })?;
        Ok(r.into_inner().image.is_some())
    }

    pub fn run_pod(&self, spec: &PodSpec) -> Result<Pod, ContainerdError> {
        let config = spec.config();
        let mut rs = self.runtime();
        let req = Self::req(
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: spec.handler.name().into(),
            },
            CALL_LIMIT,
        );
        let r = self.grpc.call(
            "RunPodSandbox",
            async move { rs.run_pod_sandbox(req).await },
        )?;
        Ok(Pod {
            id: r.into_inner().pod_sandbox_id,
            config,
        })
    }

    pub fn create_container(
        &self,
        pod: &Pod,
        spec: &ContainerSpec,
    ) -> Result<String, ContainerdError> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: spec.image.clone(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            mounts: spec
                .mounts
                .iter()
                .map(|m| Mount {
                    host_path: m.host_path.display().to_string(),
                    container_path: m.container_path.clone(),
                    readonly: m.readonly,
                    ..Default::default()
                })
                .collect(),
            log_path: format!("{}.log", spec.name),
            ..Default::default()
        };
        let mut rs = self.runtime();
        let req = Self::req(
            CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            },
            CALL_LIMIT,
        );
        let r = self.grpc.call(
            "CreateContainer",
            async move { rs.create_container(req).await },
        )?;
        Ok(r.into_inner().container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            StartContainerRequest {
                container_id: id.into(),
            },
            CALL_LIMIT,
        );
        self.grpc
            .call(
                "StartContainer",
                async move { rs.start_container(req).await },
            )
            .map(drop)
    }

    /// Runs `cmd` in the container and waits for it, up to `limit`.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        limit: Duration,
    ) -> Result<ExecResult, ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: limit.as_secs().max(1) as i64,
            },
            limit + Duration::from_secs(5),
        );
        let r = self
            .grpc
            .call_within("ExecSync", limit + Duration::from_secs(5), async move {
                rs.exec_sync(req).await
            })?;
        let r = r.into_inner();
        Ok(ExecResult {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    /// StopContainer with `grace` before SIGKILL.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<(), ContainerdError> {
        let mut rs = self.runtime();
        let limit = grace + CALL_LIMIT;
        let req = Self::req(
            StopContainerRequest {
                container_id: id.into(),
                timeout: grace.as_secs() as i64,
            },
            limit,
        );
        self.grpc
            .call_within("StopContainer", limit, async move {
                rs.stop_container(req).await
            })
            .map(drop)
    }

    /// RemoveContainer (stops it first if it runs, as containerd's CRI does with a grace of 0).
    pub fn remove_container(&self, id: &str) -> Result<(), ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            RemoveContainerRequest {
                container_id: id.into(),
            },
            CALL_LIMIT,
        );
        self.grpc
            .call(
                "RemoveContainer",
                async move { rs.remove_container(req).await },
            )
            .map(drop)
    }

    /// The container's init pid, from ContainerStatus's verbose `info` (containerd's CRI
    /// puts the task's pid there, pkg/cri/server/container_status.go `toCRIContainerInfo`;
    /// CRI itself has no pid field). `None` when the answer has none, or 0 (not started).
    pub fn container_pid(&self, id: &str) -> Result<Option<i32>, ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            },
            CALL_LIMIT,
        );
        let r = self.grpc.call(
            "ContainerStatus",
            async move { rs.container_status(req).await },
        )?;
        Ok(r.into_inner().info.get("info").and_then(|i| pid_of_info(i)))
    }

    /// StopPodSandbox, bounded by `limit` (it waits for every container's exit to be
    /// handled, which takes as long as their tasks' deletes).
    pub fn stop_pod(&self, id: &str, limit: Duration) -> Result<(), ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
            limit,
        );
        self.grpc
            .call_within("StopPodSandbox", limit, async move {
                rs.stop_pod_sandbox(req).await
            })
            .map(drop)
    }

    pub fn remove_pod(&self, id: &str, limit: Duration) -> Result<(), ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(
            RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
            limit,
        );
        self.grpc
            .call_within("RemovePodSandbox", limit, async move {
                rs.remove_pod_sandbox(req).await
            })
            .map(drop)
    }

    /// Every pod CRI has (ListPodSandbox).
    pub fn pods(&self) -> Result<Vec<Listed>, ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(ListPodSandboxRequest { filter: None }, CALL_LIMIT);
        let r = self.grpc.call(
            "ListPodSandbox",
            async move { rs.list_pod_sandbox(req).await },
        )?;
        Ok(r.into_inner()
            .items
            .into_iter()
            .map(|p| Listed {
                state: k8s_cri::v1::PodSandboxState::try_from(p.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| p.state.to_string()),
                pod_id: p.id.clone(),
                id: p.id,
            })
            .collect())
    }

    /// Every container CRI has (ListContainers).
    pub fn containers(&self) -> Result<Vec<Listed>, ContainerdError> {
        let mut rs = self.runtime();
        let req = Self::req(ListContainersRequest { filter: None }, CALL_LIMIT);
        let r = self.grpc.call(
            "ListContainers",
            async move { rs.list_containers(req).await },
        )?;
        Ok(r.into_inner()
            .containers
            .into_iter()
            .map(|c| Listed {
                state: k8s_cri::v1::ContainerState::try_from(c.state)
                    .map(|s| s.as_str_name().to_string())
                    .unwrap_or_else(|_| c.state.to_string()),
                id: c.id,
                pod_id: c.pod_sandbox_id,
            })
            .collect())
    }
}

/// `pid` of containerd's verbose container info (JSON).
fn pid_of_info(info: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v.get("pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd 1.6.20's ContainerStatus `info["info"]` for a running container of
    /// hostpath-rename's pod, as CRI returned it.
    const INFO_1_6_20: &str = include_str!("testdata/container_status_info_1.6.20.json");

    #[test]
    fn the_pid_comes_from_containerds_verbose_info() {
        assert_eq!(pid_of_info(INFO_1_6_20), Some(379));
        // A container that has not started has pid 0 in containerd's status: no pid. No
        // info or no pid is no answer either.
        let not_started = INFO_1_6_20.replace("\"pid\":379", "\"pid\":0");
        assert_ne!(not_started, INFO_1_6_20);
        assert_eq!(pid_of_info(&not_started), None);
        assert_eq!(pid_of_info("{}"), None);
        assert_eq!(pid_of_info("not json"), None);
    }

    #[test]
    fn a_pod_uses_the_node_network_and_its_own_pid_namespace_without_hostname() {
        let spec = PodSpec {
            name: "p".into(),
            cgroup_parent: "/faultline-1-0".into(),
            log_directory: PathBuf::from("/tmp/logs"),
            handler: Handler::ShimV1,
        };
        let c = spec.config();
        assert_eq!(c.hostname, "");
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/faultline-1-0");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, NamespaceMode::Pod as i32);
        assert_eq!(c.log_directory, "/tmp/logs");
    }
}
