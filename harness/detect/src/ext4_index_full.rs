//! `ext4-index-full`: ext4 refused to add an entry to a directory because its htree index is
//! at the maximum depth (2 levels without `large_dir`, 3 with). The kernel says so in its log,
//! in bundles (one per failed create, rate-limited):
//!
//! ```text
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem
//! ```
//!
//! The source line numbers move between kernels (2380, 2528, 2596, ...); kernels before 4.13
//! print `Directory index full!` without the inode. One finding per directory, with the mount
//! point of its device and, found within a time bound, its path.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::kernel_log::{self, LogLine};
use crate::{CheckInput, DetectError, Detector};
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};

pub const NAME: &str = "ext4-index-full";
/// How long the path search may walk the file system, per directory.
pub const PATH_SEARCH_BUDGET: Duration = Duration::from_secs(2);

pub struct Ext4IndexFull;

impl Detector for Ext4IndexFull {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "ext4 directories whose htree index is full (creates fail with ENOSPC), from the kernel log"
    }

    fn applicable(&self, input: &CheckInput) -> Result<(), String> {
        if input.kmsg_file.is_some() {
            return Ok(());
        }
        std::fs::File::open("/dev/kmsg")
            .map(|_| ())
            .map_err(|e| format!("cannot read /dev/kmsg ({e}); pass --kmsg-file FILE"))
    }

    fn check(&self, input: &CheckInput) -> Result<crate::DetectorReport, DetectError> {
        let lines = kernel_log::load(input)?;
        Ok(findings(&lines, &input.proc_root, PATH_SEARCH_BUDGET).into())
    }
}

/// One `ext4_dx_add_entry` warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    IndexFull {
        device: String,
        inode: Option<u64>,
        /// The depth the index reached (2, or 3 with large_dir); unknown before 4.13.
        level: Option<u32>,
        line: u32,
    },
    LargeDirDisabled {
        device: String,
        line: u32,
    },
}

/// Recognises the warnings `ext4_dx_add_entry` prints when the index is full.
pub fn parse_warning(message: &str) -> Option<Warning> {
    let at = message.find("EXT4-fs warning (device ")?;
    let rest = &message[at + "EXT4-fs warning (device ".len()..];
    let (device, rest) = rest.split_once("): ")?;
    let rest = rest.strip_prefix("ext4_dx_add_entry:")?;
    let (line, text) = rest.split_once(": ")?;
    let line: u32 = line.parse().ok()?;
    let device = device.to_string();
    if text.starts_with("Large directory feature is not enabled") {
        return Some(Warning::LargeDirDisabled { device, line });
    }
    if text.starts_with("Directory index full") {
        return Some(Warning::IndexFull {
            device,
            inode: None,
            level: None,
            line,
        });
    }
    // "Directory (ino: 211566352) index full, reach max htree level :2"
    let after = text.strip_prefix("Directory (ino: ")?;
    let (ino, after) = after.split_once(')')?;
    if !after.contains("index full") {
        return None;
    }
    let level = after
        .rsplit_once(':')
        .and_then(|(_, l)| l.trim().parse().ok());
    Some(Warning::IndexFull {
        device,
        inode: ino.trim().parse().ok(),
        level,
        line,
    })
}

/// `EXT4-fs (loop0): mounted filesystem UUID r/w ...` and `unmounting filesystem UUID.`
/// (the UUID is printed since Linux 6.3; older kernels print neither it nor the unmount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountEvent {
    Mounted {
        device: String,
        uuid: Option<String>,
    },
    Unmounted {
        device: String,
        uuid: Option<String>,
    },
}

pub fn parse_mount_event(message: &str) -> Option<MountEvent> {
    let at = message.find("EXT4-fs (")?;
    let (device, text) = message[at + "EXT4-fs (".len()..].split_once("): ")?;
    let device = device.to_string();
    let uuid_after = |prefix: &str| {
        text.strip_prefix(prefix).and_then(|rest| {
            let word = rest.split([' ', '.']).next().unwrap_or("");
            (word.len() == 36 && word.matches('-').count() == 4).then(|| word.to_string())
        })
    };
    if text.starts_with("mounted filesystem") {
        let uuid = uuid_after("mounted filesystem ");
        return Some(MountEvent::Mounted { device, uuid });
    }
    if text.starts_with("unmounting filesystem") {
        let uuid = uuid_after("unmounting filesystem ");
        return Some(MountEvent::Unmounted { device, uuid });
    }
    None
}

/// Which file system a warning came from: device names are reused (loop devices, a disk
/// moved to another slot), so a warning belongs to the file system mounted there at the time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FsId {
    Uuid(String),
    /// The n-th mount seen on the device in this log (0: before the first one logged).
    Epoch(usize),
}

