//! `ext4-htree-exhaustion`: a workload creates temporary files in one flat directory on ext4
//! until the directory's htree index reaches its maximum depth (2 levels without the
//! `large_dir` feature). From then on creating a file fails with `ENOSPC` although the file
//! system has free blocks and inodes, and the kernel logs, per failure:
//!
//! ```text
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem
//! ```
//!
//! Seen on a Kubernetes node (a public debugging report by Cốc Cốc engineers, "mythical 0-link
//! readable file and other wonkeries", section "unbalanced directory index"): a PHP app's temp
//! dir held 4.7 million files; creates failed now and then, because a name whose hash lands in
//! a leaf block that still has room is created fine (Red Hat solution 29894,
//! <https://access.redhat.com/solutions/29894>). The index is full when
//! its root and one interior block are full; `large_dir` (Linux 4.13, commit e08ac99fa2a2
//! "ext4: add largedir feature") allows a third level.
//!
//! Kept small: 1 KiB blocks give the smallest index (123 root slots x 126 interior slots with
//! metadata_csum), and 255-byte names fill a leaf block with 3 entries, so the index fills
//! after about 20k files in a 24 MiB image. A fixed hash seed makes the count repeatable.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use faultline_core::guard::{Ext4Image, MountedExt4};
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantKind,
    VariantOutcome,
};
use faultline_detect::ext4_index_full::{self, Warning};
use faultline_detect::{htree_capacity, kernel_log};
use faultline_sys::ext4::HtreeLimits;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use serde_json::json;

pub struct Ext4HtreeExhaustion;

faultline_core::variant_kind! {
    enum Kind {
        NoLargeDir = "no-large-dir",
        LargeDir = "large-dir",
    }
}

const BLOCK_SIZE: u32 = 1024;
/// The no-large-dir image: the index fills long before the blocks or inodes run out.
const IMAGE_MIB: u64 = 24;
const IMAGE_INODES: u64 = 24_000;
/// Fixed so that the same names fill the index at the same count on every run.
const HASH_SEED: &str = "6d1f4f6a-0b7e-4c37-9d3c-6a8f1e2b5c01";
/// The longest name ext4 allows: 3 entries (264 bytes each) per 1 KiB leaf block.
const NAME_LEN: usize = 255;
/// Names tried after the first failure, to show that some still succeed.
const PROBES: usize = 1000;
/// Stop the no-large-dir fill here if the index never fills (it fills near 22k).
const FILL_CAP: u64 = 60_000;

impl Scenario for Ext4HtreeExhaustion {
    fn name(&self) -> &'static str {
        "ext4-htree-exhaustion"
    }

    fn summary(&self) -> &'static str {
        "flat ext4 directory without large_dir: htree index full, creates fail with ENOSPC while blocks and inodes are free"
    }

    /// The kernel log says the index is full; htree-capacity says how full it is.
    fn detectors(&self) -> &'static [&'static str] {
        &[ext4_index_full::NAME, htree_capacity::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            Requirement::Filesystem("ext4"),
            Requirement::binary("mkfs.ext4", "e2fsprogs"),
            Requirement::Path {
                path: "/dev/loop-control",
                why: "loop devices (modprobe loop)",
            },
            Requirement::Path {
                path: "/dev/kmsg",
                why: "the kernel log is what proves the index is full",
            },
        ]
    }

    fn variants(&self, kernel: &KernelVersion) -> Vec<Variant> {
        let mut v = vec![Variant::new(
            Kind::NoLargeDir,
            "-O ^large_dir: fill one directory until a create fails",
            Expectation::Reproduced,
        )];
        // large_dir exists from Linux 4.13; older kernels refuse to mount such a file system.
        if kernel.at_least("4.13") {
            v.push(Variant::new(
                Kind::LargeDir,
                "-O large_dir: more files than a 2-level index can hold, all created",
                Expectation::Clean,
            ));
        }
        v
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        match variant.kind()? {
            Kind::NoLargeDir => no_large_dir(ctx),
            Kind::LargeDir => large_dir(ctx),
        }
    }
}

/// The most entries any 2-level index over 1 KiB blocks can reference with our names.
fn two_level_bound() -> u64 {
    let l = HtreeLimits::new(BLOCK_SIZE, true, false);
    l.max_leaf_blocks() * (BLOCK_SIZE as u64 / (8 + NAME_LEN as u64).next_multiple_of(4))
}

fn file_name(prefix: &str, i: u64) -> String {
    let mut name = format!("{prefix}-{i:08}-");
    let pad = NAME_LEN - name.len();
    name.extend(std::iter::repeat_n('x', pad));
    name
}

