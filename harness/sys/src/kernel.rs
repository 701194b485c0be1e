//! The running kernel's version, and version ranges for expectation tables.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kernel release as `uname -r` prints it, reduced to what expectation tables compare.
/// `rc` is `Some(n)` for `-rcN` releases, which sort before the final release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub rc: Option<u32>,
    pub release: String,
}

impl KernelVersion {
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let release = release.trim();
        let numeric_end = release
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(release.len());
        let mut parts = release[..numeric_end].split('.').filter(|p| !p.is_empty());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let rest = &release[numeric_end..];
        let rc = rest.find("rc").and_then(|i| {
            let digits: String = rest[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        });
        Some(KernelVersion {
            major,
            minor,
            patch,
            rc,
            release: release.to_string(),
        })
    }

    /// The kernel this process runs on.
    pub fn running() -> KernelVersion {
        let uts = nix::sys::utsname::uname().ok();
        let release = uts
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        KernelVersion::parse(&release).unwrap_or(KernelVersion {
            major: 0,
            minor: 0,
            patch: 0,
            rc: None,
            release,
        })
    }

    /// Sort key: an rc sorts before the release it leads to (6.11-rc1 < 6.11.0).
    fn key(&self) -> (u32, u32, u32, u32) {
        (
            self.major,
            self.minor,
            self.patch,
            self.rc.unwrap_or(u32::MAX),
        )
    }

    /// Whether this kernel lies in `[from, to]`, both ends inclusive, written as releases
    /// ("6.11-rc1", "6.11.10").
    pub fn within(&self, from: &str, to: &str) -> bool {
        let (Some(from), Some(to)) = (KernelVersion::parse(from), KernelVersion::parse(to)) else {
            return false;
        };
        from.key() <= self.key() && self.key() <= to.key()
    }

    pub fn at_least(&self, version: &str) -> bool {
        KernelVersion::parse(version).is_some_and(|v| self.key() >= v.key())
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_releases() {
        let v = KernelVersion::parse("6.1.0-27-amd64").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.rc), (6, 1, 0, None));
        let v = KernelVersion::parse("6.18.44-fc-v769").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (6, 18, 44));
        let v = KernelVersion::parse("6.11.0-rc1").unwrap();
        assert_eq!(v.rc, Some(1));
        let v = KernelVersion::parse("6.12").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (6, 12, 0));
        assert!(KernelVersion::parse("garbage").is_none());
    }

    #[test]
    fn ranges_order_rc_before_release() {
        let rc = KernelVersion::parse("6.11.0-rc1").unwrap();
        assert!(rc.within("6.11-rc1", "6.11.10"));
        let before = KernelVersion::parse("6.10.14").unwrap();
        assert!(!before.within("6.11-rc1", "6.11.10"));
        let fixed = KernelVersion::parse("6.11.11").unwrap();
        assert!(!fixed.within("6.11-rc1", "6.11.10"));
        let v = KernelVersion::parse("6.12.1-amd64").unwrap();
        assert!(v.within("6.12.0", "6.12.1"));
        assert!(v.at_least("6.12"));
        assert!(!v.at_least("6.13-rc1"));
    }
}
