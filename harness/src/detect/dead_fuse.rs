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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::detect::{CheckInput, DetectError, Detector};
use crate::finding::{Finding, Severity};
use crate::mount_namespace::{mount_namespaces, MountNamespace};
use crate::mountinfo::MountInfo;

pub const NAME: &str = "dead-fuse";

/// How long one probe of one FUSE connection may take before its daemon counts as hung.
pub const PROBE_LIMIT: Duration = Duration::from_secs(2);

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

pub fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.")
}

/// `pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount` in a mount point: (uid, volume).
pub fn kubelet_csi_volume(mount_point: &Path) -> Option<(String, String)> {
    let parts: Vec<&str> = mount_point
        .to_str()?
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let i = parts.iter().position(|p| *p == "kubernetes.io~csi")?;
    if i < 3 || parts[i - 1] != "volumes" || parts[i - 3] != "pods" {
        return None;
    }
    let volume = parts.get(i + 1)?;
    Some((parts[i - 2].to_string(), volume.to_string()))
}

/// What a probe of one connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// ENOTCONN: the daemon is gone.
    Dead,
    /// No answer within the limit: the daemon is alive but stuck.
    Hung,
    /// Probed but failed otherwise (errno), or no mount of it could be probed safely.
    Unknown(String),
}

/// One mount of interest in one namespace.
#[derive(Debug, Clone)]
struct Seen<'a> {
    ns: &'a MountNamespace,
    pid: i32,
    mount: MountInfo,
    /// Mount ids stacked on this mount's mount point, newest last.
    shadowed_by: Vec<u64>,
    /// A FUSE mount is among its ancestors.
    nested_in_fuse: bool,
}

pub struct DeadFuse;

impl Detector for DeadFuse {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "FUSE mounts whose daemon is gone (ENOTCONN), their binds in every mount namespace, and mounts shadowed by a restarted daemon"
    }

    fn check(&self, input: &CheckInput) -> Result<Vec<Finding>, DetectError> {
        scan(&input.proc_root, &input.paths, PROBE_LIMIT)
    }
}

/// Scans every mount namespace. With `paths`, only FUSE connections that have a mount at or
/// under one of them (in any namespace) are reported (with all their mounts, wherever they
/// are), and CSI mounts under them.
pub fn scan(
    proc_root: &Path,
    paths: &[PathBuf],
    limit: Duration,
) -> Result<Vec<Finding>, DetectError> {
    let namespaces = mount_namespaces(proc_root).map_err(|e| DetectError::Read {
        what: e.path.display().to_string(),
        source: e.source,
    })?;
    let mut seen: Vec<Seen> = Vec::new();
    for ns in &namespaces {
        let (pid, mounts) = match ns.mountinfo(proc_root) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("skipping mount namespace {}: {e}", ns.inode);
                continue;
            }
        };
        seen.extend(interesting(ns, pid, &mounts));
    }
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
            probes.push((*dev, through_proc(proc_root, s.pid, &s.mount.mount_point)));
        }
    }
    let minors: Vec<u32> = selected.iter().map(|d| d.1).collect();
    let report = run_probes(&probes, &minors, limit);

    let mut findings = Vec::new();
    for s in &seen {
        let dev = (s.mount.major, s.mount.minor);
        let fuse = is_fuse(&s.mount.fstype);
        if fuse && selected.contains(&dev) {
            let live = report.liveness.get(&dev).cloned().unwrap_or_else(|| {
                Liveness::Unknown("no mount of it could be probed safely".into())
            });
            if let Some(f) = fuse_finding(s, &seen, &live, report.waiting.get(&dev.1), limit) {
                findings.push(f);
            }
        } else if s.mount.root_deleted
            && under(&s.mount)
            && kubelet_csi_volume(&s.mount.mount_point).is_some()
        {
            findings.push(deleted_finding(s));
        }
    }
    Ok(findings)
}

