//! `stale-bind`: bind mounts (kubelet hostPath `type: File`, runc's file binds) whose source
//! was replaced after the mount was made. A bind pins the inode, not the path: when the host
//! updates the file by writing a new one and `mv -f`-ing it over the path, the container keeps
//! reading the old, now 0-link inode, and its mountinfo root ends in `//deleted`.
//!
//! Each mount namespace is visited once (by the inode of `/proc/PID/ns/mnt`); its table is read
//! from one of its processes, and suspicious mounts are stat'ed through that process's root
//! (`/proc/PID/root/<mount point>`), which is also how a person can still reach the old content.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::{CheckInput, DetectError, Detector, DetectorReport};
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};
use faultline_sys::proc::{Gaps, Item, NamespaceTable, Snapshot, MOUNT_NS, STAT};
use faultline_sys::statx::{statx, Statx};

pub const NAME: &str = "stale-bind";

const REMEDY: &str = "restart the pod (or process) so the bind is made again from the current \
file; to prevent it, mount the parent directory instead of the single file, or have the \
updater write the file in place (truncate + write) instead of renaming a new file over it";

/// A stat through a dead or hung network/FUSE mount may block; past this, give up on it.
const STAT_LIMIT: Duration = Duration::from_secs(2);

/// At most this many pids are listed in a finding's evidence (the count is always given).
const MAX_PIDS_SHOWN: usize = 32;

/// A bind mount looked at through `/proc/PID/root` (which needs ptrace read access).
const THROUGH_ROOT: Item = Item {
    what: "the bound file, through /proc/PID/root,",
    of: "partial bind mounts",
};

/// File system types whose stat may hang or go to a server: only stat'ed when the kernel has
/// already marked the bind's root `//deleted` (the dead-fuse and nfs detectors cover them).
fn is_remote_or_fuse(fstype: &str) -> bool {
    fstype.starts_with("fuse")
        || fstype.starts_with("nfs")
        || matches!(
            fstype,
            "cifs" | "smb3" | "ceph" | "9p" | "glusterfs" | "lustre" | "afs"
        )
}

pub struct StaleBind;

impl Detector for StaleBind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "bind mounts (hostPath type: File) pinned to a file the host has replaced: containers read old content"
    }

    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        Ok(report(&*input.processes()?))
    }
}

/// Every mount namespace on the node, and what could not be read.
pub fn report(snap: &Snapshot) -> DetectorReport {
    let mut gaps = snap.gaps().select(&[STAT, MOUNT_NS]);
    // The checker's own view, to name the host path a stale bind came from.
    let own = read_mountinfo(snap.proc_root(), None).unwrap_or_else(|e| {
        tracing::debug!("failed to read own mountinfo: {e}");
        Vec::new()
    });
    let findings = snap
        .mount_tables(&mut gaps)
        .iter()
        .flat_map(|t| scan_namespace(snap, t, &own, &mut gaps))
        .collect();
    DetectorReport::new(findings, &gaps)
}

/// [`report`]'s findings on a fresh walk of `proc_root` (for a scenario; see
/// [`DetectorReport::into_findings`]).
pub fn scan(proc_root: &Path) -> Result<Vec<Finding>, DetectError> {
    Ok(report(&Snapshot::take(proc_root)?).into_findings(NAME))
}

/// One namespace. `host_mounts` is the table used to translate a bind's root into a path the
/// checker can see (its own mountinfo); empty to skip that. A bind that could not be looked
/// at through the namespace's root is recorded in `gaps`.
pub fn scan_namespace(
    snap: &Snapshot,
    table: &NamespaceTable,
    host_mounts: &[MountInfo],
    gaps: &mut Gaps,
) -> Vec<Finding> {
    let pid = table.pid;
    let mut findings = Vec::new();
    for m in &table.mounts {
        if !m.root_deleted && (!m.is_partial_bind() || is_remote_or_fuse(&m.fstype)) {
            continue;
        }
        let through = snap.path_in_root(pid, &m.mount_point);
        let stat = bounded_statx(&through, STAT_LIMIT);
        // The path reaches this mount only if nothing was mounted on top of it since.
        let reaches = matches!(&stat, Ok(s) if s.mnt_id == Some(m.mount_id));
        let nlink = match &stat {
            Ok(s) if reaches => Some(s.nlink),
            _ => None,
        };
        if !m.root_deleted {
            // Only the link count tells a stale bind here: not knowing it is a gap.
            gaps.tried(THROUGH_ROOT);
            if let Err(e) = &stat {
                gaps.failed_io(THROUGH_ROOT, pid.into(), e);
            }
            if nlink != Some(0) {
                continue;
            }
        }
        findings.push(finding(table, m, &through, &stat, reaches, host_mounts));
    }
    findings
}

