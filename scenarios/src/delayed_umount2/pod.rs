//! The environment of a CRI variant: a private containerd of the runtime under test (its
//! root on the slow storage for the variants with real I/O), faultline's busybox image
//! imported through containerd's API, and one pod, as kubelet would run it, whose container
//! has written `dirty-mib` MiB into its rootfs without syncing.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use faultline_runtime::config::{ContainerdConfig, Handler};
use faultline_runtime::containerd::PrivateContainerd;
use faultline_runtime::cri::{ContainerSpec, Pod};
use faultline_runtime::pod::{import_busybox, IMAGE};
use faultline_runtime::process::ShimProcess;

use super::batch::Env;
use super::storage::SlowStorage;
use super::Kind;

/// Debian's busybox-static.
pub(super) const BUSYBOX: &str = "/bin/busybox";

/// A pod of a private containerd. Field order is drop order: containerd with its shims and
/// containers before the storage under its root.
pub(super) struct Lab {
    pub(super) ctd: PrivateContainerd,
    pub(super) storage: Option<SlowStorage>,
    pub(super) pod: Pod,
    pub(super) container: String,
    /// The pod's shims once it runs: one for runc v2, the sandbox's and the container's
    /// for v1.
    pub(super) shims: Vec<ShimProcess>,
}

impl Lab {
    pub(super) fn build(env: &Env, kind: Kind) -> anyhow::Result<Lab> {
        let opts = &env.opts;
        let runtime = env
            .runtime
            .as_ref()
            .context("a CRI variant runs only with a runtime under test")?;
        let dir = env.variant_dir(kind)?;
        let storage = match kind {
            Kind::CriRealStall | Kind::CriVolatile | Kind::Volatile => {
                Some(SlowStorage::build(&dir)?)
            }
            Kind::CriShimV2 | Kind::CriShimV1 | Kind::CriNoStall => None,
        };
        let mut config = ContainerdConfig::new(&dir.join("containerd"), &runtime.oci, IMAGE);
        if let Some(s) = &storage {
            config.root = s.path().join("containerd-root");
        }
        if kind == Kind::CriVolatile {
            // containerd#4785's proposal, through the snapshotter's mount options: overlayfs
            // skips the sync on unmount (Documentation/filesystems/overlayfs.rst,
            // "Volatile mount").
            config.overlay_mount_options = vec!["volatile".into()];
        }
        let ctd = PrivateContainerd::start(runtime, config)
            .with_context(|| format!("failed to start {}", runtime.containerd.display()))?;
        env.progress(
            kind,
            format!(
                "containerd {} (pid {}) answers on {}",
                ctd.version(),
                ctd.pid(),
                ctd.socket().display()
            ),
        );
        import_busybox(&ctd, Path::new(BUSYBOX))?;
        let handler = match kind {
            Kind::CriShimV1 => Handler::ShimV1,
            _ => Handler::RuncV2,
        };
        let cri = ctd.cri();
        let pod = cri.run_pod(&ctd.pod_spec("victim", handler))?;
        let spec = ContainerSpec {
            name: "writer".into(),
            image: IMAGE.into(),
            command: vec!["sleep".into(), "2147483647".into()],
            mounts: Vec::new(),
        };
        let container = cri.create_container(&pod, &spec)?;
        cri.start_container(&container)?;
        // The application's writes: into the rootfs's upper layer, left to writeback.
        let mib = opts.dirty_bytes >> 20;
        let written = cri.exec_sync(
            &container,
            &[
                "dd",
                "if=/dev/zero",
                "of=/tmp/dirty",
                "bs=1048576",
                &format!("count={mib}"),
            ],
            Duration::from_secs(60),
        )?;
        anyhow::ensure!(
            written.exit_code == 0,
            "the container failed to write its data: {}",
            String::from_utf8_lossy(&written.stderr)
        );
        let shims = ctd.shims();
        env.progress(
            kind,
            format!(
                "pod {} with container {} ({mib} MiB written), shims {:?}",
                pod.id,
                container,
                shims.iter().map(|s| s.pid).collect::<Vec<_>>()
            ),
        );
        anyhow::ensure!(
            !shims.is_empty(),
            "the pod runs but no shim of ours was found"
        );
        Ok(Lab {
            ctd,
            storage,
            pod,
            container,
            shims,
        })
    }
}
