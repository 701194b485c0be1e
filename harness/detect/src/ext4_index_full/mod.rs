//! `ext4-index-full`: ext4 refused to add an entry to a directory because its htree index is
//! at the maximum depth (2 levels without `large_dir`, 3 with). The kernel says so in its log,
//! in bundles (one per failed create, rate-limited):
//!
//! ```text
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2
//! EXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem
//! ```
//!
//! The log is read as a stream and folded as it goes ([`fold`]): one finding per file system
//! and directory, with the count and the first and last time. Each says whether the device
//! still holds that file system ([`device`]): a live problem is critical and names the
//! directory's path, found within a time bound; history is a warning that says so.
//! `--since` keeps only recent warnings (NPD's kernel monitor looks back 5 minutes).

pub mod device;
pub mod findings;
pub mod fold;
pub mod parse;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::finding::{Finding, Severity};
use crate::kernel_log::{self, LogLine, Origin, Window};
use crate::{CheckInput, DetectError, Detector};
use device::DeviceNow;
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};

pub use findings::find_directory;
pub use parse::{parse_mount_event, parse_warning, MountEvent, Warning};

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
        let mut scan = Scan::new(Origin::of(input), kernel_log::window(input));
        kernel_log::for_each(input, |line| scan.push(&line))?;
        Ok(scan.findings(&input.proc_root, PATH_SEARCH_BUDGET).into())
    }

    fn reads_kernel_log(&self) -> bool {
        true
    }
}

/// The detector over a stream of lines: [`Scan::push`] each, then [`Scan::findings`].
pub struct Scan {
    origin: Origin,
    fold: fold::Fold,
}

impl Scan {
    pub fn new(origin: Origin, window: Option<Window>) -> Scan {
        Scan {
            origin,
            fold: fold::Fold::new(origin, window),
        }
    }

    pub fn push(&mut self, line: &LogLine) -> Result<(), DetectError> {
        self.fold.push(line).map_err(DetectError::Usage)
    }

    /// One finding per file system and directory, judged against this node now (its mount
    /// table under `proc_root`, its devices' superblocks).
    pub fn findings(self, proc_root: &Path, path_budget: Duration) -> Vec<Finding> {
        let untracked = self.fold.untracked;
        let folded = self.fold.finish();
        let mounts = if folded.is_empty() {
            Vec::new()
        } else {
            read_mounts(proc_root)
        };
        // Several directories may share a device: look it up (sysfs, superblock) once.
        let mut devices: HashMap<String, DeviceNow> = HashMap::new();
        let mut out: Vec<Finding> = folded
            .iter()
            .map(|f| {
                let dev = devices
                    .entry(f.device.clone())
                    .or_insert_with(|| DeviceNow::look_up(&f.device, &mounts));
                let holds = device::judge(f, dev, self.origin);
                findings::finding(f, dev, &holds, self.origin, path_budget)
            })
            .collect();
        if untracked > 0 {
            out.push(Finding::new(
                NAME,
                Severity::Warning,
                "kernel log",
                format!(
                    "{untracked} more index-full warnings name directories beyond the first {} itemised above",
                    fold::MAX_DIRECTORIES
                ),
                "read the kernel log for the rest (grep 'index full')",
            ));
        }
        out
    }
}

/// Findings for lines of this boot's live kernel log (a scenario passes the records since its
/// marker), with no `--since` window.
pub fn findings(lines: &[LogLine], proc_root: &Path, path_budget: Duration) -> Vec<Finding> {
    let mut scan = Scan::new(Origin::Live, None);
    for l in lines {
        // Without a window, pushing cannot fail.
        let _ = scan.push(l);
    }
    scan.findings(proc_root, path_budget)
}

/// This mount namespace's mounts; none when the table cannot be read.
fn read_mounts(proc_root: &Path) -> Vec<MountInfo> {
    read_mountinfo(proc_root, None).unwrap_or_else(|e| {
        tracing::debug!("no mount table: {e}");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ext4/")).join(name)
    }

    fn check(input: &CheckInput) -> Vec<Finding> {
        Ext4IndexFull.check(input).unwrap().findings
    }

    /// The issue's complaint, on a real capture: the seven file systems loop0 held before are
    /// history, one finding each that says so and names its UUID; none is critical (the demo
    /// file system's loop device is long gone).
    #[test]
    fn a_real_capture_reports_history_as_history() {
        let no_proc = tempfile::tempdir().unwrap();
        for name in ["kmsg-dmesg.txt", "kmsg-journalctl-k.txt"] {
            let f = check(&CheckInput {
                kmsg_file: Some(fixture(name)),
                proc_root: no_proc.path().to_path_buf(),
                ..CheckInput::default()
            });
            assert_eq!(f.len(), 8, "{name}: {f:#?}");
            let subjects: std::collections::HashSet<_> = f.iter().map(|x| &x.subject).collect();
            assert_eq!(
                subjects.len(),
                8,
                "subjects tell the findings apart: {subjects:?}"
            );
            // The seven the log shows unmounted; the eighth depends on this machine's loop0.
            let history: Vec<_> = f
                .iter()
                .filter(|x| x.evidence["unmounted_since"] == true)
                .collect();
            assert_eq!(history.len(), 7, "{name}");
            for h in history {
                assert_eq!(h.evidence["history"], true);
                assert_eq!(h.severity, Severity::Warning);
                assert!(h.message.contains("history: "), "{}", h.message);
                assert!(h.remedy.contains("UUID="), "{}", h.remedy);
            }
            assert!(f.iter().all(|x| x.severity == Severity::Warning), "{f:#?}");
        }
    }

    #[test]
    fn the_scenario_entry_point_still_folds() {
        let seed = "EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2\nEXT4-fs warning (device md1): ext4_dx_add_entry:2384: Large directory feature is not enabled on this filesystem\n".repeat(4);
        let lines = kernel_log::parse_capture(&seed);
        let f = findings(&lines, Path::new("/proc"), Duration::from_millis(10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["count"], 4);
        assert_eq!(f[0].evidence["inode"], 211566352);
        assert_eq!(f[0].evidence["large_dir_disabled"], true);
    }

    #[test]
    fn malformed_lines_make_no_findings() {
        let lines = kernel_log::parse_capture(
            "EXT4-fs warning (device ): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2
EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :0
EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :4294967295
EXT4-fs warning (device md10 ; rm -rf /): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2
",
        );
        assert_eq!(findings(&lines, Path::new("/proc"), Duration::ZERO), []);
    }
}
