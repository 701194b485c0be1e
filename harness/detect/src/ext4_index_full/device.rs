//! Whether a device named in the log still holds the file system that logged the warnings.
//!
//! Device names are reused: `loop0` after a test run, a disk in another slot after a reboot.
//! The evidence, strongest first: the UUID the log gives (mount and unmount lines, Linux 6.3
//! and later) against the UUID in the device's superblock now; the log's own history (an
//! unmount, or another file system mounted there, after the warnings); and, for the live log
//! of this boot, the absence of any mount on that device since the warnings while an ext4
//! file system is mounted there now (every ext4 mount is logged, and the ring buffer drops
//! its oldest records first, so nothing can hide between the warnings and now).

use std::path::{Path, PathBuf};

use super::fold::Folded;
use crate::kernel_log::Origin;
use faultline_sys::ext4::{Ext4Error, Superblock};
use faultline_sys::mountinfo::MountInfo;

/// What this node shows of a device named in the log, now.
#[derive(Debug, Clone)]
pub struct DeviceNow {
    /// As the log names it (`loop0`, `cciss/c0d0p1`).
    pub name: String,
    /// `/dev/NAME`.
    pub path: PathBuf,
    /// `MAJ:MIN`, from sysfs.
    pub majmin: Option<String>,
    /// Where it is mounted in this mount namespace (a mount of its root preferred over a bind
    /// of a subtree), and as what.
    pub mount_point: Option<PathBuf>,
    pub fstype: Option<String>,
    /// The UUID of the ext4 file system on it now, read from its superblock.
    pub uuid: Result<String, Unread>,
}

/// Why the device's superblock gave no UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unread {
    /// It was read and is not ext4 (another file system, or nothing).
    NotExt4(String),
    /// It could not be read (no such device, permission).
    Failed(String),
}

impl DeviceNow {
    pub fn look_up(name: &str, mounts: &[MountInfo]) -> DeviceNow {
        // sysfs spells a `/` in a disk name as `!` (kobject names cannot hold `/`); /dev
        // keeps the `/` (`cciss/c0d0` is /dev/cciss/c0d0, /sys/class/block/cciss!c0d0).
        let path = Path::new("/dev").join(name.replace('!', "/"));
        let majmin =
            std::fs::read_to_string(format!("/sys/class/block/{}/dev", name.replace('/', "!")))
                .ok()
                .map(|s| s.trim().to_string());
        let mine: Vec<&MountInfo> = mounts
            .iter()
            .filter(|m| {
                majmin.as_deref() == Some(m.device().as_str()) || Path::new(&m.source) == path
            })
            .collect();
        let mount = mine.iter().find(|m| !m.is_partial_bind()).or(mine.first());
        let uuid = match Superblock::read(&path) {
            Ok(sb) => Ok(sb.uuid_string()),
            Err(e @ (Ext4Error::BadMagic { .. } | Ext4Error::BadBlockSize { .. })) => {
                Err(Unread::NotExt4(e.to_string()))
            }
            // Shorter than a superblock: a loop device with nothing attached, an empty disk.
            Err(Ext4Error::Read { source, .. })
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Err(Unread::NotExt4(format!("{} is empty", path.display())))
            }
            Err(e) => Err(Unread::Failed(faultline_sys::error_chain(&e))),
        };
        DeviceNow {
            name: name.to_string(),
            path,
            majmin,
            mount_point: mount.map(|m| m.mount_point.clone()),
            fstype: mount.map(|m| m.fstype.clone()),
            uuid,
        }
    }

    /// Mounted now, and by the ext4 driver (which also mounts ext2 and ext3).
    fn ext4_mounted(&self) -> bool {
        self.mount_point.is_some()
            && matches!(self.fstype.as_deref(), Some("ext4" | "ext3" | "ext2"))
    }
}

/// Does the device still hold the file system that logged the warnings?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// Yes; the text says how that is known.
    Yes(String),
    /// No; the text says what shows it.
    No(String),
    /// Cannot tell; the text says why.
    Unknown(String),
}

impl Holds {
    /// `true`, `false` or `null` for JSON.
    pub fn as_option(&self) -> Option<bool> {
        match self {
            Holds::Yes(_) => Some(true),
            Holds::No(_) => Some(false),
            Holds::Unknown(_) => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Holds::Yes(s) | Holds::No(s) | Holds::Unknown(s) => s,
        }
    }
}

