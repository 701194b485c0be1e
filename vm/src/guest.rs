//! The guest's init (pid 1 of the VM): an internal entry point of whichever binary built the
//! initramfs, so the guest runs the very scenarios and runner the host has. It mounts the
//! kernel file systems, brings up loopback, loads the modules, runs the requested scenarios
//! with the namespace runner, writes the report on the report port, dumps the kernel log on
//! the console, and powers off, whatever happened before: a task stuck in the kernel can
//! not hold the VM up, since nothing waits for it.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use faultline_core::runner::{run_all, RunOptions, GUEST_ENV};
use faultline_core::{KernelVersion, RunReport, ScenarioResult, Status};
use faultline_sys::entry::Entry;
use nix::mount::{mount, MsFlags};

use crate::initramfs::{MODULE_DIR, MODULE_ORDER, REQUEST};
use crate::protocol::{frame, GuestReport, GuestRequest, INIT_MARKER, POWEROFF_MARKER, REPORT_TTY};

/// The guest's init, as a re-exec entry point (the initramfs's `/init` execs it).
pub static ENTRY: Entry = Entry::new("vm-guest", entry);

/// The entry point's main. Never returns normally when it is pid 1: it powers off.
fn entry(_args: &[std::ffi::OsString]) -> i32 {
    let uptime_ms = uptime_ms();
    console(&format!(
        "{INIT_MARKER} uptime={:.3}",
        uptime_ms as f64 / 1000.0
    ));
    if let Err(e) = leave_rootfs() {
        console(&format!("faultline-guest: {e}"));
    }
    if let Err(e) = mount_kernel_filesystems() {
        console(&format!("faultline-guest: {e}"));
    }
    // Children (the runner's scenario processes) see they are in the guest.
    std::env::set_var(GUEST_ENV, "1");
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    // The console is a tty; escape codes would only clutter console.log.
    std::env::set_var("NO_COLOR", "1");

    let request: Option<GuestRequest> = std::fs::read_to_string(REQUEST)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let log = request
        .as_ref()
        .map(|r| r.log.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&log))
        .with_target(false)
        .with_ansi(false)
        .try_init();

    if let Err(e) = loopback_up() {
        console(&format!("faultline-guest: failed to bring up lo: {e}"));
    }
    let (modules_loaded, module_errors) = load_modules();
    for e in &module_errors {
        console(&format!("faultline-guest: {e}"));
    }

    let release = KernelVersion::running().release;
    let report = match &request {
        None => RunReport {
            runtime: None,
            kernel: release.clone(),
            backend: "vm".into(),
            scenarios: vec![ScenarioResult::without_variants(
                "vm-guest",
                Status::Error,
                format!("failed to read the guest request {REQUEST}"),
            )],
        },
        Some(r) if r.boot_only() => RunReport {
            runtime: None,
            kernel: release.clone(),
            backend: "vm".into(),
            scenarios: Vec::new(),
        },
        Some(r) => run_requested(r),
    };
    let guest_report = GuestReport {
        report,
        kernel_release: release,
        init_uptime_ms: uptime_ms,
        modules_loaded,
        module_errors,
    };
    if let Err(e) = send_report(&guest_report) {
        console(&format!("faultline-guest: failed to write the report: {e}"));
    }
    dump_kernel_log();
    power_off()
}

fn run_requested(req: &GuestRequest) -> RunReport {
    let all = faultline_core::runner::registry();
    let mut selected = Vec::new();
    let mut unknown = Vec::new();
    for name in &req.scenarios {
        match all.iter().find(|s| s.name() == name) {
            Some(s) => selected.push(*s),
            None => unknown.push(ScenarioResult::without_variants(
                name,
                Status::Error,
                "the guest's binary does not know this scenario",
            )),
        }
    }
    let opts = RunOptions {
        options: req.options.clone(),
        keep: req.keep,
        artifacts_root: "/tmp/faultline-artifacts".into(),
        timeout: req.timeout_secs.map(std::time::Duration::from_secs),
        log: if req.log.is_empty() {
            "warn".into()
        } else {
            req.log.clone()
        },
        runtime: req.runtime.clone(),
    };
    let mut report =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_all(&selected, &opts)))
            .unwrap_or_else(|_| RunReport {
                kernel: KernelVersion::running().release,
                backend: "vm".into(),
                runtime: req.runtime.as_ref().map(|r| r.versions.clone()),
                scenarios: selected
                    .iter()
                    .map(|s| {
                        ScenarioResult::without_variants(
                            s.name(),
                            Status::Error,
                            "the guest's runner panicked; see the console log",
                        )
                    })
                    .collect(),
            });
    report.backend = "vm".into();
    report.scenarios.extend(unknown);
    report
}

/// One line on the console (init's stdout is /dev/console = ttyS0).
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Milliseconds since the guest kernel booted. /proc is not mounted yet when init asks, and
/// CLOCK_BOOTTIME counts from boot too.
fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("failed to mount {fstype} on {target}")]
struct MountFailed {
    fstype: String,
    target: String,
    #[source]
    source: nix::Error,
}

