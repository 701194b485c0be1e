//! The `faultline` command: list, run, check, compare, inject and image. Exit codes: 0 all as
//! expected, 1 a scenario failed, `check` found a problem or `compare`'s runs differ, 2 usage
//! or harness error (one line on stderr) or a run where nothing ran; 130/143 a run stopped by
//! SIGINT/SIGTERM.

mod check;
mod check_format;
mod compare;
mod image;
mod list;
mod report;
mod run;
mod runtimes;
mod signals;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Reproduce the Linux node failures that break Kubernetes nodes, and detect them on live nodes"
)]
struct Cli {
    /// More detail on stderr: -v each scenario's steps, -vv debug. (`run` always prints one
    /// progress line per scenario on stderr.)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List scenarios: summary, requirements, whether they can run here and why not.
    List(list::Args),
    /// Run scenarios (all that this host can run when none are named).
    Run(run::Args),
    /// Run detectors against this live node (all that apply here when none are named).
    Check(check::Args),
    /// Scenario × kernel/runtime matrix of saved `run --json` results, differences first;
    /// exits 1 when rows differ.
    Compare(compare::Args),
    /// Inject syscall faults (strace's -e inject=) into a running process or a command.
    Inject(faultline_inject::cli::InjectArgs),
    /// Write the faultline OCI image (this binary, its libraries, busybox) as an OCI
    /// image-layout tarball, for `ctr images import` or `skopeo copy oci-archive:FILE`.
    Image(image::Args),
}

/// Every re-exec entry point linked into this binary, by the crate that owns it.
pub(crate) const ENTRIES: &[&[&faultline_sys::entry::Entry]] = &[
    faultline_core::ENTRIES,
    faultline_detect::ENTRIES,
    faultline_fuse::ENTRIES,
    faultline_runtime::ENTRIES,
    vm::ENTRIES,
];

/// A harness or usage error: printed as one line, exit code 2.
pub(crate) struct UsageError(pub String);

pub(crate) fn fail_usage(msg: impl Into<String>) -> Result<ExitCode, UsageError> {
    Err(UsageError(msg.into()))
}

fn main() -> ExitCode {
    faultline_core::runner::set_registry(scenarios::all);
    faultline_sys::entry::dispatch(ENTRIES);
    // `faultline check | head` should end quietly, as other command-line tools do, not panic.
    // SAFETY: called before any thread is started; SIG_DFL is a valid disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    // `run --help` lists every scenario's options, which only the registry knows.
    let parsed = Cli::command()
        .mut_subcommand("run", |c| c.after_help(run::options_help()))
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let log = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::List(a) => list::run(a),
        Command::Run(a) => run::run(a, log),
        Command::Check(a) => check::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Inject(a) => Ok(ExitCode::from(faultline_inject::cli::run(&a) as u8)),
        Command::Image(a) => image::run(a),
    };
    match result {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("faultline: {msg}");
            ExitCode::from(2)
        }
    }
}
