//! The environment: the overlay rootfs's layers (the upper on slow storage for the variants
//! with real I/O), and a shim that owns a container on that overlay with dirty data in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::guard::ext4_image::{Ext4Image, MountedExt4};
use faultline_core::guard::mount::{mount_id, unmount_bounded};
use faultline_core::{Context, VariantKind};
use faultline_fuse::{FuseConfig, FuseDaemon};
use faultline_runtime::shim::{Shim, ShimClient, ShimSpec};
use faultline_sys::wait_until;

use super::{Kind, Options};

/// The container id of the orphaned shim in the Cốc Cốc report's `ps` output.
const ID: &str = "513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f";

/// The upper layer's storage for the variants with real I/O: ext4 on a loop device on FUSE.
pub(super) struct SlowStorage {
    // Field order is drop order: the ext4 mount (and its loop device) before the daemon.
    ext4: MountedExt4,
    pub(super) fuse: FuseDaemon,
}

impl SlowStorage {
    fn build(dir: &Path) -> anyhow::Result<SlowStorage> {
        let backing = dir.join("fuse-backing");
        let mp = dir.join("fuse");
        let fs_dir = dir.join("upper-fs");
        for d in [&backing, &mp, &fs_dir] {
            std::fs::create_dir_all(d)?;
        }
        let fuse = FuseDaemon::start(&FuseConfig::new(&backing, &mp).fsname("slow-disk"))
            .context("failed to start the FUSE daemon")?;
        let image = mp.join("upper.img");
        Ext4Image::new(super::UPPER_IMAGE_MIB << 20)
            .create(&image)
            .context("failed to make the ext4 image on FUSE")?;
        let ext4 =
            MountedExt4::mount(&image, &fs_dir, None).context("failed to mount the ext4 image")?;
        Ok(SlowStorage { ext4, fuse })
    }
}

/// A shim that owns a created container, and where its layers live.
/// Field order is drop order: the shim (and its container) before the storage under them.
pub(super) struct Env {
    pub(super) shim: Shim,
    pub(super) spec: ShimSpec,
    /// The overlay's mount options (`lowerdir=...,upperdir=...,workdir=...[,volatile]`).
    pub(super) overlay: String,
    pub(super) storage: Option<SlowStorage>,
}

impl Env {
    /// Layers, shim, and the container created with `dirty` bytes in the upper layer; also
    /// the runtime's connection to the shim.
    pub(super) fn build(
        ctx: &Context,
        kind: Kind,
        opts: &Options,
    ) -> anyhow::Result<(Env, ShimClient)> {
        let dir = ctx.variant_dir(kind.name())?;
        let lower = dir.join("lower");
        std::fs::create_dir_all(lower.join("etc"))?;
        std::fs::write(lower.join("etc/os-release"), "ID=faultline\n")?;
        let storage = match kind {
            Kind::InjectedDelay => None,
            Kind::RealStall | Kind::Volatile => Some(SlowStorage::build(&dir)?),
        };
        let upper_root = match &storage {
            Some(s) => s.ext4.target().to_path_buf(),
            None => dir.join("upper-tmp"),
        };
        let (upper, work) = (upper_root.join("upper"), upper_root.join("work"));
        std::fs::create_dir_all(&upper)?;
        std::fs::create_dir_all(&work)?;
        let mut overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        match kind {
            // The fix: overlayfs skips the sync on unmount (Documentation/filesystems/
            // overlayfs.rst, "Volatile mount").
            Kind::Volatile => overlay += ",volatile",
            Kind::InjectedDelay | Kind::RealStall => {}
        }

        let spec = ShimSpec {
            namespace: "k8s.io".into(),
            id: ID.into(),
            state_root: dir.join("var/lib/containerd/io.containerd.runtime.v1.linux"),
            bundle: dir
                .join("run/containerd/io.containerd.runtime.v1.linux/k8s.io")
                .join(ID),
            address: dir.join("shim.sock"),
        };
        let shim =
            Shim::start(&spec, Duration::from_secs(10)).context("failed to start the shim")?;
        let mut client = shim.connect()?;
        let created = client
            .request(
                &format!("create {overlay} {}", opts.dirty_bytes),
                Duration::from_secs(60),
            )
            .context("the shim failed to create the container")?;
        ctx.progress(format!(
            "shim pid {} created the container ({created}); {} MiB dirty in the upper layer",
            shim.pid(),
            opts.dirty_bytes >> 20
        ));
        let env = Env {
            shim,
            spec,
            overlay,
            storage,
        };
        Ok((env, client))
    }

    /// Sets the slow storage's write latency (no-op without slow storage).
    pub(super) fn set_write_latency(&mut self, latency: Duration) -> anyhow::Result<()> {
        if let Some(s) = self.storage.as_mut() {
            s.fuse.set_latency(Duration::ZERO, latency)?;
        }
        Ok(())
    }

    /// Lifts the stall, lets the shim's own unmount finish, clears the orphan away and
    /// unmounts what is left, in that order.
    pub(super) fn teardown(mut self) -> anyhow::Result<()> {
        self.set_write_latency(Duration::ZERO)?;
        let rootfs = self.spec.rootfs();
        finish_unmount(&rootfs);
        self.shim.teardown()?;
        unmount_if_mounted(&rootfs);
        Ok(())
    }
}

/// Waits (bounded) for the shim's own umount2 to complete once the stall is lifted.
fn finish_unmount(rootfs: &Path) {
    let _ = wait_until(
        "the shim's unmount to finish",
        Duration::from_secs(60),
        || {
            if is_mount_point(rootfs) {
                Err("rootfs still mounted".into())
            } else {
                Ok(())
            }
        },
    );
}

fn unmount_if_mounted(rootfs: &Path) {
    if is_mount_point(rootfs) {
        if let Err(e) = unmount_bounded(rootfs, Duration::from_secs(30)) {
            tracing::warn!("{e}");
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    let parent: PathBuf = p.parent().map(Path::to_path_buf).unwrap_or_default();
    match (mount_id(p), mount_id(&parent)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}
