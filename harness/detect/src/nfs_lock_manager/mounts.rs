//! Which NFS mounts send their locks to the server's lock manager (NLM), in every mount
//! namespace.

use faultline_sys::mountinfo::MountInfo;
use faultline_sys::proc::{Gaps, Snapshot};

/// An NFS mount whose locks go through the NLM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlmMount {
    pub mount_point: String,
    pub source: String,
    pub version: String,
    pub local_lock: String,
}

/// Whether `m` is an NFSv2/v3 mount that sends `flock`/`fcntl` locks to the server's lockd.
/// `local_lock=posix` keeps fcntl locks local but still sends flock locks (emulated as whole-
/// file byte-range locks) to the server, so it counts (nfs(5), "local_lock").
pub fn nlm_mount(m: &MountInfo) -> Option<NlmMount> {
    if m.fstype != "nfs" {
        return None;
    }
    let version = m.super_option("vers").unwrap_or("3");
    if !(version == "2" || version == "3" || version.starts_with("3.") || version.starts_with("2."))
    {
        return None;
    }
    if m.super_option("nolock").is_some() {
        return None;
    }
    let local_lock = m.super_option("local_lock").unwrap_or("none");
    if local_lock == "flock" || local_lock == "all" {
        return None;
    }
    Some(NlmMount {
        mount_point: m.mount_point.display().to_string(),
        source: m.source_lossy().into_owned(),
        version: version.to_string(),
        local_lock: local_lock.to_string(),
    })
}

/// NLM mounts in every mount namespace that has a process (kubelet's volumes live in the
/// host's namespace, a pod's own NFS mounts in its own). A namespace whose mount table could
/// not be read is recorded in `gaps`.
pub fn nlm_mounts(snap: &Snapshot, gaps: &mut Gaps) -> Vec<NlmMount> {
    let mut out: Vec<NlmMount> = Vec::new();
    for table in snap.mount_tables(gaps) {
        for n in table.mounts.iter().filter_map(nlm_mount) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}