#[derive(Debug, Default)]
struct Directory {
    warnings: usize,
    level: Option<u32>,
    lines: Vec<u32>,
    large_dir_disabled: bool,
    first_seen: Option<String>,
    last_seen: Option<String>,
    /// The log shows this file system being unmounted after the warnings (or another one
    /// being mounted on the device).
    unmounted_later: bool,
}

#[derive(Debug, Default)]
struct DeviceState {
    epoch: usize,
    uuid: Option<String>,
}

impl DeviceState {
    fn fs_id(&self) -> FsId {
        match &self.uuid {
            Some(u) => FsId::Uuid(u.clone()),
            None => FsId::Epoch(self.epoch),
        }
    }
}

type DirKey = (String, FsId, Option<u64>);

/// Findings for every directory named in `lines`, one per (device, file system, inode).
pub fn findings(lines: &[LogLine], proc_root: &Path, path_budget: Duration) -> Vec<Finding> {
    let mut dirs: BTreeMap<DirKey, Directory> = BTreeMap::new();
    let mut devices: BTreeMap<String, DeviceState> = BTreeMap::new();
    // The companion line names no inode: it belongs to the last index-full line on its device.
    let mut last_on_device: BTreeMap<String, DirKey> = BTreeMap::new();
    for l in lines {
        if let Some(ev) = parse_mount_event(&l.message) {
            let (MountEvent::Mounted { device, .. } | MountEvent::Unmounted { device, .. }) = &ev;
            let state = devices.entry(device.clone()).or_default();
            let old = state.fs_id();
            for (key, d) in dirs.iter_mut() {
                if key.0 == *device && key.1 == old {
                    d.unmounted_later = true;
                }
            }
            if let MountEvent::Mounted { uuid, .. } = ev {
                state.epoch += 1;
                state.uuid = uuid;
            }
            continue;
        }
        match parse_warning(&l.message) {
            Some(Warning::IndexFull {
                device,
                inode,
                level,
                line,
            }) => {
                let fs = devices.entry(device.clone()).or_default().fs_id();
                let key = (device.clone(), fs, inode);
                let d = dirs.entry(key.clone()).or_default();
                d.warnings += 1;
                d.unmounted_later = false;
                d.level = d.level.or(level);
                if !d.lines.contains(&line) {
                    d.lines.push(line);
                }
                if d.first_seen.is_none() {
                    d.first_seen = l.when.clone();
                }
                d.last_seen = l.when.clone();
                last_on_device.insert(device, key);
            }
            Some(Warning::LargeDirDisabled { device, .. }) => {
                if let Some(d) = last_on_device.get(&device).and_then(|k| dirs.get_mut(k)) {
                    d.large_dir_disabled = true;
                }
            }
            None => {}
        }
    }
    let mounts = read_mounts(proc_root);
    // Several directories may share a device: look it up (sysfs, superblock) once.
    let mut devices: BTreeMap<String, MountedDevice> = BTreeMap::new();
    dirs.into_iter()
        .map(|((device, fs, inode), d)| {
            let dev = devices
                .entry(device.clone())
                .or_insert_with(|| MountedDevice::look_up(&device, &mounts));
            finding(&device, dev, &fs, inode, &d, path_budget)
        })
        .collect()
}

/// What this mount namespace shows of a device named in the log.
struct MountedDevice {
    /// `MAJ:MIN`, from sysfs.
    majmin: Option<String>,
    /// Where the device is mounted (a mount of its root preferred over a bind of a subtree).
    mount_point: Option<PathBuf>,
    /// The UUID of the file system on it now, when it is mounted.
    uuid: Option<String>,
}

impl MountedDevice {
    fn look_up(device: &str, mounts: &[MountInfo]) -> MountedDevice {
        let majmin = device_number(device);
        let source = format!("/dev/{device}");
        let mine: Vec<&MountInfo> = mounts
            .iter()
            .filter(|m| majmin.as_deref() == Some(m.device().as_str()) || m.source == *source)
            .collect();
        let mount_point = mine
            .iter()
            .find(|m| !m.is_partial_bind())
            .or(mine.first())
            .map(|m| m.mount_point.clone());
        let uuid = mount_point
            .as_ref()
            .and_then(|_| {
                faultline_sys::ext4::Superblock::read(&Path::new("/dev").join(device)).ok()
            })
            .map(|sb| sb.uuid_string());
        MountedDevice {
            majmin,
            mount_point,
            uuid,
        }
    }
}

