//! The variants' steps after the common start (daemon up, CSI volume bound, daemon killed).

use std::path::Path;

use anyhow::Context as _;
use faultline_core::guard::Mount;
use faultline_core::Context;
use faultline_fuse::FuseDaemon;
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};
use serde_json::json;

use super::runtimes;
use super::{access, csi_access, errno_of, list, Layout, NewContainer, ATTR_TTL, CONTENT, VOLUME};

/// The state every variant starts from: the daemon ran, the CSI volume was bound from its
/// mount and a container started; then the daemon was SIGKILLed (the OOM kill).
pub(super) struct DeadDaemon {
    // Field order is drop order: the bind before the daemon's mount it was made from.
    pub(super) csi_bind: Option<Mount>,
    pub(super) first: FuseDaemon,
    pub(super) after_kill: serde_json::Value,
    pub(super) observed: serde_json::Value,
}

impl DeadDaemon {
    pub(super) fn build(ctx: &Context, l: &Layout) -> anyhow::Result<DeadDaemon> {
        let mut first = l.daemon(false)?;
        let csi_bind = Some(l.csi_publish()?);
        let healthy = l.start_oci()?;
        anyhow::ensure!(
            healthy.content.as_deref() == Some(&String::from_utf8_lossy(CONTENT)[..]),
            "a container on the healthy volume did not read it: {}",
            json!(healthy)
        );
        ctx.progress(format!(
            "ceph-fuse stand-in pid {} on dev {:?}; CSI volume bound; killing the daemon",
            first.pid(),
            first.dev()
        ));
        first.kill().context("failed to SIGKILL the daemon")?;
        // The healthy container's lookups filled the attribute cache; a pod start on a node
        // comes long after it expired.
        std::thread::sleep(ATTR_TTL * 2);
        let after_kill = csi_access(l);
        // The CSI node plugin's health check of its staging directory.
        let plugin_check = access(list(&l.ceph_mount.join(VOLUME)));
        let observed = json!({
            "daemon": {"pid": first.pid(), "dev": dev_str(first.dev()), "mnt_id": first.mnt_id()},
            "healthy_container_start": healthy,
            "after_kill": {"csi_access": after_kill, "plugin_staging_check": plugin_check},
        });
        Ok(DeadDaemon {
            csi_bind,
            first,
            after_kill,
            observed,
        })
    }
}

fn dev_str((major, minor): (u32, u32)) -> String {
    format!("{major}:{minor}")
}

/// What one variant did after the kill.
pub(super) struct Step {
    pub(super) reproduced: bool,
    pub(super) start: NewContainer,
    /// A key of `observed` and its value.
    pub(super) detail: Option<(&'static str, serde_json::Value)>,
    /// The restarted daemon, dropped before the dead one.
    pub(super) second: Option<FuseDaemon>,
    /// mountinfo, when the variant already read it for its verdict.
    pub(super) mounts: Option<Vec<MountInfo>>,
}

/// A new container on the dead volume, both ways: neither may read it, and each must stop
/// where its table says (the OCI runtime's by runtime and version, CRI's by containerd
/// release). One that stops elsewhere is an error with both named: either the table or the
/// runtime changed, and the table must say which.
fn dead_volume_start(l: &Layout) -> anyhow::Result<NewContainer> {
    let new = l.start_new()?;
    let id = &new.oci.runtime;
    let rows = [
        (
            &new.oci,
            runtimes::expected(&id.name, id.version),
            id.to_string(),
        ),
        (
            &new.cri,
            runtimes::expected_cri(new.containerd),
            format!("containerd {}", new.cri_runtime["cri"]["containerd"]),
        ),
    ];
    for (attempt, row, who) in rows {
        let stop = runtimes::stop_of(attempt);
        if let Some(row) = row {
            anyhow::ensure!(
                stop == Some(row.stop),
                "{who} stopped at {stop:?} on the dead volume, the runtime table expects {:?} ({}); steps: {}",
                row.stop,
                row.upstream,
                json!(attempt.steps)
            );
        }
    }
    Ok(new)
}

/// `kill`: the CSI path answers ENOTCONN and a new container cannot read its volume.
pub(super) fn kill(l: &Layout, dead: &DeadDaemon) -> anyhow::Result<Step> {
    let start = dead_volume_start(l)?;
    Ok(Step {
        reproduced: errno_of(&dead.after_kill) == Some(libc::ENOTCONN as i64)
            && start.read_neither(),
        start,
        detail: None,
        second: None,
        mounts: None,
    })
}

/// `restart-nonempty`: a new daemon stacked on the dead mount; the CSI bind stays dead.
pub(super) fn restart_nonempty(l: &Layout, dead: &DeadDaemon) -> anyhow::Result<Step> {
    // What a restart without nonempty gets: fusermount's check of the mount point.
    let refused = match l.daemon(false) {
        Ok(_) => anyhow::bail!("a restart without nonempty mounted over the dead mount"),
        Err(e) => format!("{:#}", e),
    };
    let d = l.daemon(true)?;
    let new_mount = access(list(&l.ceph_mount.join(VOLUME)));
    let csi = csi_access(l);
    let start = dead_volume_start(l)?;
    let now = read_mountinfo(Path::new("/proc"), None).unwrap_or_default();
    let dev = |m: &MountInfo| (m.major, m.minor);
    let on_point: Vec<&MountInfo> = now
        .iter()
        .filter(|m| m.mount_point == l.ceph_mount)
        .collect();
    // Two mounts on one mount point: the new daemon's on top of the dead one.
    let stacked_on_dead = match on_point[..] {
        [old, new] => {
            dev(old) == dead.first.dev() && dev(new) == d.dev() && new.parent_id == old.mount_id
        }
        _ => false,
    };
    // The CSI bind still on the dead connection's device.
    let bind_on_old_dev = now
        .iter()
        .filter(|m| m.mount_point == l.csi_target)
        .map(dev)
        .eq([dead.first.dev()]);
    let detail = json!({
        "without_nonempty": refused,
        "new_daemon": {"pid": d.pid(), "dev": dev_str(d.dev()), "mnt_id": d.mnt_id()},
        "new_mount_access": new_mount,
        "csi_access": csi,
        "mounts_stacked_on_ceph_mount_point": on_point.len(),
        "new_mount_stacked_on_dead_mount": stacked_on_dead,
        "csi_bind_on_dead_device": bind_on_old_dev,
    });
    let reproduced = new_mount.is_null()
        && errno_of(&csi) == Some(libc::ENOTCONN as i64)
        && start.read_neither()
        && stacked_on_dead
        && bind_on_old_dev;
    Ok(Step {
        reproduced,
        start,
        detail: Some(("restart", detail)),
        second: Some(d),
        mounts: Some(now),
    })
}

/// `remount` (the fix), in the order that leaves nothing stale behind.
pub(super) fn remount(l: &Layout, dead: &mut DeadDaemon) -> anyhow::Result<Step> {
    if let Some(mut b) = dead.csi_bind.take() {
        b.teardown()
            .context("failed to unmount the stale CSI bind")?;
    }
    dead.first
        .teardown()
        .context("failed to unmount the dead ceph-fuse mount")?;
    let d = l.daemon(false)?;
    dead.csi_bind = Some(l.csi_publish()?);
    let csi = csi_access(l);
    let start = l.start_new()?;
    let detail = json!({
        "new_daemon": {"pid": d.pid(), "dev": dev_str(d.dev())},
        "csi_access": csi,
    });
    Ok(Step {
        reproduced: !(csi.is_null() && start.read_both()),
        start,
        detail: Some(("fix", detail)),
        second: Some(d),
        mounts: None,
    })
}
