//! Which kernel a guest boots: `--kernel SPEC` parsing, and a kernel on disk (image, release,
//! modules tree).

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("bad --kernel {spec:?}: {reason}")]
    BadSpec { spec: String, reason: String },
    #[error("failed to read kernel image {path}")]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a bzImage with a version string; pass the image's modules as IMAGE:MODULES_DIR")]
    NoVersion { path: PathBuf },
    #[error("no modules directory for kernel {release}: looked in {looked}; pass it as IMAGE:MODULES_DIR")]
    NoModules { release: String, looked: String },
}

/// What `--kernel` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// A series (`6.1`, `6.12`) of Debian's cloud kernel flavour, fetched into the cache.
    Debian { series: String },
    /// A kernel image on disk and, optionally, its modules directory
    /// (`.../lib/modules/<release>`).
    Path {
        image: PathBuf,
        modules: Option<PathBuf>,
    },
}

impl KernelSpec {
    /// `debian:6.1`, `debian:6.12`, `/boot/vmlinuz-X` or `/path/vmlinuz:/path/lib/modules/X`.
    /// `host` is not a VM kernel: the caller maps it to the namespace backend first.
    pub fn parse(spec: &str) -> Result<KernelSpec, KernelError> {
        let bad = |reason: &str| KernelError::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(series) = spec.strip_prefix("debian:") {
            let ok = !series.is_empty()
                && series.split('.').count() == 2
                && series.split('.').all(|p| p.parse::<u32>().is_ok());
            if !ok {
                return Err(bad("expected debian:MAJOR.MINOR, e.g. debian:6.1"));
            }
            return Ok(KernelSpec::Debian {
                series: series.to_string(),
            });
        }
        if spec == "host" {
            return Err(bad("`host` runs on the host kernel, not in a VM"));
        }
        let (image, modules) = match spec.split_once(':') {
            Some((i, m)) => (PathBuf::from(i), Some(PathBuf::from(m))),
            None => (PathBuf::from(spec), None),
        };
        if !image.is_file() {
            return Err(bad(
                "not debian:MAJOR.MINOR and not a kernel image file (IMAGE[:MODULES_DIR])",
            ));
        }
        if let Some(m) = &modules {
            if !m.is_dir() {
                return Err(bad("the modules directory after ':' does not exist"));
            }
        }
        Ok(KernelSpec::Path { image, modules })
    }

    /// A short name for directories and matrix columns.
    pub fn label(&self) -> String {
        match self {
            KernelSpec::Debian { series } => format!("debian-{series}"),
            KernelSpec::Path { image, .. } => image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel".into()),
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSpec::Debian { series } => write!(f, "debian:{series}"),
            KernelSpec::Path { image, .. } => write!(f, "{}", image.display()),
        }
    }
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub image: PathBuf,
    /// `uname -r` of the guest, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
}

impl GuestKernel {
    /// A kernel image on disk; the modules directory is found next to it when not given.
    pub fn from_path(image: &Path, modules: Option<&Path>) -> Result<GuestKernel, KernelError> {
        let bytes = std::fs::read(image).map_err(|source| KernelError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        let release = bzimage_release(&bytes).ok_or_else(|| KernelError::NoVersion {
            path: image.to_path_buf(),
        })?;
        let modules = match modules {
            Some(m) => m.to_path_buf(),
            None => {
                let beside = image
                    .parent()
                    .and_then(Path::parent)
                    .map(|root| root.join("lib/modules").join(&release));
                let system = PathBuf::from("/lib/modules").join(&release);
                let candidates: Vec<PathBuf> = beside.into_iter().chain([system]).collect();
                match candidates.iter().find(|c| c.is_dir()) {
                    Some(c) => c.clone(),
                    None => {
                        return Err(KernelError::NoModules {
                            release,
                            looked: candidates
                                .iter()
                                .map(|c| c.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                }
            }
        };
        Ok(GuestKernel {
            image: image.to_path_buf(),
            release,
            modules,
        })
    }
}

/// The release string an x86 bzImage carries: the boot protocol's `kernel_version` field
/// (offset 0x20E) points, relative to 0x200, at "6.1.0-56-cloud-amd64 (builder) #1 SMP ...".
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize;
    let start = ptr + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().position(|b| *b == 0 || *b == b' ')?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            KernelSpec::parse("debian:6.12").unwrap(),
            KernelSpec::Debian {
                series: "6.12".into()
            }
        );
        assert_eq!(
            KernelSpec::parse("debian:6.1").unwrap().label(),
            "debian-6.1"
        );
        for bad in [
            "debian:",
            "debian:6",
            "debian:6.x",
            "host",
            "/nonexistent/vmlinuz",
        ] {
            let e = KernelSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("bad --kernel"), "{e}");
        }
    }

    #[test]
    fn reads_release_from_bzimage_header() {
        // The first bytes that matter of a bzImage: "HdrS" at 0x202, kernel_version at
        // 0x20E pointing (relative to 0x200) at the version string.
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(
            bzimage_release(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_release(&[0u8; 0x300]), None);
    }
}
