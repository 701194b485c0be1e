use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use harness::runner::{run_scenario, RunOptions};
use harness::{RunReport, Scenario, Status};

use crate::{fail_usage, UsageError};

#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to run (default: all).
    names: Vec<String>,
    /// Print the result document as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Keep artifacts (kernel log, mountinfo, process tree) for passing scenarios too.
    #[arg(long)]
    keep: bool,
    /// etxtbsy-exec-while-copy: run this copier as the subject, e.g. 'install -m755 {src} {dst}'.
    #[arg(long, value_name = "COMMAND")]
    copier: Option<String>,
    /// A scenario option KEY=VALUE (repeatable); see the README for each scenario's options.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    option: Vec<String>,
    /// Kill a scenario that runs longer than this many seconds (default: its own limit).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Where artifacts go (default: target/faultline).
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
}

pub fn select(names: &[String]) -> Result<Vec<&'static dyn Scenario>, UsageError> {
    let all = scenarios::all();
    if names.is_empty() {
        return Ok(all);
    }
    let valid: Vec<&str> = all.iter().map(|s| s.name()).collect();
    names
        .iter()
        .map(|n| {
            all.iter().copied().find(|s| s.name() == n).ok_or_else(|| {
                UsageError(format!(
                    "unknown scenario {n:?}; valid names: {}",
                    valid.join(", ")
                ))
            })
        })
        .collect()
}

pub fn run(args: Args, log: &str) -> Result<ExitCode, UsageError> {
    let selected = select(&args.names)?;
    let mut opts = RunOptions {
        keep: args.keep,
        timeout: args.timeout.map(Duration::from_secs),
        log: log.to_string(),
        ..RunOptions::default()
    };
    if let Some(dir) = args.artifacts {
        opts.artifacts_root = dir;
    }
    for kv in &args.option {
        let Some((k, v)) = kv.split_once('=') else {
            return fail_usage(format!("--option takes KEY=VALUE, got {kv:?}"));
        };
        opts.options.insert(k.to_string(), v.to_string());
    }
    if let Some(c) = args.copier {
        if !(c.contains("{src}") && c.contains("{dst}")) {
            return fail_usage(format!(
                "--copier must contain {{src}} and {{dst}}, got {c:?}"
            ));
        }
        opts.options.insert("copier".into(), c);
    }

    let mut report = RunReport {
        kernel: harness::KernelVersion::running().release,
        backend: if harness::runner::in_vm_guest() {
            "vm"
        } else {
            "namespace"
        }
        .into(),
        scenarios: Vec::new(),
    };
    for s in selected {
        eprintln!("faultline: {} ...", s.name());
        let r = run_scenario(s, &opts);
        eprintln!(
            "faultline: {} {} ({:.1}s)",
            s.name(),
            r.status.as_str(),
            r.duration_ms as f64 / 1000.0
        );
        report.scenarios.push(r);
    }
    finish(&report, args.json, args.junit.as_deref())
}

/// Prints the report as asked and maps it to the exit code.
pub fn finish(
    report: &RunReport,
    json: bool,
    junit: Option<&std::path::Path>,
) -> Result<ExitCode, UsageError> {
    if let Some(path) = junit {
        let xml = harness::output::junit::render(report)
            .map_err(|e| UsageError(format!("failed to render JUnit: {e}")))?;
        std::fs::write(path, xml)
            .map_err(|e| UsageError(format!("failed to write {}: {e}", path.display())))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("json"));
    } else {
        print!("{}", harness::output::text::run_table(report));
    }
    let any = |st: Status| report.scenarios.iter().any(|s| s.status == st);
    Ok(if any(Status::Error) {
        ExitCode::from(2)
    } else if any(Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
