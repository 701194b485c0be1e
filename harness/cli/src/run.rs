use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use faultline_core::backend::{Backend, NamespaceBackend, Progress};
use faultline_core::runner::{artifacts, interrupt, RunOptions};
use faultline_core::{RunReport, Scenario, Status};

use crate::report::{self, Junit};
use crate::{fail_usage, signals, UsageError};

#[derive(clap::Args)]
pub struct Args {
    /// Scenarios to run (default: all; `faultline list` names them).
    names: Vec<OsString>,
    /// Print the result document as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write a JUnit XML report to FILE (opened before anything runs).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Keep artifacts (kernel log, mountinfo, process tree) for passing scenarios too.
    #[arg(long)]
    keep: bool,
    /// etxtbsy-exec-while-copy: run this copier as the subject, e.g. 'install -m755 {src} {dst}'.
    #[arg(long, value_name = "COMMAND")]
    copier: Option<String>,
    /// A scenario option KEY=VALUE (repeatable); each scenario's options are listed below.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
    option: Vec<String>,
    /// Kill a scenario that runs longer than this many seconds, a whole number above 0
    /// (default: its own limit). Applies inside the VM too.
    // A string, checked by `parse_timeout`: as a number, clap would take `-1` for a flag.
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    timeout: Option<String>,
    /// Where artifacts of scenarios that do not pass go, one directory per scenario, emptied
    /// when the scenario starts (default: target/faultline). Checked before anything runs.
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Run inside a disposable qemu VM (default kernel: debian:6.1).
    #[arg(long)]
    vm: bool,
    /// Kernel to run on: host, debian:6.1, debian:6.12, or IMAGE[:MODULES_DIR]. Repeat to
    /// run on each and print the comparison matrix. Anything but `host` implies --vm.
    #[arg(long, value_name = "SPEC")]
    kernel: Vec<String>,
    /// Container runtime under test: `system` (containerd, its shims and runc on PATH),
    /// `debian` or `debian:containerd=VERSION` (Debian's containerd and runc, fetched into
    /// the cache, never installed), or `containerd=PATH` and `oci=NAME|PATH` comma-separated,
    /// alone or after system/debian (`debian,oci=crun`). Repeat to run the whole suite on
    /// each and print the matrix; with several --kernel, on every kernel × runtime. Default:
    /// system where containerd is on PATH, else debian.
    #[arg(long, value_name = "SPEC")]
    runtime: Vec<String>,
}

/// One pass of the suite: where it runs, and whether that is a VM.
struct Pass {
    backend: Box<dyn Backend>,
    vm: bool,
}

