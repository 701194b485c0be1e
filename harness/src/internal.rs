//! Hidden entry points. The harness re-executes its own binary (`/proc/self/exe`) for every
//! process it needs on the far side of a namespace boundary (the scenario's namespace init,
//! the scenario itself, helper daemons). Both the `faultline` binary and the scenarios' test
//! binary call [`dispatch`] first thing in `main`, so either can serve as that executable.

/// argv[1] that marks an internal invocation; argv[2] names the entry point.
pub const MARKER: &str = "__faultline-internal";

/// An entry point: gets the arguments after its name, returns the process exit code.
pub type Entry = fn(&[String]) -> i32;

/// If this process was started as an internal entry point, runs it and exits; otherwise
/// returns. `extra` lets the binary add entry points that need crates the harness cannot
/// depend on (the scenario registry).
pub fn dispatch(extra: &[(&str, Entry)]) {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(MARKER) {
        return;
    }
    let name = args.get(2).map(String::as_str).unwrap_or("");
    let rest = &args[3.min(args.len())..];
    let builtin: &[(&str, Entry)] = &[
        ("ns-init", crate::runner::child::ns_init_main),
        ("scenario", crate::runner::child::scenario_main),
        ("container", crate::guard::container::container_main),
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
