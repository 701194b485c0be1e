//! The two processes between the host and a scenario: `ns-init` (in the new mount namespace,
//! parent of the new pid namespace) and `scenario` (pid 1 there, runs the variants).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

use super::{artifacts, registry, verdict, ChildArgs, ChildLine};
use crate::guard::Mount;
use crate::result::{ScenarioResult, Status};
use crate::scenario::{Context, Scenario, VariantSkipped};
use faultline_sys::entry::Entry;
use faultline_sys::kernel::KernelVersion;
use faultline_sys::kmsg::KmsgCursor;
use faultline_sys::process::die_with_parent;

/// Puts the child into a new mount namespace, and its children into a new pid namespace.
pub(crate) fn unshare_before_exec(cmd: &mut Command) {
    // SAFETY: unshare is async-signal-safe; the closure touches no allocator or lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID)
                .map_err(io::Error::from)
        });
    }
}

/// ns-init: in the scenario's new mount namespace, parent of its new pid namespace.
pub static NS_INIT: Entry = Entry::new("ns-init", ns_init_main);
/// The scenario process: pid 1 of its pid namespace.
pub static SCENARIO: Entry = Entry::new("scenario", scenario_main);

/// ns-init: start pid 1 of the new pid namespace and pass its exit status on.
fn ns_init_main(args: &[OsString]) -> i32 {
    // A signal mask survives fork and execve (sigprocmask(2)), and `faultline run` blocks
    // SIGINT and SIGTERM for its signal thread: the scenario and everything it starts must
    // take signals as usual.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let mut cmd = SCENARIO.command();
    cmd.args(args);
    die_with_parent(&mut cmd);
    match cmd.status() {
        Ok(st) => st.code().unwrap_or(3),
        Err(e) => {
            eprintln!("faultline: failed to start the scenario process: {e}");
            3
        }
    }
}

/// pid 1 of the scenario's pid namespace.
fn scenario_main(args: &[OsString]) -> i32 {
    let Some(args) = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| serde_json::from_str::<ChildArgs>(a).ok())
    else {
        eprintln!("faultline: scenario process started without its arguments");
        return 2;
    };
    init_logging(&args.log);
    let mut out = match take_stdout() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("faultline: failed to set up the result channel: {e}");
            return 3;
        }
    };
    let Some(scenario) = registry().into_iter().find(|s| s.name() == args.scenario) else {
        eprintln!("faultline: unknown scenario {:?}", args.scenario);
        return 2;
    };
    let result = match prepare_namespace(&args) {
        Ok((ctx, _scratch)) => run_variants(scenario, ctx, &args, &mut out),
        Err(e) => ScenarioResult::without_variants(
            scenario.name(),
            Status::Error,
            format!("failed to prepare the scenario's namespace: {e:#}"),
        ),
    };
    let _ = emit(&mut out, &ChildLine::Done(Box::new(result)));
    0
}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_target(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}

/// Keeps the result pipe on a private descriptor and points fd 1 at stderr, so nothing a
/// scenario or its subprocesses print can corrupt the report.
fn take_stdout() -> io::Result<File> {
    // SAFETY: fcntl/dup2 on descriptors this process owns; the new fd is owned by the File.
    unsafe {
        let fd: RawFd = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::dup2(2, 1) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd))
    }
}

fn emit(out: &mut File, line: &ChildLine) -> io::Result<()> {
    let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
    text.push('\n');
    out.write_all(text.as_bytes())
}

/// `/` rprivate (nothing we mount propagates to the host), a /proc for our pid namespace,
/// and a tmpfs on /tmp holding the scratch directory.
fn prepare_namespace(args: &ChildArgs) -> anyhow::Result<(Context, Mount)> {
    use anyhow::Context as _;
    crate::guard::mount::make_root_private().context("failed to make / rprivate")?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .context("failed to mount /proc for the pid namespace")?;
    let artifacts = artifacts_handle(&args.artifacts)?;
    let tmp = Mount::tmpfs(Path::new("/tmp"), "8g").context("failed to mount the scratch tmpfs")?;
    let scratch = PathBuf::from("/tmp").join(&args.scenario);
    std::fs::create_dir_all(&scratch).context("failed to create the scratch directory")?;
    let kmsg = match KmsgCursor::open_with_marker(&args.scenario) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!("kernel log unavailable (failed to open /dev/kmsg: {e})");
            None
        }
    };
    let ctx = Context {
        scenario: args.scenario.clone(),
        scratch,
        kernel: KernelVersion::running(),
        options: args.options.clone(),
        artifacts,
        kmsg,
        runtime: args.runtime.clone(),
        shared: None,
    };
    Ok((ctx, tmp))
}

/// The artifacts directory stays reachable after /tmp is shadowed: we hold its parent open
/// and name it through /proc/self/fd.
fn artifacts_handle(dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("failed to create {}", parent.display()))?;
    let f = File::open(parent).with_context(|| format!("failed to open {}", parent.display()))?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")).join(dir.file_name().unwrap_or_default()))
}

fn run_variants(
    s: &dyn Scenario,
    mut ctx: Context,
    args: &ChildArgs,
    out: &mut File,
) -> ScenarioResult {
    let mut result = ScenarioResult::without_variants(s.name(), Status::Error, "");
    let kernel = ctx.kernel.clone();
    let mut judged = Vec::new();
    for variant in s.variants_for(&kernel, &args.options, args.runtime.as_ref()) {
        ctx.progress(format!("variant {}", variant.name));
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| s.run_variant(&mut ctx, &variant)));
        let outcome = match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.downcast_ref::<VariantSkipped>().is_some() => {
                let reason = e.downcast::<VariantSkipped>().map(|s| s.reason);
                let j = verdict::Judged::skipped(&variant, reason.unwrap_or_default());
                let _ = emit(out, &ChildLine::Variant(Box::new(j.result.clone())));
                judged.push(j);
                continue;
            }
            Ok(Err(e)) => {
                result.reason = format!("variant {}: {e:#}", variant.name);
                break;
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                result.reason = format!("variant {} panicked: {msg}", variant.name);
                break;
            }
        };
        let j = verdict::Judged::new(&variant, outcome, s.detectors());
        let _ = emit(out, &ChildLine::Variant(Box::new(j.result.clone())));
        judged.push(j);
    }
    if result.reason.is_empty() {
        (result.status, result.reason) = verdict::judge(&judged);
    }
    for j in judged {
        result.variants.push(j.result);
        result.findings.extend(j.findings);
    }
    // What the variants shared (a containerd and its pod) is torn down now, so that what
    // its teardown makes the kernel say is in this scenario's log.
    ctx.shared = None;
    let kmsg = ctx.kmsg_since_marker();
    let alerts = faultline_sys::kmsg::alerts(&kmsg);
    if let Some(first) = alerts.first() {
        if result.status == Status::Pass {
            result.status = Status::Fail;
        }
        result.reason = format!(
            "{}; the kernel log has {} alert line(s), first: {}",
            result.reason,
            alerts.len(),
            first.message
        );
    }
    if result.status != Status::Pass || args.keep {
        match artifacts::write(&ctx.artifacts, &kmsg, &result) {
            Ok(()) => tracing::info!("artifacts in {}", args.artifacts.display()),
            Err(e) => tracing::warn!("failed to write artifacts: {e}"),
        }
    }
    result
}
