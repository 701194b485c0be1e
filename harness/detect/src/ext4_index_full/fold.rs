//! Folding the log as it streams by: one record per file system and directory, however many
//! warnings the kernel printed, and the file systems' history on each device name.
//!
//! Device names are reused (loop devices, a disk moved to another slot), so a warning belongs
//! to the file system mounted on its device at the time: each `mounted filesystem` line on a
//! device starts a new one there, and an `unmounting filesystem` line ends it. The UUID those
//! lines carry (Linux 6.3 and later) names it; an unmount line also names the file system
//! whose mount line has already scrolled out of the log.

use std::collections::{BTreeMap, HashMap};

use super::parse::{parse_mount_event, parse_warning, MountEvent, Warning};
use crate::kernel_log::{LogLine, Origin, Window};

/// Directories tracked at most; more are counted, not itemised, so memory stays bounded
/// whatever the log holds.
pub const MAX_DIRECTORIES: usize = 10_000;

/// A time as the log wrote it.
pub type When = Option<String>;

/// One directory on one file system, as the log tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub device: String,
    /// The file system's UUID, when the log names it.
    pub uuid: Option<String>,
    pub inode: Option<u64>,
    pub level: Option<u32>,
    /// Index-full warnings (inside the `--since` window).
    pub count: u64,
    /// `ext4_dx_add_entry:LINE` values seen (they move between kernels).
    pub source_lines: Vec<u32>,
    pub large_dir_disabled: bool,
    pub first_seen: When,
    pub last_seen: When,
    /// The log shows the file system unmounted from the device, or another one mounted
    /// there, after these warnings.
    pub ended_in_log: bool,
}

/// A file system's stretch on a device: from its mount line (or the start of the log) to its
/// unmount line or the next mount.
#[derive(Debug, Default)]
struct Tenure {
    uuid: Option<String>,
    ended: bool,
    /// Directories folded under it; an ended tenure with none is forgotten.
    dirs: usize,
}

/// One device name's file systems, in log order: the current one, and those directories
/// belong to. Everything else is dropped, so memory follows the directories, not the number
/// of mounts in the log.
#[derive(Debug, Default)]
struct DeviceLog {
    tenures: BTreeMap<u64, Tenure>,
    next_id: u64,
}

impl DeviceLog {
    fn last(&mut self) -> Option<(u64, &mut Tenure)> {
        self.tenures.iter_mut().next_back().map(|(id, t)| (*id, t))
    }

    /// A new file system on the device, the current one ending.
    fn start(&mut self, uuid: Option<String>) -> u64 {
        self.end_current();
        let id = self.next_id;
        self.next_id += 1;
        self.tenures.insert(
            id,
            Tenure {
                uuid,
                ..Tenure::default()
            },
        );
        id
    }

    fn end_current(&mut self) {
        if let Some((id, t)) = self.last() {
            t.ended = true;
            if t.dirs == 0 {
                self.tenures.remove(&id);
            }
        }
    }

    /// The tenure a warning belongs to: the current one, or a new one when the current one
    /// has ended (the mount line of what came next is not in the log).
    fn for_warning(&mut self) -> u64 {
        match self.last() {
            Some((id, t)) if !t.ended => id,
            _ => self.start(None),
        }
    }

    fn unmounted(&mut self, uuid: Option<String>) {
        match self.last() {
            // The mount line scrolled out (or predates 6.3): the unmount names it.
            Some((_, cur)) if !cur.ended && (cur.uuid.is_none() || cur.uuid == uuid) => {
                cur.uuid = cur.uuid.take().or(uuid);
                self.end_current();
            }
            // An unmount whose mount the log does not show: nothing refers to it.
            _ => {}
        }
    }

    /// Whether the log shows the file system of tenure `id` gone from the device: its latest
    /// tenure (remounts of one UUID are one file system) has ended.
    fn ended(&self, id: u64) -> bool {
        let t = &self.tenures[&id];
        match &t.uuid {
            Some(u) => self
                .tenures
                .values()
                .rev()
                .find(|x| x.uuid.as_ref() == Some(u))
                .is_none_or(|x| x.ended),
            None => t.ended,
        }
    }
}

