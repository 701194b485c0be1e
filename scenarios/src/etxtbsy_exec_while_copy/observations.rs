//! What the scenario observes around the copier: the path while the copier is stopped between
//! its two steps, and the old process, the path and a fresh exec afterwards.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use faultline_sys::ChildGroup;

use super::host_bin::{read_version, HostBin};

/// What the path looked like while the copier was stopped between its two steps.
pub(super) struct Window {
    pub(super) inode: Option<u64>,
    /// When the path is missing: what an exec of it got (the core_pattern helper's fate).
    pub(super) exec_error: Option<String>,
}

impl Window {
    pub(super) fn probe(path: &Path) -> Window {
        match fs::metadata(path) {
            Ok(m) => Window {
                inode: Some(m.ino()),
                exec_error: None,
            },
            Err(_) => Window {
                inode: None,
                exec_error: match Command::new(path).stdin(Stdio::null()).spawn() {
                    Ok(mut child) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
            },
        }
    }
}

/// The state after the copier: the old process, the path, and a fresh exec of the path.
pub(super) struct After {
    pub(super) running_inode: Option<u64>,
    pub(super) running_version: Option<String>,
    pub(super) path_version: Option<String>,
    pub(super) fresh_version: Option<String>,
}

impl After {
    pub(super) fn observe(host: &HostBin) -> anyhow::Result<After> {
        let exe = PathBuf::from(format!("/proc/{}/exe", host.running.pid()));
        let running_inode = fs::metadata(&exe).ok().map(|m| m.ino());
        let running_version = read_version(&exe);
        let path_version = read_version(&host.target);
        let fresh_version = if host.target.exists() {
            let mut cmd = Command::new(&host.target);
            cmd.arg("3600").stdin(Stdio::null());
            match ChildGroup::spawn("cdc fresh", &mut cmd) {
                Ok(mut fresh) => {
                    let v = read_version(Path::new(&format!("/proc/{}/exe", fresh.pid())));
                    fresh.teardown().context("failed to stop the fresh cdc")?;
                    v
                }
                Err(e) => Some(format!("exec failed: {e}")),
            }
        } else {
            None
        };
        Ok(After {
            running_inode,
            running_version,
            path_version,
            fresh_version,
        })
    }
}