fn through_proc(proc_root: &Path, pid: i32, mount_point: &Path) -> PathBuf {
    proc_root
        .join(pid.to_string())
        .join("root")
        .join(mount_point.strip_prefix("/").unwrap_or(mount_point))
}

/// FUSE mounts and CSI mounts of one namespace, with their stacking and nesting worked out.
fn interesting<'a>(ns: &'a MountNamespace, pid: i32, mounts: &[MountInfo]) -> Vec<Seen<'a>> {
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

fn fuse_finding(
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

fn deleted_finding(s: &Seen) -> Finding {
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

// ---- bounded probes in a child process ----------------------------------------------------

#[derive(Debug, Default)]
struct ProbeReport {
    liveness: BTreeMap<(u32, u32), Liveness>,
    /// minor → `waiting` count (None when fusectl could not be read).
    waiting: BTreeMap<u32, Option<u64>>,
}

fn spawn_probe(args: &[String]) -> std::io::Result<(Child, mpsc::Receiver<String>)> {
    let mut cmd = crate::internal::command("fuse-probe");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    crate::guard::process::die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Kills a probe child and reaps it only if it goes quickly: a child stuck in an
/// uninterruptible wait on a FUSE mount is left to be reaped by init.
fn abandon(mut child: Child) {
    let _ = child.kill();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!(
        "probe process {} did not exit after SIGKILL; leaving it",
        child.id()
    );
}

fn run_probes(probes: &[((u32, u32), PathBuf)], minors: &[u32], limit: Duration) -> ProbeReport {
    let mut report = ProbeReport::default();
    if !minors.is_empty() {
        let args: Vec<String> = minors.iter().map(|m| format!("conn:{m}")).collect();
        match spawn_probe(&args) {
            Ok((child, rx)) => {
                for _ in minors {
                    let Ok(line) = rx.recv_timeout(limit) else {
                        break;
                    };
                    let w: Vec<&str> = line.split_whitespace().collect();
                    if let ["conn", minor, value] = w.as_slice() {
                        if let Ok(minor) = minor.parse() {
                            report.waiting.insert(minor, value.parse().ok());
                        }
                    }
                }
                abandon(child);
            }
            Err(e) => tracing::debug!("failed to start the fusectl probe: {e}"),
        }
    }
    // Paths are probed in one child; when one hangs, the child is abandoned and a new one
    // takes the rest.
    let mut next = 0;
    while next < probes.len() {
        let args: Vec<String> = probes[next..]
            .iter()
            .map(|(_, p)| format!("path:{}", p.display()))
            .collect();
        let (child, rx) = match spawn_probe(&args) {
            Ok(v) => v,
            Err(e) => {
                for (dev, _) in &probes[next..] {
                    report.liveness.insert(
                        *dev,
                        Liveness::Unknown(format!("failed to start probe: {e}")),
                    );
                }
                break;
            }
        };
        while next < probes.len() {
            let dev = probes[next].0;
            match rx.recv_timeout(limit) {
                Ok(line) => {
                    report.liveness.insert(dev, parse_probe_line(&line));
                    next += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    report.liveness.insert(dev, Liveness::Hung);
                    next += 1;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    report
                        .liveness
                        .insert(dev, Liveness::Unknown("probe process died".into()));
                    next += 1;
                    break;
                }
            }
        }
        abandon(child);
    }
    report
}

fn parse_probe_line(line: &str) -> Liveness {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["path", "ok", ..] => Liveness::Alive,
        ["path", "err", errno, ..] => match errno.parse::<i32>() {
            Ok(libc::ENOTCONN) => Liveness::Dead,
            Ok(e) => Liveness::Unknown(std::io::Error::from_raw_os_error(e).to_string()),
            Err(_) => Liveness::Unknown(format!("bad probe answer {line:?}")),
        },
        _ => Liveness::Unknown(format!("bad probe answer {line:?}")),
    }
}

/// `statx(path, STATX_TYPE, AT_STATX_FORCE_SYNC)`: forces a GETATTR to the daemon.
fn statx_type_errno(path: &Path) -> Result<u32, i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    // SAFETY: statx writes into a zeroed statx we own; `c` outlives the call.
    unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_NO_AUTOMOUNT | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_TYPE,
            &mut stx,
        );
        if rc == 0 {
            Ok(stx.stx_mode as u32 & libc::S_IFMT)
        } else {
            Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO))
        }
    }
}