/// Makes `/` a bind mount of the initramfs instead of the initramfs itself, as switch_root
/// does with a real root, without copying anything: bind `/` on /mnt, move that mount onto
/// `/`, chroot into it. OCI runtimes pivot_root(2) into each container's root, and
/// pivot_root fails with EINVAL while the current root is the initial ramfs ("the current
/// root is on the rootfs (initial ramfs) mount", pivot_root(2)); a root with a parent mount
/// is what they expect.
fn leave_rootfs() -> Result<(), LeaveRootfs> {
    let at = |step: &'static str| move |source| LeaveRootfs { step, source };
    let _ = std::fs::create_dir_all("/mnt");
    mount(
        Some("/"),
        "/mnt",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(at("bind / on /mnt"))?;
    nix::unistd::chdir("/mnt").map_err(at("chdir /mnt"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(at("move /mnt onto /"))?;
    nix::unistd::chroot(".").map_err(at("chroot"))?;
    nix::unistd::chdir("/").map_err(at("chdir /"))
}

#[derive(Debug, thiserror::Error)]
#[error("failed to leave the initial ramfs ({step}); OCI runtimes cannot pivot_root here")]
struct LeaveRootfs {
    step: &'static str,
    #[source]
    source: nix::Error,
}

fn mount_kernel_filesystems() -> Result<(), MountFailed> {
    let table: &[(&str, &str, MsFlags, Option<&str>)] = &[
        ("proc", "/proc", MsFlags::empty(), None),
        ("sysfs", "/sys", MsFlags::empty(), None),
        ("devtmpfs", "/dev", MsFlags::empty(), None),
        ("tmpfs", "/tmp", MsFlags::empty(), Some("mode=1777")),
        ("tmpfs", "/run", MsFlags::empty(), Some("mode=0755")),
        ("cgroup2", "/sys/fs/cgroup", MsFlags::empty(), None),
    ];
    for (fstype, target, flags, data) in table {
        let _ = std::fs::create_dir_all(target);
        if let Err(source) = mount(Some(*fstype), *target, Some(*fstype), *flags, *data) {
            // cgroup2 is optional: a kernel without it still runs most scenarios.
            if *fstype != "cgroup2" {
                return Err(MountFailed {
                    fstype: fstype.to_string(),
                    target: target.to_string(),
                    source,
                });
            }
        }
    }
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::empty(),
        None::<&str>,
    );
    let _ = std::fs::create_dir_all("/dev/shm");
    Ok(())
}

/// `ip link set lo up`, through busybox: the guest has no network beyond loopback, and
/// loopback is where the NFS server and client meet.
fn loopback_up() -> Result<(), String> {
    let out = std::process::Command::new("/bin/busybox")
        .args(["ip", "link", "set", "lo", "up"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Loads every module in the order file with `finit_module`. A module already present
/// (EEXIST) counts as loaded.
fn load_modules() -> (Vec<String>, Vec<String>) {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    let Ok(order) = std::fs::read_to_string(MODULE_ORDER) else {
        return (loaded, errors);
    };
    for name in order.lines().filter(|l| !l.is_empty()) {
        let path = Path::new(MODULE_DIR).join(format!("{name}.ko"));
        match finit_module(&path) {
            Ok(()) => loaded.push(name.to_string()),
            Err(nix::Error::EEXIST) => loaded.push(name.to_string()),
            Err(e) => errors.push(format!("failed to load module {name}: {e}")),
        }
    }
    (loaded, errors)
}

fn finit_module(path: &Path) -> Result<(), nix::Error> {
    let file = std::fs::File::open(path)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let params = CString::default();
    // SAFETY: finit_module reads from a file descriptor we own for the duration of the call
    // and a NUL-terminated empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

fn send_report(report: &GuestReport) -> std::io::Result<()> {
    let mut tty = std::fs::OpenOptions::new().write(true).open(REPORT_TTY)?;
    tty.write_all(frame(report).as_bytes())?;
    tty.flush()?;
    // The UART drains asynchronously; wait until its queue is empty before powering off.
    // SAFETY: tcdrain on a file descriptor we own.
    unsafe {
        libc::tcdrain(tty.as_raw_fd());
    }
    Ok(())
}

/// The whole kernel log on the console, so the host's console.log artifact carries it
/// (the console itself only shows warnings and worse during the run), in `dmesg`'s format.
fn dump_kernel_log() {
    let Ok(lines) = faultline_detect::kernel_log::read_live() else {
        return;
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "faultline-guest: ---- kernel log ----");
    for line in &lines {
        let _ = match &line.when {
            // `[    1.234567] message`, as dmesg (and KmsgRecord::to_dmesg_line) print it.
            Some(when) => writeln!(out, "[{when:>12}] {}", line.message),
            None => writeln!(out, "{}", line.message),
        };
    }
    let _ = writeln!(out, "faultline-guest: ---- end of kernel log ----");
    let _ = out.flush();
}

fn power_off() -> i32 {
    console(POWEROFF_MARKER);
    nix::unistd::sync();
    // The console UART drains asynchronously: let it empty before the machine goes.
    // SAFETY: tcdrain on stdout, a descriptor this process holds open.
    unsafe {
        libc::tcdrain(1);
    }
    if nix::unistd::getpid().as_raw() == 1 {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }
    0
}