struct Fs {
    mounted: MountedExt4,
    timings: serde_json::Value,
}

/// A sparse image on the scratch tmpfs, mkfs'd, attached and mounted in our namespace.
fn build(
    ctx: &Context,
    variant: Kind,
    size_mib: u64,
    inodes: u64,
    feature: &str,
) -> anyhow::Result<Fs> {
    let dir = ctx.variant_dir(variant.name())?;
    let image = dir.join("ext4.img");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let t0 = Instant::now();
    Ext4Image::new(size_mib << 20)
        .block_size(BLOCK_SIZE)
        .inodes(inodes)
        .reserved_percent(0)
        .feature(feature)
        .extended(&format!("hash_seed={HASH_SEED}"))
        .create(&image)
        .context("failed to make the ext4 image")?;
    let t1 = Instant::now();
    let mounted =
        MountedExt4::mount(&image, &mnt, None).context("failed to mount the ext4 image")?;
    let t2 = Instant::now();
    ctx.progress(format!(
        "{} on {} mounted at {}",
        image.display(),
        mounted.device().path().display(),
        mnt.display()
    ));
    Ok(Fs {
        mounted,
        timings: json!({
            "image_and_mkfs_ms": ms(t1 - t0),
            "attach_and_mount_ms": ms(t2 - t1),
        }),
    })
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn create(dir: &OwnedFd, name: &str) -> Result<(), Errno> {
    openat(
        dir.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map(drop)
}

fn open_dir(path: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("failed to open {}", path.display()))
}

/// Free blocks and inodes as `statvfs` reports them.
fn free(path: &Path) -> anyhow::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path)
        .with_context(|| format!("failed to statvfs {}", path.display()))?;
    Ok((s.blocks_free(), s.files_free()))
}

/// The last kernel log sequence number before this variant: both variants share the
/// scenario's marker and may get the same loop device.
fn kmsg_position(ctx: &mut Context) -> u64 {
    ctx.kmsg_since_marker().last().map_or(0, |r| r.seq)
}

/// The index-full warnings for `device` since `after` (a sequence number).
fn index_full_warnings(
    ctx: &mut Context,
    after: u64,
    device: &str,
) -> (Vec<kernel_log::LogLine>, usize) {
    let records: Vec<_> = ctx
        .kmsg_since_marker()
        .into_iter()
        .filter(|r| r.seq > after)
        .collect();
    let lines = kernel_log::from_records(&records);
    let count = lines
        .iter()
        .filter(|l| {
            matches!(ext4_index_full::parse_warning(&l.message),
                Some(Warning::IndexFull { device: d, .. }) if d == device)
        })
        .count();
    (lines, count)
}

/// The detector's findings about our device only: other suites share the kernel log.
fn our_findings(lines: &[kernel_log::LogLine], device: &str) -> Vec<faultline_core::Finding> {
    ext4_index_full::findings(
        lines,
        Path::new("/proc"),
        ext4_index_full::PATH_SEARCH_BUDGET,
    )
    .into_iter()
    .filter(|f| f.evidence["device"] == device)
    .collect()
}

/// Creates `tmp-N` names in `dir` until `limit` or the first error: how many, and the error.
fn fill(dir: &OwnedFd, limit: u64) -> (u64, Option<Errno>) {
    for n in 0..limit {
        if let Err(e) = create(dir, &file_name("tmp", n)) {
            return (n, Some(e));
        }
    }
    (limit, None)
}

