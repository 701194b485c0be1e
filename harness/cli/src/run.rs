use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use faultline_core::backend::{Backend, NamespaceBackend, Progress};
use faultline_core::runner::RunOptions;
use faultline_core::{RunReport, Scenario, Status};

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
    /// Run inside a disposable qemu VM (default kernel: debian:6.1).
    #[arg(long)]
    vm: bool,
    /// Kernel to run on: host, debian:6.1, debian:6.12, or IMAGE[:MODULES_DIR]. Repeat to
    /// run on each and print the comparison matrix. Anything but `host` implies --vm.
    #[arg(long, value_name = "SPEC")]
    kernel: Vec<String>,
}

/// Where each pass of the suite runs: the host's namespaces, or one VM per kernel.
fn backends(vm_flag: bool, kernels: &[String]) -> Result<Vec<Box<dyn Backend>>, UsageError> {
    let vm = |spec| Box::new(vm::VmBackend { spec }) as Box<dyn Backend>;
    if kernels.is_empty() {
        return Ok(vec![if vm_flag {
            vm(vm::KernelSpec::Debian {
                series: "6.1".into(),
            })
        } else {
            Box::new(NamespaceBackend)
        }]);
    }
    kernels
        .iter()
        .map(|k| {
            if k == "host" {
                if vm_flag {
                    return Err(UsageError(
                        "--kernel host runs on the host kernel and cannot be combined with --vm"
                            .into(),
                    ));
                }
                return Ok(Box::new(NamespaceBackend) as Box<dyn Backend>);
            }
            vm::KernelSpec::parse(k)
                .map(vm)
                .map_err(|e| UsageError(e.to_string()))
        })
        .collect()
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

/// A key no selected scenario reads, or a value it cannot use, is a usage error now rather
/// than a surprise half-way through a run.
fn check_option(selected: &[&dyn Scenario], key: &str, value: &str) -> Result<(), UsageError> {
    let declared: Vec<_> = selected
        .iter()
        .flat_map(|s| s.options().iter().map(move |o| (s.name(), o)))
        .collect();
    match declared.iter().find(|(_, o)| o.key == key) {
        Some((_, o)) => o.validate(value).map_err(UsageError),
        None => {
            let known: Vec<String> = declared
                .iter()
                .map(|(s, o)| format!("{} ({s})", o.key))
                .collect();
            Err(UsageError(format!(
                "no selected scenario takes option {key:?}; options: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
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
        check_option(&selected, k, v)?;
        opts.options.insert(k.to_string(), v.to_string());
    }
    if let Some(c) = args.copier {
        check_option(&selected, "copier", &c)?;
        opts.options.insert("copier".into(), c);
    }

    let uses_vm = args.vm || args.kernel.iter().any(|k| k != "host");
    let backends = backends(args.vm, &args.kernel)?;
    if uses_vm && !vm::qemu::qemu_available() {
        return fail_usage(
            "--vm needs qemu-system-x86_64: apt-get install qemu-system-x86 (or run ci/setup)",
        );
    }
    let reports: Vec<RunReport> = backends
        .iter()
        .map(|b| b.run(&selected, &opts, &mut print_progress))
        .collect();
    if reports.len() == 1 {
        return finish(&reports[0], args.json, args.junit.as_deref());
    }
    finish_many(&reports, args.json, args.junit.as_deref())
}

/// Progress lines on stderr (the table or JSON goes to stdout).
fn print_progress(p: Progress) {
    match p {
        Progress::Started(s) => eprintln!("faultline: {} ...", s.name()),
        Progress::Finished(r) => eprintln!(
            "faultline: {} {} ({:.1}s)",
            r.name,
            r.status.as_str(),
            r.duration_ms as f64 / 1000.0
        ),
        Progress::Step(line) => eprintln!("faultline: {line}"),
    }
}

/// Several kernels: each run's table, then the comparison matrix (JSON: every report and
/// the matrix). The exit code is the worst of the runs.
fn finish_many(
    reports: &[RunReport],
    json: bool,
    junit: Option<&std::path::Path>,
) -> Result<ExitCode, UsageError> {
    let matrix = faultline_core::compare::Matrix::build(
        &faultline_core::compare::Column::label_all(reports.to_vec()),
    );
    if let Some(path) = junit {
        let mut merged = reports[0].clone();
        merged.scenarios.clear();
        for r in reports {
            for s in &r.scenarios {
                let mut s = s.clone();
                s.name = format!("{} [{}]", s.name, r.kernel);
                merged.scenarios.push(s);
            }
        }
        write_junit(&merged, path)?;
    }
    if json {
        let doc = serde_json::json!({ "runs": reports, "comparison": matrix });
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else {
        for r in reports {
            println!("== {} ({})", r.kernel, r.backend);
            print!("{}", faultline_core::output::text::run_table(r));
            println!();
        }
        print!("{}", matrix.render());
    }
    Ok(exit_code(reports.iter().flat_map(|r| &r.scenarios)))
}

/// Prints the report as asked and maps it to the exit code.
pub fn finish(
    report: &RunReport,
    json: bool,
    junit: Option<&std::path::Path>,
) -> Result<ExitCode, UsageError> {
    if let Some(path) = junit {
        write_junit(report, path)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(report).expect("json"));
    } else {
        print!("{}", faultline_core::output::text::run_table(report));
    }
    Ok(exit_code(&report.scenarios))
}

fn write_junit(report: &RunReport, path: &std::path::Path) -> Result<(), UsageError> {
    let xml = faultline_core::output::junit::render(report)
        .map_err(|e| UsageError(format!("failed to render JUnit: {e}")))?;
    std::fs::write(path, xml)
        .map_err(|e| UsageError(format!("failed to write {}: {e}", path.display())))
}

/// 2 if the harness broke anywhere, else 1 if a scenario failed, else 0.
fn exit_code<'a>(
    scenarios: impl IntoIterator<Item = &'a faultline_core::ScenarioResult>,
) -> ExitCode {
    let worst = scenarios.into_iter().fold(0u8, |w, s| match s.status {
        Status::Error => 2,
        Status::Fail => w.max(1),
        _ => w,
    });
    ExitCode::from(worst)
}
