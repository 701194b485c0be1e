//! Every scenario as a named trial: `cargo test -p faultline-scenarios -- hostpath`.
//! A scenario whose requirements are missing is reported as ignored with the reason (a skip
//! is never a pass); a `fail` or `error` fails the trial with the scenario's reason.
//! Scenarios run one at a time unless `--test-threads` says otherwise: several share the
//! kernel log, and their timing assertions need the machine's cores.

use harness::runner::{run_scenario, RunOptions};
use harness::scenario::Backend;
use harness::{Scenario, ScenarioResult, Status};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    harness::runner::init(
        scenarios::all,
        &[(vm::guest::GUEST_ENTRY, vm::guest::entry)],
    );
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
                    ..RunOptions::default()
                };
                let r = if s.backend() == Backend::VmOnly && !harness::runner::in_vm_guest() {
                    match run_in_vm(s, &opts) {
                        Some(r) => r,
                        None => {
                            return Ok(Completion::ignored_with(
                                "skip: needs qemu-system-x86_64 for the VM backend (apt-get install qemu-system-x86, or run ci/setup)",
                            ))
                        }
                    }
                } else {
                    run_scenario(s, &opts)
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
/// when qemu is not installed: a report without the scenario is an error.
fn run_in_vm(s: &'static dyn Scenario, opts: &RunOptions) -> Option<ScenarioResult> {
    if !vm::qemu::qemu_available() {
        return None;
    }
    let spec = std::env::var("FAULTLINE_TEST_KERNEL").unwrap_or_else(|_| "debian:6.1".into());
    let spec = match vm::KernelSpec::parse(&spec) {
        Ok(k) => k,
        Err(e) => {
            return Some(ScenarioResult::without_variants(
                s.name(),
                Status::Error,
                format!("FAULTLINE_TEST_KERNEL: {e}"),
            ))
        }
    };
    let vm_opts = vm::VmOptions {
        log: opts.log.clone(),
        ..vm::VmOptions::default()
    };
    let report = vm::run_report_in_vm(&spec, &[s], &vm_opts);
    let names: Vec<String> = report.scenarios.iter().map(|r| r.name.clone()).collect();
    Some(
        match report.scenarios.into_iter().find(|r| r.name == s.name()) {
            Some(mut r) => {
                r.reason = format!("[{} in the VM] {}", report.kernel, r.reason);
                r
            }
            // Not a skip: the guest ran and answered, without this scenario.
            None => ScenarioResult::without_variants(
                s.name(),
                Status::Error,
                format!(
                    "[{} in the VM] the guest's report lacks the scenario (it has: {names:?})",
                    report.kernel
                ),
            ),
        },
    )
}
