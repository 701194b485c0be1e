//! [`PrivateContainerd`]: a containerd of the runtime under test, started for one scenario
//! with its CRI plugin, its own root, state, sockets and cgroup parent, and stopped with
//! everything it started when dropped.
//!
//! It runs in a mount namespace of its own (a child of the scenario's) with a tmpfs on
//! /run: containerd 1.6 puts every shim's socket under /run/containerd/s whatever its
//! config says (runtime/v2/shim/util_unix.go, `SocketAddress`), and the mounts it and its
//! shims make (rootfs overlays, sandbox /dev/shm) then go when its last process does. Shims
//! and containers are found by their command line and cgroup, never by name alone, so
//! another containerd on the host is never touched.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::ListTasksRequest;
use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_sys::containerd::{ContainerdError, GrpcSocket};
use faultline_sys::wait_until;

use crate::cgroups::{CgroupError, CgroupParent};
use crate::config::{ContainerdConfig, Handler};
use crate::cri::{Cri, PodSpec};
use crate::image::Image;
use crate::import::{import, ImportError, K8S_NAMESPACE};
use crate::launch;
use crate::process::{self, alive, kill_and_reap, shims_of, ShimProcess};

/// How long containerd may take to answer CRI's Version after it starts (it takes 0.1 to
/// 0.3 s here).
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// The bound of each CRI call made while tearing down, and of the killing and cgroup removal.
const TEARDOWN_CALL: Duration = Duration::from_secs(5);
pub(crate) const KILL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("failed to prepare {path} for containerd")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to make containerd's cgroup parent")]
    Cgroup(#[source] CgroupError),
    #[error("failed to start {containerd}")]
    Spawn {
        containerd: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd did not answer CRI's Version: {why}; its log ({log}) ends with: {tail}")]
    NotReady {
        why: String,
        log: PathBuf,
        tail: String,
    },
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("CRI did not list the image {image} after containerd imported it: {why}")]
    ImageNotListed { image: String, why: String },
}

/// A task as containerd's Tasks.List shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Task {
    pub id: String,
    pub pid: u32,
    /// containerd's task status (1 created, 2 running, 3 stopped, 4 paused, 5 pausing).
    pub status: i32,
}

/// What tearing a private containerd down did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Teardown {
    pub killed: Vec<i32>,
    /// Processes that outlived SIGKILL (blocked in the kernel).
    pub survivors: Vec<i32>,
    pub unmounted: Vec<PathBuf>,
    pub errors: Vec<String>,
}

pub struct PrivateContainerd {
    config: ContainerdConfig,
    child: Option<Child>,
    cri: Cri,
    grpc: GrpcSocket,
    cgroup: CgroupParent,
    version: String,
    torn_down: bool,
}

impl PrivateContainerd {
    /// Removes what earlier killed runs left in the cgroup tree, writes the config, starts
    /// containerd and waits (up to [`START_LIMIT`]) until CRI answers.
    pub fn start(
        runtime: &RuntimeUnderTest,
        config: ContainerdConfig,
    ) -> Result<PrivateContainerd, StartError> {
        let cgroup = CgroupParent::claim(KILL_LIMIT).map_err(StartError::Cgroup)?;
        let mut this = launch::launch(runtime, config)?;
        let (cri, version) = this.wait_ready()?;
        let grpc =
            GrpcSocket::connect(&this.config.socket(), crate::cri::CALL_LIMIT).map_err(|e| {
                StartError::NotReady {
                    why: e.to_string(),
                    log: this.config.log_file(),
                    tail: launch::log_tail(&this.config.log_file()),
                }
            })?;
        Ok(PrivateContainerd {
            config: this.config.clone(),
            child: this.child.take(),
            cri,
            grpc,
            cgroup,
            version,
            torn_down: false,
        })
    }

    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    pub fn socket(&self) -> PathBuf {
        self.config.socket()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// The runtime version CRI reports (`1.6.20~ds1`).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    pub fn grpc(&self) -> &GrpcSocket {
        &self.grpc
    }

    pub fn cgroup_parent(&self) -> String {
        self.cgroup.path()
    }

