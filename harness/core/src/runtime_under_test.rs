//! The container runtime under test, as the host resolved it from `--runtime` (crate
//! `faultline-runtime` parses and fetches the spec; core only carries the result to the
//! scenario processes and into the result document).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What runs the runtime scenarios' containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeUnderTest {
    /// The spec as given: `system`, `debian`, `debian:containerd=VERSION`,
    /// `containerd=PATH,oci=NAME|PATH`.
    pub spec: String,
    /// The containerd binary; its shims (`containerd-shim`, `containerd-shim-runc-v1/v2`)
    /// and `ctr` are taken from the same directory.
    pub containerd: PathBuf,
    /// The OCI runtime binary the runc shims run (`runc`, `crun`, or another).
    pub oci: PathBuf,
    /// What ran, as the result document records it.
    pub versions: RuntimeVersions,
}

/// `"runtime": {"containerd": "<containerd --version>", "oci": "<first line of oci --version>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVersions {
    pub containerd: String,
    pub oci: String,
}

impl RuntimeUnderTest {
    /// The directory holding containerd's shims and ctr.
    pub fn bin_dir(&self) -> PathBuf {
        self.containerd
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin"))
    }
}

impl RuntimeVersions {
    /// `containerd 1.6.20 + runc 1.1.5`: the release of each, for matrix columns.
    pub fn short(&self) -> String {
        format!(
            "{} + {}",
            ProgramVersion::parse(&self.containerd).short(),
            ProgramVersion::parse(&self.oci).short()
        )
    }

    /// `containerd 1.6.20~ds1-1+deb12u3 + runc 1.1.5+ds1`: the builds, for columns whose
    /// releases are the same (Debian's point release and security update of one release).
    pub fn full(&self) -> String {
        format!(
            "{} + {}",
            ProgramVersion::parse(&self.containerd).full(),
            ProgramVersion::parse(&self.oci).full()
        )
    }
}

/// A `--version` line read as a program and its version.
struct ProgramVersion<'a> {
    name: &'a str,
    /// The words after the name that look like versions (a digit, after an optional `v`,
    /// and a dot): containerd prints its Go module first and its commit last, which do not.
    versions: Vec<&'a str>,
    rest: &'a str,
}

impl<'a> ProgramVersion<'a> {
    fn parse(line: &'a str) -> ProgramVersion<'a> {
        let line = line.trim();
        let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
        let versions = rest
            .split_whitespace()
            .filter(|w| {
                let w = w.strip_prefix('v').unwrap_or(w);
                w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.')
            })
            .collect();
        ProgramVersion {
            name,
            versions,
            rest: rest.trim(),
        }
    }

    fn short(&self) -> String {
        match self.versions.first() {
            Some(v) => {
                let v = v.strip_prefix('v').unwrap_or(v);
                let release = v.split(['~', '+', '-']).next().unwrap_or(v);
                format!("{} {release}", self.name)
            }
            None => self.full(),
        }
    }

    fn full(&self) -> String {
        match (self.name, self.versions.last()) {
            ("", _) => "unknown".into(),
            (name, Some(v)) => format!("{name} {v}"),
            (name, None) if self.rest.is_empty() => name.to_string(),
            (name, None) => format!("{name} {}", self.rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(containerd: &str, oci: &str) -> RuntimeVersions {
        RuntimeVersions {
            containerd: containerd.into(),
            oci: oci.into(),
        }
    }

    #[test]
    fn labels_from_real_version_lines() {
        // Debian 12's containerd and runc, crun 1.8.1, and containerd 2.0's own build.
        let debian = versions(
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
            "runc version 1.1.5+ds1",
        );
        assert_eq!(debian.short(), "containerd 1.6.20 + runc 1.1.5");
        assert_eq!(
            debian.full(),
            "containerd 1.6.20~ds1-1+deb12u3 + runc 1.1.5+ds1"
        );
        let upstream = versions(
            "containerd github.com/containerd/containerd/v2 v2.0.0 207ad711eabd375a01713109a8a197d197ff6542",
            "crun version 1.8.1",
        );
        assert_eq!(upstream.short(), "containerd 2.0.0 + crun 1.8.1");
        assert_eq!(upstream.full(), "containerd v2.0.0 + crun 1.8.1");
        assert_eq!(
            versions("", "youki").short(),
            "unknown + youki",
            "no version word: the line as it is"
        );
    }
}
