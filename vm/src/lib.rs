//! The disposable VM backend: guest kernel fetch, initramfs builder, qemu runner.
//!
//! [`run_in_vm`] boots one kernel with an initramfs holding the running binary, busybox, the
//! host binaries and kernel modules the scenarios require, runs the scenarios there with the
//! same runner as on the host, and returns the guest's report. Binaries that can run
//! scenarios dispatch [`ENTRIES`] (the guest's init, [`guest::ENTRY`]) so the guest's init is
//! the same executable. [`VmBackend`] is this crate's side of `faultline_core::backend`.

pub mod accel;
pub mod backend;

pub mod cpio;
pub mod fetch;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod needs;
pub mod protocol;
pub mod qemu;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faultline_core::runner::RunOptions;
use faultline_core::{RunReport, Scenario, ScenarioResult, Status};

pub use backend::VmBackend;
pub use kernel::{GuestKernel, KernelSpec};

/// The re-exec entry points this crate owns: the guest's init.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&guest::ENTRY];
pub use qemu::{Accel, AccelChoice};

use crate::initramfs::{Initramfs, GUEST_BINARY, REQUEST};
use crate::needs::GuestNeeds;
use crate::protocol::GuestRequest;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Modules(#[from] modules::ModuleError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Boot(#[from] qemu::BootError),
}

/// One guest run and its figures.
#[derive(Debug)]
pub struct VmRun {
    pub report: RunReport,
    pub kernel: GuestKernel,
    pub accel: AccelChoice,
    /// Assembling the initramfs (after the kernel was in the cache).
    pub build: Duration,
    pub initrd_bytes: u64,
    /// qemu start to guest init.
    pub to_init: Duration,
    /// qemu start to the report.
    pub total: Duration,
    /// The guest's own uptime when init started.
    pub guest_init_uptime: Duration,
    pub console: PathBuf,
}

/// How long a boot may take to reach guest init under TCG on a busy two-core machine.
const INIT_DEADLINE: Duration = Duration::from_secs(90);

/// Resolves `spec` to a kernel on disk, fetching Debian kernels into the cache.
pub fn guest_kernel(spec: &KernelSpec) -> Result<GuestKernel, VmError> {
    Ok(match spec {
        KernelSpec::Debian { series } => fetch::debian_kernel(series)?,
        KernelSpec::Path { image, modules } => GuestKernel::from_path(image, modules.as_deref())?,
    })
}

/// Boots `spec` and runs `scenarios` inside it.
pub fn run_in_vm(
    spec: &KernelSpec,
    scenarios: &[&dyn Scenario],
    opts: &RunOptions,
) -> Result<VmRun, VmError> {
    let request = guest_request(scenarios, opts);
    // The whole boot is bounded by the scenarios' limits (each scenario's own, or the
    // `--timeout` that overrides them, which the guest's runner applies too) plus boot time.
    let timeout = INIT_DEADLINE
        + scenarios
            .iter()
            .map(|s| opts.timeout.unwrap_or_else(|| s.timeout()))
            .sum::<Duration>();
    boot_with(spec, scenarios, &request, opts, timeout)
}

/// What the guest's runner is asked to do: the same scenarios with the same options,
/// `--timeout` included.
pub fn guest_request(scenarios: &[&dyn Scenario], opts: &RunOptions) -> GuestRequest {
    GuestRequest {
        scenarios: scenarios.iter().map(|s| s.name().to_string()).collect(),
        options: opts.options.clone(),
        log: opts.log.clone(),
        keep: opts.keep,
        timeout_secs: opts.timeout.map(|t| t.as_secs()),
        runtime: opts.runtime.clone(),
    }
}

fn boot_with(
    spec: &KernelSpec,
    scenarios: &[&dyn Scenario],
    request: &GuestRequest,
    opts: &RunOptions,
    timeout: Duration,
) -> Result<VmRun, VmError> {
    let kernel = guest_kernel(spec)?;
    let dir = opts.artifacts_root.join("vm").join(spec.label());
    std::fs::create_dir_all(&dir).map_err(|source| qemu::BootError::Files {
        path: dir.clone(),
        source,
    })?;
    let build_start = Instant::now();
    let initrd = dir.join("initramfs.cpio");
    let initrd_bytes = build_initramfs(&kernel, scenarios, request, &initrd)?;
    let build = build_start.elapsed();
    tracing::info!(
        "initramfs for {} ({} MiB) built in {:.1}s",
        kernel.release,
        initrd_bytes >> 20,
        build.as_secs_f64()
    );
    let accel = qemu::choose_accel(&kernel, &initrd, &dir);
    tracing::info!("accelerator: {} ({})", accel.accel.as_str(), accel.why);
    let boot = qemu::Boot {
        kernel: &kernel,
        initrd: &initrd,
        dir: &dir,
        accel: accel.accel,
        memory_mib: 1024 + (initrd_bytes >> 20) * 2,
        init_deadline: INIT_DEADLINE.min(timeout),
        deadline: timeout,
        stop_at_init: false,
    };
    let outcome = boot.run();
    // The archive is rebuilt every run and is as large as the binaries in it.
    if !opts.keep {
        let _ = std::fs::remove_file(&initrd);
    }
    let outcome = outcome?;
    let guest = outcome.report.expect("a completed boot has a report");
    let mut report = guest.report;
    report.backend = "vm".into();
    report.kernel = guest.kernel_release;
    Ok(VmRun {
        report,
        kernel,
        accel,
        build,
        initrd_bytes,
        to_init: outcome.to_init,
        total: outcome.total,
        guest_init_uptime: Duration::from_millis(guest.init_uptime_ms),
        console: outcome.console,
    })
}

