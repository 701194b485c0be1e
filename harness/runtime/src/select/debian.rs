//! `--runtime debian[:containerd=VERSION]`: Debian's `containerd` (that build, or the
//! candidate) and `runc` (the candidate) fetched with `apt-get download` into faultline's
//! cache (`runtimes/<package>_<version>/`) and unpacked there, never installed. Debian's
//! archive carries more than one build of containerd at once (a point release and a
//! security update), so two of them can run side by side.

use std::path::PathBuf;

use faultline_sys::debian::{self, AptError, Fetch};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("failed to ask apt about {package}")]
    Query {
        package: &'static str,
        #[source]
        source: AptError,
    },
    #[error(
        "the apt lists offer no {package} package, even after apt-get update (is this Debian?)"
    )]
    NotOffered { package: &'static str },
    #[error("--runtime {spec}: Debian's archive has no {package} {wanted}; it offers {package} {offered}")]
    NoVersion {
        spec: String,
        package: &'static str,
        wanted: String,
        offered: String,
    },
    #[error("failed to fetch Debian's {package} {version}")]
    Fetch {
        package: &'static str,
        version: String,
        #[source]
        source: AptError,
    },
    #[error("Debian's {package} {version}, unpacked in {dir}, has no {binary}")]
    NoBinary {
        package: &'static str,
        version: String,
        dir: PathBuf,
        binary: &'static str,
    },
}

/// Debian's containerd `version` (else the candidate): `<cache>/usr/bin/containerd`, with
/// its shims and ctr beside it.
pub fn containerd(
    version: Option<&str>,
    spec: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, DebianError> {
    fetch("containerd", version, spec, "usr/bin/containerd", progress)
}

/// Debian's runc, the candidate: `<cache>/usr/sbin/runc`.
pub fn runc(spec: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, DebianError> {
    fetch("runc", None, spec, "usr/sbin/runc", progress)
}

fn fetch(
    package: &'static str,
    wanted: Option<&str>,
    spec: &str,
    binary: &'static str,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, DebianError> {
    let root = debian::cache_dir().join("runtimes");
    // A build already unpacked needs no apt at all (it may have left the archive since).
    let cached = wanted.filter(|v| debian::cached(&root, &dir_name(package, v)).is_some());
    let version = match cached {
        Some(v) => v.to_string(),
        None => pick_version(package, wanted, spec)?,
    };
    let dir_name = dir_name(package, &version);
    let dir = Fetch {
        root: &root,
        package,
        version: Some(&version),
        dir_name: &dir_name,
    }
    .unpacked(&mut |dir| {
        progress(&format!(
            "fetching Debian's {package} {version} into {} ...",
            dir.display()
        ))
    })
    .map_err(|source| DebianError::Fetch {
        package,
        version: version.clone(),
        source,
    })?;
    let path = dir.join(binary);
    if path.is_file() {
        Ok(path)
    } else {
        Err(DebianError::NoBinary {
            package,
            version,
            dir,
            binary,
        })
    }
}

fn dir_name(package: &str, version: &str) -> String {
    format!("{package}_{version}")
}

/// `wanted` if the apt lists offer it, else the candidate; an unknown version names what
/// is offered. Lists that name no build at all are refreshed once (a fresh container).
fn pick_version(
    package: &'static str,
    wanted: Option<&str>,
    spec: &str,
) -> Result<String, DebianError> {
    let query = |source| DebianError::Query { package, source };
    let mut offered = debian::versions(package).map_err(query)?;
    if offered.is_empty() {
        tracing::info!("no {package} in the apt lists; running apt-get update");
        debian::update().map_err(query)?;
        offered = debian::versions(package).map_err(query)?;
    }
    if offered.is_empty() {
        return Err(DebianError::NotOffered { package });
    }
    match wanted {
        Some(w) if offered.iter().any(|o| o == w) => Ok(w.to_string()),
        Some(w) => Err(DebianError::NoVersion {
            spec: spec.to_string(),
            package,
            wanted: w.to_string(),
            offered: offered.join(", "),
        }),
        None => Ok(debian::candidate(package)
            .map_err(query)?
            .unwrap_or_else(|| offered[0].clone())),
    }
}
