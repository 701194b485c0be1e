//! Choosing the container runtime under test (`faultline run --runtime SPEC`). The spec is
//! parsed first ([`spec`]; a bad one is a usage error before anything happens), then
//! resolved on the host before any scenario runs:
//! - `system`: containerd, its shims and runc on PATH ([`system`]);
//! - `debian`, `debian:containerd=VERSION`: Debian's containerd and runc fetched into
//!   faultline's cache, never installed ([`debian`]);
//! - `containerd=PATH`, `oci=NAME|PATH` items, after a base or alone.
//!
//! The default is `system` where containerd is on PATH, `debian` otherwise. What ran is
//! recorded by version: `containerd --version` and the first line of `<oci> --version`.

pub mod debian;
pub mod spec;
pub mod system;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use faultline_core::runtime_under_test::{RuntimeUnderTest, RuntimeVersions};
use faultline_sys::path::find_on_path;
use faultline_sys::process::run_bounded;

pub use debian::DebianError;
pub use spec::{Base, Oci, RuntimeSpec, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("--runtime {spec} needs `{name}` on PATH: install it with `apt-get install {package}` (or run ci/setup)")]
    NotOnPath {
        name: String,
        package: String,
        spec: String,
    },
    #[error("{path} is not an executable file")]
    NotExecutable { path: PathBuf },
    #[error("no containerd-shim-runc-v2 in {dir}: containerd's shims must be beside it")]
    NoShim { dir: PathBuf },
    #[error("failed to run `{binary} --version`: {why}")]
    Version { binary: String, why: String },
    #[error(transparent)]
    Debian(#[from] DebianError),
}

/// The default: `system` where containerd is on PATH, `debian` otherwise.
pub fn default_spec() -> RuntimeSpec {
    RuntimeSpec::default_for(find_on_path("containerd").is_some())
}

/// Parses and resolves `text`; `progress` gets a line before each download.
pub fn resolve_str(
    text: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<RuntimeUnderTest, SelectError> {
    resolve(&RuntimeSpec::parse(text)?, progress)
}

/// `system`: containerd and runc on PATH; the shims beside containerd.
pub fn system() -> Result<RuntimeUnderTest, SelectError> {
    resolve(&RuntimeSpec::default_for(true), &mut |_| {})
}

/// Where the base of a spec takes its parts from, the default decided.
enum Source<'a> {
    System,
    Debian(Option<&'a str>),
}

/// Finds (or fetches) containerd and the OCI runtime `spec` names and asks each its version.
pub fn resolve(
    spec: &RuntimeSpec,
    progress: &mut dyn FnMut(&str),
) -> Result<RuntimeUnderTest, SelectError> {
    let from = match &spec.base {
        Base::System => Source::System,
        Base::Debian { containerd } => Source::Debian(containerd.as_deref()),
        Base::Default if find_on_path("containerd").is_some() => Source::System,
        Base::Default => Source::Debian(None),
    };
    let containerd = match (&spec.containerd, &from) {
        (Some(path), _) => system::executable(path)?,
        (None, Source::System) => system::on_path("containerd", &spec.text)?,
        (None, Source::Debian(version)) => debian::containerd(*version, &spec.text, progress)?,
    };
    system::check_shims(&containerd)?;
    let oci = match (&spec.oci, &from) {
        (Some(Oci::Name(name)), _) => system::on_path(name, &spec.text)?,
        (Some(Oci::Path(path)), _) => system::executable(path)?,
        (None, Source::System) => system::on_path("runc", &spec.text)?,
        (None, Source::Debian(_)) => debian::runc(&spec.text, progress)?,
    };
    Ok(RuntimeUnderTest {
        spec: spec.text.clone(),
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
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "exited with {}: {}",
            out.status,
            stderr.lines().next().unwrap_or_default().trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}
