use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use faultline_detect::kernel_log::{self, Spool};
use faultline_detect::{CheckInput, Detector, Finding};
use serde_json::json;

use crate::check_format::{npd, prometheus, textfile, Checked, Format, Outcome};
use crate::{fail_usage, UsageError};

/// The exit codes of node-problem-detector's custom plugin protocol (0 OK, 1 NonOK, 2
/// Unknown), so `check` can serve as such a plugin; and the detectors' settings.
const EXIT_CODES: &str = "\
Exit codes: 1 a problem was found (even if some detector could not look everywhere); \
otherwise 2 when a detector failed or could not look everywhere (partial: the answer is \
unknown, not clean); 0 only when every detector that ran looked everywhere and found nothing.

Environment: FAULTLINE_SHIM_GRACE_SECS (orphan-shim: how long a shim containerd does not know may live before it is reported; default 30), FAULTLINE_SHIM_NAMES (orphan-shim: more shim binary names, comma-separated), FAULTLINE_HUNG_TASK_SECS (hung-task: seconds between its two samples; default 2).";

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct Args {
    /// Detectors to run (default: all that apply here).
    names: Vec<String>,
    /// How to print the answer: `text` for people; `json`; `npd`, one line of at most 80
    /// bytes for node-problem-detector's custom plugin monitor (exit 0 OK, 1 problem, 2
    /// unknown); `prometheus`, the text exposition format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Also write the metrics (as `--format prometheus` prints them) to DIR/faultline.prom,
    /// atomically, for node_exporter's textfile collector.
    #[arg(long, value_name = "DIR")]
    textfile: Option<PathBuf>,
    /// Read a saved kernel log (dmesg, dmesg -T, journalctl -k) instead of /dev/kmsg; `-` (or a
    /// pipe, `<(journalctl -k)`) is read as a stream.
    #[arg(long, value_name = "FILE")]
    kmsg_file: Option<PathBuf>,
    /// Only kernel-log lines from the last DURATION count (30s, 5m, 2h, 1d), where the log
    /// carries times.
    #[arg(long, value_name = "DURATION", value_parser = kernel_log::parse_duration)]
    since: Option<std::time::Duration>,
    /// A directory to examine (repeatable): htree-capacity measures its index; busy-binary
    /// also reports processes whose binary there was replaced; dead-fuse looks only at FUSE
    /// mounts under it.
    #[arg(long, value_name = "DIR")]
    path: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode, UsageError> {
    let format = if args.json { Format::Json } else { args.format };
    let result = check(args, format);
    // node-problem-detector shows stdout only: a check that could not start says why there.
    if let (Format::Npd, Err(UsageError(why))) = (format, &result) {
        println!("{}", npd::unknown(why));
    }
    result
}

fn check(args: Args, format: Format) -> Result<ExitCode, UsageError> {
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
    if let Some(d) = &args.textfile {
        if !d.is_dir() {
            return fail_usage(format!("--textfile {}: not a directory", d.display()));
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

    let mut outcomes = Vec::new();
    for d in chosen {
        let start = Instant::now();
        let outcome = match d.applicable(&input) {
            Err(reason) if explicit => return fail_usage(format!("{}: {reason}", d.name())),
            Err(reason) => Outcome::NotRun(reason),
            Ok(()) => match d.check(&input) {
                Ok(report) => Outcome::Ran(report),
                Err(e) => Outcome::Failed(faultline_sys::error_chain(&e)),
            },
        };
        let elapsed = start.elapsed();
        outcomes.push(Checked {
            name: d.name(),
            outcome,
            elapsed,
        });
    }
    let findings: Vec<&Finding> = outcomes
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Ran(r) => Some(&r.findings),
            _ => None,
        })
        .flatten()
        .collect();
    let incomplete = outcomes.iter().any(Checked::incomplete);
    match format {
        Format::Text => print_text(&findings, &outcomes, incomplete),
        Format::Json => print_json(&findings, &outcomes),
        Format::Npd => println!("{}", npd::line(&outcomes)),
        Format::Prometheus => print!("{}", prometheus::exposition(&outcomes)),
    }
    if let Some(dir) = &args.textfile {
        write_textfile(dir, &outcomes)?;
    }
    Ok(ExitCode::from(exit_code(!findings.is_empty(), incomplete)))
}

fn write_textfile(dir: &std::path::Path, outcomes: &[Checked]) -> Result<(), UsageError> {
    let text = prometheus::exposition(outcomes);
    textfile::write(dir, textfile::NAME, text.as_bytes()).map_err(|e| {
        UsageError(format!(
            "failed to write {}: {}",
            dir.join(textfile::NAME).display(),
            faultline_sys::error_chain(&e)
        ))
    })
}

/// node-problem-detector's rule: a problem found is a problem (1) even when something else
/// could not be looked at; without one, an incomplete look is Unknown (2), never OK (0).
fn exit_code(found: bool, incomplete: bool) -> u8 {
    match (found, incomplete) {
        (true, _) => 1,
        (false, true) => 2,
        (false, false) => 0,
    }
}

fn print_json(findings: &[&Finding], outcomes: &[Checked]) {
    let detectors: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|c| (c.name, &c.outcome))
        .map(|(name, o)| match o {
            Outcome::NotRun(reason) => json!({"name": name, "ran": false, "reason": reason}),
            Outcome::Failed(error) => json!({"name": name, "ran": true, "error": error}),
            Outcome::Ran(r) if r.is_partial() => json!({
                "name": name,
                "ran": true,
                "findings": r.findings.len(),
                "partial": true,
                "unreadable": r.unreadable,
                "measurements": r.measurements,
            }),
            Outcome::Ran(r) => json!({
                "name": name,
                "ran": true,
                "findings": r.findings.len(),
                "partial": false,
                "measurements": r.measurements,
            }),
        })
        .collect();
    let doc = json!({"findings": findings, "detectors": detectors});
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
}

/// The answer on stdout (findings, or that there are none, and what could not be looked at);
/// detectors that failed or did not run on stderr, one line each.
fn print_text(findings: &[&Finding], outcomes: &[Checked], incomplete: bool) {
    for c in outcomes {
        if let Outcome::Ran(r) = &c.outcome {
            print!("{}", measurement_lines(&r.measurements));
        }
    }
    if !findings.is_empty() {
        let owned: Vec<Finding> = findings.iter().map(|f| (*f).clone()).collect();
        print!("{}", faultline_core::output::text::findings(&owned));
    } else if incomplete {
        println!("no findings, but the check is incomplete (see below): the answer is unknown");
    } else {
        println!("no findings");
    }
    for Checked { name, outcome, .. } in outcomes {
        match outcome {
            Outcome::Ran(r) => {
                for u in &r.unreadable {
                    println!("partial: {name}: {u}");
                }
            }
            Outcome::Failed(error) => eprintln!("faultline: {name} failed: {error}"),
            Outcome::NotRun(reason) => eprintln!("faultline: {name} not run: {reason}"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn a_problem_wins_then_unknown_then_ok() {
        assert_eq!(exit_code(true, true), 1);
        assert_eq!(exit_code(true, false), 1);
        assert_eq!(exit_code(false, true), 2);
        assert_eq!(exit_code(false, false), 0);
    }
}
