//! Every scenario as a named trial: `cargo test -p faultline-scenarios -- hostpath`.
//! A scenario whose requirements are missing is reported as ignored with the reason (a skip
//! is never a pass); a `fail` or `error` fails the trial with the scenario's reason.
//! Scenarios run one at a time unless `--test-threads` says otherwise: several share the
//! kernel log, and their timing assertions need the machine's cores.

use faultline_core::backend::{needs_vm, Backend, NamespaceBackend};
use faultline_core::runner::RunOptions;
use faultline_core::{Scenario, ScenarioResult, Status};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    faultline_core::runner::set_registry(scenarios::all);
    faultline_sys::entry::dispatch(&[
        faultline_core::ENTRIES,
        faultline_detect::ENTRIES,
        faultline_fuse::ENTRIES,
        faultline_runtime::ENTRIES,
        vm::ENTRIES,
    ]);
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let trials = scenarios::all()
        .into_iter()
        .map(|s| {
            Trial::ignorable_test(s.name(), move || {
                let opts = RunOptions {
                    log: std::env::var("FAULTLINE_LOG").unwrap_or_else(|_| "warn".into()),
                    runtime: faultline_runtime::select::system().ok(),
                    ..RunOptions::default()
                };
                let r = match backend_for(s) {
                    Ok(Some(backend)) => run_on(backend.as_ref(), s, &opts),
                    Ok(None) => {
                        return Ok(Completion::ignored_with(
                            "skip: needs qemu-system-x86_64 for the VM backend (apt-get install qemu-system-x86, or run ci/setup)",
                        ))
                    }
                    Err(e) => ScenarioResult::without_variants(s.name(), Status::Error, e),
                };
                let detail = serde_json::to_string_pretty(&r).unwrap_or_default();
                match r.status {
                    Status::Pass => {
                        println!("{}: {}", r.name, r.reason);
                        Ok(Completion::Completed)
                    }
                    Status::Skip => Ok(Completion::ignored_with(format!("skip: {}", r.reason))),
                    Status::Fail | Status::Error => Err(Failed::from(format!(
                        "{} {}: {}\n{detail}",
                        r.name,
                        r.status.as_str(),
                        r.reason
                    ))),
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// A VM-only scenario boots one guest kernel (`FAULTLINE_TEST_KERNEL`, default
/// `debian:6.1`, fetched into the cache on first use) and runs there; `None` (a skip) only
/// when qemu is not installed. Everything else runs in namespaces here.
fn backend_for(s: &dyn Scenario) -> Result<Option<Box<dyn Backend>>, String> {
    if !needs_vm(s) {
        return Ok(Some(Box::new(NamespaceBackend)));
    }
    if !vm::qemu::qemu_available() {
        return Ok(None);
    }
    let spec = std::env::var("FAULTLINE_TEST_KERNEL").unwrap_or_else(|_| "debian:6.1".into());
    let spec = vm::KernelSpec::parse(&spec).map_err(|e| format!("FAULTLINE_TEST_KERNEL: {e}"))?;
    Ok(Some(Box::new(vm::VmBackend { spec })))
}

/// Runs `s` on `backend`; a report without the scenario is an error, not a skip (the guest
/// ran and answered without it).
fn run_on(backend: &dyn Backend, s: &'static dyn Scenario, opts: &RunOptions) -> ScenarioResult {
    let report = backend.run(&[s], opts, &mut |_| {});
    let names: Vec<String> = report.scenarios.iter().map(|r| r.name.clone()).collect();
    let in_vm = report.backend == "vm";
    match report.scenarios.into_iter().find(|r| r.name == s.name()) {
        Some(mut r) if in_vm => {
            r.reason = format!("[{} in the VM] {}", report.kernel, r.reason);
            r
        }
        Some(r) => r,
        None => ScenarioResult::without_variants(
            s.name(),
            Status::Error,
            format!(
                "[{}] the report lacks the scenario (it has: {names:?})",
                report.kernel
            ),
        ),
    }
}