fn finding(
    device: &str,
    dev: &MountedDevice,
    fs: &FsId,
    inode: Option<u64>,
    d: &Directory,
    budget: Duration,
) -> Finding {
    let majmin = dev.majmin.clone();
    let mount_point = dev.mount_point.clone();
    let logged_uuid = match fs {
        FsId::Uuid(u) => Some(u.clone()),
        FsId::Epoch(_) => None,
    };
    let mounted_uuid = dev.uuid.clone();
    // Same file system: same UUID when both are known, else not unmounted since the warnings.
    let same_fs = match (&logged_uuid, &mounted_uuid) {
        (Some(a), Some(b)) => a == b,
        _ => !d.unmounted_later,
    };
    let mount_point = mount_point.filter(|_| same_fs);
    let (path, path_search) = match (inode, &mount_point) {
        (Some(ino), Some(mp)) => match find_directory(mp, ino, budget) {
            Ok(p) => (Some(p), "found".to_string()),
            Err(why) => (None, why),
        },
        (None, _) => (
            None,
            "the kernel did not name the inode (kernel < 4.13)".into(),
        ),
        (_, None) if !same_fs => (
            None,
            format!("the file system that logged this is no longer mounted on {device}"),
        ),
        (_, None) => (
            None,
            format!("{device} is not mounted in this mount namespace"),
        ),
    };
    let ino_text = inode.map_or("unknown inode".to_string(), |i| format!("inode {i}"));
    let subject = match (&path, &mount_point) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(mp)) => format!("{} ({ino_text} on {device})", mp.display()),
        (None, None) => format!("{ino_text} on {device}"),
    };
    let levels = d
        .level
        .map_or("its maximum".to_string(), |l| format!("{l}"));
    let (severity, tense) = if same_fs {
        (
            Severity::Critical,
            "creating files in it fails with ENOSPC while blocks and inodes are free",
        )
    } else {
        (
            Severity::Warning,
            "creating files in it failed with ENOSPC; that file system has since been unmounted",
        )
    };
    let message = format!(
        "ext4 directory {subject} has a full htree index ({levels} levels): {tense} ({} kernel warnings{})",
        d.warnings,
        if d.large_dir_disabled { "; large_dir is not enabled" } else { "" }
    );
    let remedy = if d.level == Some(faultline_sys::ext4::HTREE_LEVELS_LARGE_DIR) {
        "the directory reached ext4's 3-level maximum even with large_dir: spread its files over subdirectories".to_string()
    } else {
        format!(
            "spread the files over subdirectories, or enable large_dir (`tune2fs -O large_dir /dev/{device}`; needs Linux >= 4.13 and e2fsprogs >= 1.44, and older kernels and boot loaders can no longer read the file system); deleting files does not shrink the index: rebuild it offline with `e2fsck -fD`"
        )
    };
    Finding::new(NAME, severity, subject, message, remedy).with_evidence(json!({
        "device": device,
        "device_number": majmin,
        "filesystem_uuid": logged_uuid,
        "mounted_uuid": mounted_uuid,
        "inode": inode,
        "level": d.level,
        "warnings": d.warnings,
        "kernel_source_lines": d.lines,
        "large_dir_disabled": d.large_dir_disabled,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "unmounted_since": d.unmounted_later,
        "mount_point": mount_point,
        "path": path,
        "path_search": path_search,
    }))
}

