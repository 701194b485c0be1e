//! `htree-capacity`: how close an ext4 directory is to a full htree index, before the kernel
//! starts refusing creates (see `ext4-index-full`). Answered without listing the directory, so
//! it takes milliseconds on one with millions of entries:
//!
//! - block size and features (`large_dir`, `metadata_csum`) from the superblock, read from the
//!   block device at offset 1024;
//! - the directory's size (`st_size`): the number of directory blocks;
//! - when the device is readable, the directory's first block (`dx_root`, located with
//!   FIEMAP): how many of the root's index slots are used and how deep the index is.
//!
//! The estimate divides the directory's blocks by the number expected when the index fills
//! (ln 2 of the theoretical maximum, see [`HtreeLimits::expected_blocks_when_full`]). A root
//! whose slots are all used at the maximum depth means the next interior split fails: 100%.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::report::Measurement;
use crate::DetectorReport;
use crate::{CheckInput, DetectError, Detector};
use faultline_sys::ext4::{DxRoot, Ext4Error, HtreeLimits, Superblock};

pub const NAME: &str = "htree-capacity";
pub const WARN_PERCENT: f64 = 75.0;
pub const CRITICAL_PERCENT: f64 = 95.0;
/// `EXT4_INDEX_FL`: the directory has an htree index.
const EXT4_INDEX_FL: libc::c_long = 0x1000;

pub struct HtreeCapacity;

impl Detector for HtreeCapacity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "how full an ext4 directory's htree index is (--path DIR), from the superblock and the directory's size"
    }

    fn applicable(&self, input: &CheckInput) -> Result<(), String> {
        if input.paths.is_empty() {
            return Err("needs --path DIR (an ext4 directory to assess)".into());
        }
        Ok(())
    }

    /// Every directory's fill is shown, healthy or not: a measurement for each, and a finding
    /// for those past [`WARN_PERCENT`].
    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        if input.paths.is_empty() {
            return Err(DetectError::Usage("htree-capacity needs --path DIR".into()));
        }
        let mut out = DetectorReport::default();
        for path in &input.paths {
            let usage = assess(path)?;
            out.measurements.push(usage.measurement());
            out.findings.extend(usage.finding());
        }
        Ok(out)
    }
}

/// How full one directory's index is.
#[derive(Debug, Clone, Serialize)]
pub struct HtreeUsage {
    pub path: PathBuf,
    pub device: PathBuf,
    pub block_size: u32,
    pub large_dir: bool,
    pub metadata_csum: bool,
    pub indexed: bool,
    pub dir_size: u64,
    pub dir_blocks: u64,
    /// Index levels allowed (root included): 2, or 3 with large_dir.
    pub max_levels: u32,
    pub max_leaf_blocks: u64,
    pub expected_blocks_when_full: u64,
    /// The estimate from the size alone.
    pub size_percent: f64,
    /// Root slots used / available and the depth below the root, when the device was readable.
    pub root_count: Option<u16>,
    pub root_limit: Option<u16>,
    pub indirect_levels: Option<u8>,
    pub root_error: Option<String>,
    /// Where block size and features came from: the device's superblock, or (when the device
    /// cannot be read, as in a container without access to it) statfs and assumed features.
    pub superblock: String,
    /// The figure findings use: the size estimate, raised to the root's fill once the index
    /// is at its maximum depth. Capped at 100.
    pub percent_used: f64,
}

impl HtreeUsage {
    /// Whether the index is full now: creates whose name hashes into a full leaf already
    /// fail.
    pub fn is_full(&self) -> bool {
        self.percent_used >= 100.0
    }

    /// `htree index 0.2% used (399 of ~179227 directory blocks, 2-level limit, large_dir off;
    /// root index 3/123 slots used at depth 2)`.
    pub fn summary(&self) -> String {
        let root = match (self.root_count, self.root_limit, self.indirect_levels) {
            (Some(c), Some(l), Some(i)) => {
                format!("; root index {c}/{l} slots used at depth {}", i as u32 + 1)
            }
            _ => String::new(),
        };
        format!(
            "htree index {:.1}% used ({} of ~{} directory blocks, {}-level limit, large_dir {}{root})",
            self.percent_used,
            self.dir_blocks,
            self.expected_blocks_when_full,
            self.max_levels,
            if self.large_dir { "on" } else { "off" },
        )
    }

    pub fn measurement(&self) -> Measurement {
        Measurement {
            detector: NAME.to_string(),
            subject: self.path.display().to_string(),
            summary: self.summary(),
            values: serde_json::to_value(self).unwrap_or(json!(null)),
        }
    }