/// Where each pass of the suite runs: the host's namespaces, or one VM per kernel. A kernel
/// that cannot boot is a usage error here, before anything boots.
fn backends(vm_flag: bool, kernels: &[String]) -> Result<Vec<Pass>, UsageError> {
    let vm = |spec: vm::KernelSpec| -> Result<Pass, UsageError> {
        spec.check_usable().map_err(|e| UsageError(e.to_string()))?;
        Ok(Pass {
            backend: Box::new(vm::VmBackend { spec }),
            vm: true,
        })
    };
    let host = || Pass {
        backend: Box::new(NamespaceBackend),
        vm: false,
    };
    if kernels.is_empty() {
        return Ok(vec![if vm_flag {
            vm(vm::KernelSpec::Debian {
                series: "6.1".into(),
            })?
        } else {
            host()
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
                return Ok(host());
            }
            vm(vm::KernelSpec::parse(k).map_err(|e| UsageError(e.to_string()))?)
        })
        .collect()
}

pub fn select(names: &[OsString]) -> Result<Vec<&'static dyn Scenario>, UsageError> {
    let all = scenarios::all();
    if names.is_empty() {
        return Ok(all);
    }
    let valid: Vec<&str> = all.iter().map(|s| s.name()).collect();
    names
        .iter()
        .map(|n| {
            let found = n
                .to_str()
                .and_then(|n| all.iter().copied().find(|s| s.name() == n));
            found.ok_or_else(|| {
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

/// `--timeout`: a whole number of seconds above 0 (0 would kill every scenario at once).
fn parse_timeout(value: &str) -> Result<Duration, UsageError> {
    match value.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(UsageError(format!(
            "--timeout takes a whole number of seconds above 0, got {value:?}"
        ))),
    }
}

/// `-o KEY=VALUE` and `--copier`, each checked against the selected scenarios, then each
/// scenario's check of its options together.
fn scenario_options(
    selected: &[&dyn Scenario],
    pairs: &[String],
    copier: Option<String>,
) -> Result<BTreeMap<String, String>, UsageError> {
    let mut options = BTreeMap::new();
    for kv in pairs {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(UsageError(format!("--option takes KEY=VALUE, got {kv:?}")));
        };
        check_option(selected, k, v)?;
        options.insert(k.to_string(), v.to_string());
    }
    if let Some(c) = copier {
        check_option(selected, "copier", &c)?;
        options.insert("copier".into(), c);
    }
    for s in selected {
        s.check_options(&options)
            .map_err(|why| UsageError(format!("{}: {why}", s.name())))?;
    }
    Ok(options)
}

pub fn run(args: Args, log: &str) -> Result<ExitCode, UsageError> {
    let selected = select(&args.names)?;
    let mut opts = RunOptions {
        keep: args.keep,
        timeout: args.timeout.as_deref().map(parse_timeout).transpose()?,
        options: scenario_options(&selected, &args.option, args.copier)?,
        log: log.to_string(),
        // containerd and runc on PATH until `--runtime` chooses; without them the runtime
        // scenarios' variants skip, saying what to install.
        runtime: faultline_runtime::select::system().ok(),
        ..RunOptions::default()
    };
    let passes = backends(args.vm, &args.kernel)?;
    let runtimes = crate::runtimes::resolve(&args.runtime, &selected)?;
    let uses_vm = passes.iter().any(|p| p.vm);
    if uses_vm && !vm::qemu::qemu_available() {
        return fail_usage(
            "--vm needs qemu-system-x86_64: apt-get install qemu-system-x86 (or run ci/setup)",
        );
    }
    // Every place results go is checked before anything runs.
    if let Some(dir) = args.artifacts {
        report::check_artifacts(&dir, uses_vm)?;
        opts.artifacts_root = dir;
    }
    let junit = args.junit.map(Junit::open).transpose()?;

    signals::install()?;
    let mut reports: Vec<RunReport> = Vec::new();
    let artifacts_root = opts.artifacts_root.clone();
    // Every kernel × runtime: the whole selected suite on each (a scenario that drives no
    // runtime runs on each too; its rows show whether the kernel alone decides).
    for pass in &passes {
        for (i, runtime) in runtimes.iter().enumerate() {
            if interrupt::requested().is_some() {
                break;
            }
            if let (Some(rt), true) = (runtime, runtimes.len() > 1) {
                eprintln!("faultline: runtime {} ({})", rt.spec, rt.versions.short());
                // Each runtime's artifacts (and VM console logs) in a directory of its own.
                opts.artifacts_root = artifacts_root.join(runtime_dir(i, &rt.spec));
            }
            opts.runtime = runtime.clone();
            signals::set_graceful(!pass.vm);
            // The VM's artifacts stay in the guest; its console log is named by the backend.
            let kept = (!pass.vm).then_some(opts.artifacts_root.as_path());
            let report = pass
                .backend
                .run(&selected, &opts, &mut |p| print_progress(p, kept));
            reports.push(report);
        }
    }
    Ok(report::finish(&reports, args.json, junit))
}

/// `runtime-2-debian_oci_crun`: a directory name for the `i`th runtime's artifacts. Letters,
/// digits, `.`, `-` and `_` only: the VM's console path goes inside qemu's options, where a
/// `,` separates options.
fn runtime_dir(i: usize, spec: &str) -> String {
    let name: String = spec
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("runtime-{}-{name}", i + 1)
}

/// Progress lines on stderr (the table or JSON goes to stdout), and where the artifacts of a
/// scenario that kept some are.
fn print_progress(p: Progress, artifacts_root: Option<&Path>) {
    match p {
        Progress::Started(s) => eprintln!("faultline: {} ...", s.name()),
        Progress::Finished(r) => {
            eprintln!(
                "faultline: {} {} ({:.1}s)",
                r.name,
                r.status.as_str(),
                r.duration_ms as f64 / 1000.0
            );
            // A skipped scenario never started, so its directory was not emptied.
            let dir = artifacts_root.map(|root| root.join(&r.name));
            if let Some(dir) = dir.filter(|d| r.status != Status::Skip && artifacts::kept(d)) {
                eprintln!("faultline: artifacts of {}: {}", r.name, dir.display());
            }
        }
        Progress::Step(line) => eprintln!("faultline: {line}"),
    }
}

/// The scenario options for `run --help`.
pub fn options_help() -> String {
    let mut text =
        String::from("Scenario options (-o KEY=VALUE; `faultline list` shows them too):");
    for s in scenarios::all()
        .into_iter()
        .filter(|s| !s.options().is_empty())
    {
        text.push_str(&format!("\n  {}:", s.name()));
        for o in s.options() {
            text.push_str(&format!("\n    {:18} {}", o.key, o.help));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_directories_are_plain_names() {
        assert_eq!(runtime_dir(0, "system"), "runtime-1-system");
        assert_eq!(
            runtime_dir(1, "system,oci=/usr/bin/crun"),
            "runtime-2-system_oci__usr_bin_crun"
        );
        assert_eq!(
            runtime_dir(2, "debian:containerd=1.6.20~ds1-1+deb12u2"),
            "runtime-3-debian_containerd_1.6.20_ds1-1_deb12u2"
        );
    }
}
