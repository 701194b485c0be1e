//! Which containerd releases leak the shim, and which can mount the snapshotter with
//! `volatile`: the table the variants' expectations and skips come from.
//!
//! The leak (containerd/containerd#7496, also #8931): CRI handles a TaskExit under a 10 s
//! deadline (`handleEventTimeout`, pkg/cri/server/events.go); when the shim's Delete
//! outlasts it, `shimTask.delete` returns before its Shutdown, the retry finds the task
//! NotFound, and nobody shuts the shim down. Fixed by deleting through the task service on
//! NotFound:
//!
//! | change | in |
//! |---|---|
//! | PR #8954 | main (2.0) |
//! | PR #9003 | 1.7.4 |
//! | PR #9004 | 1.6.24 |
//! | shim v1 follow-up, PRs #9344 / #9345 (issue #9309) | 1.7.9 / 1.6.25 |
//!
//! The overlayfs snapshotter's `mount_options` (containerd#8676 in 2.0, backported as
//! #9005 to 1.7.4 and #8961 to 1.6.24; release notes releases/v1.7.4.toml and
//! v1.6.24.toml) is how a node mounts container rootfs with `volatile`, the fix proposed
//! in containerd#4785. containerd 2.0 removed the v1 shim API (io.containerd.runtime.v1.linux).

/// `major.minor.patch` of a containerd release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Release(pub u32, pub u32, pub u32);

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Release {
    /// The release in `containerd --version` (`containerd github.com/containerd/containerd
    /// 1.6.20~ds1 1.6.20~ds1-1+deb12u3`, `containerd containerd.io 1.7.27 05044ec...`,
    /// `containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7...`): the first word
    /// after the first that starts with a digit (or `v` and a digit), up to anything not a
    /// digit or dot.
    pub(crate) fn parse(version_line: &str) -> Option<Release> {
        let word = version_line.split_whitespace().skip(1).find(|w| {
            let w = w.strip_prefix('v').unwrap_or(w);
            w.starts_with(|c: char| c.is_ascii_digit())
        })?;
        let word = word.strip_prefix('v').unwrap_or(word);
        let numeric: String = word
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some(Release(a, b, c)),
            (Some(Ok(a)), Some(Ok(b)), None) => Some(Release(a, b, 0)),
            _ => None,
        }
    }
}

/// The shim APIs the CRI variants run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShimApi {
    /// io.containerd.runc.v2
    V2,
    /// io.containerd.runtime.v1.linux
    V1,
}

/// The first releases of each line with the fix, per shim API.
fn fixed_in(api: ShimApi) -> [Release; 2] {
    match api {
        // PR #9004 (1.6.24), PR #9003 (1.7.4).
        ShimApi::V2 => [Release(1, 6, 24), Release(1, 7, 4)],
        // PR #9345 (1.6.25), PR #9344 (1.7.9), issue #9309.
        ShimApi::V1 => [Release(1, 6, 25), Release(1, 7, 9)],
    }
}

/// Whether containerd `r` leaves the shim behind when its delete outlasts CRI's deadline.
/// Releases before 1.6 are counted as leaking (the fix was never backported there); 1.8 and
/// 2.x have it.
pub(crate) fn leaks(api: ShimApi, r: Release) -> bool {
    let [in_1_6, in_1_7] = fixed_in(api);
    match (r.0, r.1) {
        (0, _) | (1, 0..=5) => true,
        (1, 6) => r < in_1_6,
        (1, 7) => r < in_1_7,
        _ => false,
    }
}

/// `Err(why)` when `r` has no v1 shim API.
pub(crate) fn has_shim_v1(r: Release) -> Result<(), String> {
    if r.0 >= 2 {
        Err(format!(
            "containerd {r} has no v1 shim (io.containerd.runtime.v1.linux was removed in 2.0)"
        ))
    } else {
        Ok(())
    }
}

/// `Err(why)` when `r`'s overlayfs snapshotter has no `mount_options`.
pub(crate) fn has_overlay_mount_options(r: Release) -> Result<(), String> {
    let ok = match (r.0, r.1) {
        (1, 6) => r >= Release(1, 6, 24),
        (1, 7) => r >= Release(1, 7, 4),
        (1, minor) => minor > 7,
        (major, _) => major >= 2,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "containerd {r}'s overlayfs snapshotter has no mount_options to mount with volatile: \
             added in 1.6.24 (PR #8961) and 1.7.4 (PR #9005)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_version_lines() {
        for (line, want) in [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
                Release(1, 6, 20),
            ),
            (
                "containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da",
                Release(1, 7, 27),
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376",
                Release(2, 1, 4),
            ),
            ("containerd github.com/containerd/containerd v1.6.8 9cd335", Release(1, 6, 8)),
        ] {
            assert_eq!(Release::parse(line), Some(want), "{line}");
        }
        assert_eq!(Release::parse("containerd"), None);
        assert_eq!(Release::parse("containerd github.com/x unknown"), None);
    }

    #[test]
    fn the_leak_table() {
        use ShimApi::{V1, V2};
        let r = |s: &str| Release::parse(&format!("containerd x {s}")).unwrap();
        for (api, version, leaks_there) in [
            (V2, "1.5.18", true),
            (V2, "1.6.20", true),
            (V2, "1.6.23", true),
            (V2, "1.6.24", false),
            (V2, "1.6.25", false),
            (V2, "1.7.0", true),
            (V2, "1.7.3", true),
            (V2, "1.7.4", false),
            (V2, "1.7.27", false),
            (V2, "2.0.0", false),
            (V2, "2.1.4", false),
            (V1, "1.6.20", true),
            (V1, "1.6.24", true),
            (V1, "1.6.25", false),
            (V1, "1.7.4", true),
            (V1, "1.7.8", true),
            (V1, "1.7.9", false),
        ] {
            assert_eq!(leaks(api, r(version)), leaks_there, "{api:?} on {version}");
        }
        assert!(has_shim_v1(r("1.7.27")).is_ok());
        assert!(has_shim_v1(r("2.0.0"))
            .unwrap_err()
            .contains("removed in 2.0"));
    }

    #[test]
    fn volatile_needs_mount_options() {
        let r = |s: &str| Release::parse(&format!("containerd x {s}")).unwrap();
        for ok in ["1.6.24", "1.6.38", "1.7.4", "1.7.27", "2.0.0"] {
            assert!(has_overlay_mount_options(r(ok)).is_ok(), "{ok}");
        }
        for lacking in ["1.5.18", "1.6.20", "1.6.23", "1.7.0", "1.7.3"] {
            let why = has_overlay_mount_options(r(lacking)).unwrap_err();
            assert!(why.contains("1.6.24") && why.contains("1.7.4"), "{why}");
            assert!(why.contains(lacking), "{why}");
        }
    }
}
