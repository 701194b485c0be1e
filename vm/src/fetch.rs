//! Debian kernels for the guest: the package is resolved from the local apt lists, then
//! fetched and unpacked into faultline's cache by `faultline_sys::debian` (as containerd and
//! runc are for `--runtime debian`). Never installed on the host.

use std::path::Path;

use faultline_sys::debian::{self, AptError};

use crate::kernel::{GuestKernel, KernelError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Apt(#[from] AptError),
    #[error("no Debian cloud kernel {series} (linux-image-{series}*-cloud-amd64) in the apt lists; {offered}")]
    NoPackage { series: String, offered: String },
    #[error("the unpacked package {dir} has no boot/vmlinuz-*")]
    NoImage { dir: std::path::PathBuf },
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// The newest `linux-image-<series>...-cloud-amd64` (the signed image package, which also
/// carries the modules) named in the local apt lists. The cloud flavour: virtio and serial
/// built in, few modules, boots fastest.
pub fn resolve_package(series: &str) -> Result<String, FetchError> {
    let mut names = cloud_images()?;
    if names.is_empty() {
        // Lists may be missing on a fresh machine or container: refresh them once. When they
        // name other series, a refresh would not add an old or unreleased one.
        tracing::info!("no Debian kernels in the apt lists; running apt-get update");
        debian::update()?;
        names = cloud_images()?;
    }
    let mut matching: Vec<&String> = names
        .iter()
        .filter(|n| series_of(n).as_deref() == Some(series))
        .collect();
    matching.sort_by_key(|a| version_key(a));
    if let Some(p) = matching.pop() {
        return Ok(p.clone());
    }
    let offered = offered(&names);
    Err(FetchError::NoPackage {
        series: series.to_string(),
        offered: if offered.is_empty() {
            "they name no cloud kernel at all (did `apt-get update` fail?)".into()
        } else {
            format!("the archive offers {}", describe(&offered))
        },
    })
}

/// The signed cloud kernel image packages (`linux-image-*-cloud-amd64`, which also carry the
/// modules) the apt lists name; asked once per process (apt-cache takes seconds).
fn cloud_images() -> Result<Vec<String>, FetchError> {
    static KNOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if known.is_empty() {
        let out = debian::query(
            "apt-cache",
            &[
                "search",
                "--names-only",
                "^linux-image-[0-9].*-cloud-amd64$",
            ],
        )?;
        *known = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| !n.ends_with("-unsigned") && !n.contains("-dbg"))
            .map(str::to_string)
            .collect();
    }
    Ok(known.clone())
}

/// The series (`6.1`, `6.12`) of the cloud kernels the apt lists name, oldest first.
pub fn offered_series() -> Result<Vec<String>, FetchError> {
    Ok(offered(&cloud_images()?))
}

fn offered(names: &[String]) -> Vec<String> {
    let mut series: Vec<String> = names.iter().filter_map(|n| series_of(n)).collect();
    series.sort_by_key(|s| version_key(s));
    series.dedup();
    series
}

/// `debian:6.1, debian:6.12`.
pub fn describe(series: &[String]) -> String {
    series
        .iter()
        .map(|s| format!("debian:{s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `6.1` of `linux-image-6.1.0-47-cloud-amd64`, `6.12` of
/// `linux-image-6.12.117+deb12-cloud-amd64`; `None` for meta-packages
/// (`linux-image-6.12-cloud-amd64`), which name no one kernel.
fn series_of(package: &str) -> Option<String> {
    let rest = package.strip_prefix("linux-image-")?;
    let mut parts = rest.splitn(3, ['.', '-', '+']);
    let (major, minor) = (parts.next()?, parts.next()?);
    let after = rest.get(major.len() + 1 + minor.len()..)?;
    let numeric = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let next_is_number = after.len() > 1
        && matches!(after.as_bytes()[0], b'.' | b'-')
        && after.as_bytes()[1].is_ascii_digit();
    (numeric(major) && numeric(minor) && next_is_number).then(|| format!("{major}.{minor}"))
}

/// Sort key comparing the numeric runs of a package name as numbers
/// (`6.1.0-9` < `6.1.0-56`).
fn version_key(name: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((digits.parse().unwrap_or(0), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        out.push((digits.parse().unwrap_or(0), String::new()));
    }
    if !text.is_empty() {
        out.push((0, text));
    }
    out
}

/// The Debian kernel of `series`, downloaded and unpacked if the cache does not hold it yet.
pub fn debian_kernel(series: &str) -> Result<GuestKernel, FetchError> {
    let package = resolve_package(series)?;
    let root = debian::cache_dir().join("kernels");
    let dir = debian::Fetch {
        root: &root,
        package: &package,
        version: None,
        dir_name: &package,
    }
    .unpacked(&mut |dir| {
        tracing::info!(
            "fetching {package} from Debian's archive into {}",
            dir.display()
        )
    })?;
    unpacked_kernel(&dir)
}

/// The kernel inside an unpacked image package.
pub fn unpacked_kernel(dir: &Path) -> Result<GuestKernel, FetchError> {
    let boot = dir.join("boot");
    let image = std::fs::read_dir(&boot)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or_else(|| FetchError::NoImage {
            dir: dir.to_path_buf(),
        })?;
    Ok(GuestKernel::from_path(&image, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_series_of_image_packages() {
        assert_eq!(
            series_of("linux-image-6.1.0-47-cloud-amd64").as_deref(),
            Some("6.1")
        );
        assert_eq!(
            series_of("linux-image-6.12.117+deb12-cloud-amd64").as_deref(),
            Some("6.12")
        );
        assert_eq!(series_of("linux-image-6.12-cloud-amd64"), None);
        assert_eq!(series_of("linux-image-cloud-amd64"), None);
        assert_eq!(
            describe(&["6.1".into(), "6.12".into()]),
            "debian:6.1, debian:6.12"
        );
    }

    #[test]
    fn orders_package_names_numerically() {
        let mut names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-47-cloud-amd64",
        ];
        names.sort_by_key(|a| version_key(a));
        assert_eq!(names.last(), Some(&"linux-image-6.1.0-56-cloud-amd64"));
        let mut names = [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.99+deb12-cloud-amd64",
        ];
        names.sort_by_key(|a| version_key(a));
        assert_eq!(
            names.last(),
            Some(&"linux-image-6.12.117+deb12-cloud-amd64")
        );
    }
}
