//! How a copier replaced a file, from what the kernel showed: the copier's error, the inode
//! at the path before and after, and the inotify events on the directory.

use std::fmt;

use nix::sys::inotify::AddWatchFlags;
use serde::Serialize;
use serde_json::json;

/// ETXTBSY, "Text file busy" (os error 26) on every Linux architecture.
pub const ETXTBSY: i32 = libc::ETXTBSY;

/// How the file at the path was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The copier opened the existing inode for writing: refused with ETXTBSY while the file
    /// is executed (a daemon that exits on that error crashloops), or, on a kernel that does
    /// not refuse, the running code was overwritten.
    InPlace,
    /// The path was unlinked (or moved away) and a new file created: the path was missing
    /// for a window.
    UnlinkThenCreate,
    /// A new inode was renamed over the path: the safe way.
    AtomicRename,
    /// The copier failed for another reason, or did not replace the file at all.
    Failed,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::InPlace => "in-place",
            Strategy::UnlinkThenCreate => "unlink-then-create",
            Strategy::AtomicRename => "atomic-rename",
            Strategy::Failed => "failed",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One inotify event on the watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEvent {
    pub mask: AddWatchFlags,
    /// The entry's name inside the directory; empty for events on the directory itself.
    pub name: String,
}

/// Event names as inotify(7) spells them, for evidence and for captured fixtures.
const EVENT_NAMES: &[(AddWatchFlags, &str)] = &[
    (AddWatchFlags::IN_ACCESS, "IN_ACCESS"),
    (AddWatchFlags::IN_MODIFY, "IN_MODIFY"),
    (AddWatchFlags::IN_ATTRIB, "IN_ATTRIB"),
    (AddWatchFlags::IN_CLOSE_WRITE, "IN_CLOSE_WRITE"),
    (AddWatchFlags::IN_CLOSE_NOWRITE, "IN_CLOSE_NOWRITE"),
    (AddWatchFlags::IN_OPEN, "IN_OPEN"),
    (AddWatchFlags::IN_MOVED_FROM, "IN_MOVED_FROM"),
    (AddWatchFlags::IN_MOVED_TO, "IN_MOVED_TO"),
    (AddWatchFlags::IN_CREATE, "IN_CREATE"),
    (AddWatchFlags::IN_DELETE, "IN_DELETE"),
    (AddWatchFlags::IN_DELETE_SELF, "IN_DELETE_SELF"),
    (AddWatchFlags::IN_MOVE_SELF, "IN_MOVE_SELF"),
    (AddWatchFlags::IN_Q_OVERFLOW, "IN_Q_OVERFLOW"),
    (AddWatchFlags::IN_IGNORED, "IN_IGNORED"),
    (AddWatchFlags::IN_ISDIR, "IN_ISDIR"),
];

impl DirEvent {
    /// `IN_DELETE cdc`, as the captured fixtures write it.
    pub fn parse(line: &str) -> Option<DirEvent> {
        let (masks, name) = line.split_once(' ').unwrap_or((line, ""));
        let mut mask = AddWatchFlags::empty();
        for part in masks.split('|') {
            let (flag, _) = EVENT_NAMES.iter().find(|(_, n)| *n == part)?;
            mask |= *flag;
        }
        Some(DirEvent {
            mask,
            name: name.to_string(),
        })
    }

    pub fn is(&self, flag: AddWatchFlags) -> bool {
        self.mask.contains(flag)
    }
}

impl fmt::Display for DirEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = EVENT_NAMES
            .iter()
            .filter(|(flag, _)| self.mask.contains(*flag))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{} {}", names.join("|"), self.name)
    }
}

/// What the copier itself reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopierOutcome {
    pub succeeded: bool,
    /// The errno the copier hit, when known (an `io::Error`, or recognised in its stderr).
    pub errno: Option<i32>,
    /// One line: the error, or the exit status and the last line of stderr.
    pub message: Option<String>,
}

impl CopierOutcome {
    pub fn ok() -> CopierOutcome {
        CopierOutcome {
            succeeded: true,
            errno: None,
            message: None,
        }
    }

