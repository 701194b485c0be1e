use std::path::PathBuf;
use std::process::ExitCode;

use faultline_detect::kernel_log::{self, Spool};
use faultline_detect::{CheckInput, Detector};
use serde_json::json;

use crate::{fail_usage, UsageError};

#[derive(clap::Args)]
pub struct Args {
    /// Detectors to run (default: all that apply here).
    names: Vec<String>,
    /// Print `{"findings": [...]}` as JSON.
    #[arg(long)]
    json: bool,
    /// Read a saved kernel log (dmesg, dmesg -T, journalctl -k) instead of /dev/kmsg; `-` (or a
    /// pipe, `<(journalctl -k)`) is read as a stream.
    #[arg(long, value_name = "FILE")]
    kmsg_file: Option<PathBuf>,
    /// Only kernel-log lines from the last DURATION count (30s, 5m, 2h, 1d), where the log
    /// carries times.
    #[arg(long, value_name = "DURATION", value_parser = kernel_log::parse_duration)]
    since: Option<std::time::Duration>,
    /// A directory to examine (repeatable; htree-capacity).
    #[arg(long, value_name = "DIR")]
    path: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode, UsageError> {
    let all = faultline_detect::all();
    let valid: Vec<&str> = all.iter().map(|d| d.name()).collect();
    let named: Vec<&dyn Detector> = args
        .names
        .iter()
        .map(|n| {
            all.iter().copied().find(|d| d.name() == n).ok_or_else(|| {
                UsageError(format!(
                    "unknown detector {n:?}; valid names: {}",
                    valid.join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    if let Some(f) = &args.kmsg_file {
        if let Err(why) = kernel_log::check_capture_path(f) {
            return fail_usage(format!("--kmsg-file {}: {why}", f.display()));
        }
    }
    for p in &args.path {
        if !p.is_dir() {
            return fail_usage(format!("--path {}: not a directory", p.display()));
        }
    }
    let mut input = CheckInput {
        kmsg_file: args.kmsg_file.clone(),
        since: args.since,
        paths: args.path.clone(),
        ..CheckInput::default()
    };
    let explicit = !named.is_empty();
    let chosen = if explicit { named } else { all };
    // A stream can be read once: copy it when more than one detector reads it.
    let _spool = match &input.kmsg_file {
        Some(f)
            if kernel_log::is_stream(f)
                && chosen.iter().filter(|d| d.reads_kernel_log()).count() > 1 =>
        {
            let spool = Spool::copy(f).map_err(|e| {
                UsageError(format!("--kmsg-file {}: failed to read: {e}", f.display()))
            })?;
            input.kmsg_file = Some(spool.path());
            Some(spool)
        }
        _ => None,
    };

    let mut findings = Vec::new();
    let mut measurements = Vec::new();
    let mut ran = Vec::new();
    for d in chosen {
        if let Err(reason) = d.applicable(&input) {
            if explicit {
                return fail_usage(format!("{}: {reason}", d.name()));
            }
            ran.push(json!({"name": d.name(), "ran": false, "reason": reason}));
            continue;
        }
        match d.report(&input) {
            Ok(r) => {
                ran.push(
                    json!({"name": d.name(), "ran": true, "findings": r.findings.len(),
                    "measurements": r.measurements}),
                );
                findings.extend(r.findings);
                measurements.extend(r.measurements);
            }
            Err(e) => {
                return fail_usage(format!("{}: {}", d.name(), faultline_sys::error_chain(&e)))
            }
        }
    }
    if args.json {
        let doc = json!({"findings": findings, "detectors": ran});
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    } else if findings.is_empty() {
        print!("{}", measurement_lines(&measurements));
        println!("no findings");
    } else {
        print!("{}", measurement_lines(&measurements));
        print!("{}", faultline_core::output::text::findings(&findings));
    }
    if !args.json {
        for r in ran.iter().filter(|r| r["ran"] == false) {
            eprintln!(
                "faultline: {} not run: {}",
                r["name"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What detectors measured, in the findings' layout with `info` for a severity: shown, never
/// a problem.
fn measurement_lines(measurements: &[faultline_detect::Measurement]) -> String {
    measurements
        .iter()
        .map(|m| {
            format!(
                "{:8} {:16} {}\n         {}\n",
                "info", m.detector, m.subject, m.summary
            )
        })
        .collect()
}
