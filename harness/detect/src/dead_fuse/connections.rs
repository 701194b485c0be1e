//! Grouping one namespace's mounts: FUSE mounts and CSI mounts, which newer mounts cover
//! them, and whether they sit below another FUSE mount.

use std::collections::BTreeMap;

use super::{is_fuse, kubelet_csi_volume};
use faultline_sys::mount_namespace::MountNamespace;
use faultline_sys::mountinfo::MountInfo;

/// One mount of interest in one namespace.
#[derive(Debug, Clone)]
pub(super) struct Seen<'a> {
    pub(super) ns: &'a MountNamespace,
    pub(super) pid: i32,
    pub(super) mount: MountInfo,
    /// Mount ids stacked on this mount's mount point, newest last.
    pub(super) shadowed_by: Vec<u64>,
    /// A FUSE mount is among its ancestors.
    pub(super) nested_in_fuse: bool,
}

/// FUSE mounts and CSI mounts of one namespace, with their stacking and nesting worked out.
pub(super) fn interesting<'a>(
    ns: &'a MountNamespace,
    pid: i32,
    mounts: &[MountInfo],
) -> Vec<Seen<'a>> {
    let by_id: BTreeMap<u64, &MountInfo> = mounts.iter().map(|m| (m.mount_id, m)).collect();
    mounts
        .iter()
        .filter(|m| {
            is_fuse(&m.fstype) || (m.root_deleted && kubelet_csi_volume(&m.mount_point).is_some())
        })
        .map(|m| {
            // A mount stacked on the same mount point is a child of this mount at its root;
            // follow the chain upwards.
            let mut shadowed_by = Vec::new();
            let mut top = m.mount_id;
            while let Some(next) = mounts
                .iter()
                .find(|c| c.parent_id == top && c.mount_id != top && c.mount_point == m.mount_point)
            {
                shadowed_by.push(next.mount_id);
                top = next.mount_id;
            }
            let mut nested_in_fuse = false;
            let mut cur = m.parent_id;
            let mut hops = 0;
            while let Some(p) = by_id.get(&cur) {
                if p.mount_id == p.parent_id || hops > 64 {
                    break;
                }
                // The mount a stacked mount sits on is not "above" it on the path.
                if is_fuse(&p.fstype) && p.mount_point != m.mount_point {
                    nested_in_fuse = true;
                    break;
                }
                cur = p.parent_id;
                hops += 1;
            }
            Seen {
                ns,
                pid,
                mount: m.clone(),
                shadowed_by,
                nested_in_fuse,
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dead_fuse::findings::deleted_finding;
    use crate::finding::Severity;

    /// Captured on this machine (6.18): a dead ceph-fuse stand-in (0:40) with a CSI bind of
    /// its subdirectory, a restarted daemon (0:41) stacked on the same mount point, and a CSI
    /// bind whose source directory (with a space in its name) was removed.
    const CAPTURED: &str = "\
63 43 0:39 / /tmp/capx rw,relatime - tmpfs tmpfs rw
64 63 0:40 / /tmp/capx/ceph rw,nosuid,nodev,relatime - fuse.ceph-fuse ceph-fuse rw,user_id=0,group_id=0,default_permissions,allow_other
65 63 0:40 /dashboard-folder /tmp/capx/kubelet/pods/92f2591b-66b5-4843-b7a7-42d0acd2be07/volumes/kubernetes.io~csi/dashboard-folder/mount rw,nosuid,nodev,relatime - fuse.ceph-fuse ceph-fuse rw,user_id=0,group_id=0,default_permissions,allow_other
66 64 0:41 / /tmp/capx/ceph rw,nosuid,nodev,relatime - fuse.ceph-fuse ceph-fuse rw,user_id=0,group_id=0,default_permissions,allow_other
67 63 0:39 /ceph/vol\\0401//deleted /tmp/capx/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/vol\\0401/mount rw,relatime - tmpfs tmpfs rw
68 66 0:42 / /tmp/capx/ceph/nested rw,nosuid,nodev,relatime - fuse.other other rw,user_id=0,group_id=0
";

    /// The captured table, as seen in one namespace (pid 1).
    pub(in crate::dead_fuse) fn captured() -> (MountNamespace, Vec<MountInfo>) {
        let mounts = faultline_sys::mountinfo::parse(CAPTURED.as_bytes()).unwrap();
        let ns = MountNamespace {
            inode: 1,
            pids: vec![1],
        };
        (ns, mounts)
    }

    #[test]
    fn stacking_nesting_and_csi_roots_from_captured_mountinfo() {
        let (ns, mounts) = captured();
        let seen = interesting(&ns, 1, &mounts);
        let by_id = |id: u64| seen.iter().find(|s| s.mount.mount_id == id).unwrap();
        assert_eq!(seen.len(), 5, "tmpfs root is not interesting: {seen:#?}");
        // The dead mount is covered by the restarted daemon's mount; nothing covers that.
        assert_eq!(by_id(64).shadowed_by, vec![66]);
        assert!(by_id(66).shadowed_by.is_empty());
        assert!(by_id(65).shadowed_by.is_empty());
        // Stacked on the dead mount is not nested in it; a mount below a FUSE path is.
        assert!(!by_id(66).nested_in_fuse);
        assert!(by_id(68).nested_in_fuse);
        let deleted = by_id(67);
        assert!(deleted.mount.root_deleted);
        assert_eq!(
            kubelet_csi_volume(&deleted.mount.mount_point),
            Some(("u-1".into(), "vol 1".into()))
        );
        let f = deleted_finding(deleted);
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.evidence["volume"], "vol 1");
        assert_eq!(f.evidence["root"], "/ceph/vol 1//deleted");
    }
}
