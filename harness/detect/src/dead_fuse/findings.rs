//! The findings: one per mount of a dead, hung or covered FUSE connection, and one per CSI
//! mount of a deleted directory, with the evidence and remedy for each.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::connections::Seen;
use super::kubelet_csi_volume;
use super::probe::Liveness;
use super::NAME;
use crate::finding::{Finding, Severity};

const REMEDY_DEAD: &str = "unmount every mount of the dead connection, binds included (`umount -l \
MOUNTPOINT`; for a pod volume delete the pod so the CSI driver publishes it again), then restart \
the FUSE daemon on an empty mount point rather than on top of the dead one (`nonempty`)";

const REMEDY_SHADOWED: &str = "unmount the newer mount, then the old one beneath it, and mount \
once; binds made from the old mount keep pointing at the old connection until remade";

const REMEDY_HUNG: &str = "the daemon is alive but does not answer: look at what it waits on \
(its threads' /proc/PID/stack, its storage backend); `echo 1 > \
/sys/fs/fuse/connections/MINOR/abort` ends it if it cannot recover";

const REMEDY_DELETED: &str = "the CSI volume's source directory is gone: delete the pod so the \
CSI driver publishes the volume again from the current mount";

fn base_evidence(s: &Seen) -> serde_json::Value {
    let mut ev = json!({
        "mount_namespace": s.ns.inode,
        "pid": s.pid,
        "mount_id": s.mount.mount_id,
        "parent_id": s.mount.parent_id,
        "dev": s.mount.device(),
        "fstype": s.mount.fstype,
        "source": s.mount.source_lossy(),
        "root": s.mount.root_as_shown(),
        "mount_point": s.mount.mount_point.display().to_string(),
        "root_deleted": s.mount.root_deleted,
        "shadowed_by": s.shadowed_by,
    });
    if let Some((uid, vol)) = kubelet_csi_volume(&s.mount.mount_point) {
        ev["pod_uid"] = json!(uid);
        ev["volume"] = json!(vol);
    }
    ev
}

pub(super) fn fuse_finding(
    s: &Seen,
    all: &[Seen],
    live: &Liveness,
    waiting: Option<&Option<u64>>,
    limit: Duration,
) -> Option<Finding> {
    let dev = (s.mount.major, s.mount.minor);
    let mp = s.mount.mount_point.display().to_string();
    let mut ev = base_evidence(s);
    ev["connection"] = json!({
        "minor": dev.1,
        "sysfs": format!("/sys/fs/fuse/connections/{}", dev.1),
        "waiting": waiting.cloned().flatten(),
    });
    ev["probe"] = json!(format!("{live:?}"));
    // Every other mount of the same connection, so one finding shows where its binds are.
    ev["same_connection"] = json!(all
        .iter()
        .filter(|o| (o.mount.major, o.mount.minor) == dev
            && !(o.ns.inode == s.ns.inode && o.mount.mount_id == s.mount.mount_id))
        .map(|o| json!({"mount_namespace": o.ns.inode, "pid": o.pid, "mount_point": o.mount.mount_point.display().to_string(), "root": o.mount.root_as_shown()}))
        .collect::<Vec<_>>());
    let what = if s.mount.root == Path::new("/") {
        "FUSE mount".to_string()
    } else {
        format!("bind of {} from a FUSE mount", s.mount.root_as_shown())
    };
    let pod = kubelet_csi_volume(&s.mount.mount_point)
        .map(|(uid, vol)| format!(" (pod {uid}, CSI volume {vol})"))
        .unwrap_or_default();
    let shadow = if s.shadowed_by.is_empty() {
        String::new()
    } else {
        format!(
            "; shadowed by newer mount {} on the same mount point",
            s.shadowed_by[s.shadowed_by.len() - 1]
        )
    };
    let (severity, message, remedy) = match live {
        Liveness::Dead => (
            Severity::Critical,
            format!(
                "{what} at {mp}{pod} ({}, source {}) has no daemon: Transport endpoint is not connected; container starts binding it fail{shadow}",
                s.mount.fstype,
                s.mount.source_lossy()
            ),
            REMEDY_DEAD,
        ),
        Liveness::Hung => (
            Severity::Warning,
            format!(
                "{what} at {mp}{pod} ({}): the daemon did not answer a stat within {limit:?}{shadow}",
                s.mount.fstype
            ),
            REMEDY_HUNG,
        ),
        _ if !s.shadowed_by.is_empty() => (
            Severity::Warning,
            format!(
                "{what} at {mp}{pod} ({}) is covered by a newer mount on the same mount point; binds made from it still use the old connection",
                s.mount.fstype
            ),
            REMEDY_SHADOWED,
        ),
        _ if s.mount.root_deleted && !pod.is_empty() => {
            return Some(deleted_finding(s));
        }
        _ => return None,
    };
    Some(
        Finding::new(NAME, severity, mp, message, remedy)
            .with_pid(s.pid)
            .with_evidence(ev),
    )
}

pub(super) fn deleted_finding(s: &Seen) -> Finding {
    let (uid, vol) = kubelet_csi_volume(&s.mount.mount_point).unwrap_or_default();
    let mp = s.mount.mount_point.display().to_string();
    Finding::new(
        NAME,
        Severity::Critical,
        mp.clone(),
        format!(
            "CSI volume {vol} of pod {uid} at {mp} is mounted from a deleted directory ({}): container starts binding it fail",
            s.mount.root_as_shown()
        ),
        REMEDY_DELETED,
    )
    .with_pid(s.pid)
    .with_evidence(base_evidence(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_fuse::connections::interesting;
    use crate::dead_fuse::connections::tests::captured;
    use crate::dead_fuse::PROBE_LIMIT;

    #[test]
    fn findings_follow_the_probe() {
        let (ns, mounts) = captured();
        let seen = interesting(&ns, 1, &mounts);
        let by_id = |id: u64| seen.iter().find(|s| s.mount.mount_id == id).unwrap();
        let limit = PROBE_LIMIT;
        let dead = fuse_finding(by_id(65), &seen, &Liveness::Dead, None, limit).unwrap();
        assert_eq!(dead.severity, Severity::Critical);
        assert!(dead
            .message
            .contains("pod 92f2591b-66b5-4843-b7a7-42d0acd2be07"));
        assert_eq!(
            dead.evidence["same_connection"].as_array().unwrap().len(),
            1
        );
        // Healthy and uncovered: nothing to say. Healthy but covered: a warning.
        assert!(fuse_finding(by_id(66), &seen, &Liveness::Alive, None, limit).is_none());
        let covered = fuse_finding(by_id(64), &seen, &Liveness::Alive, None, limit).unwrap();
        assert_eq!(covered.severity, Severity::Warning);
        let hung = fuse_finding(by_id(66), &seen, &Liveness::Hung, None, limit).unwrap();
        assert_eq!(hung.severity, Severity::Warning);
    }
}