/// [`run_in_vm`], with a failure to boot or report turned into an `error` result for each
/// scenario (the reason carries the console's tail), as the runner does for a scenario
/// process that dies.
pub fn run_report_in_vm(
    spec: &KernelSpec,
    scenarios: &[&dyn Scenario],
    opts: &RunOptions,
) -> RunReport {
    match run_in_vm(spec, scenarios, opts) {
        Ok(run) => {
            tracing::info!(
                "{}: guest init after {:.2}s ({}), report after {:.2}s; console: {}",
                spec,
                run.to_init.as_secs_f64(),
                run.accel.accel.as_str(),
                run.total.as_secs_f64(),
                run.console.display()
            );
            run.report
        }
        Err(e) => RunReport {
            kernel: spec.to_string(),
            backend: "vm".into(),
            runtime: opts.runtime.as_ref().map(|r| r.versions.clone()),
            scenarios: scenarios
                .iter()
                .map(|s| {
                    ScenarioResult::without_variants(
                        s.name(),
                        Status::Error,
                        format!("VM backend on {spec}: {e}"),
                    )
                })
                .collect(),
        },
    }
}

/// Writes the initramfs for `scenarios` on `kernel` and returns its size.
pub fn build_initramfs(
    kernel: &GuestKernel,
    scenarios: &[&dyn Scenario],
    request: &GuestRequest,
    out: &std::path::Path,
) -> Result<u64, VmError> {
    let mut needs = GuestNeeds::for_scenarios(scenarios, request.runtime.as_ref());
    if let Some(rt) = request
        .runtime
        .as_ref()
        .filter(|_| scenarios.iter().any(|s| s.uses_containerd()))
    {
        needs.binaries.extend(GuestNeeds::runtime_binaries(rt));
    }
    for missing in &needs.missing_binaries {
        tracing::warn!("{missing} is required but not installed on the host; the guest will skip what needs it");
    }
    let mut fs = Initramfs::new();
    fs.busybox()?;
    fs.running_executable(GUEST_BINARY)?;
    for b in &needs.binaries {
        // busybox is already there.
        if !fs.contains(&b.to_string_lossy()) {
            fs.binary(b)?;
        }
    }
    needs.add_support_files(&mut fs)?;
    let wanted: Vec<&str> = needs.modules.iter().map(String::as_str).collect();
    let resolved = modules::resolve(&kernel.modules, &wanted, &modules::builtin(&kernel.modules))?;
    for a in &resolved.absent {
        tracing::debug!("kernel {} has no module {a}", kernel.release);
    }
    fs.modules(&resolved.ordered);
    fs.file(
        REQUEST,
        0o644,
        serde_json::to_vec(request).expect("request serialises"),
    );
    fs.file(
        "/init",
        0o755,
        format!(
            "#!/bin/busybox sh\nexec {GUEST_BINARY} {} {}\n",
            faultline_sys::entry::MARKER,
            guest::ENTRY.name
        )
        .into_bytes(),
    );
    Ok(fs.write(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_is_asked_to_apply_the_timeout() {
        let opts = RunOptions {
            timeout: Some(Duration::from_secs(7)),
            ..RunOptions::default()
        };
        let request = guest_request(&[], &opts);
        assert_eq!(request.timeout_secs, Some(7));
        // Through the initramfs, as the guest reads it.
        let back: GuestRequest =
            serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(back.timeout_secs, Some(7));
        assert_eq!(
            guest_request(&[], &RunOptions::default()).timeout_secs,
            None
        );
    }

    #[test]
    fn the_guest_gets_the_runtime_under_test() {
        let rt = faultline_core::runtime_under_test::RuntimeUnderTest {
            spec: "debian,oci=crun".into(),
            containerd:
                "/root/.cache/faultline/runtimes/containerd_1.6.20~ds1-1+deb12u2/usr/bin/containerd"
                    .into(),
            oci: "/usr/bin/crun".into(),
            versions: faultline_core::runtime_under_test::RuntimeVersions {
                containerd:
                    "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u2"
                        .into(),
                oci: "crun version 1.8.1".into(),
            },
        };
        let opts = RunOptions {
            runtime: Some(rt.clone()),
            ..RunOptions::default()
        };
        let request = guest_request(&[], &opts);
        let back: GuestRequest =
            serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(back.runtime, Some(rt));
        assert_eq!(guest_request(&[], &RunOptions::default()).runtime, None);
    }
}