    /// A built-in copier's result.
    pub fn from_io(result: &std::io::Result<()>) -> CopierOutcome {
        match result {
            Ok(()) => CopierOutcome::ok(),
            Err(e) => CopierOutcome {
                succeeded: false,
                errno: e.raw_os_error(),
                message: Some(e.to_string()),
            },
        }
    }

    /// A third-party copier's exit status and stderr. Tools print strerror(3) text, so
    /// "Text file busy" in stderr is how an external copier tells us it hit ETXTBSY.
    pub fn from_exit(status: std::process::ExitStatus, stderr: &str) -> CopierOutcome {
        let last_line = stderr.lines().rev().find(|l| !l.trim().is_empty());
        let busy_line = stderr.lines().find(|l| l.contains("Text file busy"));
        let message = busy_line
            .or(last_line)
            .map(|l| format!("{status}: {}", l.trim()))
            .or_else(|| (!status.success()).then(|| status.to_string()));
        CopierOutcome {
            succeeded: status.success(),
            errno: busy_line.map(|_| ETXTBSY),
            message: if status.success() && busy_line.is_none() {
                None
            } else {
                message
            },
        }
    }
}

/// Evidence stays readable when a copier touches many files in the directory.
pub const MAX_EVIDENCE_EVENTS: usize = 64;

/// Everything the classifier looks at for one replacement of `name` in the watched directory.
#[derive(Debug, Clone)]
pub struct Replacement<'a> {
    pub name: &'a str,
    pub copier: &'a CopierOutcome,
    pub events: &'a [DirEvent],
    pub old_inode: u64,
    /// `None` when nothing is at the path after the copier ran.
    pub new_inode: Option<u64>,
}

/// The classifier's verdict, with the facts it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub strategy: Strategy,
    /// The copier's error, or why the replacement could not be classified as a strategy.
    pub error: Option<String>,
    pub errno: Option<i32>,
    pub old_inode: u64,
    pub new_inode: Option<u64>,
    /// The directory's events, in order, as `IN_DELETE cdc` (at most [`MAX_EVIDENCE_EVENTS`]).
    pub events: Vec<String>,
}

impl Classification {
    /// The shape the finding's evidence and the scenario's `observed` use.
    pub fn observed(&self) -> serde_json::Value {
        json!({
            "strategy": self.strategy,
            "error": self.error,
            "errno": self.errno,
            "old_inode": self.old_inode,
            "new_inode": self.new_inode,
            "events": self.events,
        })
    }
}

