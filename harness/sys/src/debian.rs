//! Debian's archive as a source of the parts under test (guest kernels, containerd, runc):
//! a package is fetched with `apt-get download` into faultline's cache and unpacked there
//! with `dpkg-deb -x`, never installed on the host. Idempotent and safe to run concurrently:
//! a lock file serialises fetchers into one directory and a stamp marks a complete unpack.
//! Every apt command is bounded in time.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::process::run_bounded;

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("failed to create the cache directory {dir}")]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock the cache {path}")]
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
    #[error("{program} did not finish within {}s", limit.as_secs())]
    Timeout { program: String, limit: Duration },
    #[error("{program} failed: {stderr}")]
    Tool { program: String, stderr: String },
}

/// apt-cache reads local files; seconds at most.
const QUERY_LIMIT: Duration = Duration::from_secs(120);
/// `apt-get update` and `apt-get download` go to the archive; a kernel package is ~70 MB.
const NETWORK_LIMIT: Duration = Duration::from_secs(900);

/// Where fetched parts live: `$FAULTLINE_CACHE`, else `$XDG_CACHE_HOME/faultline`, else
/// `~/.cache/faultline`. Outside `target/` so that a fresh checkout reuses it.
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

/// Runs an apt query (`apt-cache ...`) and returns its stdout.
pub fn query(program: &str, args: &[&str]) -> Result<String, AptError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_tool(program, &mut cmd, QUERY_LIMIT)
}

/// `apt-get update -qq`: for lists that are missing on a fresh machine or container.
pub fn update() -> Result<(), AptError> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["update", "-qq"]);
    run_tool("apt-get update", &mut cmd, NETWORK_LIMIT).map(|_| ())
}

/// The versions of `package` the apt lists offer (`apt-cache madison`), as listed (newest
/// first), without duplicates (the same build is often in two suites).
pub fn versions(package: &str) -> Result<Vec<String>, AptError> {
    Ok(parse_madison(&query("apt-cache", &["madison", package])?))
}

/// `containerd | 1.6.20~ds1-1+deb12u3 | http://deb.debian.org/debian bookworm/main ...`.
pub fn parse_madison(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut cols = line.split('|').map(str::trim);
        let (Some(_), Some(version)) = (cols.next(), cols.next()) else {
            continue;
        };
        if !version.is_empty() && !out.iter().any(|v| v == version) {
            out.push(version.to_string());
        }
    }
    out
}

/// The version `apt-get install package` would pick (`apt-cache policy`'s `Candidate:`).
pub fn candidate(package: &str) -> Result<Option<String>, AptError> {
    Ok(parse_candidate(&query("apt-cache", &["policy", package])?))
}

/// `  Candidate: 1.6.20~ds1-1+deb12u3`; `(none)` when nothing is installable.
pub fn parse_candidate(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_string)
}

/// One package to fetch into `root/dir_name`.
pub struct Fetch<'a> {
    /// The cache subdirectory shared by parts of one kind (`kernels`, `runtimes`).
    pub root: &'a Path,
    pub package: &'a str,
    /// `apt-get download package=version`; `None` takes the candidate.
    pub version: Option<&'a str>,
    /// The unpacked tree's directory under `root`.
    pub dir_name: &'a str,
}

/// `root/dir_name` when a complete unpack of it is there (no apt call, no lock).
pub fn cached(root: &Path, dir_name: &str) -> Option<PathBuf> {
    let dir = root.join(dir_name);
    dir.join(COMPLETE).exists().then_some(dir)
}

/// The stamp a finished unpack leaves in its directory.
const COMPLETE: &str = ".complete";