    pub fn finding(&self) -> Option<Finding> {
        let severity = if self.percent_used >= CRITICAL_PERCENT {
            Severity::Critical
        } else if self.percent_used >= WARN_PERCENT {
            Severity::Warning
        } else {
            return None;
        };
        let subject = self.path.display().to_string();
        let consequence = if self.is_full() {
            "the index is full: creates fail now with ENOSPC (those whose name hashes into a full leaf) while blocks and inodes are free"
        } else {
            "creates will start failing with ENOSPC when it is full"
        };
        let message = format!(
            "ext4 directory {subject}: {}: {consequence}",
            self.summary()
        );
        // The device can be unknown (no /dev node for it, as inside a pod).
        let device = self.device.to_string_lossy();
        let remedy = crate::ext4_remedy::fix(
            Some(device.as_ref()).filter(|d| !d.is_empty()),
            self.large_dir,
        );
        Some(
            Finding::new(NAME, severity, subject, message, remedy)
                .with_evidence(serde_json::to_value(self).unwrap_or(json!(null))),
        )
    }
}

/// Assesses `dir`. Bad input (not a directory, not ext4) is a usage error.
pub fn assess(dir: &Path) -> Result<HtreeUsage, DetectError> {
    let read_err = |what: String| move |source| DetectError::Read { what, source };
    let meta = std::fs::metadata(dir).map_err(read_err(dir.display().to_string()))?;
    if !meta.is_dir() {
        return Err(DetectError::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let fs = nix::sys::statfs::statfs(dir).map_err(|e| DetectError::Read {
        what: format!("statfs of {}", dir.display()),
        source: e.into(),
    })?;
    if fs.filesystem_type() != nix::sys::statfs::EXT4_SUPER_MAGIC {
        return Err(DetectError::Usage(format!(
            "{} is not on ext4 (file system magic {:#x}); inside a container, pass the directory as the host sees it (e.g. the overlay upperdir)",
            dir.display(),
            fs.filesystem_type().0
        )));
    }
    let device = device_path(meta.dev());
    let read = device.as_ref().map_err(|e| e.to_string()).and_then(|d| {
        Superblock::read(d).map_err(|e| match e {
            Ext4Error::Read { source, .. } => source.to_string(),
            other => other.to_string(),
        })
    });
    let (sb, superblock_source) = match read {
        Ok(sb) => {
            let d = device
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default();
            (sb, format!("read from {d}"))
        }
        Err(why) => {
            let block_size = fs.block_size() as u32;
            (
                Superblock::assumed(block_size),
                format!(
                    "unreadable ({}: {why}); block size {block_size} from statfs, assumed dir_index, metadata_csum and no large_dir",
                    device
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|_| format!("device {}:{}", libc::major(meta.dev()), libc::minor(meta.dev())))
                ),
            )
        }
    };
    let device = device.unwrap_or_default();
    let limits: HtreeLimits = sb.htree();
    let dir_blocks = meta.size() / sb.block_size as u64;
    let expected = limits.expected_blocks_when_full().max(1);
    let size_percent = dir_blocks as f64 * 100.0 / expected as f64;
    let indexed = sb.dir_index() && index_flag(dir).unwrap_or(dir_blocks > 1);
    let (root, root_error) = if indexed {
        match read_root(dir, &device, sb.block_size) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let mut percent = size_percent;
    if let Some(r) = root {
        if r.indirect_levels as u32 + 1 >= limits.max_levels && r.limit > 0 {
            percent = percent.max(r.count as f64 * 100.0 / r.limit as f64);
        }
    }
    if !sb.dir_index() {
        // Without dir_index directories are linear lists: slow, but with no index to fill.
        percent = 0.0;
    }
    Ok(HtreeUsage {
        path: dir.to_path_buf(),
        device,
        block_size: sb.block_size,
        large_dir: sb.large_dir(),
        metadata_csum: sb.metadata_csum(),
        indexed,
        dir_size: meta.size(),
        dir_blocks,
        max_levels: limits.max_levels,
        max_leaf_blocks: limits.max_leaf_blocks(),
        expected_blocks_when_full: expected,
        size_percent: round1(size_percent),
        root_count: root.map(|r| r.count),
        root_limit: root.map(|r| r.limit),
        indirect_levels: root.map(|r| r.indirect_levels),
        root_error,
        superblock: superblock_source,
        percent_used: round1(percent.min(100.0)),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `/dev/NAME` for a device number, through sysfs (the name the kernel gave it).
fn device_path(dev: u64) -> std::io::Result<PathBuf> {
    let uevent = std::fs::read_to_string(format!(
        "/sys/dev/block/{}:{}/uevent",
        libc::major(dev),
        libc::minor(dev)
    ))?;
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .ok_or_else(|| std::io::Error::other("no DEVNAME in uevent"))?;
    let path = PathBuf::from("/dev").join(name);
    if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist in this /dev", path.display()),
        ));
    }
    Ok(path)
}

nix::ioctl_read!(fs_ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_readwrite!(fs_ioc_fiemap, b'f', 11, FiemapHeader);

fn index_flag(dir: &Path) -> Option<bool> {
    let f = std::fs::File::open(dir).ok()?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes an int into `flags`, which is at least that large.
    unsafe { fs_ioc_getflags(f.as_raw_fd(), &mut flags) }.ok()?;
    Some(flags & EXT4_INDEX_FL != 0)
}

/// `struct fiemap` (linux/fiemap.h) followed by room for one `struct fiemap_extent`.
#[repr(C)]
#[derive(Default)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default)]
struct FiemapOne {
    header: FiemapHeader,
    extent: FiemapExtent,
}

const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;

/// Reads the directory's first block from the device: the htree root.
fn read_root(dir: &Path, device: &Path, block_size: u32) -> Result<DxRoot, String> {
    let f = std::fs::File::open(dir).map_err(|e| format!("open: {e}"))?;
    let mut map = FiemapOne::default();
    map.header.fm_length = block_size as u64;
    map.header.fm_extent_count = 1;
    // SAFETY: FS_IOC_FIEMAP reads the header and writes up to fm_extent_count (1) extents
    // right after it, which `FiemapOne` provides in one repr(C) allocation.
    unsafe { fs_ioc_fiemap(f.as_raw_fd(), &mut map.header) }.map_err(|e| format!("FIEMAP: {e}"))?;
    if map.header.fm_mapped_extents == 0 {
        return Err("FIEMAP mapped no block 0".into());
    }
    let e = map.extent;
    if e.fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DATA_INLINE) != 0 || e.fe_logical != 0 {
        return Err(format!(
            "block 0 is not a plain extent (flags {:#x})",
            e.fe_flags
        ));
    }
    // Buffered reads of the block device share the page cache ext4 writes its metadata
    // through, so a mounted file system's recent index changes are visible.
    let block = faultline_sys::ext4::read_at(device, e.fe_physical, block_size as usize)
        .map_err(|err| format!("reading {} at {}: {err}", device.display(), e.fe_physical))?;
    DxRoot::parse(&block).ok_or_else(|| "block 0 is not an htree root".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiemap_layout_matches_linux() {
        assert_eq!(std::mem::size_of::<FiemapHeader>(), 32);
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
    }

    #[test]
    fn rejects_what_is_not_a_directory_on_ext4() {
        let err = assess(Path::new("/proc/self")).unwrap_err();
        assert!(matches!(err, DetectError::Usage(_)), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(assess(file.path()), Err(DetectError::Usage(_))));
    }

    fn usage(percent_used: f64) -> HtreeUsage {
        HtreeUsage {
            path: "/d".into(),
            device: "/dev/loop0".into(),
            block_size: 1024,
            large_dir: false,
            metadata_csum: true,
            indexed: true,
            dir_size: 0,
            dir_blocks: 0,
            max_levels: 2,
            max_leaf_blocks: 15498,
            expected_blocks_when_full: 10742,
            size_percent: 0.0,
            root_count: None,
            root_limit: None,
            indirect_levels: None,
            root_error: None,
            superblock: "read from /dev/loop0".into(),
            percent_used,
        }
    }

    #[test]
    fn severity_thresholds() {
        assert!(usage(74.9).finding().is_none());
        assert_eq!(usage(75.0).finding().unwrap().severity, Severity::Warning);
        assert_eq!(usage(95.0).finding().unwrap().severity, Severity::Critical);
    }

    /// A full index (the root's slots all used at the maximum depth) fails creates already.
    #[test]
    fn a_full_index_fails_now_a_nearly_full_one_will() {
        let full = usage(100.0).finding().unwrap();
        assert!(
            full.message.contains("creates fail now"),
            "{}",
            full.message
        );
        assert!(
            !full.message.contains("will start failing"),
            "{}",
            full.message
        );
        let near = usage(96.0).finding().unwrap();
        assert!(
            near.message.contains("will start failing"),
            "{}",
            near.message
        );
    }

    #[test]
    fn a_healthy_directory_is_measured_not_reported() {
        let u = usage(0.2);
        assert!(u.finding().is_none());
        let m = u.measurement();
        assert_eq!(m.subject, "/d");
        assert!(
            m.summary.starts_with("htree index 0.2% used (0 of ~10742"),
            "{}",
            m.summary
        );
        assert_eq!(m.values["percent_used"], 0.2);
    }

    #[test]
    fn the_device_in_the_remedy_is_one_shell_word() {
        let mut u = usage(99.0);
        u.device = "/dev/md10 ; rm -rf /".into();
        let r = u.finding().unwrap().remedy;
        assert!(
            r.contains("`tune2fs -O large_dir '/dev/md10 ; rm -rf /'`"),
            "{r}"
        );
        assert!(r.contains("`e2fsck -fD '/dev/md10 ; rm -rf /'`"), "{r}");
    }

    #[test]
    fn an_unknown_device_gives_no_empty_word() {
        let mut u = usage(99.0);
        u.device = PathBuf::new();
        let r = u.finding().unwrap().remedy;
        assert!(!r.contains("''"), "{r}");
        assert!(
            r.contains("`e2fsck -fD DEVICE` (the file system's device"),
            "{r}"
        );
    }
}