/// Classifies one replacement. Order matters: an ETXTBSY from the copier proves it opened the
/// running inode for writing, whatever it did afterwards (`cp -f` retries by unlinking, and is
/// then classified by what it did next); otherwise the directory events about `name` decide.
pub fn classify(r: &Replacement<'_>) -> Classification {
    let about_name: Vec<&DirEvent> = r.events.iter().filter(|e| e.name == r.name).collect();
    let overflow = r.events.iter().any(|e| e.is(AddWatchFlags::IN_Q_OVERFLOW));
    let mut c = Classification {
        strategy: Strategy::Failed,
        error: r.copier.message.clone(),
        errno: r.copier.errno,
        old_inode: r.old_inode,
        new_inode: r.new_inode,
        events: r
            .events
            .iter()
            .take(MAX_EVIDENCE_EVENTS)
            .map(|e| e.to_string())
            .collect(),
    };

    if !r.copier.succeeded {
        if r.copier.errno == Some(ETXTBSY) {
            c.strategy = Strategy::InPlace;
        }
        return c;
    }
    let Some(new_inode) = r.new_inode else {
        c.error = Some("the copier exited successfully but nothing is at the path".into());
        return c;
    };

    if new_inode == r.old_inode {
        let written = about_name
            .iter()
            .any(|e| e.is(AddWatchFlags::IN_MODIFY) || e.is(AddWatchFlags::IN_CLOSE_WRITE));
        if written {
            c.strategy = Strategy::InPlace;
        } else {
            c.error = Some(
                "the copier exited successfully but did not write the file (same inode, no write events)"
                    .into(),
            );
        }
        return c;
    }

    // A new inode: was the name ever absent between the old entry going and the new arriving?
    let mut removed = false;
    for e in &about_name {
        if e.is(AddWatchFlags::IN_DELETE) || e.is(AddWatchFlags::IN_MOVED_FROM) {
            removed = true;
        } else if e.is(AddWatchFlags::IN_CREATE) || e.is(AddWatchFlags::IN_MOVED_TO) {
            c.strategy = if removed {
                Strategy::UnlinkThenCreate
            } else if e.is(AddWatchFlags::IN_MOVED_TO) {
                Strategy::AtomicRename
            } else {
                // IN_CREATE while the old entry still existed cannot happen for one name;
                // keep looking rather than guess.
                continue;
            };
            return c;
        }
    }
    c.error = Some(if overflow {
        "the inode at the path changed but the inotify queue overflowed".into()
    } else {
        "the inode at the path changed but no directory event explains how".into()
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of the captured fixture.
    struct Captured {
        label: String,
        running: bool,
        exit: i32,
        stderr: String,
        events: Vec<DirEvent>,
    }

    /// Reads `testdata/busy_binary_inotify.txt`: real runs of cp/install/mv/rsync/busybox on
    /// this machine against a file being executed (see the file's header).
    fn captured() -> Vec<Captured> {
        let text = include_str!("../testdata/busy_binary_inotify.txt");
        let mut cases: Vec<Captured> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("## ") {
                let label = rest.split(':').next().unwrap().to_string();
                let field = |key: &str| {
                    let start = rest.find(key).unwrap() + key.len();
                    rest[start..].split(' ').next().unwrap().to_string()
                };
                let stderr = rest.split("stderr=").nth(1).unwrap();
                let stderr = stderr[1..stderr.len() - 1].replace("\\n", "\n");
                cases.push(Captured {
                    label,
                    running: field("running=") == "True",
                    exit: field("exit=").parse().unwrap(),
                    stderr,
                    events: Vec::new(),
                });
            } else if line.starts_with("IN_") {
                let ev = DirEvent::parse(line).unwrap_or_else(|| panic!("bad line {line:?}"));
                cases.last_mut().unwrap().events.push(ev);
            }
        }
        cases
    }

    fn exit_status(code: i32) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        std::process::ExitStatus::from_raw(code << 8)
    }

    /// Classifies a captured case. The inodes follow from the events the way the kernel
    /// allocates them: a create or rename-over gives the path a new inode.
    fn classify_captured(case: &Captured) -> Classification {
        let copier = CopierOutcome::from_exit(exit_status(case.exit), &case.stderr);
        let replaced = case.events.iter().any(|e| {
            e.name == "cdc" && (e.is(AddWatchFlags::IN_CREATE) || e.is(AddWatchFlags::IN_MOVED_TO))
        });
        classify(&Replacement {
            name: "cdc",
            copier: &copier,
            events: &case.events,
            old_inode: 100,
            new_inode: Some(if replaced { 200 } else { 100 }),
        })
    }

    fn strategy_of(label: &str) -> Classification {
        let cases = captured();
        let case = cases
            .iter()
            .find(|c| c.label == label)
            .unwrap_or_else(|| panic!("no captured case {label}"));
        classify_captured(case)
    }

    #[test]
    fn fixture_has_every_case() {
        let labels: Vec<String> = captured().into_iter().map(|c| c.label).collect();
        assert_eq!(labels.len(), 15, "{labels:?}");
        assert!(captured().iter().filter(|c| !c.running).count() == 2);
    }

    #[test]
    fn plain_cp_onto_a_running_binary_is_in_place_with_etxtbsy() {
        for label in ["cp", "cat-redirect", "busybox-cp", "rsync-inplace"] {
            let c = strategy_of(label);
            assert_eq!(c.strategy, Strategy::InPlace, "{label}: {c:?}");
            assert_eq!(c.errno, Some(ETXTBSY), "{label}");
            assert!(
                c.error.as_deref().unwrap().contains("Text file busy"),
                "{label}"
            );
        }
    }

    #[test]
    fn unlinking_copiers_leave_a_missing_path_window() {
        for label in [
            "cp-f",
            "cp-remove-destination",
            "install",
            "install-m755",
            "rm-cp",
            "mv-away-cp",
        ] {
            let c = strategy_of(label);
            assert_eq!(c.strategy, Strategy::UnlinkThenCreate, "{label}: {c:?}");
            assert_eq!(c.error, None, "{label}");
        }
    }

    #[test]
    fn temp_file_and_rename_is_atomic() {
        for label in ["rsync", "mv", "cp-tmp-mv"] {
            let c = strategy_of(label);
            assert_eq!(c.strategy, Strategy::AtomicRename, "{label}: {c:?}");
        }
        let c = strategy_of("cp-tmp-mv");
        assert_eq!(c.events.first().unwrap(), "IN_CREATE cdc.tmp");
        assert_eq!(c.events.last().unwrap(), "IN_MOVED_TO cdc");
    }

    #[test]
    fn successful_write_into_the_same_inode_is_in_place() {
        // What a kernel without write denial (6.11-rc1..6.11.10, 6.12-rc1..6.12.1) shows for
        // `cp` onto a running binary; captured here on a file not being executed, since this
        // kernel refuses the write otherwise.
        for label in ["cp-not-running", "dd-notrunc-not-running"] {
            let c = strategy_of(label);
            assert_eq!(c.strategy, Strategy::InPlace, "{label}: {c:?}");
            assert_eq!(c.error, None);
        }
    }

    #[test]
    fn success_without_a_write_is_failed_not_safe() {
        // rsync's quick check skips a file whose size and mtime match: exit 0, nothing done.
        let copier = CopierOutcome::ok();
        let events = [DirEvent::parse("IN_OPEN cdc").unwrap()];
        let c = classify(&Replacement {
            name: "cdc",
            copier: &copier,
            events: &events,
            old_inode: 7,
            new_inode: Some(7),
        });
        assert_eq!(c.strategy, Strategy::Failed);
        assert!(c.error.unwrap().contains("did not write"));
    }

    #[test]
    fn other_errors_are_failed() {
        let err = std::io::Error::from_raw_os_error(libc::ENOENT);
        let copier = CopierOutcome::from_io(&Err(err));
        let c = classify(&Replacement {
            name: "cdc",
            copier: &copier,
            events: &[],
            old_inode: 7,
            new_inode: Some(7),
        });
        assert_eq!(c.strategy, Strategy::Failed);
        assert_eq!(c.errno, Some(libc::ENOENT));

        let copier = CopierOutcome::from_exit(exit_status(127), "sh: 1: nosuchcp: not found\n");
        assert_eq!(copier.errno, None);
        assert!(copier.message.as_deref().unwrap().contains("not found"));
    }

    #[test]
    fn a_changed_inode_without_events_is_not_guessed() {
        let copier = CopierOutcome::ok();
        let c = classify(&Replacement {
            name: "cdc",
            copier: &copier,
            events: &[],
            old_inode: 7,
            new_inode: Some(8),
        });
        assert_eq!(c.strategy, Strategy::Failed);
        assert!(c.error.unwrap().contains("no directory event"));
    }

    #[test]
    fn events_round_trip_through_text() {
        let e = DirEvent::parse("IN_CLOSE_WRITE .cdc.PSrmos").unwrap();
        assert!(e.is(AddWatchFlags::IN_CLOSE_WRITE));
        assert_eq!(e.to_string(), "IN_CLOSE_WRITE .cdc.PSrmos");
        assert!(DirEvent::parse("IN_BOGUS x").is_none());
    }

    #[test]
    fn observed_has_the_documented_keys() {
        let c = strategy_of("cp");
        let v = c.observed();
        assert_eq!(v["strategy"], "in-place");
        assert_eq!(v["old_inode"], 100);
        assert!(v["error"].as_str().unwrap().contains("Text file busy"));
        assert!(v.get("new_inode").is_some());
    }
}