pub fn judge(f: &Folded, dev: &DeviceNow, origin: Origin) -> Holds {
    let name = &dev.name;
    match (&f.uuid, &dev.uuid) {
        (Some(logged), Ok(now)) if logged == now => {
            Holds::Yes(format!("the superblock of {name} has the UUID the log names"))
        }
        (Some(_), Ok(now)) => Holds::No(format!(
            "{name} now holds another file system (UUID {now})"
        )),
        (Some(_), Err(Unread::NotExt4(_))) => {
            Holds::No(format!("{name} holds no ext4 file system now"))
        }
        (Some(_), Err(Unread::Failed(_))) if f.ended_in_log => Holds::No(format!(
            "the log shows that file system unmounted from {name} since"
        )),
        (Some(_), Err(Unread::Failed(why))) => {
            Holds::Unknown(format!("cannot read the superblock of {name}: {why}"))
        }
        (None, _) if f.ended_in_log => Holds::No(format!(
            "the log shows that file system unmounted from {name}, or another mounted there, since"
        )),
        (None, _) if origin == Origin::Live && dev.ext4_mounted() => Holds::Yes(format!(
            "the kernel log shows no mount on {name} since the warnings, and ext4 is mounted there"
        )),
        (None, _) if origin == Origin::Live => Holds::Unknown(format!(
            "the log names no UUID and {name} has no ext4 mount in this mount namespace"
        )),
        (None, _) => Holds::Unknown(
            "the capture names no UUID for it (Linux < 6.3, or its mount line is not in the capture)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(uuid: Option<&str>, ended_in_log: bool) -> Folded {
        Folded {
            device: "loop0".into(),
            uuid: uuid.map(str::to_string),
            inode: Some(12),
            level: Some(2),
            count: 3,
            source_lines: vec![2528],
            large_dir_disabled: true,
            first_seen: None,
            last_seen: None,
            ended_in_log,
        }
    }

    fn device(uuid: Result<&str, Unread>, mounted: Option<&str>) -> DeviceNow {
        DeviceNow {
            name: "loop0".into(),
            path: "/dev/loop0".into(),
            majmin: Some("7:0".into()),
            mount_point: mounted.map(|_| PathBuf::from("/mnt")),
            fstype: mounted.map(str::to_string),
            uuid: uuid.map(str::to_string),
        }
    }

    const A: &str = "a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873";
    const B: &str = "390c20a9-ff78-4885-84af-4b94ca02a2ff";

    #[test]
    fn uuid_decides_where_the_log_names_one() {
        let f = folded(Some(A), false);
        assert!(matches!(
            judge(&f, &device(Ok(A), Some("ext4")), Origin::Capture),
            Holds::Yes(_)
        ));
        // Unmounted, but the device still holds it.
        assert!(matches!(
            judge(&folded(Some(A), true), &device(Ok(A), None), Origin::Live),
            Holds::Yes(_)
        ));
        let other = judge(&f, &device(Ok(B), Some("ext4")), Origin::Live);
        assert!(matches!(&other, Holds::No(s) if s.contains(B)), "{other:?}");
        let gone = device(Err(Unread::NotExt4("magic".into())), None);
        assert!(matches!(judge(&f, &gone, Origin::Live), Holds::No(_)));
        let unreadable = device(Err(Unread::Failed("EACCES".into())), None);
        assert!(matches!(
            judge(&f, &unreadable, Origin::Live),
            Holds::Unknown(_)
        ));
        assert!(matches!(
            judge(&folded(Some(A), true), &unreadable, Origin::Live),
            Holds::No(_)
        ));
    }

    #[test]
    fn without_a_uuid_only_the_live_log_can_say_yes() {
        let f = folded(None, false);
        let mounted = device(Ok(A), Some("ext4"));
        assert!(matches!(judge(&f, &mounted, Origin::Live), Holds::Yes(_)));
        assert!(matches!(
            judge(&f, &mounted, Origin::Capture),
            Holds::Unknown(_)
        ));
        assert!(matches!(
            judge(&folded(None, true), &mounted, Origin::Live),
            Holds::No(_)
        ));
        // Another file system type on the device now: ext4 never logged its mount.
        let xfs = device(Err(Unread::NotExt4("magic".into())), Some("xfs"));
        assert!(matches!(judge(&f, &xfs, Origin::Live), Holds::Unknown(_)));
    }

    #[test]
    fn looks_up_a_device_that_does_not_exist() {
        let d = DeviceNow::look_up("faultline-none0", &[]);
        assert_eq!(d.path, PathBuf::from("/dev/faultline-none0"));
        assert_eq!(d.majmin, None);
        assert!(matches!(d.uuid, Err(Unread::Failed(_))));
        assert_eq!(d.mount_point, None);
    }
}