fn finding(
    table: &NamespaceTable,
    m: &MountInfo,
    through: &Path,
    stat: &std::io::Result<Statx>,
    reaches: bool,
    host_mounts: &[MountInfo],
) -> Finding {
    let (ns, pid) = (&table.ns, table.pid);
    let mp = m.mount_point.display().to_string();
    let (nlink, ino, size, kind) = match stat {
        Ok(s) if reaches => (Some(s.nlink), Some(s.ino), Some(s.size), Some(s.kind())),
        _ => (None, None, None, None),
    };
    let readable = reaches && kind == Some("regular file") && open_readonly(through).is_ok();
    let host_path = host_path_of(m, host_mounts);
    let host_now = host_path
        .as_deref()
        .and_then(|p| bounded_statx(p, STAT_LIMIT).ok())
        .map(|s| s.ino);
    let severity = if nlink == Some(0) {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let why = match (m.root_deleted, nlink) {
        (true, Some(0)) => "its source was replaced or deleted (mountinfo root ends in //deleted) and the inode it pins has 0 links",
        (true, _) => "its source path was replaced or deleted (mountinfo root ends in //deleted)",
        _ => "the inode it pins has 0 links",
    };
    let pids_shown: Vec<i32> = ns.pids.iter().copied().take(MAX_PIDS_SHOWN).collect();
    let message = format!(
        "{mp} in mount namespace {} (pid {pid}{}) is a stale bind: {why}; processes there read the old content{}",
        ns.inode,
        if ns.pids.len() > 1 {
            format!(" and {} more", ns.pids.len() - 1)
        } else {
            String::new()
        },
        host_path
            .as_ref()
            .map(|p| format!(", not the current {}", p.display()))
            .unwrap_or_default(),
    );
    Finding::new(NAME, severity, mp.clone(), message, REMEDY)
        .with_pid(pid)
        .with_evidence(json!({
            "mount_point": mp,
            "mount_id": m.mount_id,
            "root": m.root_as_shown(),
            "root_deleted": m.root_deleted,
            "device": m.device(),
            "fstype": m.fstype,
            "source": m.source_lossy(),
            "read_only": m.is_read_only(),
            "mnt_ns": ns.inode,
            "pids": pids_shown,
            "pid_count": ns.pids.len(),
            "file_type": kind,
            "inode": ino,
            "nlink": nlink,
            "size": size,
            "old_content": {
                "path": through.display().to_string(),
                "reachable": reaches,
                "readable": readable,
                "error": stat.as_ref().err().map(|e| e.to_string()),
            },
            "host_path": host_path.as_ref().map(|p| p.display().to_string()),
            "host_path_inode_now": host_now,
        }))
}

/// Where the bind's source lives in the checker's view: a mount of the same device whose root
/// contains the bind's root (the longest such root wins).
fn host_path_of(m: &MountInfo, host_mounts: &[MountInfo]) -> Option<PathBuf> {
    host_mounts
        .iter()
        .filter(|h| (h.major, h.minor) == (m.major, m.minor) && !h.root_deleted)
        .filter_map(|h| {
            let rest = m.root.strip_prefix(&h.root).ok()?;
            Some((h.root.as_os_str().len(), h.mount_point.join(rest)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

/// `statx` without following a final symlink or triggering an automount, on a helper thread so
/// that a hung file system costs at most `limit` (the thread is left behind then).
pub fn bounded_statx(path: &Path, limit: Duration) -> std::io::Result<Statx> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
        let _ = tx.send(statx(
            &p,
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
        ));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("stat did not return within {limit:?}"),
        )),
    }
}

/// Opens (never reads: it may hold secrets) to show the old content is still reachable.
fn open_readonly(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_sys::mountinfo::parse;

    /// From /proc/self/mountinfo in an `unshare -m` shell: a tmpfs, two directory binds of it,
    /// and a file bind whose source was replaced with `mv -f` (captured on kernel 6.18.44).
    const CAPTURED: &[u8] = br"63 43 0:39 / /tmp/hp-capture rw,relatime - tmpfs tmpfs rw,size=1024k
65 63 0:39 /src\040dir /tmp/hp-capture/with\011tab rw,relatime - tmpfs tmpfs rw,size=1024k
68 63 0:39 /data.txt//deleted /tmp/hp-capture/target.txt ro,relatime - tmpfs tmpfs rw,size=1024k
";

    #[test]
    fn host_path_prefers_the_mount_with_the_longest_root() {
        let m = parse(CAPTURED).unwrap();
        let stale = &m[2];
        assert_eq!(
            host_path_of(stale, &m),
            Some(PathBuf::from("/tmp/hp-capture/data.txt"))
        );
        // A file under the bound subdirectory is named through that bind.
        let mut under = stale.clone();
        under.root = PathBuf::from("/src dir/f");
        assert_eq!(
            host_path_of(&under, &m),
            Some(PathBuf::from("/tmp/hp-capture/with\ttab/f"))
        );
        // Another device: unknown.
        under.minor = 99;
        assert_eq!(host_path_of(&under, &m), None);
    }

    #[test]
    fn remote_and_fuse_types_are_not_stat_ed_blindly() {
        assert!(is_remote_or_fuse("fuse.sshfs"));
        assert!(is_remote_or_fuse("fuse"));
        assert!(is_remote_or_fuse("nfs4"));
        assert!(is_remote_or_fuse("ceph"));
        assert!(!is_remote_or_fuse("ext4"));
        assert!(!is_remote_or_fuse("tmpfs"));
    }
}
