//! A private containerd for tests that need a real one, torn down on drop: its own root under
//! a temporary directory and its own socket, run in a private mount namespace with a tmpfs on
//! /run (containerd 1.6 puts shim sockets in /run/containerd/s whatever the config says), so
//! its state sits at the default /run/containerd where only it and its shims see it. Driven
//! through CRI as kubelet drives it; the image is imported with `ctr` (tests only).

mod image;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_sys::containerd::GrpcSocket;
use faultline_sys::{wait_until, ChildGroup};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest, VersionRequest,
};

pub const IMAGE: &str = "faultline.local/busybox:latest";
pub const NS: &str = "k8s.io";
/// containerd's default state directory, private to its mount namespace here.
pub const STATE: &str = "/run/containerd";
/// What CRI calls may take: StopPodSandbox waits out the held unmounts (about 25 s here).
pub const CRI_LIMIT: Duration = Duration::from_secs(120);

/// A private containerd and everything it starts, torn down on drop.
pub struct Lab {
    dir: tempfile::TempDir,
    containerd: Option<ChildGroup>,
    /// `faultline-test-orphan-shim-PID`: runc's cgroups, one per container, go under it in
    /// every hierarchy.
    cgroup_parent: String,
    grpc: Option<GrpcSocket>,
}

impl Lab {
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        format!(
            r#"version = 2
root = "{d}/root"
state = "{STATE}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc could not raise oom_score_adj
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#
        )
    }

    /// Starts containerd and waits until CRI answers.
    pub fn start() -> Lab {
        let mut lab = Lab {
            dir: tempfile::Builder::new()
                .prefix("faultline-ctd")
                .tempdir()
                .unwrap(),
            containerd: None,
            cgroup_parent: format!("faultline-test-orphan-shim-{}", std::process::id()),
            grpc: None,
        };
        remove_stale_cgroups();
        let config = lab.dir.path().join("config.toml");
        std::fs::write(&config, lab.config()).unwrap();
        let log = std::fs::File::create(lab.dir.path().join("containerd.log")).unwrap();
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && exec containerd --config \"$0\"")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        lab.containerd = Some(ChildGroup::spawn("containerd", &mut cmd).unwrap());
        let sock = lab.sock();
        let grpc = wait_until(
            "containerd's CRI to answer",
            Duration::from_secs(30),
            || {
                if let Some(status) = lab.containerd.as_mut().unwrap().try_wait().unwrap() {
                    panic!("containerd exited: {status}\n{}", lab.log_tail());
                }
                let grpc = GrpcSocket::connect(&sock, Duration::from_secs(2))
                    .map_err(|e| faultline_sys::error_chain(&e))?;
                let mut rt = RuntimeServiceClient::new(grpc.channel());
                grpc.call("Version", async move {
                    rt.version(VersionRequest {
                        version: "v1".into(),
                    })
                    .await
                })
                .map_err(|e| faultline_sys::error_chain(&e))?;
                Ok(grpc)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tail()));
        let mut grpc = grpc;
        grpc.limit = CRI_LIMIT;
        lab.grpc = Some(grpc);
        lab
    }

    pub fn grpc(&self) -> &GrpcSocket {
        self.grpc.as_ref().unwrap()
    }

    /// Builds a busybox image (an OCI image layout) and imports it with `ctr`, then waits
    /// until CRI lists it (CRI picks images up from containerd's ImageCreate event).
    pub fn import_image(&self) {
        let tar = image::build_image(self.dir.path());
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(["--namespace", NS, "images", "import", "--all-platforms"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr images import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until("CRI to see the image", Duration::from_secs(10), || {
            let mut img = ImageServiceClient::new(self.grpc().channel());
            let status = self
                .grpc()
                .call("ImageStatus", async move {
                    img.image_status(ImageStatusRequest {
                        image: Some(ImageSpec {
                            image: IMAGE.into(),
                            ..Default::default()
                        }),
                        verbose: false,
                    })
                    .await
                })
                .map_err(|e| faultline_sys::error_chain(&e))?;
            status
                .into_inner()
                .image
                .map(drop)
                .ok_or_else(|| "not yet".to_string())
        })
        .unwrap();
    }

    /// RunPodSandbox as kubelet sends it for a host-network pod (no hostname: the pod has no
    /// UTS namespace of its own). Returns the sandbox id.
    pub fn run_pod(&self, name: &str) -> String {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "faultline".into(),
                attempt: 0,
            }),
            log_directory: self
                .dir
                .path()
                .join("logs")
                .join(name)
                .display()
                .to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.cgroup_parent),
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
        };
        let mut rt = RuntimeServiceClient::new(self.grpc().channel());
        self.grpc()
            .call("RunPodSandbox", async move {
                rt.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
            })
            .unwrap_or_else(|e| panic!("{}\n{}", faultline_sys::error_chain(&e), self.log_tail()))
            .into_inner()
            .pod_sandbox_id
    }

    /// StopPodSandbox then RemovePodSandbox, retried as kubelet retries them, until both
    /// succeed (at most 3 minutes, as upstream's test allows).
    pub fn stop_and_remove(&self, pod: &str) {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(180) {
            let mut rt = RuntimeServiceClient::new(self.grpc().channel());
            let id = pod.to_string();
            let stopped = self.grpc().call("StopPodSandbox", async move {
                rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
                    .await
            });
            let mut rt = RuntimeServiceClient::new(self.grpc().channel());
            let id = pod.to_string();
            let removed = stopped.and_then(|_| {
                self.grpc().call("RemovePodSandbox", async move {
                    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                        .await
                })
            });
            match removed {
                Ok(_) => return,
                Err(e) => last = faultline_sys::error_chain(&e),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "pod {pod} not removed within 3 minutes: {last}\n{}",
            self.log_tail()
        );
    }

    /// The shim serving pod `pod` (runc.v2: one per pod, `-id` the sandbox's).
    pub fn shim_of(&self, pod: &str) -> i32 {
        let sock = self.sock().display().to_string();
        wait_until("the pod's shim", Duration::from_secs(10), || {
            shims_of(&sock)
                .into_iter()
                .find(|(_, argv)| argv.windows(2).any(|w| w[0] == "-id" && w[1] == pod))
                .map(|(pid, _)| pid)
                .ok_or_else(|| format!("shims: {:?}", shims_of(&sock)))
        })
        .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let sock = self.sock().display().to_string();
        self.grpc = None;
        if let Some(mut c) = self.containerd.take() {
            let _ = c.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = c.teardown();
        }
        for (pid, _) in shims_of(&sock) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Err(e) = remove_cgroups(&self.cgroup_parent) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Shims whose `-address` is `sock`, with their argv.
fn shims_of(sock: &str) -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = argv.first().is_some_and(|a| {
            a.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with("containerd-shim")
        });
        if is_shim && argv.windows(2).any(|w| w[0] == "-address" && w[1] == sock) {
            out.push((pid, argv));
        }
    }
    out
}