fn no_large_dir(ctx: &mut Context) -> anyhow::Result<VariantOutcome> {
    let log_from = kmsg_position(ctx);
    let start = Instant::now();
    let fs = build(ctx, Kind::NoLargeDir, IMAGE_MIB, IMAGE_INODES, "^large_dir")?;
    let root = fs.mounted.target().to_path_buf();
    let device = fs.mounted.device().name();
    let flat = root.join("flat");
    std::fs::create_dir(&flat)?;
    let dir = open_dir(&flat)?;

    let t_fill = Instant::now();
    let (created, failure) = fill(&dir, FILL_CAP);
    let fill_ms = ms(t_fill.elapsed());
    let total_ms = ms(start.elapsed());
    let (free_blocks, free_inodes) = free(&flat)?;
    let meta = std::fs::metadata(&flat)?;

    // The report's subtlety: names whose hash lands in a leaf with room are still created.
    let probes_created = (0..PROBES as u64)
        .filter(|&i| create(&dir, &file_name("probe", i)).is_ok())
        .count();

    let t_assess = Instant::now();
    let capacity = htree_capacity::assess(&flat).context("htree-capacity on the full directory")?;
    let assess_ms = ms(t_assess.elapsed());
    let fresh = root.join("fresh");
    std::fs::create_dir(&fresh)?;
    let fresh_fd = open_dir(&fresh)?;
    for i in 0..100 {
        create(&fresh_fd, &file_name("fresh", i)).context("creating in a fresh directory")?;
    }
    let fresh_capacity =
        htree_capacity::assess(&fresh).context("htree-capacity on a fresh directory")?;

    let (lines, warnings) = index_full_warnings(ctx, log_from, &device);
    let mut findings = our_findings(&lines, &device);
    findings.extend(capacity.finding());
    let enospc = failure == Some(Errno::ENOSPC);
    let reproduced = enospc && free_blocks > 0 && free_inodes > 0 && warnings > 0;
    let observed = json!({
        "device": device,
        "directory_inode": meta.ino(),
        "files_created": created,
        "failed_with": failure.map(|e| format!("{e:?} ({})", e.desc())),
        "dir_size": meta.size(),
        "dir_blocks": meta.size() / BLOCK_SIZE as u64,
        "free_blocks": free_blocks,
        "free_inodes": free_inodes,
        "image_size": IMAGE_MIB << 20,
        "index_full_warnings": warnings,
        "probes_tried_after_failure": PROBES,
        "probes_created_after_failure": probes_created,
        "htree_capacity_percent": capacity.percent_used,
        "entries_when_assessed": created + probes_created as u64,
        "htree_capacity": capacity,
        "fresh_dir_htree_capacity_percent": fresh_capacity.percent_used,
        "timings": {
            "htree_capacity_ms": assess_ms,
            "fill_ms": fill_ms,
            "image_mkfs_mount_fill_ms": total_ms,
            "setup": fs.timings,
        },
    });
    drop(dir);
    drop(fresh_fd);
    let mut mounted = fs.mounted;
    mounted.teardown().context("failed to unmount and detach")?;
    Ok(VariantOutcome {
        reproduced,
        observed,
        findings,
    })
}

fn large_dir(ctx: &mut Context) -> anyhow::Result<VariantOutcome> {
    let log_from = kmsg_position(ctx);
    let target = two_level_bound();
    let fs = build(ctx, Kind::LargeDir, 64, target + 2_000, "large_dir")?;
    let root = fs.mounted.target().to_path_buf();
    let device = fs.mounted.device().name();
    let flat = root.join("flat");
    std::fs::create_dir(&flat)?;
    let dir = open_dir(&flat)?;
    let t_fill = Instant::now();
    let (created, failure) = fill(&dir, target);
    let fill_ms = ms(t_fill.elapsed());
    let (free_blocks, free_inodes) = free(&flat)?;
    let meta = std::fs::metadata(&flat)?;
    let capacity =
        htree_capacity::assess(&flat).context("htree-capacity on the large_dir directory")?;
    let (lines, warnings) = index_full_warnings(ctx, log_from, &device);
    let mut findings = our_findings(&lines, &device);
    findings.extend(capacity.finding());
    let reproduced =
        (failure == Some(Errno::ENOSPC) && free_blocks > 0 && free_inodes > 0) || warnings > 0;
    let observed = json!({
        "device": device,
        "files_target": target,
        "files_target_why": "more entries than any 2-level index over 1 KiB blocks can reference with 255-byte names",
        "files_created": created,
        "failed_with": failure.map(|e| format!("{e:?} ({})", e.desc())),
        "dir_size": meta.size(),
        "free_blocks": free_blocks,
        "free_inodes": free_inodes,
        "index_full_warnings": warnings,
        "htree_capacity_percent": capacity.percent_used,
        "htree_capacity": capacity,
        "timings": {"fill_ms": fill_ms, "setup": fs.timings},
    });
    drop(dir);
    let mut mounted = fs.mounted;
    mounted.teardown().context("failed to unmount and detach")?;
    Ok(VariantOutcome {
        reproduced,
        observed,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_as_long_as_ext4_allows() {
        assert_eq!(file_name("tmp", 7).len(), 255);
        assert_ne!(file_name("tmp", 7), file_name("tmp", 8));
    }

    #[test]
    fn large_dir_target_exceeds_any_two_level_index() {
        // 123 root slots x 126 interior slots x 3 entries of 264 bytes per 1 KiB leaf.
        assert_eq!(two_level_bound(), 123 * 126 * 3);
    }
}
