//! Real boots of a Debian guest kernel (fetched into the cache on first use) under whatever
//! accelerator works here: the guest reports back; a guest that panics or hangs is an error
//! with the console's tail, within its deadline, and leaves no qemu behind. Skipped with the
//! reason when qemu is not installed.
//!
//! Own `main` (harness = false): this binary is the guest's init too, so it must dispatch
//! the internal entry point before anything else.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use faultline_core::runner::RunOptions;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use vm::initramfs::Initramfs;
use vm::qemu::{Boot, BootError};
use vm::KernelSpec;

fn main() {
    faultline_core::runner::set_registry(Vec::new);
    faultline_sys::entry::dispatch(&[faultline_core::ENTRIES, vm::ENTRIES]);
    let mut args = Arguments::from_args();
    // Boots need the machine's cores; one at a time.
    args.test_threads = Some(1);
    let trials = vec![
        Trial::ignorable_test("boot_only_guest_reports_its_kernel", boot_only),
        Trial::ignorable_test("panicking_guest_is_an_error_with_the_console_tail", panic),
        Trial::ignorable_test("hanging_guest_is_killed_at_its_deadline", hang),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn spec() -> KernelSpec {
    KernelSpec::parse(
        &std::env::var("FAULTLINE_TEST_KERNEL").unwrap_or_else(|_| "debian:6.1".into()),
    )
    .expect("FAULTLINE_TEST_KERNEL")
}

fn skip_without_qemu() -> Option<Completion> {
    (!vm::qemu::qemu_available()).then(|| {
        Completion::ignored_with(
            "skip: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)",
        )
    })
}

fn boot_only() -> Result<Completion, Failed> {
    if let Some(skip) = skip_without_qemu() {
        return Ok(skip);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let opts = RunOptions {
        artifacts_root: dir.path().to_path_buf(),
        ..RunOptions::default()
    };
    let run = vm::run_in_vm(&spec(), &[], &opts).map_err(|e| format!("{e}"))?;
    let series = match spec() {
        KernelSpec::Debian { series } => series,
        KernelSpec::Path { .. } => String::new(),
    };
    if !run.report.kernel.starts_with(&series) {
        return Err(format!("guest kernel {} is not {series}", run.report.kernel).into());
    }
    if run.report.backend != "vm" || !run.report.scenarios.is_empty() {
        return Err(format!("unexpected report {:?}", run.report).into());
    }
    let console = std::fs::read_to_string(&run.console).map_err(|e| e.to_string())?;
    for needle in [
        vm::protocol::INIT_MARKER,
        "Linux version",
        vm::protocol::POWEROFF_MARKER,
    ] {
        if !console.contains(needle) {
            return Err(format!("console.log lacks {needle:?}").into());
        }
    }
    println!(
        "{}: init after {:.2}s ({}), report after {:.2}s",
        run.report.kernel,
        run.to_init.as_secs_f64(),
        run.accel.accel.as_str(),
        run.total.as_secs_f64()
    );
    Ok(Completion::Completed)
}

/// An archive whose init prints the init marker, then never reports.
fn reaches_init_then_hangs() -> Result<Initramfs, Failed> {
    let mut fs = Initramfs::new();
    fs.busybox().map_err(|e| e.to_string())?;
    fs.file(
        "/init",
        0o755,
        format!(
            "#!/bin/busybox sh\necho '{}'\nexec /bin/busybox sleep 100000\n",
            vm::protocol::INIT_MARKER
        )
        .into_bytes(),
    );
    Ok(fs)
}

/// Boots `fs` with a deadline and returns the error the boot must end in, having checked
/// that no qemu of this boot is left.
fn boot_expecting_error(
    fs: Initramfs,
    deadline: Duration,
) -> Result<(BootError, Duration), Failed> {
    let kernel = vm::guest_kernel(&spec()).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // The accelerator probe needs an archive that reaches init: `fs` may never get there,
    // and a failed probe would pin TCG (cached) for the rest of the host's boot.
    let probe = dir.path().join("probe.cpio");
    reaches_init_then_hangs()?
        .write(&probe)
        .map_err(|e| e.to_string())?;
    let accel = vm::qemu::choose_accel(&kernel, &probe, dir.path());
    let initrd = dir.path().join("initrd.cpio");
    fs.write(&initrd).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let r = Boot {
        kernel: &kernel,
        initrd: &initrd,
        dir: dir.path(),
        accel: accel.accel,
        memory_mib: 512,
        init_deadline: deadline,
        deadline,
        stop_at_init: false,
    }
    .run();
    let took = start.elapsed();
    if let Some(pid) = qemu_running_with(&initrd) {
        return Err(format!("qemu (pid {pid}) outlived its failed boot").into());
    }
    match r {
        Ok(o) => Err(format!("the boot succeeded: {o:?}").into()),
        Err(e) => Ok((e, took)),
    }
}

/// A process whose command line names `initrd`: a qemu of that boot.
fn qemu_running_with(initrd: &Path) -> Option<u32> {
    let needle = initrd.as_os_str().as_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle))
        })
}

fn panic() -> Result<Completion, Failed> {
    if let Some(skip) = skip_without_qemu() {
        return Ok(skip);
    }
    // No /init: the kernel falls back to mounting a root device, has none, and panics.
    let (err, took) = boot_expecting_error(Initramfs::new(), Duration::from_secs(90))?;
    match &err {
        BootError::NoReport { tail, .. } if tail.contains("Kernel panic") => {
            println!("panic reported after {:.1}s", took.as_secs_f64());
            Ok(Completion::Completed)
        }
        other => Err(format!("expected NoReport with a panic in the tail, got: {other}").into()),
    }
}

fn hang() -> Result<Completion, Failed> {
    if let Some(skip) = skip_without_qemu() {
        return Ok(skip);
    }
    let deadline = Duration::from_secs(12);
    let (err, took) = boot_expecting_error(reaches_init_then_hangs()?, deadline)?;
    if took > deadline + Duration::from_secs(5) {
        return Err(format!("the deadline was {deadline:?} but the boot took {took:?}").into());
    }
    match &err {
        // The guest reached init, then hung: killed at the deadline, with init's marker in
        // the console tail.
        BootError::Timeout { tail, .. } if tail.contains(vm::protocol::INIT_MARKER) => {}
        BootError::Timeout { .. } => {
            return Err(format!("the error lacks the console tail: {err}").into())
        }
        // A busy host (TCG) may not even reach init by then: killed at the same deadline.
        BootError::NoInit { .. } => {
            println!("guest init not reached within {deadline:?}; killed all the same")
        }
        other => return Err(format!("expected a timeout, got: {other}").into()),
    }
    Ok(Completion::Completed)
}