    /// A host-network pod of this containerd's (its cgroup parent, logs under its dir).
    pub fn pod_spec(&self, name: &str, handler: Handler) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            cgroup_parent: self.cgroup.path(),
            log_directory: self.config.dir.join("logs").join(name),
            handler,
        }
    }

    /// Imports `image` through containerd's API and waits until CRI lists it.
    pub fn import(&self, image: &Image) -> Result<(), StartError> {
        import(&self.grpc, image)?;
        wait_until(
            "CRI to list the image",
            Duration::from_secs(10),
            || match self.cri.image_present(&image.name) {
                Ok(true) => Ok(()),
                Ok(false) => Err("not listed yet".into()),
                Err(e) => Err(e.to_string()),
            },
        )
        .map_err(|e| StartError::ImageNotListed {
            image: image.name.clone(),
            why: e.to_string(),
        })
    }

    /// This containerd's live shims.
    pub fn shims(&self) -> Vec<ShimProcess> {
        shims_of(&self.socket())
    }

    /// The tasks containerd has in CRI's namespace (Tasks.List).
    pub fn tasks(&self) -> Result<Vec<Task>, ContainerdError> {
        let mut tasks = TasksClient::new(self.grpc.channel());
        let req = GrpcSocket::request(
            K8S_NAMESPACE,
            ListTasksRequest {
                filter: String::new(),
            },
        );
        let r = self
            .grpc
            .call("Tasks.List", async move { tasks.list(req).await })?;
        Ok(r.into_inner()
            .tasks
            .into_iter()
            .map(|t| Task {
                id: t.id,
                pid: t.pid,
                status: t.status,
            })
            .collect())
    }

    /// Whether containerd knows the task `id` in CRI's namespace (Tasks.Get).
    pub fn task_exists(&self, id: &str) -> Result<bool, ContainerdError> {
        self.grpc.task_exists(K8S_NAMESPACE, id)
    }

    /// containerd's log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.config.log_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    }

    /// Removes the pods CRI still has (bounded), then kills containerd, its shims and every
    /// process in its cgroup parent, unmounts what is left under its directories in our
    /// namespace, and removes the cgroup parent in every hierarchy.
    pub fn teardown(&mut self) -> Teardown {
        let mut t = Teardown::default();
        if self.torn_down {
            return t;
        }
        self.torn_down = true;
        match self.cri.pods() {
            Ok(pods) => {
                for p in pods {
                    let _ = self.cri.stop_pod(&p.id, TEARDOWN_CALL);
                    let _ = self.cri.remove_pod(&p.id, TEARDOWN_CALL);
                }
            }
            Err(e) => t.errors.push(e.to_string()),
        }
        let victims = self.processes();
        t.survivors = kill_and_reap(&victims, KILL_LIMIT);
        t.killed = victims;
        if let Some(mut c) = self.child.take() {
            let _ = c.try_wait();
        }
        t.unmounted = unmount_under(&[&self.config.dir, &self.config.root]);
        if let Err(e) = self.cgroup.remove(KILL_LIMIT) {
            t.errors.push(e.to_string());
        }
        if !t.survivors.is_empty() || !t.errors.is_empty() {
            tracing::warn!("private containerd teardown: {t:?}");
        }
        t
    }

    /// containerd, its shims, its containers (by cgroup), and anything run with its
    /// directory on the command line (a shim's `start` helper, runc).
    fn processes(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.child.iter().map(|c| c.id() as i32).collect();
        pids.extend(self.cgroup.pids());
        // Its shims carry `-address <dir>/containerd.sock`: one walk of /proc finds them and
        // everything else run with its directory on the command line.
        let dir = self.config.dir.display().to_string();
        let me = std::process::id() as i32;
        if let Some(snap) = process::snapshot() {
            pids.extend(snap.user_processes().map(|p| p.pid).filter(|&p| {
                p != me
                    && snap
                        .cmdline(p)
                        .is_ok_and(|argv| argv.iter().any(|a| a.contains(&dir)))
            }));
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|&p| alive(p));
        pids
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Detaches every mount below `dirs` (not one on a dir itself: the storage it sits on) in
/// our mount namespace, deepest first.
fn unmount_under(dirs: &[&Path]) -> Vec<PathBuf> {
    let Ok(mounts) = faultline_sys::mountinfo::read_mountinfo(Path::new("/proc"), None) else {
        return Vec::new();
    };
    let mut under: Vec<PathBuf> = mounts
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|mp| dirs.iter().any(|d| mp.starts_with(d) && mp != *d))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    under
        .into_iter()
        .filter(|mp| nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_ok())
        .collect()
}
