//! The kernel-log lines this detector reads, and nothing that merely looks like them.
//!
//! `ext4_dx_add_entry` (fs/ext4/namei.c) prints, through `ext4_warning()` and so as
//! `EXT4-fs warning (device %s): %s:%d: ...` with the super block's `s_id`:
//!
//! - since Linux 4.13 (upstream commit "ext4: add largedir feature"):
//!   `Directory (ino: %lu) index full, reach max htree level :%d`, where the level is
//!   `ext4_dir_htree_level()`: 2, or 3 with large_dir;
//! - then, without large_dir: `Large directory feature is not enabled on this filesystem`;
//! - before 4.13: `Directory index full!`.
//!
//! `ext4_fill_super` and `ext4_put_super` log `EXT4-fs (%s): mounted filesystem %pU ...` and
//! `unmounting filesystem %pU.` (the UUID and the unmount line came with the upstream commit
//! "ext4: print file system UUID on mount, remount and unmount", Linux 6.3 here; older
//! kernels print `mounted filesystem with ordered data mode` and nothing on unmount).

/// One `ext4_dx_add_entry` warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    IndexFull {
        device: String,
        /// The directory's inode; unknown before 4.13.
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

/// Recognises the warnings `ext4_dx_add_entry` prints when the index is full; `None` for any
/// other line and for a malformed one (empty or implausible device, inode 0 or beyond 32
/// bits, a depth other than 2 or 3).
pub fn parse_warning(message: &str) -> Option<Warning> {
    const PREFIX: &str = "EXT4-fs warning (device ";
    let at = message.find(PREFIX)?;
    let (device, rest) = message[at + PREFIX.len()..].split_once("): ")?;
    let device = valid_device(device)?;
    let (line, text) = rest.strip_prefix("ext4_dx_add_entry:")?.split_once(": ")?;
    let line: u32 = line.parse().ok().filter(|l| *l > 0)?;
    let text = text.trim_end();
    if text == "Large directory feature is not enabled on this filesystem" {
        return Some(Warning::LargeDirDisabled { device, line });
    }
    if text == "Directory index full!" {
        return Some(Warning::IndexFull {
            device,
            inode: None,
            level: None,
            line,
        });
    }
    let (ino, level) = text
        .strip_prefix("Directory (ino: ")?
        .split_once(") index full, reach max htree level :")?;
    // ext4 inode numbers are 32-bit (`s_inodes_count`), and 0 is never an inode.
    let inode: u64 = ino
        .parse()
        .ok()
        .filter(|i| (1..=u32::MAX as u64).contains(i))?;
    let level: u32 = level.parse().ok().filter(|l| matches!(l, 2 | 3))?;
    Some(Warning::IndexFull {
        device,
        inode: Some(inode),
        level: Some(level),
        line,
    })
}

/// `EXT4-fs (loop0): mounted filesystem UUID r/w ...` and `unmounting filesystem UUID.`
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
    const PREFIX: &str = "EXT4-fs (";
    let at = message.find(PREFIX)?;
    let (device, text) = message[at + PREFIX.len()..].split_once("): ")?;
    let device = valid_device(device)?;
    let uuid_after = |prefix: &str| {
        let word = text.strip_prefix(prefix)?.split([' ', '.']).next()?;
        is_uuid(word).then(|| word.to_ascii_lowercase())
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

/// `%pU`: 8-4-4-4-12 hex digits.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A device name as the kernel prints a super block's `s_id` (a `char[32]`): the block
/// device's name (`loop0`, `nvme0n1p2`, `dm-3`, `md127`, `cciss/c0d0p1`). Anything else is
/// not from ext4, and is refused before it reaches a path or a command line.
pub fn valid_device(name: &str) -> Option<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:+!/".contains(c);
    let ok = (1..32).contains(&name.len())
        && name.chars().all(plain)
        && !name.starts_with(['/', '.', '-'])
        && !name.split('/').any(|part| part.is_empty() || part == "..");
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines: md1/2380 from a production node's report, loop0/2528 and 2532 from this
    // machine (6.18), sda1/2006 as 4.9 prints it.
    const MD1: &str = "EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2";
    const LOOP0: &str = "EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2";

    #[test]
    fn parses_real_warnings() {
        assert_eq!(
            parse_warning(MD1),
            Some(Warning::IndexFull {
                device: "md1".into(),
                inode: Some(211566352),
                level: Some(2),
                line: 2380
            })
        );
        assert!(parse_warning(LOOP0).is_some());
        assert_eq!(
            parse_warning("EXT4-fs warning (device loop0): ext4_dx_add_entry:2532: Large directory feature is not enabled on this filesystem"),
            Some(Warning::LargeDirDisabled { device: "loop0".into(), line: 2532 })
        );
        assert!(matches!(
            parse_warning(
                "EXT4-fs warning (device sda1): ext4_dx_add_entry:2006: Directory index full!"
            ),
            Some(Warning::IndexFull {
                inode: None,
                level: None,
                ..
            })
        ));
        assert!(parse_warning("EXT4-fs (loop0): mounted filesystem").is_none());
    }

    /// Each real line with one part broken: none of them is a warning ext4 printed.
    #[test]
    fn rejects_near_misses() {
        for bad in [
            LOOP0.replace("device loop0", "device "),
            LOOP0.replace("ext4_dx_add_entry:2528:", "ext4_dx_add_entry::"),
            LOOP0.replace("level :2", "level :0"),
            LOOP0.replace("level :2", "level :4294967295"),
            LOOP0.replace("level :2", "level :"),
            LOOP0.replace("level :2", "level :2x"),
            LOOP0.replace("ino: 13", "ino: 0"),
            LOOP0.replace("ino: 13", "ino: 4294967296"),
            LOOP0.replace("ino: 13", "ino: -1"),
            LOOP0.replace("ino: 13", "ino: 13 "),
            LOOP0.replace("2528", "0"),
            LOOP0.replace("2528", "x"),
            LOOP0.replace("index full", "index fine"),
            LOOP0.replace("loop0", "md10 ; rm -rf /"),
            LOOP0.replace("loop0", "md10;reboot"),
            LOOP0.replace("loop0", "$(reboot)"),
            LOOP0.replace("loop0", "../../etc/passwd"),
            LOOP0.replace("loop0", "/dev/sda"),
            LOOP0.replace("loop0", &"x".repeat(32)),
            LOOP0.replace("ext4_dx_add_entry", "ext4_add_entry"),
        ] {
            assert_eq!(parse_warning(&bad), None, "{bad}");
        }
        assert!(parse_warning(&LOOP0.replace("loop0", "cciss/c0d0p1")).is_some());
        assert!(parse_warning(&LOOP0.replace("loop0", "dm-3")).is_some());
        assert!(parse_warning(&LOOP0.replace("level :2", "level :3")).is_some());
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
        assert_eq!(
            parse_mount_event("EXT4-fs (): mounted filesystem with ordered data mode."),
            None
        );
        assert!(!is_uuid("a4c5c1b7-7e97-4a27-9dcb-f5bdd824987g"));
    }
}
