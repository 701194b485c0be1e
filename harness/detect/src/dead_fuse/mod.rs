//! `dead-fuse`: FUSE mounts whose daemon is gone, and everything still pointing at them.
//!
//! When a FUSE daemon dies (ceph-fuse OOM-killed, an sshfs or bindfs killed), the kernel
//! aborts its connection but leaves every mount of it in place: the original mount, each bind
//! made from it (kubelet's CSI publish, runc's volume binds in container namespaces), and a
//! mount that a restarted daemon stacked on top of it (`nonempty`). Each such mount answers
//! ENOTCONN ("Transport endpoint is not connected"); a container start binding it fails.
//!
//! How it is found, for any FUSE file system (`fuse`, `fuse.*`, `fuseblk`):
//! - every mount namespace is visited once (by `/proc/PID/ns/mnt` inode) and its FUSE mounts
//!   are grouped by `major:minor` = the FUSE connection (one superblock, every bind of it);
//! - each connection is probed once, through a mount of it that nothing covers, with
//!   `statx(STATX_TYPE, AT_STATX_FORCE_SYNC)` via `/proc/PID/root/<mount point>`. It must ask
//!   for the type: an empty mask is answered from the inode and succeeds on a dead mount.
//!   A probe runs in a child process with a time limit, because a stat on a FUSE mount whose
//!   daemon is alive but stuck can block forever; a probe past the limit is reported as a hung
//!   daemon, never waited for;
//! - the connection's `/sys/fs/fuse/connections/<minor>/waiting` count is read for evidence
//!   (in the probe's private mount namespace, mounting fusectl there when the node has not);
//! - mounts covered by a newer mount on the same mount point are named as shadowed, and
//!   kubelet paths (`pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`) name the pod and
//!   volume; a CSI mount whose root shows `//deleted` is reported too.
//!
//! Mounts nested under another FUSE mount are not probed through (a path walk through a dead
//! FUSE directory makes the kernel invalidate its dentries, which detaches mounts below).

mod connections;
mod findings;
mod kubelet;
pub(crate) mod probe;
mod probe_child;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::finding::Finding;
use crate::{CheckInput, DetectError, Detector, DetectorReport};
use faultline_sys::mountinfo::MountInfo;
use faultline_sys::proc::{Gaps, Item, Snapshot, MOUNT_NS, STAT};

use connections::{interesting, Seen};
use findings::{deleted_finding, fuse_finding};
pub use kubelet::kubelet_csi_volume;
use probe::run_probes;
pub use probe::Liveness;
pub use probe_child::probe_main;

pub const NAME: &str = "dead-fuse";

/// How long one probe of one FUSE connection may take before its daemon counts as hung.
pub const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// A FUSE connection whose liveness could not be told.
const PROBE: Item = Item {
    what: "whether the daemon answers (statx through /proc/PID/root)",
    of: "FUSE connections",
};

pub fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.")
}

pub struct DeadFuse;

impl Detector for DeadFuse {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "FUSE mounts whose daemon is gone (ENOTCONN), their binds in every mount namespace, and mounts shadowed by a restarted daemon"
    }

    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        Ok(report(&*input.processes()?, &input.paths, PROBE_LIMIT))
    }
}

/// [`report`]'s findings on a fresh walk of `proc_root` (for a scenario; see
/// [`DetectorReport::into_findings`]).
pub fn scan(
    proc_root: &Path,
    paths: &[PathBuf],
    limit: Duration,
) -> Result<Vec<Finding>, DetectError> {
    Ok(report(&Snapshot::take(proc_root)?, paths, limit).into_findings(NAME))
}

/// Scans every mount namespace. With `paths`, only FUSE connections that have a mount at or
/// under one of them (in any namespace) are reported (with all their mounts, wherever they
/// are), and CSI mounts under them. Mount tables and connections it could not look at are
/// the report's `unreadable`.
pub fn report(snap: &Snapshot, paths: &[PathBuf], limit: Duration) -> DetectorReport {
    let mut gaps = snap.gaps().select(&[STAT, MOUNT_NS]);
    let tables = snap.mount_tables(&mut gaps);
    let seen: Vec<Seen> = tables
        .iter()
        .flat_map(|t| interesting(&t.ns, t.pid, &t.mounts))
        .collect();
    let under =
        |m: &MountInfo| paths.is_empty() || paths.iter().any(|p| m.mount_point.starts_with(p));
    let selected: BTreeSet<(u32, u32)> = seen
        .iter()
        .filter(|s| is_fuse(&s.mount.fstype) && under(&s.mount))
        .map(|s| (s.mount.major, s.mount.minor))
        .collect();

    // Probe each selected connection once, through a mount nothing covers or contains.
    let mut probes: Vec<((u32, u32), PathBuf)> = Vec::new();
    for dev in &selected {
        let target = seen.iter().find(|s| {
            (s.mount.major, s.mount.minor) == *dev && s.shadowed_by.is_empty() && !s.nested_in_fuse
        });
        if let Some(s) = target {
            probes.push((*dev, snap.path_in_root(s.pid, &s.mount.mount_point)));
        }
    }
    let minors: Vec<u32> = selected.iter().map(|d| d.1).collect();
    let probed = run_probes(&probes, &minors, limit);

    let mut findings = Vec::new();
    for dev in &selected {
        record_probe(&mut gaps, *dev, probed.liveness.get(dev));
    }
    for s in &seen {
        let dev = (s.mount.major, s.mount.minor);
        let fuse = is_fuse(&s.mount.fstype);
        if fuse && selected.contains(&dev) {
            let live = probed.liveness.get(&dev).cloned().unwrap_or_else(unprobed);
            if let Some(f) = fuse_finding(s, &seen, &live, probed.waiting.get(&dev.1), limit) {
                findings.push(f);
            }
        } else if s.mount.root_deleted
            && under(&s.mount)
            && kubelet_csi_volume(&s.mount.mount_point).is_some()
        {
            findings.push(deleted_finding(s));
        }
    }
    DetectorReport::new(findings, &gaps)
}

fn unprobed() -> Liveness {
    Liveness::Unknown("no mount of it could be probed safely".into())
}

/// A connection whose probe told nothing is a gap; one whose mount vanished meanwhile is not.
fn record_probe(gaps: &mut Gaps, dev: (u32, u32), live: Option<&Liveness>) {
    gaps.tried(PROBE);
    match live.cloned().unwrap_or_else(unprobed) {
        Liveness::Unknown(why) => gaps.failed(PROBE, dev.1.into(), why),
        Liveness::Alive | Liveness::Dead | Liveness::Hung | Liveness::Gone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_types() {
        assert!(is_fuse("fuse"));
        assert!(is_fuse("fuse.ceph-fuse"));
        assert!(is_fuse("fuseblk"));
        assert!(!is_fuse("fusectl"));
        assert!(!is_fuse("ext4"));
    }
}