const FUSECTL_MAGIC: i64 = 0x6573_5543;
const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

/// Makes fusectl readable at its usual place in a private mount namespace of this (probe)
/// process, so the node's mount table is never touched.
fn private_fusectl() -> bool {
    let mounted = || {
        nix::sys::statfs::statfs(FUSECTL_DIR)
            .map(|s| s.filesystem_type().0 == FUSECTL_MAGIC)
            .unwrap_or(false)
    };
    if mounted() {
        return true;
    }
    use nix::mount::{mount, MsFlags};
    let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
        && mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .is_ok()
        && mount(
            Some("fusectl"),
            FUSECTL_DIR,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        )
        .is_ok();
    ok && mounted()
}

/// Entry point `fuse-probe ITEM...`: `conn:MINOR` prints `conn MINOR WAITING|-`, `path:P`
/// prints `path ok MODE` or `path err ERRNO`, one line each, in order, flushed.
pub fn probe_main(args: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    let fusectl = args.iter().any(|a| a.starts_with("conn:")) && private_fusectl();
    for a in args {
        if let Some(minor) = a.strip_prefix("conn:") {
            let waiting = if fusectl {
                std::fs::read_to_string(format!("{FUSECTL_DIR}/{minor}/waiting"))
                    .ok()
                    .map(|s| s.trim().to_string())
            } else {
                None
            };
            let _ = writeln!(out, "conn {minor} {}", waiting.as_deref().unwrap_or("-"));
        } else if let Some(p) = a.strip_prefix("path:") {
            let _ = match statx_type_errno(Path::new(p)) {
                Ok(mode) => writeln!(out, "path ok {mode:o}"),
                Err(e) => writeln!(out, "path err {e}"),
            };
        }
        let _ = out.flush();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_csi_paths_name_pod_and_volume() {
        let p = Path::new("/data/kubernetes/kubelet/pods/92f2591b-66b5-4843-b7a7-42d0acd2be07/volumes/kubernetes.io~csi/dashboard-folder/mount");
        assert_eq!(
            kubelet_csi_volume(p),
            Some((
                "92f2591b-66b5-4843-b7a7-42d0acd2be07".into(),
                "dashboard-folder".into()
            ))
        );
        assert_eq!(
            kubelet_csi_volume(Path::new(
                "/var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/v"
            )),
            None
        );
        assert_eq!(
            kubelet_csi_volume(Path::new("/mnt/kubernetes.io~csi/v")),
            None
        );
    }

    #[test]
    fn fuse_types() {
        assert!(is_fuse("fuse"));
        assert!(is_fuse("fuse.ceph-fuse"));
        assert!(is_fuse("fuseblk"));
        assert!(!is_fuse("fusectl"));
        assert!(!is_fuse("ext4"));
    }

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

    #[test]
    fn stacking_nesting_and_csi_roots_from_captured_mountinfo() {
        let mounts = crate::mountinfo::parse(CAPTURED.as_bytes()).unwrap();
        let ns = MountNamespace {
            inode: 1,
            pids: vec![1],
        };
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

    #[test]
    fn findings_follow_the_probe() {
        let mounts = crate::mountinfo::parse(CAPTURED.as_bytes()).unwrap();
        let ns = MountNamespace {
            inode: 1,
            pids: vec![1],
        };
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

    #[test]
    fn probe_answers() {
        assert_eq!(parse_probe_line("path ok 40000"), Liveness::Alive);
        assert_eq!(parse_probe_line("path err 107"), Liveness::Dead);
        assert!(matches!(
            parse_probe_line("path err 13"),
            Liveness::Unknown(_)
        ));
    }
}
