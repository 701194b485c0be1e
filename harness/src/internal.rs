//! Hidden entry points. The harness re-executes its own binary (`/proc/self/exe`) for every
//! process it needs on the far side of a namespace boundary (the scenario's namespace init,
//! the scenario itself, helper daemons). Both the `faultline` binary and the scenarios' test
//! binary call [`dispatch`] first thing in `main`, so either can serve as that executable.

/// argv[1] that marks an internal invocation; argv[2] names the entry point.
pub const MARKER: &str = "__faultline-internal";

/// Names the entry point instead of [`MARKER`] when a helper must show an exact command line
/// (a stand-in for another program, e.g. `containerd-shim`, which detectors recognise by its
/// argv): argv[1..] are then all its arguments. Removed from the environment before the
/// entry runs, so the helper's own children do not inherit it.
pub const ENTRY_ENV: &str = "FAULTLINE_INTERNAL_ENTRY";

/// An entry point: gets the arguments after its name, returns the process exit code.
pub type Entry = fn(&[String]) -> i32;

/// If this process was started as an internal entry point, runs it and exits; otherwise
/// returns. `extra` lets the binary add entry points that need crates the harness cannot
/// depend on (the scenario registry).
pub fn dispatch(extra: &[(&str, Entry)]) {
    let args: Vec<String> = std::env::args().collect();
    let by_env = std::env::var(ENTRY_ENV).ok();
    let (name, rest) = if args.get(1).map(String::as_str) == Some(MARKER) {
        (
            args.get(2).cloned().unwrap_or_default(),
            &args[3.min(args.len())..],
        )
    } else if let Some(name) = by_env {
        // Edition 2021: remove_var is safe; nothing else runs yet at this point of `main`.
        std::env::remove_var(ENTRY_ENV);
        (name, &args[1.min(args.len())..])
    } else {
        return;
    };
    let name = name.as_str();
    let builtin: &[(&str, Entry)] = &[
        ("ns-init", crate::runner::child::ns_init_main),
        ("scenario", crate::runner::child::scenario_main),
        ("container", crate::guard::container::container_main),
        ("fuse-daemon", crate::fuse::daemon::main),
        ("fuse-probe", crate::detect::dead_fuse::probe_main),
        ("runc-bind", crate::runc_bind::main),
        ("containerd-shim", crate::guard::shim::main),
    ];
    let entry = builtin
        .iter()
        .chain(extra.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, e)| *e);
    let code = match entry {
        Some(e) => e(rest),
        None => {
            eprintln!("faultline: unknown internal entry point {name:?}");
            2
        }
    };
    std::process::exit(code);
}

/// A `Command` that runs internal entry point `name` of the current executable.
pub fn command(name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg(MARKER).arg(name);
    cmd
}

/// A `Command` that runs internal entry point `name` with argv[0] set to `arg0` and nothing
/// but the caller's arguments after it (see [`ENTRY_ENV`]).
pub fn command_as(name: &str, arg0: &str) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0(arg0).env(ENTRY_ENV, name);
    cmd
}
