//! Where `run`'s results go, checked before anything runs, and written once the run is over:
//! stdout first (a run that happened is always printed), then the JUnit file; and the exit
//! code.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use faultline_core::compare::{Column, Matrix};
use faultline_core::runner::interrupt;
use faultline_core::{RunReport, ScenarioResult, Status};

use crate::UsageError;

/// The `--junit` file, opened before the run so that a path it cannot write is a usage error
/// then, not after the whole run.
pub struct Junit {
    path: PathBuf,
    file: File,
}

impl Junit {
    pub fn open(path: PathBuf) -> Result<Junit, UsageError> {
        let bad = |what: &str, e: std::io::Error| {
            UsageError(format!("--junit {}: {what}: {e}", path.display()))
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| bad("failed to open it for writing", e))?;
        // An empty write reaches the file system: a /proc or /sys file opens for writing but
        // refuses any data (EIO, EINVAL), which shows here rather than after the run.
        file.write(&[])
            .map_err(|e| bad("it refuses to be written", e))?;
        Ok(Junit { path, file })
    }

    fn write(mut self, report: &RunReport) -> Result<(), String> {
        let xml = faultline_core::output::junit::render(report)
            .map_err(|e| format!("failed to render JUnit: {e}"))?;
        self.file
            .write_all(xml.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("failed to write {}: {e}", self.path.display()))
    }
}

/// `--artifacts DIR` must be a directory faultline can make directories in, found out before
/// anything runs (the scenarios write there only when they fail).
pub fn check_artifacts(dir: &Path, vm: bool) -> Result<(), UsageError> {
    let bad = |what: &str, e: std::io::Error| {
        UsageError(format!("--artifacts {}: {what}: {e}", dir.display()))
    };
    if vm && dir.to_str().is_none() {
        return Err(UsageError(format!(
            "--artifacts {}: the VM backend needs a UTF-8 path (qemu takes it inside its options)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| bad("failed to create it", e))?;
    let probe = dir.join(format!(".faultline-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .and_then(|()| std::fs::remove_dir(&probe))
        .map_err(|e| bad("not writable", e))
}

/// Prints the results (a table per run, then the matrix when there are several; or JSON),
/// writes the JUnit file and returns the exit code: 128 + the signal when interrupted, else 2
/// when the harness broke, the JUnit file failed or nothing ran at all, 1 when a scenario
/// failed, 0 when at least one ran and none failed.
pub fn finish(reports: &[RunReport], json: bool, junit: Option<Junit>) -> ExitCode {
    let Some(merged) = merged(reports) else {
        // Stopped before the first pass began: nothing to print.
        return ExitCode::from(interrupt::requested().map_or(2, |sig| 128 + sig as u8));
    };
    if reports.len() == 1 {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&reports[0]).expect("json")
            );
        } else {
            print!("{}", faultline_core::output::text::run_table(&reports[0]));
        }
    } else {
        let columns = Column::label_all(reports.to_vec());
        let matrix = Matrix::build(&columns);
        if json {
            let doc = serde_json::json!({ "runs": reports, "comparison": matrix });
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        } else {
            for c in &columns {
                println!("== {}", c.label);
                print!("{}", faultline_core::output::text::run_table(&c.report));
                println!();
            }
            print!("{}", matrix.render());
        }
    }
    let mut code = verdict(&merged.scenarios);
    if let Some(junit) = junit {
        if let Err(e) = junit.write(&merged) {
            eprintln!("faultline: {e}");
            code = code.max(2);
        }
    }
    if let Some(sig) = interrupt::requested() {
        eprintln!("faultline: interrupted by {}", sig.as_str());
        return ExitCode::from(128 + sig as u8);
    }
    if code == 2 && !merged.scenarios.is_empty() && nothing_ran(&merged.scenarios) {
        let why: Vec<String> = merged
            .scenarios
            .iter()
            .map(|s| format!("{}: {}", s.name, s.reason))
            .collect();
        eprintln!("faultline: nothing ran: {}", why.join("; "));
    }
    ExitCode::from(code)
}

/// Every run's scenarios in one report, each named with its run's column label (kernel, and
/// runtime where recorded) when there are several (for JUnit and the exit code).
fn merged(reports: &[RunReport]) -> Option<RunReport> {
    let mut merged = reports.first()?.clone();
    if reports.len() == 1 {
        return Some(merged);
    }
    merged.scenarios = Column::label_all(reports.to_vec())
        .iter()
        .flat_map(|c| {
            c.report.scenarios.iter().map(|s| ScenarioResult {
                name: format!("{} [{}]", s.name, c.label),
                ..s.clone()
            })
        })
        .collect();
    Some(merged)
}

fn nothing_ran(scenarios: &[ScenarioResult]) -> bool {
    scenarios.iter().all(|s| s.status == Status::Skip)
}

/// 2 if the harness broke anywhere or nothing ran, else 1 if a scenario failed, else 0.
fn verdict(scenarios: &[ScenarioResult]) -> u8 {
    let worst = scenarios.iter().fold(0u8, |w, s| match s.status {
        Status::Error => 2,
        Status::Fail => w.max(1),
        _ => w,
    });
    if worst == 0 && !scenarios.iter().any(|s| s.status == Status::Pass) {
        return 2;
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Status) -> ScenarioResult {
        ScenarioResult::without_variants("s", status, "why")
    }

    #[test]
    fn zero_needs_a_scenario_that_ran() {
        use Status::*;
        assert_eq!(verdict(&[result(Pass), result(Skip)]), 0);
        assert_eq!(verdict(&[result(Skip), result(Skip)]), 2);
        assert_eq!(verdict(&[]), 2);
        assert_eq!(verdict(&[result(Fail), result(Skip)]), 1);
        assert_eq!(verdict(&[result(Fail), result(Error), result(Pass)]), 2);
    }
}