/// `/sys/fs/cgroup/<hierarchy>/<parent>` of every mounted hierarchy (cgroup v1 and v2).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(parent)];
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        dirs.push(e.path().join(parent));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Kills what is left in the cgroups under `parent` and removes them, leaves first.
fn remove_cgroups(parent: &str) -> Result<(), String> {
    let dirs = cgroup_dirs(parent);
    wait_until("the test's cgroups to go", Duration::from_secs(10), || {
        let mut left = Vec::new();
        for d in &dirs {
            remove_tree(d, &mut left);
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join(", "))
        }
    })
    .map_err(|e| e.to_string())
}

fn remove_tree(dir: &Path, left: &mut Vec<String>) {
    if !dir.is_dir() {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path(), left);
        }
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        left.push(format!("{}: {e}", dir.display()));
    }
}

/// Cgroups an earlier run of this test left when it was killed (its pid is gone).
fn remove_stale_cgroups() {
    let prefix = "faultline-test-orphan-shim-";
    let mut stale = std::collections::BTreeSet::new();
    for d in cgroup_dirs("") {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(prefix) {
                if !Path::new("/proc").join(pid).exists() {
                    stale.insert(name);
                }
            }
        }
    }
    for name in stale {
        let _ = remove_cgroups(&name);
    }
}
