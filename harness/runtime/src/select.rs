//! Choosing the container runtime under test (`faultline run --runtime SPEC`).
//! `system`: containerd, its shims and runc as found on PATH.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use faultline_core::runtime_under_test::{RuntimeUnderTest, RuntimeVersions};
use faultline_sys::path::find_on_path;
use faultline_sys::process::run_bounded;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("needs `{name}` on PATH for --runtime system: install it with `apt-get install {package}` (or run ci/setup)")]
    NotOnPath {
        name: &'static str,
        package: &'static str,
    },
    #[error("failed to run `{binary} --version`: {why}")]
    Version { binary: String, why: String },
}

/// `system`: containerd and runc on PATH; the shims beside containerd.
pub fn system() -> Result<RuntimeUnderTest, SelectError> {
    let containerd = find_on_path("containerd").ok_or(SelectError::NotOnPath {
        name: "containerd",
        package: "containerd",
    })?;
    let oci = find_on_path("runc").ok_or(SelectError::NotOnPath {
        name: "runc",
        package: "runc",
    })?;
    Ok(RuntimeUnderTest {
        spec: "system".into(),
        versions: RuntimeVersions {
            containerd: version_line(&containerd)?,
            oci: version_line(&oci)?,
        },
        containerd,
        oci,
    })
}

/// The first line of `BINARY --version` (`containerd github.com/containerd/containerd
/// 1.6.20~ds1 1.6.20~ds1-1+deb12u3`, `runc version 1.1.5+ds1`), bounded.
pub fn version_line(binary: &Path) -> Result<String, SelectError> {
    let err = |why: String| SelectError::Version {
        binary: binary.display().to_string(),
        why,
    };
    let mut cmd = Command::new(binary);
    cmd.arg("--version");
    let out = run_bounded("--version", &mut cmd, Duration::from_secs(10))
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("did not finish within 10s".into()))?;
    if !out.status.success() {
        return Err(err(format!("exited with {}", out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}
