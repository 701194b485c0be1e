//! What a look at the node could not read, so that an answer that skipped something says so
//! ("partial") instead of passing for a clean one.
//!
//! A process that exited while being looked at (ENOENT, ESRCH) is not a gap: there was
//! nothing left to see. Kernel threads are not a gap either; the callers do not ask them.

use std::collections::BTreeMap;
use std::fmt::Display;

/// One kind of read, e.g. "the mount namespace (/proc/PID/ns/mnt)" of "processes".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Item {
    /// What was read, with the file it comes from.
    pub what: &'static str,
    /// What it was read of, plural ("processes", "mount namespaces").
    pub of: &'static str,
}

/// `/proc/PID/stat`, read by every process snapshot.
pub const STAT: Item = Item {
    what: "the status (/proc/PID/stat)",
    of: "processes",
};
/// `/proc/PID/task/*/stat`: the process's threads.
pub const TASKS: Item = Item {
    what: "the threads (/proc/PID/task)",
    of: "processes",
};
/// `/proc/PID/ns/mnt`: needs ptrace read access (proc(5)), i.e. root for others' processes.
pub const MOUNT_NS: Item = Item {
    what: "the mount namespace (/proc/PID/ns/mnt)",
    of: "processes",
};
/// `/proc/PID/mountinfo` of each mount namespace's process.
pub const MOUNT_TABLE: Item = Item {
    what: "the mount table (/proc/PID/mountinfo)",
    of: "mount namespaces",
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Group {
    tried: usize,
    /// reason → ids (pids, or whatever the item counts)
    failed: BTreeMap<String, Vec<i64>>,
}

/// Reads that failed, grouped by [`Item`] and reason, with how many were tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps {
    groups: BTreeMap<Item, Group>,
}

/// Whether an error means the process (or task) is gone: nothing left to read.
pub fn is_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The reason as a person should read it; permission errors say what would help.
pub fn describe(e: &std::io::Error) -> String {
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        e.to_string()
    } else if nix::unistd::geteuid().is_root() {
        "permission denied".to_string()
    } else {
        "permission denied (run as root)".to_string()
    }
}

impl Gaps {
    pub fn new() -> Gaps {
        Gaps::default()
    }

    /// Counts one attempt at `item` of `id`, and its failure if `result` failed for another
    /// reason than the subject being gone. Returns the value when there is one.
    pub fn read<T>(&mut self, item: Item, id: i64, result: std::io::Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                self.tried(item);
                Some(v)
            }
            Err(e) if is_gone(&e) => None,
            Err(e) => {
                self.tried(item);
                self.failed(item, id, describe(&e));
                None
            }
        }
    }

    /// Counts one attempt at `item` (one that [`Gaps::failed`] may then mark as failed).
    pub fn tried(&mut self, item: Item) {
        self.groups.entry(item).or_default().tried += 1;
    }

    /// Records that `item` of `id` could not be read, and why.
    pub fn failed(&mut self, item: Item, id: i64, why: impl Display) {
        self.groups
            .entry(item)
            .or_default()
            .failed
            .entry(why.to_string())
            .or_default()
            .push(id);
    }

    /// Records an I/O failure of `item` of `id` (unless it only says the subject is gone).
    pub fn failed_io(&mut self, item: Item, id: i64, e: &std::io::Error) {
        if !is_gone(e) {
            self.failed(item, id, describe(e));
        }
    }

    /// Whether every read succeeded.
    pub fn is_empty(&self) -> bool {
        self.groups.values().all(|g| g.failed.is_empty())
    }

    /// The ids whose `item` could not be read.
    pub fn failed_ids(&self, item: Item) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .groups
            .get(&item)
            .map(|g| g.failed.values().flatten().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Adds `other`'s attempts and failures to these.
    pub fn extend(&mut self, other: &Gaps) {
        for (item, g) in &other.groups {
            let mine = self.groups.entry(*item).or_default();
            mine.tried += g.tried;
            for (why, ids) in &g.failed {
                mine.failed.entry(why.clone()).or_default().extend(ids);
            }
        }
    }

    /// Only the groups of `items`.
    pub fn select(&self, items: &[Item]) -> Gaps {
        Gaps {
            groups: self
                .groups
                .iter()
                .filter(|(i, _)| items.contains(i))
                .map(|(i, g)| (*i, g.clone()))
                .collect(),
        }
    }

    /// One sentence per item and reason, e.g. "could not read the mount namespace
    /// (/proc/PID/ns/mnt) of 37 of 212 processes: permission denied (run as root)".
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (item, g) in &self.groups {
            for (why, ids) in &g.failed {
                tracing::debug!("could not read {} of {} {ids:?}: {why}", item.what, item.of);
                out.push(format!(
                    "could not read {} of {} of {} {}: {why}",
                    item.what,
                    ids.len(),
                    g.tried.max(ids.len()),
                    item.of
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ITEM: Item = Item {
        what: "the thing (/proc/PID/thing)",
        of: "processes",
    };

    #[test]
    fn gone_is_no_gap_and_failures_are_counted_against_attempts() {
        let mut g = Gaps::new();
        assert_eq!(g.read(ITEM, 1, Ok(5)), Some(5));
        let gone: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        assert_eq!(g.read(ITEM, 2, gone), None);
        let gone: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(g.read(ITEM, 3, gone), None);
        assert!(g.is_empty());
        let denied: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(g.read(ITEM, 4, denied), None);
        let other: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(g.read(ITEM, 5, other), None);
        assert!(!g.is_empty());
        assert_eq!(g.failed_ids(ITEM), vec![4, 5]);
        let m = g.messages();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("of 1 of 3 processes"), "{m:?}");
        assert!(m
            .iter()
            .any(|s| s.ends_with("permission denied")
                || s.ends_with("permission denied (run as root)")));
        assert!(g.select(&[STAT]).is_empty());
        let mut all = Gaps::new();
        all.extend(&g);
        all.extend(&g);
        assert_eq!(all.failed_ids(ITEM), vec![4, 4, 5, 5]);
    }
}