impl Fetch<'_> {
    /// The unpacked package, downloaded and unpacked first if the cache does not hold it
    /// yet; `on_download` is told before a download starts (a progress line).
    pub fn unpacked(&self, on_download: &mut dyn FnMut(&Path)) -> Result<PathBuf, AptError> {
        let cache = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |source| AptError::Cache { dir, source }
        };
        std::fs::create_dir_all(self.root).map_err(cache(self.root))?;
        if let Some(dir) = cached(self.root, self.dir_name) {
            return Ok(dir);
        }
        let dir = self.root.join(self.dir_name);
        let stamp = dir.join(COMPLETE);
        let _lock = lock(&self.root.join(".lock"))?;
        // Another fetcher may have finished while we waited for the lock.
        if !stamp.exists() {
            let debs = self.root.join("debs");
            std::fs::create_dir_all(&debs).map_err(cache(&debs))?;
            let deb = match self.find_deb(&debs) {
                Some(d) => d,
                None => {
                    on_download(&dir);
                    self.download(&debs)?
                }
            };
            self.unpack(&deb, &dir)?;
            File::create(&stamp).map_err(cache(&dir))?;
        }
        Ok(dir)
    }

    fn download(&self, debs: &Path) -> Result<PathBuf, AptError> {
        let arg = match self.version {
            Some(v) => format!("{}={v}", self.package),
            None => self.package.to_string(),
        };
        // apt-get download writes into the current directory; `_apt` cannot write into
        // root's cache, so apt falls back to downloading as root, which is what we want.
        let mut cmd = Command::new("apt-get");
        cmd.args(["download", "-q", &arg]).current_dir(debs);
        run_tool("apt-get download", &mut cmd, NETWORK_LIMIT)?;
        self.find_deb(debs).ok_or_else(|| AptError::Tool {
            program: "apt-get download".into(),
            stderr: format!("no {}_*.deb appeared in {}", self.package, debs.display()),
        })
    }

    /// Unpacked beside the final directory, then renamed: an interrupted unpack never
    /// looks complete.
    fn unpack(&self, deb: &Path, dir: &Path) -> Result<(), AptError> {
        let cache = |dir: &Path| {
            let dir = dir.to_path_buf();
            move |source| AptError::Cache { dir, source }
        };
        let partial = self.root.join(format!("{}.partial", self.dir_name));
        for d in [&partial, &dir.to_path_buf()] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(cache(d))?;
            }
        }
        std::fs::create_dir_all(&partial).map_err(cache(&partial))?;
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(deb).arg(&partial);
        run_tool("dpkg-deb", &mut cmd, NETWORK_LIMIT)?;
        std::fs::rename(&partial, dir).map_err(cache(dir))
    }

    /// The `.deb` of this package (and version) in `debs`: apt names it
    /// `package_version_arch.deb`, an epoch's `:` escaped as `%3a` (older apt also escaped
    /// `+` as `%2b`).
    fn find_deb(&self, debs: &Path) -> Option<PathBuf> {
        let escape = |s: &str| s.replace(':', "%3a");
        let prefixes: Vec<String> = match self.version {
            Some(v) => vec![
                format!("{}_{}_", self.package, escape(v)),
                format!("{}_{}_", self.package, escape(v).replace('+', "%2b")),
            ],
            None => vec![
                format!("{}_", self.package),
                format!("{}_", self.package.replace('+', "%2b")),
            ],
        };
        std::fs::read_dir(debs)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.ends_with(".deb") && prefixes.iter().any(|pre| n.starts_with(pre.as_str()))
            })
    }
}

fn lock(path: &Path) -> Result<Flock<File>, AptError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| AptError::Cache {
            dir: path.to_path_buf(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| AptError::Lock {
        path: path.to_path_buf(),
        source,
    })
}

fn run_tool(program: &str, cmd: &mut Command, limit: Duration) -> Result<String, AptError> {
    let out = run_bounded(program, cmd, limit)
        .map_err(|source| AptError::Spawn {
            program: program.to_string(),
            source,
        })?
        .ok_or_else(|| AptError::Timeout {
            program: program.to_string(),
            limit,
        })?;
    if !out.status.success() {
        return Err(AptError::Tool {
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

    // Captured on Debian 12 (bookworm) with bookworm-security enabled.
    const MADISON: &str = "containerd | 1.6.20~ds1-1+deb12u3 | http://deb.debian.org/debian bookworm/main amd64 Packages
containerd | 1.6.20~ds1-1+deb12u2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
";
    const MADISON_RUNC: &str = "      runc | 1.1.5+ds1-1+deb12u1 | http://deb.debian.org/debian bookworm/main amd64 Packages
      runc | 1.1.5+ds1-1+deb12u1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
";
    const POLICY: &str = "containerd:
  Installed: 1.6.20~ds1-1+deb12u3
  Candidate: 1.6.20~ds1-1+deb12u3
  Version table:
 *** 1.6.20~ds1-1+deb12u3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
     1.6.20~ds1-1+deb12u2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
";

    #[test]
    fn madison_lists_each_build_once() {
        assert_eq!(
            parse_madison(MADISON),
            ["1.6.20~ds1-1+deb12u3", "1.6.20~ds1-1+deb12u2"]
        );
        assert_eq!(parse_madison(MADISON_RUNC), ["1.1.5+ds1-1+deb12u1"]);
        assert!(parse_madison("").is_empty());
    }

    #[test]
    fn policy_names_the_candidate() {
        assert_eq!(
            parse_candidate(POLICY).as_deref(),
            Some("1.6.20~ds1-1+deb12u3")
        );
        assert_eq!(
            parse_candidate("foo:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(parse_candidate(""), None);
    }

    #[test]
    fn finds_the_deb_of_the_asked_version_only() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "containerd_1.6.20~ds1-1+deb12u3_amd64.deb",
            "containerd_1.6.20~ds1-1+deb12u2_amd64.deb",
            "containerd-shim_9_amd64.deb",
            "foo_1%3a2.0_amd64.deb",
        ] {
            File::create(dir.path().join(n)).unwrap();
        }
        let fetch = |package, version| Fetch {
            root: dir.path(),
            package,
            version,
            dir_name: "x",
        };
        let found = fetch("containerd", Some("1.6.20~ds1-1+deb12u2")).find_deb(dir.path());
        assert_eq!(
            found.unwrap().file_name().unwrap(),
            "containerd_1.6.20~ds1-1+deb12u2_amd64.deb"
        );
        assert!(fetch("containerd", Some("1.7.0"))
            .find_deb(dir.path())
            .is_none());
        assert!(fetch("foo", Some("1:2.0")).find_deb(dir.path()).is_some());
        assert!(fetch("containerd-shim", None)
            .find_deb(dir.path())
            .is_some());
    }
}
