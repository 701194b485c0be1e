//! `busy-binary`: a file that a process is executing gets replaced, and how.
//!
//! Writing into the inode a process executes fails with ETXTBSY ("Text file busy", os error
//! 26) on most kernels: a DaemonSet that copies its helper binary onto the host with
//! `fs::copy` crashes and crashloops while the host runs that helper (core-dump-handler and
//! `cdc`). On kernels without the write denial the write succeeds and changes code under the
//! running process instead. Unlinking first avoids both but leaves the path missing for a
//! window; a temporary file in the same directory renamed over the path is safe.
//!
//! Two entry points share the findings:
//! - [`classify`] + [`replacement_findings`]: given one copier run (its error, the inode
//!   before and after, the inotify events on the directory from [`DirWatch`]), say which
//!   strategy it used. The scenario `etxtbsy-exec-while-copy` drives this.
//! - `faultline check busy-binary [--path DIR]...` on a live node: files that are executed or
//!   mapped executable while another process holds them open for writing (everywhere, or
//!   under the `--path` directories); and, under the `--path` directories only, processes
//!   whose binary was replaced or removed while they ran (`/proc/PID/exe` ends in
//!   " (deleted)"). A live node shows state, not history: a copier that already failed with
//!   ETXTBSY leaves nothing behind, which is why the replacement itself is classified by the
//!   scenario (`faultline run etxtbsy-exec-while-copy --copier '...'`).

mod classify;
mod live;
mod watch;

use std::path::Path;

use serde_json::json;

pub use classify::{
    classify, Classification, CopierOutcome, DirEvent, Replacement, Strategy, ETXTBSY,
};
pub use live::{executors, replaced_under_running, writers_of_running_files, Running};
pub use watch::{DirWatch, WatchError, WATCH_MASK};

use crate::finding::{Finding, Severity};
use crate::{CheckInput, DetectError, Detector, DetectorReport};
use faultline_sys::proc::STAT;

pub const NAME: &str = "busy-binary";

/// The fix, for every finding about a replacement.
pub fn remedy(path: &Path) -> String {
    format!(
        "write the new version to a temporary file in the same directory as {}, fsync it, then rename(2) it over the path (Rust: tempfile::NamedTempFile::new_in(dir) + persist; shell: cp to DIR/.name.tmp && mv -f); running processes keep the old inode and new execs get the new file",
        path.display()
    )
}

/// Findings for one classified replacement of `path`, executed by `executing` (pids found
/// with [`executors`] before the copier ran). Only the unsafe strategies produce a finding.
pub fn replacement_findings(c: &Classification, path: &Path, executing: &[i32]) -> Vec<Finding> {
    let by = match executing.first() {
        Some(pid) => format!("pid {pid}"),
        None => "a process".to_string(),
    };
    let (severity, message) = match c.strategy {
        Strategy::InPlace if c.errno == Some(ETXTBSY) => (
            Severity::Critical,
            format!(
                "copier replaced {} in place while {by} executes it: Text file busy (os error 26), ETXTBSY risk (an installer that exits on this error crashloops)",
                path.display()
            ),
        ),
        Strategy::InPlace => (
            Severity::Critical,
            format!(
                "copier overwrote {} in place while {by} executes it: the kernel did not refuse the write, so the running code changed under it",
                path.display()
            ),
        ),
        Strategy::UnlinkThenCreate => (
            Severity::Warning,
            format!(
                "copier unlinked {} and created it again: the path was missing for a window (an exec or core_pattern helper started then fails with ENOENT)",
                path.display()
            ),
        ),
        Strategy::AtomicRename | Strategy::Failed => return Vec::new(),
    };
    let mut evidence = c.observed();
    evidence["executing_pids"] = json!(executing);
    let mut finding = Finding::new(
        NAME,
        severity,
        path.display().to_string(),
        message,
        remedy(path),
    )
    .with_evidence(evidence);
    if let Some(pid) = executing.first() {
        finding = finding.with_pid(*pid);
    }
    vec![finding]
}

pub struct BusyBinary;

impl Detector for BusyBinary {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "running binaries or libraries open for writing, and binaries under --path replaced while running"
    }

    fn applicable(&self, input: &CheckInput) -> Result<(), String> {
        if input.proc_root.join("self/maps").exists() {
            Ok(())
        } else {
            Err(format!(
                "needs procfs at {} with /proc/PID/maps",
                input.proc_root.display()
            ))
        }
    }

    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        // /proc shows absolute, symlink-free paths; compare against the same form.
        let mut dirs = Vec::new();
        for dir in &input.paths {
            match dir.canonicalize() {
                Ok(d) if d.is_dir() => dirs.push(d),
                _ => {
                    return Err(DetectError::Usage(format!(
                        "busy-binary: --path {} is not a directory",
                        dir.display()
                    )))
                }
            }
        }
        let snap = input.processes()?;
        let mut gaps = snap.gaps().select(&[STAT]);
        let running = Running::look(&snap, &dirs, &mut gaps);
        let mut findings = writers_of_running_files(&snap, &running, &mut gaps);
        if !dirs.is_empty() {
            findings.extend(replaced_under_running(&running, &dirs));
        }
        Ok(DetectorReport::new(findings, &gaps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classification(strategy: Strategy, errno: Option<i32>) -> Classification {
        Classification {
            strategy,
            error: errno.map(|e| std::io::Error::from_raw_os_error(e).to_string()),
            errno,
            old_inode: 1,
            new_inode: Some(2),
            events: Vec::new(),
        }
    }

    #[test]
    fn only_unsafe_strategies_produce_findings() {
        let path = Path::new("/home/kubernetes/bin/cdc");
        let busy = replacement_findings(
            &classification(Strategy::InPlace, Some(ETXTBSY)),
            path,
            &[42],
        );
        assert_eq!(busy.len(), 1);
        assert_eq!(busy[0].severity, Severity::Critical);
        assert_eq!(busy[0].pid, Some(42));
        assert!(
            busy[0].message.contains("ETXTBSY risk"),
            "{}",
            busy[0].message
        );
        assert!(busy[0].remedy.contains("rename(2)"));
        assert_eq!(busy[0].evidence["strategy"], "in-place");
        assert_eq!(busy[0].evidence["executing_pids"][0], 42);

        let window =
            replacement_findings(&classification(Strategy::UnlinkThenCreate, None), path, &[]);
        assert_eq!(window[0].severity, Severity::Warning);
        assert_eq!(window[0].pid, None);

        assert!(
            replacement_findings(&classification(Strategy::AtomicRename, None), path, &[42])
                .is_empty()
        );
        assert!(replacement_findings(
            &classification(Strategy::Failed, Some(libc::ENOENT)),
            path,
            &[42]
        )
        .is_empty());
    }

    #[test]
    fn check_rejects_a_path_that_is_not_a_directory() {
        let input = CheckInput {
            paths: vec!["/nonexistent/faultline-bin".into()],
            ..CheckInput::default()
        };
        let err = BusyBinary.check(&input).unwrap_err();
        assert!(matches!(err, DetectError::Usage(_)), "{err}");
    }
}
