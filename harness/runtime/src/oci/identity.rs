//! Which OCI runtime this is (name and version, from `--version`), and the runtime's own
//! words from what it printed on stderr.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::select::{version_line, SelectError};

/// A release number, `1.1.5` of `runc version 1.1.5+ds1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The OCI runtime as the result document names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `runc`, `crun`: the word before `version` in `--version`, else the file name.
    pub name: String,
    pub binary: PathBuf,
    /// The first line of `--version`.
    pub version_line: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

impl Identity {
    pub fn of(binary: &Path) -> Result<Identity, SelectError> {
        Ok(Identity::from_line(binary, &version_line(binary)?))
    }

    /// From the version line already recorded for `binary` (the runtime under test's
    /// `versions.oci`, taken when it was resolved), without running it again; `--version`
    /// when none was recorded.
    pub fn recorded(binary: &Path, line: &str) -> Result<Identity, SelectError> {
        if line.trim().is_empty() {
            return Identity::of(binary);
        }
        Ok(Identity::from_line(binary, line))
    }

    pub fn from_line(binary: &Path, line: &str) -> Identity {
        let file_name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut words = line.split_whitespace();
        let name = match (words.next(), words.next()) {
            (Some(name), Some("version")) => name.to_string(),
            _ => file_name,
        };
        Identity {
            name,
            binary: binary.to_path_buf(),
            version_line: line.to_string(),
            version: parse_version(line),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{} {v}", self.name),
            None => write!(f, "{} ({})", self.name, self.version_line),
        }
    }
}

/// The release after the word `version`: `1.1.5` of `runc version 1.1.5+ds1`, `1.2.0` of
/// `runc version 1.2.0-rc.1`, `1.8.1` of `crun version 1.8.1`. Missing parts count as 0.
pub fn parse_version(line: &str) -> Option<Version> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "version")?;
    parse_release(words.next()?)
}

/// A release word: `1.6.20` of `1.6.20~ds1` (as containerd's CRI reports its version),
/// `v1.2.0-rc.1`, `1.8`. Missing parts count as 0.
pub fn parse_release(word: &str) -> Option<Version> {
    let word = word.trim_start_matches('v');
    let numeric: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(Version(major, minor, patch))
}

/// The runtime's message from its stderr. runc logs through logrus in logfmt
/// (`time="…" level=error msg="runc create failed: …"`): the `msg` of the last error line,
/// unquoted. crun, and programs run by `exec`, print plain lines: the last one. `fallback`
/// (the exit status) when it printed nothing.
pub fn runtime_message(stderr: &str, fallback: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let logged = lines
        .iter()
        .rev()
        .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
        .find_map(|l| logfmt_value(l, "msg"));
    match (logged, lines.last()) {
        (Some(msg), _) => msg,
        (None, Some(last)) => last.to_string(),
        (None, None) => fallback.to_string(),
    }
}

/// The value of `key` in one logfmt line, with Go's `%q` quoting undone.
fn logfmt_value(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split_whitespace().next()?.to_string());
    };
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_runtimes_we_meet() {
        assert_eq!(
            parse_version("runc version 1.1.5+ds1"),
            Some(Version(1, 1, 5))
        );
        assert_eq!(parse_version("crun version 1.8.1"), Some(Version(1, 8, 1)));
        assert_eq!(
            parse_version("runc version 1.2.0-rc.1"),
            Some(Version(1, 2, 0))
        );
        assert_eq!(parse_version("runc version 1.0"), Some(Version(1, 0, 0)));
        assert_eq!(parse_version("youki"), None);
        // containerd's CRI Version answer (runtime_version) on Debian 12.
        assert_eq!(parse_release("1.6.20~ds1"), Some(Version(1, 6, 20)));
        assert_eq!(parse_release("v2.0.0"), Some(Version(2, 0, 0)));
        let id = Identity::from_line(Path::new("/usr/sbin/runc"), "runc version 1.1.5+ds1");
        assert_eq!(id.name, "runc");
        assert_eq!(id.to_string(), "runc 1.1.5");
        let odd = Identity::from_line(Path::new("/opt/bin/my-runtime"), "something else");
        assert_eq!(odd.name, "my-runtime");
        assert_eq!(odd.to_string(), "my-runtime (something else)");
    }

    #[test]
    fn runc_logfmt_errors_are_unquoted() {
        // runc 1.1.5 `run` on a bind from a killed FUSE daemon (bindfs), as it printed it.
        let stderr = "time=\"2026-12-02T02:20:04Z\" level=error msg=\"runc run failed: unable to start container process: error during container init: error mounting \\\"/tmp/ocix/s/csi\\\" to rootfs at \\\"/vol\\\": stat /tmp/ocix/s/csi: transport endpoint is not connected\"\n";
        assert_eq!(
            runtime_message(stderr, "exit status: 1"),
            "runc run failed: unable to start container process: error during container init: error mounting \"/tmp/ocix/s/csi\" to rootfs at \"/vol\": stat /tmp/ocix/s/csi: transport endpoint is not connected"
        );
    }

    #[test]
    fn plain_lines_and_silence() {
        // crun 1.8.1 on a host with cgroup v1 controllers beside cgroup2 (hybrid).
        assert_eq!(
            runtime_message(
                "cgroups in hybrid mode not supported, drop all controllers from cgroupv2\n",
                "x"
            ),
            "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"
        );
        // busybox cat run by `runc exec` on the dead volume.
        assert_eq!(
            runtime_message(
                "cat: can't open '/vol/f': Transport endpoint is not connected\n",
                "x"
            ),
            "cat: can't open '/vol/f': Transport endpoint is not connected"
        );
        assert_eq!(runtime_message("\n", "exit status: 1"), "exit status: 1");
        // A warning before the error: the error's message.
        let two = "time=\"t\" level=warning msg=\"w\"\ntime=\"t\" level=error msg=\"e \\\\ f\"\n";
        assert_eq!(runtime_message(two, ""), "e \\ f");
    }
}