#[derive(Debug)]
struct Dir {
    /// Which tracked directory this was, in order of first warning: findings come out in the
    /// order the log first mentions them.
    order: usize,
    count: u64,
    level: Option<u32>,
    source_lines: Vec<u32>,
    large_dir_disabled: bool,
    first_seen: When,
    last_seen: When,
}

/// (device, tenure id on that device, inode)
type Key = (String, u64, Option<u64>);

/// Device names tracked at most (a log naming more is not from one node's block devices).
pub const MAX_DEVICES: usize = 1024;

/// The streaming fold. Feed it every line ([`Fold::push`]), then [`Fold::finish`].
#[derive(Debug)]
pub struct Fold {
    origin: Origin,
    window: Option<Window>,
    devices: HashMap<String, DeviceLog>,
    dirs: BTreeMap<Key, Dir>,
    /// The companion line names no inode: it belongs to the last index-full line on its
    /// device (`None` when that one fell outside the window).
    last_on_device: HashMap<String, Option<Key>>,
    /// Warnings about directories past [`MAX_DIRECTORIES`].
    pub untracked: u64,
}

impl Fold {
    pub fn new(origin: Origin, window: Option<Window>) -> Fold {
        Fold {
            origin,
            window,
            devices: HashMap::new(),
            dirs: BTreeMap::new(),
            last_on_device: HashMap::new(),
            untracked: 0,
        }
    }

