//! The environment: a kernel NFS server exporting a scratch directory over loopback,
//! rpc.statd, and the client's NFSv3 mount of the export with the workload's file on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::guard::nfs::{GraceTimes, NfsServer, Statd};
use faultline_core::guard::Mount;
use faultline_core::Context;
use faultline_sys::mountinfo::read_mountinfo;
use serde_json::json;

/// Field order is drop order: the mount goes while statd and the server still run.
pub(super) struct NfsMount {
    pub(super) mount: Mount,
    /// The mount's mountinfo line, as JSON.
    pub(super) entry: Option<serde_json::Value>,
    /// The workload's file, read over NFS once.
    pub(super) file: PathBuf,
    /// The statd that ran for the mount (mount.nfs insists on one).
    pub(super) statd: Statd,
    pub(super) statd_pid_at_mount: Option<i32>,
    pub(super) server: NfsServer,
}

impl NfsMount {
    /// Server (export `fsid`), statd and a `vers=3` mount under the variant's directory.
    pub(super) fn build(ctx: &Context, variant: &str, fsid: u32) -> anyhow::Result<NfsMount> {
        let dir = ctx.variant_dir(variant)?;
        let export = dir.join("export");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&export)?;
        std::fs::create_dir_all(&mnt)?;
        // The workload's file, written on the server side.
        std::fs::write(export.join("app.js"), b"console.log('hello')\n")?;

        let server = NfsServer::start(&export, fsid, GraceTimes::default())
            .context("failed to start the NFS server")?;
        let statd = Statd::start().context("failed to start rpc.statd")?;
        let statd_pid_at_mount = statd.pid();
        // Locking on (no `nolock`), as kubelet mounts an NFSv3 volume; bounded by the guard.
        let mount = server
            .mount_client(&mnt, "vers=3,proto=tcp")
            .context("failed to mount the export")?
            .with_time_limit(Duration::from_secs(10));
        let entry = mount_entry(&mnt)?;
        let file = mnt.join("app.js");
        let content = std::fs::read_to_string(&file).context("failed to read over NFS")?;
        anyhow::ensure!(content.starts_with("console.log"), "read back {content:?}");
        Ok(NfsMount {
            mount,
            entry,
            file,
            statd,
            statd_pid_at_mount,
            server,
        })
    }

    /// Unmounts while a statd runs (`statd`, the restarted one, when the first was stopped):
    /// the client unmonitors the server through it on unmount. Then stops the server.
    pub(super) fn teardown(mut self, restarted: Option<Statd>) -> anyhow::Result<()> {
        self.mount
            .teardown()
            .context("failed to unmount the NFS mount")?;
        self.server
            .teardown()
            .context("failed to stop the NFS server")?;
        drop(restarted);
        Ok(())
    }
}

fn mount_entry(mnt: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    Ok(read_mountinfo(Path::new("/proc"), None)
        .context("failed to read /proc/self/mountinfo")?
        .into_iter()
        .find(|m| m.mount_point == mnt)
        .map(|m| {
            json!({
                "mount_id": m.mount_id,
                "fstype": m.fstype,
                "source": m.source_lossy(),
                "mount_options": m.mount_options,
                "super_options": m.super_options,
            })
        }))
}
