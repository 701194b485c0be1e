//! `faultline inject`: the arguments and the command. The binary only wires this into its
//! clap tree (`Inject(harness::inject::cli::InjectArgs)`) and exits with [`run`]'s code.
//!
//! containerd's reproduction `strace -p PID --trace=umount2 -f --detach-on=execve
//! -e inject=umount2:delay_enter=12s` becomes
//! `faultline inject --pid PID --detach-on-exec --syscall umount2 --delay-enter 12s`.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::spec::{self, Rule, SpecError};
use super::summary;
use super::tracer::{Injector, Report};
use faultline_sys::error_chain;

#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "Inject syscall faults (strace -e inject= semantics) into a running process or a command",
    after_help = "Examples:\n  faultline inject --syscall umount2 --delay-enter 12s --pid 4242\n  faultline inject -e umount2:delay_enter=2s -e openat:error=ENOENT:when=3 -- sh -c 'umount /mnt'\n\nwhen= forms: N, N+, N+STEP, N..M, N..M+STEP (calls counted from 1 across the traced tree).\nDurations: 12s, 500ms, 100us (a bare number is microseconds, as in strace)."
)]
pub struct InjectArgs {
    /// System call to tamper with (x86_64 name or number); the options below apply to it.
    #[arg(long, value_name = "NAME")]
    pub syscall: Option<String>,
    /// Hold the call this long before it runs.
    #[arg(long, value_name = "DURATION")]
    pub delay_enter: Option<String>,
    /// Hold the caller this long after the call returns.
    #[arg(long, value_name = "DURATION")]
    pub delay_exit: Option<String>,
    /// Skip the call and fail it with this errno (name or number).
    #[arg(long, value_name = "ERRNO")]
    pub error: Option<String>,
    /// Skip the call and return this value.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub retval: Option<String>,
    /// Which calls to tamper with: N, N+, N+STEP, N..M, N..M+STEP (default: all).
    #[arg(long, value_name = "EXPR")]
    pub when: Option<String>,
    /// A rule in strace's syntax, `SYSCALL:delay_enter=12s:when=2+` (repeatable; an
    /// `inject=` prefix is accepted).
    #[arg(short = 'e', long = "inject", value_name = "RULE")]
    pub inject: Vec<String>,
    /// Let go of a traced process when it executes another program (strace's
    /// --detach-on=execve); the started command's own exec is exempt.
    #[arg(long)]
    pub detach_on_exec: bool,
    /// Attach to this running process (all its threads) instead of starting a command.
    #[arg(short = 'p', long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<i32>,
    /// The command to start under injection (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

impl InjectArgs {
    /// The rules these arguments describe.
    pub fn rules(&self) -> Result<Vec<Rule>, SpecError> {
        let mut rules = Vec::new();
        let tampering = self.delay_enter.is_some()
            || self.delay_exit.is_some()
            || self.error.is_some()
            || self.retval.is_some()
            || self.when.is_some();
        match &self.syscall {
            Some(name) => {
                let mut r = Rule::new(name)?;
                r.delay_enter = self
                    .delay_enter
                    .as_deref()
                    .map(spec::parse_duration)
                    .transpose()?;
                r.delay_exit = self
                    .delay_exit
                    .as_deref()
                    .map(spec::parse_duration)
                    .transpose()?;
                let error = self.error.as_deref().map(spec::parse_errno).transpose()?;
                let retval = self.retval.as_deref().map(spec::parse_retval).transpose()?;
                r.fault = spec::fault(error, retval)?;
                if let Some(w) = &self.when {
                    r.when = spec::When::parse(w)?;
                }
                r.validate()?;
                rules.push(r);
            }
            None if tampering => {
                return Err(SpecError::Expression(
                    "--delay-enter/--delay-exit/--error/--retval/--when".into(),
                    "they need --syscall".into(),
                ))
            }
            None => {}
        }
        for e in &self.inject {
            rules.push(Rule::parse_strace(e.strip_prefix("inject=").unwrap_or(e))?);
        }
        Ok(rules)
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Detach cleanly on Ctrl-C, SIGTERM or SIGHUP instead of dying with tracees held.
fn install_stop_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            tracing::warn!("failed to install a {sig} handler: {e}");
        }
    }
}

/// Runs `faultline inject`; returns the process exit code: the command's own (128 + signal
/// if it was killed), 0 after detaching from `--pid`, 2 on bad input or a tracer failure.
pub fn run(args: &InjectArgs) -> i32 {
    let rules = match args.rules() {
        Ok(r) if r.is_empty() => {
            eprintln!("faultline inject: nothing to inject: give --syscall with a delay/error/retval, or -e RULE");
            return 2;
        }
        Ok(r) => r,
        Err(e) => {
            eprintln!("faultline inject: {e}");
            return 2;
        }
    };
    if args.pid.is_none() && args.command.is_empty() {
        eprintln!("faultline inject: give --pid PID or a command after --");
        return 2;
    }
    let injector = Injector::new(rules).detach_on_exec(args.detach_on_exec);
    for r in injector.rules() {
        tracing::info!("rule: {}", r.to_strace());
    }
    install_stop_handlers();
    let result = match args.pid {
        Some(pid) => injector.trace_pid(pid, &STOP),
        None => injector.run_command(&args.command, &STOP),
    };
    match result {
        Ok(report) => {
            summarize(injector.rules(), &report);
            report.exit.map(|e| e.code()).unwrap_or(0)
        }
        Err(e) => {
            eprintln!("faultline inject: {}", error_chain(&e));
            2
        }
    }
}

fn summarize(rules: &[Rule], report: &Report) {
    for ev in &report.events {
        eprintln!(
            "faultline inject: pid {} {} call {}: {} at +{}ms",
            ev.pid, ev.syscall, ev.call, ev.action, ev.at_ms
        );
    }
    for line in summary::unmatched(rules, report) {
        eprintln!("faultline inject: {line}");
    }
}
