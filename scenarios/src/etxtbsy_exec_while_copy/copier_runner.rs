//! `--copier`: running a user's copier command against the running binary.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use faultline_detect::busy_binary::CopierOutcome;
use faultline_sys::ChildGroup;

use super::host_bin::HostBin;

const COPIER_DEADLINE: Duration = Duration::from_secs(60);

/// The copier option's check: the command must name both files.
pub(super) fn check_template(template: &str) -> Result<(), String> {
    if template.contains("{src}") && template.contains("{dst}") {
        Ok(())
    } else {
        Err("must contain {src} and {dst}".into())
    }
}

fn shell_safe(path: &Path) -> bool {
    path.to_str().is_some_and(|s| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    })
}

/// Runs the user's copier under `sh -c` with `{src}` and `{dst}` filled in, bounded in time,
/// stderr kept in the variant's directory.
pub(super) fn run_copier(template: &str, host: &HostBin) -> anyhow::Result<CopierOutcome> {
    check_template(template).map_err(|why| anyhow::anyhow!("copier {template:?}: {why}"))?;
    if !shell_safe(&host.src) || !shell_safe(&host.target) {
        bail!("scratch paths need quoting: {}", host.target.display());
    }
    let command = template
        .replace("{src}", &host.src.to_string_lossy())
        .replace("{dst}", &host.target.to_string_lossy());
    let stderr_path = host
        .bin_dir
        .ancestors()
        .nth(3)
        .unwrap_or(&host.bin_dir)
        .join("copier.stderr");
    let stderr = File::create(&stderr_path)
        .with_context(|| format!("failed to create {}", stderr_path.display()))?;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let mut child = ChildGroup::spawn("copier", &mut cmd)
        .with_context(|| format!("failed to start the copier {command:?}"))?;
    let Some(status) = child.wait_timeout(COPIER_DEADLINE)? else {
        child.teardown()?;
        bail!("the copier {command:?} did not finish within {COPIER_DEADLINE:?}");
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    Ok(CopierOutcome::from_exit(status, &stderr))
}
