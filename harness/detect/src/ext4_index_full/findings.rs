//! From folded log records to findings: severity by whether the device still holds the file
//! system, text that tells the findings apart (device, inode, file system, count, first and
//! last time, now or history), and a remedy whose every word is quoted for the shell.

use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::device::{DeviceNow, Holds};
use super::fold::{Folded, When};
use super::NAME;
use crate::finding::{Finding, Severity};
use crate::kernel_log::{time, Origin};
use faultline_sys::ext4::HTREE_LEVELS_LARGE_DIR;
use faultline_sys::shell;

/// One finding for one folded record.
pub fn finding(
    f: &Folded,
    dev: &DeviceNow,
    holds: &Holds,
    origin: Origin,
    budget: Duration,
) -> Finding {
    let live = matches!(holds, Holds::Yes(_)) && dev.mount_point.is_some();
    let mount_point = dev.mount_point.as_ref().filter(|_| live);
    let (path, path_search) = match (f.inode, mount_point) {
        (Some(ino), Some(mp)) => match find_directory(mp, ino, budget) {
            Ok(p) => (Some(p), "found".to_string()),
            Err(why) => (None, why),
        },
        (None, _) => (
            None,
            "the kernel did not name the inode (Linux < 4.13)".into(),
        ),
        (Some(_), None) => (
            None,
            "not searched: that file system is not mounted here".into(),
        ),
    };
    let ino = f
        .inode
        .map_or("unknown inode".to_string(), |i| format!("inode {i}"));
    let fs = f
        .uuid
        .as_ref()
        .map_or(String::new(), |u| format!(", file system {}", &u[..8]));
    let subject = match (&path, mount_point) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(mp)) => format!("{} ({ino} on {}{fs})", mp.display(), f.device),
        (None, None) => format!("{ino} on {}{fs}", f.device),
    };
    let (severity, state) = match holds {
        Holds::Yes(_) if live => (
            Severity::Critical,
            "creates in it fail now with ENOSPC while blocks and inodes are free".to_string(),
        ),
        Holds::Yes(why) => (
            Severity::Warning,
            format!("{why}, but it is not mounted in this mount namespace; creates will fail again once it is"),
        ),
        Holds::No(why) => (Severity::Warning, format!("history: {why}; nothing fails on this node because of it now")),
        Holds::Unknown(why) => (
            Severity::Warning,
            format!("whether {} still holds that file system is unknown: {why}", f.device),
        ),
    };
    let levels = f
        .level
        .map_or("maximum".to_string(), |l| format!("{l}-level"));
    let message = format!(
        "ext4 directory {ino} on {}{} hit its {levels} htree limit: {} kernel warning{}, {}{}; {state}",
        f.device,
        f.uuid.as_ref().map_or(String::new(), |u| format!(" (file system {u})")),
        f.count,
        if f.count == 1 { "" } else { "s" },
        seen(&f.first_seen, &f.last_seen, origin),
        if f.large_dir_disabled { "; large_dir is not enabled" } else { "" },
    );
    Finding::new(NAME, severity, subject, message, remedy(f, dev, holds)).with_evidence(json!({
        "device": f.device,
        "device_number": dev.majmin,
        "filesystem_uuid": f.uuid,
        "device_uuid_now": dev.uuid.as_ref().ok(),
        "inode": f.inode,
        "level": f.level,
        "count": f.count,
        "kernel_source_lines": f.source_lines,
        "large_dir_disabled": f.large_dir_disabled,
        "first_seen": f.first_seen,
        "last_seen": f.last_seen,
        "last_seen_ago_s": age(&f.last_seen, origin).map(|d| d.as_secs()),
        "unmounted_since": f.ended_in_log,
        "still_holds": holds.as_option(),
        "still_holds_because": holds.reason(),
        "history": matches!(holds, Holds::No(_)),
        "mounted": dev.mount_point.is_some(),
        "mount_point": mount_point,
        "path": path,
        "path_search": path_search,
    }))
}

fn age(when: &When, origin: Origin) -> Option<Duration> {
    time::age(time::parse_stamp(when.as_deref()?)?, origin)
}

/// `first seen 424.886668, last 425.167146 (3 min ago)`.
fn seen(first: &When, last: &When, origin: Origin) -> String {
    let ago = age(last, origin).map_or(String::new(), |d| format!(" ({} ago)", time::human(d)));
    match (first, last) {
        (Some(a), Some(b)) if a == b => format!("at {a}{ago}"),
        (Some(a), Some(b)) => format!("first {a}, last {b}{ago}"),
        _ => "time not logged".to_string(),
    }
}

