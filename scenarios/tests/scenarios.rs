//! Every scenario as a named trial: `cargo test -p faultline-scenarios -- hostpath`.
//! A scenario whose requirements are missing is reported as ignored with the reason (a skip
//! is never a pass); a `fail` or `error` fails the trial with the scenario's reason.
//! Scenarios run one at a time unless `--test-threads` says otherwise: several share the
//! kernel log, and their timing assertions need the machine's cores.

use harness::runner::{run_scenario, RunOptions};
use harness::Status;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    harness::runner::init(scenarios::all, &[]);
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
                let r = run_scenario(s, &opts);
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