/// `MAJ:MIN` of a block device named as the kernel names it (`loop0`, `md1`, `dm-3`).
pub fn device_number(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// This mount namespace's mounts; none when the table cannot be read.
fn read_mounts(proc_root: &Path) -> Vec<MountInfo> {
    read_mountinfo(proc_root, None).unwrap_or_else(|e| {
        tracing::debug!("no mount table: {e}");
        Vec::new()
    })
}

/// Breadth-first search under `mount_point` for the directory with inode `ino`, staying on
/// that file system and giving up after `budget`. It compares the inode numbers readdir
/// returns, so it never lists the (huge) directory it is looking for.
pub fn find_directory(mount_point: &Path, ino: u64, budget: Duration) -> Result<PathBuf, String> {
    let start = Instant::now();
    let dev = std::fs::metadata(mount_point)
        .map_err(|e| format!("cannot stat {}: {e}", mount_point.display()))?
        .dev();
    if std::fs::metadata(mount_point).map(|m| m.ino()).ok() == Some(ino) {
        return Ok(mount_point.to_path_buf());
    }
    let mut queue = std::collections::VecDeque::from([mount_point.to_path_buf()]);
    let mut visited = 0usize;
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        visited += 1;
        for e in entries.flatten() {
            if start.elapsed() > budget {
                return Err(format!(
                    "not found within {budget:?} ({visited} directories searched)"
                ));
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if e.ino() == ino {
                return Ok(e.path());
            }
            // Another file system mounted here has its own inode numbers.
            if std::fs::symlink_metadata(e.path()).map(|m| m.dev()).ok() == Some(dev) {
                queue.push_back(e.path());
            }
        }
    }
    Err(format!(
        "no directory with inode {ino} under {} ({visited} directories searched)",
        mount_point.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_and_this_kernel() {
        // From the seed (md1, kernel line 2380) and from this machine (6.18, line 2528).
        let w = parse_warning("EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2").unwrap();
        assert_eq!(
            w,
            Warning::IndexFull {
                device: "md1".into(),
                inode: Some(211566352),
                level: Some(2),
                line: 2380
            }
        );
        let w = parse_warning("EXT4-fs warning (device loop0): ext4_dx_add_entry:2532: Large directory feature is not enabled on this filesystem").unwrap();
        assert_eq!(
            w,
            Warning::LargeDirDisabled {
                device: "loop0".into(),
                line: 2532
            }
        );
        assert!(parse_warning("EXT4-fs (loop0): mounted filesystem").is_none());
        assert!(parse_warning(
            "EXT4-fs warning (device sda1): ext4_dx_add_entry:2006: Directory index full!"
        )
        .is_some());
    }

    #[test]
    fn one_finding_per_directory() {
        let seed = "EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2\nEXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem\n".repeat(4);
        let lines = kernel_log::parse_capture(&seed);
        let f = findings(&lines, Path::new("/proc"), Duration::from_millis(10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["warnings"], 4);
        assert_eq!(f[0].evidence["inode"], 211566352);
        assert_eq!(f[0].evidence["large_dir_disabled"], true);
        assert_eq!(f[0].severity, Severity::Critical);
    }

    /// Real captures from this machine (kernel 6.18.44): the last 200 lines of `dmesg`,
    /// `dmesg -T`, `journalctl -k` and `journalctl -k -o short-precise`, taken while the demo
    /// file system (UUID a4c5c1b7..., directory inode 13) was mounted on loop0, after seven
    /// earlier file systems on the same loop0 had filled inode 12 and been unmounted.
    #[test]
    fn real_captures_one_finding_per_directory_and_file_system() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ext4/");
        let no_proc = tempfile::tempdir().unwrap();
        for name in [
            "kmsg-dmesg.txt",
            "kmsg-dmesg-T.txt",
            "kmsg-journalctl-k.txt",
            "kmsg-journalctl-k-precise.txt",
        ] {
            let lines = kernel_log::read_capture(&PathBuf::from(fixtures).join(name)).unwrap();
            let f = findings(&lines, no_proc.path(), Duration::from_millis(10));
            assert_eq!(f.len(), 8, "{name}: {f:#?}");
            let live: Vec<_> = f
                .iter()
                .filter(|x| x.evidence["unmounted_since"] == false)
                .collect();
            assert_eq!(live.len(), 1, "{name}");
            let live = live[0];
            assert_eq!(live.evidence["inode"], 13, "{name}");
            assert_eq!(
                live.evidence["filesystem_uuid"],
                "a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873"
            );
            assert_eq!(live.evidence["warnings"], 5);
            assert_eq!(live.evidence["large_dir_disabled"], true);
            assert_eq!(live.evidence["kernel_source_lines"], json!([2528]));
            assert_eq!(live.severity, Severity::Critical);
            assert!(
                live.evidence["first_seen"].is_string(),
                "{name}: no time parsed"
            );
            // The seven earlier file systems on loop0 are gone: reported, but as history.
            for old in f.iter().filter(|x| x.evidence["unmounted_since"] == true) {
                assert_eq!(old.evidence["inode"], 12, "{name}");
                assert_eq!(old.severity, Severity::Warning);
            }
        }
    }

    #[test]
    fn mount_events() {
        assert_eq!(
            parse_mount_event("EXT4-fs (loop0): mounted filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873 r/w with ordered data mode. Quota mode: none."),
            Some(MountEvent::Mounted { device: "loop0".into(), uuid: Some("a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873".into()) })
        );
        assert_eq!(
            parse_mount_event(
                "EXT4-fs (loop0): unmounting filesystem 316b6b15-b3a5-42fd-a28a-56596ddc5e42."
            ),
            Some(MountEvent::Unmounted {
                device: "loop0".into(),
                uuid: Some("316b6b15-b3a5-42fd-a28a-56596ddc5e42".into())
            })
        );
        // Before 6.3 the UUID was not printed.
        assert_eq!(
            parse_mount_event(
                "EXT4-fs (sda1): mounted filesystem with ordered data mode. Opts: (null)"
            ),
            Some(MountEvent::Mounted {
                device: "sda1".into(),
                uuid: None
            })
        );
    }

    #[test]
    fn finds_a_directory_by_inode_without_listing_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/flat");
        std::fs::create_dir_all(&target).unwrap();
        let ino = std::fs::metadata(&target).unwrap().ino();
        assert_eq!(
            find_directory(dir.path(), ino, Duration::from_secs(5)).unwrap(),
            target
        );
        assert!(find_directory(dir.path(), u64::MAX, Duration::from_secs(5)).is_err());
    }
}