/// The fix, naming the file system by UUID where the log gives one (tune2fs and e2fsck take
/// `UUID=...`, so a reused device name cannot send the command to another file system), and
/// the device otherwise only when it is known to still hold that file system.
pub fn remedy(f: &Folded, dev: &DeviceNow, holds: &Holds) -> String {
    if f.level == Some(HTREE_LEVELS_LARGE_DIR) {
        return "the directory reached ext4's 3-level maximum even with large_dir: spread its files over subdirectories".into();
    }
    let device = dev.path.to_string_lossy();
    let target = match (&f.uuid, holds) {
        (Some(u), _) => format!("UUID={u}"),
        (None, Holds::No(_)) => {
            return format!(
                "nothing to do on {}: the file system that logged this is gone from it; if it is in use elsewhere, spread the directory's files over subdirectories or enable large_dir there",
                shell::quote(&device)
            )
        }
        (None, _) => device.to_string(),
    };
    let fix = crate::ext4_remedy::fix(Some(&target), false);
    match holds {
        Holds::Unknown(_) if f.uuid.is_none() => format!(
            "first make sure {} still holds that file system (`{}`), then {fix}",
            shell::quote(&device),
            shell::join(["blkid", &device]),
        ),
        Holds::No(_) => format!("wherever that file system is mounted now: {fix}"),
        _ => fix,
    }
}

/// Breadth-first search under `mount_point` for the directory with inode `ino`, staying on
/// that file system and giving up after `budget`. It compares the inode numbers readdir
/// returns, so it never lists the (huge) directory it is looking for.
pub fn find_directory(mount_point: &Path, ino: u64, budget: Duration) -> Result<PathBuf, String> {
    let start = Instant::now();
    let meta = std::fs::metadata(mount_point)
        .map_err(|e| format!("cannot stat {}: {e}", mount_point.display()))?;
    if meta.ino() == ino {
        return Ok(mount_point.to_path_buf());
    }
    let dev = meta.dev();
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
    use crate::ext4_index_full::device::Unread;

    fn folded(device: &str, uuid: Option<&str>) -> Folded {
        Folded {
            device: device.into(),
            uuid: uuid.map(str::to_string),
            inode: Some(12),
            level: Some(2),
            count: 29,
            source_lines: vec![2528],
            large_dir_disabled: true,
            first_seen: Some("424.886668".into()),
            last_seen: Some("425.167146".into()),
            ended_in_log: true,
        }
    }

    fn dev(name: &str) -> DeviceNow {
        DeviceNow {
            name: name.into(),
            path: Path::new("/dev").join(name),
            majmin: None,
            mount_point: None,
            fstype: None,
            uuid: Err(Unread::Failed("ENOENT".into())),
        }
    }

    /// The remedy's commands must reach the shell as the words they were built from, even for
    /// a device name no kernel gives (the parser refuses those; this is the second guard).
    #[test]
    fn every_word_of_every_command_is_quoted() {
        let evil = "md10 ; rm -rf /";
        let unknown = Holds::Unknown("test".into());
        let r = remedy(&folded(evil, None), &dev(evil), &unknown);
        assert!(
            r.contains("`tune2fs -O large_dir '/dev/md10 ; rm -rf /'`"),
            "{r}"
        );
        assert!(r.contains("`e2fsck -fD '/dev/md10 ; rm -rf /'`"), "{r}");
        assert!(r.contains("`blkid '/dev/md10 ; rm -rf /'`"), "{r}");
        // Nowhere unquoted.
        assert!(
            !r.replace("'/dev/md10 ; rm -rf /'", "").contains("md10"),
            "{r}"
        );
        let r = remedy(
            &folded("$(reboot)", None),
            &dev("$(reboot)"),
            &Holds::No("x".into()),
        );
        assert!(r.contains("'/dev/$(reboot)'"), "{r}");
    }

    #[test]
    fn the_remedy_names_the_file_system_not_a_reused_device() {
        let uuid = "390c20a9-ff78-4885-84af-4b94ca02a2ff";
        let r = remedy(
            &folded("loop0", Some(uuid)),
            &dev("loop0"),
            &Holds::No("gone".into()),
        );
        assert!(
            r.contains(&format!("`tune2fs -O large_dir UUID={uuid}`")),
            "{r}"
        );
        assert!(!r.contains("/dev/loop0"), "{r}");
        let r = remedy(
            &folded("loop0", None),
            &dev("loop0"),
            &Holds::No("gone".into()),
        );
        assert!(r.starts_with("nothing to do on /dev/loop0"), "{r}");
        assert!(!r.contains("tune2fs"), "{r}");
    }

    #[test]
    fn the_text_tells_history_from_a_live_problem() {
        let f = folded("loop0", Some("390c20a9-ff78-4885-84af-4b94ca02a2ff"));
        let old = finding(
            &f,
            &dev("loop0"),
            &Holds::No("loop0 now holds another file system".into()),
            Origin::Capture,
            Duration::ZERO,
        );
        assert_eq!(old.severity, Severity::Warning);
        for part in [
            "inode 12 on loop0",
            "390c20a9-ff78-4885-84af-4b94ca02a2ff",
            "29 kernel warnings",
            "first 424.886668, last 425.167146",
            "history: loop0 now holds another file system",
        ] {
            assert!(old.message.contains(part), "{part}: {}", old.message);
        }
        assert_eq!(old.subject, "inode 12 on loop0, file system 390c20a9");
        assert_eq!(old.evidence["count"], 29);
        assert_eq!(old.evidence["history"], true);
        assert_eq!(old.evidence["still_holds"], false);
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
