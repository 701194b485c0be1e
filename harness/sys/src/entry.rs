//! Re-exec entry points. faultline re-executes its own binary (`/proc/self/exe`) for every
//! process it needs on the far side of a namespace boundary (a scenario's namespace init, the
//! scenario itself, helper daemons, the dead-fuse probe). Each entry is a static [`Entry`]
//! declared once by the module that owns it; callers build its command from that static, so
//! a name is written in exactly one place. Each crate exports the list of its entries, and
//! every binary that can serve as `/proc/self/exe` passes them all to [`dispatch`] first
//! thing in `main`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// argv[1] that marks an internal invocation; argv[2] names the entry point.
pub const MARKER: &str = "__faultline-internal";

/// Names the entry point instead of [`MARKER`] when a helper must show an exact command line
/// (a stand-in for another program, e.g. `containerd-shim`, which detectors recognise by its
/// argv): argv[1..] are then all its arguments. Removed from the environment before the
/// entry runs, so the helper's own children do not inherit it.
pub const ENTRY_ENV: &str = "FAULTLINE_INTERNAL_ENTRY";

/// An entry point: its name on the command line and its `main`, which gets the arguments
/// after the name (as the kernel gave them: paths are bytes) and returns the exit code.
#[derive(Debug)]
pub struct Entry {
    pub name: &'static str,
    pub main: fn(&[OsString]) -> i32,
}

impl Entry {
    pub const fn new(name: &'static str, main: fn(&[OsString]) -> i32) -> Entry {
        Entry { name, main }
    }

    /// A `Command` that runs this entry in the current executable.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(MARKER).arg(self.name);
        cmd
    }

    /// A `Command` that runs this entry with argv[0] set to `arg0` and nothing but the
    /// caller's arguments after it (see [`ENTRY_ENV`]).
    pub fn command_as(&self, arg0: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(arg0).env(ENTRY_ENV, self.name);
        cmd
    }
}

/// If this process was started as an internal entry point, runs it and exits; otherwise
/// returns. `groups` are the entry lists of every crate linked into the binary.
pub fn dispatch(groups: &[&[&Entry]]) {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (name, rest) = if args.get(1).map(OsString::as_os_str) == Some(OsStr::new(MARKER)) {
        (
            args.get(2).cloned().unwrap_or_default(),
            &args[3.min(args.len())..],
        )
    } else if let Some(name) = std::env::var_os(ENTRY_ENV) {
        // Edition 2021: remove_var is safe; nothing else runs yet at this point of `main`.
        std::env::remove_var(ENTRY_ENV);
        (name, &args[1.min(args.len())..])
    } else {
        return;
    };
    let code = match find(groups, &name) {
        Some(e) => (e.main)(rest),
        None => {
            eprintln!("faultline: unknown internal entry point {name:?}");
            2
        }
    };
    std::process::exit(code);
}

fn find<'a>(groups: &[&[&'a Entry]], name: &OsStr) -> Option<&'a Entry> {
    groups
        .iter()
        .flat_map(|g| g.iter())
        .find(|e| OsStr::new(e.name) == name)
        .copied()
}

/// Names that appear more than once across `groups` (a binary's test asserts none do).
pub fn duplicate_names(groups: &[&[&Entry]]) -> Vec<&'static str> {
    let mut seen = std::collections::BTreeSet::new();
    groups
        .iter()
        .flat_map(|g| g.iter())
        .filter(|e| !seen.insert(e.name))
        .map(|e| e.name)
        .collect()
}

/// Arguments as UTF-8 strings, for entries whose arguments faultline itself wrote (JSON,
/// numbers, names); `Err` names the first that is not.
pub fn utf8_args(args: &[OsString]) -> Result<Vec<String>, String> {
    args.iter()
        .map(|a| {
            a.clone()
                .into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &[OsString]) -> i32 {
        0
    }
    static A: Entry = Entry::new("a", ok);
    static B: Entry = Entry::new("b", ok);
    static A2: Entry = Entry::new("a", ok);

    #[test]
    fn finds_across_groups_and_reports_duplicates() {
        let groups: &[&[&Entry]] = &[&[&A], &[&B, &A2]];
        assert_eq!(find(groups, OsStr::new("b")).unwrap().name, "b");
        assert!(find(groups, OsStr::new("c")).is_none());
        assert_eq!(duplicate_names(groups), vec!["a"]);
        assert!(duplicate_names(&[&[&A, &B]]).is_empty());
    }
}
