//! `faultline compare RESULT.json...`: the matrix of saved `run --json` documents, a column
//! per run (its kernel, and its container runtime where it recorded one), rows that differ
//! first; as text, JSON, or a Markdown table for CI job summaries. Exit code 0 when every
//! row agrees, 1 when some differ.

use std::path::PathBuf;
use std::process::ExitCode;

use faultline_core::compare::{parse_reports, Column, Matrix};

use crate::{fail_usage, UsageError};

#[derive(clap::Args)]
#[command(
    after_help = "Exit code: 0 when every row agrees across the runs, 1 when some rows differ, 2 on a file that is not a `faultline run --json` document."
)]
pub struct Args {
    /// Result documents written by `faultline run --json` (one report or several runs each).
    #[arg(required = true, value_name = "RESULT.json")]
    files: Vec<PathBuf>,
    /// Print the matrix as JSON.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print the matrix as a Markdown table (for a CI job summary: `>> $GITHUB_STEP_SUMMARY`).
    #[arg(long)]
    markdown: bool,
}

pub fn run(args: Args) -> Result<ExitCode, UsageError> {
    let mut reports = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| UsageError(format!("failed to read {}: {e}", f.display())))?;
        let parsed = parse_reports(&text).map_err(|e| {
            UsageError(format!(
                "{} is not a `faultline run --json` document: {e}",
                f.display()
            ))
        })?;
        reports.extend(parsed);
    }
    if reports.len() < 2 {
        return fail_usage(
            "compare needs at least two runs (two files, or one file with several runs)",
        );
    }
    let matrix = Matrix::build(&Column::label_all(reports));
    let text = if args.json {
        serde_json::to_string_pretty(&matrix).expect("json") + "\n"
    } else if args.markdown {
        matrix.render_markdown()
    } else {
        matrix.render()
    };
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(if matrix.differences() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
