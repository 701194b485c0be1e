use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Read a saved kernel log (dmesg, dmesg -T, journalctl -k) instead of /dev/kmsg.
    #[arg(long, value_name = "FILE")]
    kmsg_file: Option<PathBuf>,
    /// A directory to examine (repeatable): htree-capacity measures its index; busy-binary
    /// also reports processes whose binary there was replaced; dead-fuse looks only at FUSE
    /// mounts under it.
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
        if !f.is_file() {
            return fail_usage(format!("--kmsg-file {}: no such file", f.display()));
        }
    }
    for p in &args.path {
        if !p.is_dir() {
            return fail_usage(format!("--path {}: not a directory", p.display()));
        }
    }
    let input = CheckInput {
        kmsg_file: args.kmsg_file.clone(),
        paths: args.path.clone(),
        ..CheckInput::default()
    };
    let explicit = !named.is_empty();
    let chosen = if explicit { named } else { all };

    let mut findings = Vec::new();
    let mut ran = Vec::new();
    for d in chosen {
        if let Err(reason) = d.applicable(&input) {
            if explicit {
                return fail_usage(format!("{}: {reason}", d.name()));
            }
            ran.push(json!({"name": d.name(), "ran": false, "reason": reason}));
            continue;
        }
        match d.check(&input) {
            Ok(f) => {
                ran.push(json!({"name": d.name(), "ran": true, "findings": f.len()}));
                findings.extend(f);
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
        println!("no findings");
    } else {
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