    /// Takes one line. An error means `--since` cannot be applied to this log.
    pub fn push(&mut self, line: &LogLine) -> Result<(), String> {
        if !line.message.contains("EXT4-fs") {
            return Ok(());
        }
        if let Some(event) = parse_mount_event(&line.message) {
            self.mount_event(event);
            return Ok(());
        }
        match parse_warning(&line.message) {
            Some(Warning::IndexFull {
                device,
                inode,
                level,
                line: source_line,
            }) => {
                let recent = match &self.window {
                    Some(w) => w.admits(line.stamp(), self.origin)?,
                    None => true,
                };
                let key = if recent {
                    self.device(&device)
                        .map(|d| (device.clone(), d.for_warning(), inode))
                } else {
                    None
                };
                let key = key.filter(|k| {
                    let room = self.dirs.len() < MAX_DIRECTORIES || self.dirs.contains_key(k);
                    self.untracked += u64::from(!room);
                    room
                });
                if let Some(key) = &key {
                    let order = self.dirs.len();
                    if !self.dirs.contains_key(key) {
                        let log = self.devices.get_mut(&key.0).expect("tracked device");
                        log.tenures.get_mut(&key.1).expect("current tenure").dirs += 1;
                    }
                    let d = self.dirs.entry(key.clone()).or_insert_with(|| Dir {
                        order,
                        count: 0,
                        level,
                        source_lines: Vec::new(),
                        large_dir_disabled: false,
                        first_seen: line.when.clone(),
                        last_seen: None,
                    });
                    d.count += 1;
                    d.level = d.level.or(level);
                    // A handful at most: one per kernel build that logged here.
                    if !d.source_lines.contains(&source_line) && d.source_lines.len() < 8 {
                        d.source_lines.push(source_line);
                    }
                    d.last_seen.clone_from(&line.when);
                }
                self.last_on_device.insert(device, key);
            }
            Some(Warning::LargeDirDisabled { device, .. }) => {
                let key = self.last_on_device.get(&device).cloned().flatten();
                if let Some(d) = key.and_then(|k| self.dirs.get_mut(&k)) {
                    d.large_dir_disabled = true;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The log of `device`, unless [`MAX_DEVICES`] are tracked already.
    fn device(&mut self, device: &str) -> Option<&mut DeviceLog> {
        if !self.devices.contains_key(device) {
            if self.devices.len() >= MAX_DEVICES {
                self.untracked += 1;
                return None;
            }
            self.devices
                .insert(device.to_string(), DeviceLog::default());
        }
        self.devices.get_mut(device)
    }

    fn mount_event(&mut self, event: MountEvent) {
        match event {
            MountEvent::Mounted { device, uuid } => {
                if let Some(d) = self.device(&device) {
                    d.start(uuid);
                }
            }
            MountEvent::Unmounted { device, uuid } => {
                if let Some(d) = self.device(&device) {
                    d.unmounted(uuid);
                }
            }
        }
    }

    /// One record per device, file system and directory: tenures of the same UUID on a
    /// device (remounts) are one file system.
    pub fn finish(self) -> Vec<Folded> {
        let mut out: BTreeMap<(String, FsName, Option<u64>), (usize, Folded)> = BTreeMap::new();
        let mut dirs: Vec<(Key, Dir)> = self.dirs.into_iter().collect();
        dirs.sort_by_key(|(_, d)| d.order);
        for ((device, tenure, inode), d) in dirs {
            let log = &self.devices[&device];
            let uuid = log.tenures[&tenure].uuid.clone();
            let ended = log.ended(tenure);
            let name = match &uuid {
                Some(u) => FsName::Uuid(u.clone()),
                None => FsName::Tenure(tenure),
            };
            let key = (device.clone(), name, inode);
            match out.get_mut(&key) {
                // Tenures come in log order: a later one extends the record.
                Some((_, f)) => {
                    f.count += d.count;
                    f.level = f.level.or(d.level);
                    for l in d.source_lines {
                        if !f.source_lines.contains(&l) {
                            f.source_lines.push(l);
                        }
                    }
                    f.large_dir_disabled |= d.large_dir_disabled;
                    f.last_seen = d.last_seen;
                }
                None => {
                    out.insert(
                        key,
                        (
                            d.order,
                            Folded {
                                device,
                                uuid,
                                inode,
                                level: d.level,
                                count: d.count,
                                source_lines: d.source_lines,
                                large_dir_disabled: d.large_dir_disabled,
                                first_seen: d.first_seen,
                                last_seen: d.last_seen,
                                ended_in_log: ended,
                            },
                        ),
                    );
                }
            }
        }
        let mut out: Vec<(usize, Folded)> = out.into_values().collect();
        out.sort_by_key(|(order, _)| *order);
        out.into_iter().map(|(_, f)| f).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FsName {
    Uuid(String),
    Tenure(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_log;
    use std::path::PathBuf;
    use std::time::Duration;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ext4/")).join(name)
    }

    fn fold(lines: &[LogLine], window: Option<Window>) -> Vec<Folded> {
        let mut f = Fold::new(Origin::Capture, window);
        for l in lines {
            f.push(l).unwrap();
        }
        f.finish()
    }

    /// Real captures (kernel 6.18.44; `dmesg`, `dmesg -T`, `journalctl -k`, precise): the last
    /// 200 lines, taken while the demo file system a4c5c1b7... (directory inode 13) was
    /// mounted on loop0, after seven earlier file systems on the same loop0 had each filled
    /// their inode 12 and been unmounted.
    #[test]
    fn real_captures_fold_to_one_record_per_file_system_and_directory() {
        for name in [
            "kmsg-dmesg.txt",
            "kmsg-dmesg-T.txt",
            "kmsg-journalctl-k.txt",
            "kmsg-journalctl-k-precise.txt",
        ] {
            let lines = kernel_log::read_capture(&fixture(name)).unwrap();
            let warnings = lines
                .iter()
                .filter(|l| l.message.contains("index full"))
                .count() as u64;
            let f = fold(&lines, None);
            assert_eq!(f.len(), 8, "{name}: {f:#?}");
            assert_eq!(f.iter().map(|x| x.count).sum::<u64>(), warnings, "{name}");
            let live: Vec<_> = f.iter().filter(|x| !x.ended_in_log).collect();
            assert_eq!(live.len(), 1, "{name}");
            let live = live[0];
            assert_eq!(live.inode, Some(13));
            assert_eq!(
                live.uuid.as_deref(),
                Some("a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873")
            );
            assert_eq!(live.count, 5, "{name}");
            assert!(live.large_dir_disabled);
            assert_eq!(live.source_lines, [2528]);
            let stamp = |w: &When| w.as_deref().and_then(kernel_log::time::parse_stamp);
            assert!(stamp(&live.first_seen).is_some(), "{name}: no time parsed");
            assert!(stamp(&live.first_seen) <= stamp(&live.last_seen), "{name}");
            let old: Vec<_> = f.iter().filter(|x| x.ended_in_log).collect();
            assert!(old.iter().all(|x| x.inode == Some(12)), "{name}");
            // Every file system is named, the first one by its unmount line only.
            assert!(old.iter().all(|x| x.uuid.is_some()), "{name}: {old:#?}");
            assert!(old
                .iter()
                .any(|x| x.uuid.as_deref() == Some("390c20a9-ff78-4885-84af-4b94ca02a2ff")));
        }
    }

    #[test]
    fn since_keeps_only_recent_warnings() {
        let lines = kernel_log::read_capture(&fixture("kmsg-dmesg.txt")).unwrap();
        let last = lines.iter().rev().find_map(|l| l.stamp()).unwrap();
        let kernel_log::Stamp::SinceBoot(end) = last else {
            panic!("dmesg times are since boot")
        };
        // A window that ends at the capture's last line and reaches back 10 s holds the
        // live file system's warnings only; 1 h holds everything.
        let at = |since| Some(Window::at(Duration::from_secs(since), end, 0));
        let recent = fold(&lines, at(10));
        assert_eq!(recent.len(), 1, "{recent:#?}");
        assert_eq!(recent[0].inode, Some(13));
        assert_eq!(fold(&lines, at(3600)).len(), 8);
        // The same capture read after a reboot cannot be placed.
        let mut f = Fold::new(
            Origin::Capture,
            Some(Window::at(
                Duration::from_secs(60),
                Duration::from_secs(5),
                0,
            )),
        );
        let err = lines.iter().find_map(|l| f.push(l).err()).unwrap();
        assert!(err.contains("another boot"), "{err}");
    }

    #[test]
    fn remounts_of_one_file_system_fold_together() {
        let text = "\
[ 1.0] EXT4-fs (loop0): mounted filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873 r/w without journal. Quota mode: none.
[ 2.0] EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2
[ 3.0] EXT4-fs (loop0): unmounting filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873.
[ 4.0] EXT4-fs (loop0): mounted filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873 r/w without journal. Quota mode: none.
[ 5.0] EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2
[ 6.0] EXT4-fs (loop0): unmounting filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873.
[ 7.0] EXT4-fs (loop0): mounted filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873 r/w without journal. Quota mode: none.
";
        let f = fold(&kernel_log::parse_capture(text), None);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].count, 2);
        assert_eq!(f[0].first_seen.as_deref(), Some("2.0"));
        assert_eq!(f[0].last_seen.as_deref(), Some("5.0"));
        assert!(!f[0].ended_in_log, "mounted again at the end");
    }

    #[test]
    fn memory_is_bounded_by_directories_not_lines() {
        let mut f = Fold::new(Origin::Capture, None);
        for ino in 1..=(MAX_DIRECTORIES as u64 + 5) {
            let l = kernel_log::parse_line(&format!("[ 1.0] EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: {ino}) index full, reach max htree level :2"));
            f.push(&l).unwrap();
        }
        assert_eq!(f.untracked, 5);
        // Mounts and unmounts without warnings leave nothing behind.
        for _ in 0..1000 {
            for l in [
                "[ 2.0] EXT4-fs (loop0): mounted filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873 r/w without journal. Quota mode: none.",
                "[ 3.0] EXT4-fs (loop0): unmounting filesystem a4c5c1b7-7e97-4a27-9dcb-f5bdd8249873.",
            ] {
                f.push(&kernel_log::parse_line(l)).unwrap();
            }
        }
        assert_eq!(
            f.devices["loop0"].tenures.len(),
            1,
            "the one with directories"
        );
        assert_eq!(f.finish().len(), MAX_DIRECTORIES);
    }
}
