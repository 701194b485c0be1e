//! Debian kernels for the guest: the package is resolved from the local apt lists, fetched
//! with `apt-get download` and unpacked with `dpkg-deb -x` into a cache directory. Never
//! installed on the host. Idempotent and safe to run concurrently: a lock file serialises
//! fetchers and a stamp marks a complete unpack.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::kernel::{GuestKernel, KernelError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("failed to create the kernel cache {dir}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock the kernel cache {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed: {stderr}")]
    Tool { program: String, stderr: String },
    #[error("no Debian cloud kernel {series} (linux-image-{series}*-cloud-amd64) in the apt lists; {offered}")]
    NoPackage { series: String, offered: String },
    #[error("the unpacked package {dir} has no boot/vmlinuz-*")]
    NoImage { dir: PathBuf },
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Where downloaded kernels live: `$FAULTLINE_CACHE`, else `$XDG_CACHE_HOME/faultline`,
/// else `~/.cache/faultline`. Outside `target/` so that a fresh checkout reuses it.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FAULTLINE_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("faultline");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/faultline")
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
        run("apt-get", &["update", "-qq"])?;
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
        let out = run(
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
    let root = cache_dir().join("kernels");
    std::fs::create_dir_all(&root).map_err(|source| FetchError::Cache {
        dir: root.clone(),
        source,
    })?;
    let dir = root.join(&package);
    let stamp = dir.join(".complete");
    if !stamp.exists() {
        let _lock = lock(&root.join(".lock"))?;
        // Another fetcher may have finished while we waited for the lock.
        if !stamp.exists() {
            tracing::info!(
                "fetching {package} from Debian's archive into {}",
                dir.display()
            );
            download_and_unpack(&package, &root, &dir)?;
            File::create(&stamp).map_err(|source| FetchError::Cache {
                dir: dir.clone(),
                source,
            })?;
        }
    }
    unpacked_kernel(&dir)
}

fn lock(path: &Path) -> Result<Flock<File>, FetchError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| FetchError::Cache {
            dir: path.to_path_buf(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| FetchError::Lock {
        path: path.to_path_buf(),
        source,
    })
}

fn download_and_unpack(package: &str, root: &Path, dir: &Path) -> Result<(), FetchError> {
    let debs = root.join("debs");
    let partial = root.join(format!("{package}.partial"));
    for d in [&debs, &partial] {
        if d == &partial && d.exists() {
            std::fs::remove_dir_all(d).map_err(|source| FetchError::Cache {
                dir: d.to_path_buf(),
                source,
            })?;
        }
        std::fs::create_dir_all(d).map_err(|source| FetchError::Cache {
            dir: d.to_path_buf(),
            source,
        })?;
    }
    let existing = find_deb(&debs, package);
    let deb = match existing {
        Some(d) => d,
        None => {
            // apt-get download writes into the current directory; `_apt` cannot write into
            // root's cache, so apt falls back to downloading as root, which is what we want.
            let mut cmd = Command::new("apt-get");
            cmd.args(["download", "-q", package]).current_dir(&debs);
            run_cmd("apt-get download", &mut cmd)?;
            find_deb(&debs, package).ok_or_else(|| FetchError::Tool {
                program: "apt-get download".into(),
                stderr: format!("no {package}_*.deb appeared in {}", debs.display()),
            })?
        }
    };
    let deb_str = deb.to_string_lossy().into_owned();
    let partial_str = partial.to_string_lossy().into_owned();
    run("dpkg-deb", &["-x", &deb_str, &partial_str])?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| FetchError::Cache {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::rename(&partial, dir).map_err(|source| FetchError::Cache {
        dir: dir.to_path_buf(),
        source,
    })
}

fn find_deb(debs: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{}_", package.replace('+', "%2b"));
    let plain = format!("{package}_");
    std::fs::read_dir(debs)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            (n.starts_with(&prefix) || n.starts_with(&plain)) && n.ends_with(".deb")
        })
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

fn run(program: &str, args: &[&str]) -> Result<String, FetchError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_cmd(program, &mut cmd)
}

fn run_cmd(program: &str, cmd: &mut Command) -> Result<String, FetchError> {
    let out = cmd.output().map_err(|source| FetchError::Spawn {
        program: program.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(FetchError::Tool {
            program: program.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.contains("unsandboxed"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
