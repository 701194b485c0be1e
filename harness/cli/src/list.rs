use std::process::ExitCode;

use faultline_core::runner::skip_reason;
use faultline_core::scenario::Placement;
use faultline_core::KernelVersion;
use serde_json::json;

use crate::UsageError;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode, UsageError> {
    let kernel = KernelVersion::running();
    let rows: Vec<serde_json::Value> = scenarios::all()
        .into_iter()
        .map(|s| {
            let reason = skip_reason(s);
            json!({
                "name": s.name(),
                "summary": s.summary(),
                "detector": s.detector(),
                "backend": match s.placement() { Placement::Namespace => "namespace", Placement::VmOnly => "vm" },
                "requirements": s.requirements().iter().map(|r| r.describe()).collect::<Vec<_>>(),
                "variants": s.variants(&kernel).iter().map(|v| json!({
                    "name": v.name, "expected": v.expected.as_str(), "summary": v.summary,
                })).collect::<Vec<_>>(),
                "options": s.options().iter().map(|o| json!({
                    "key": o.key, "help": o.help,
                })).collect::<Vec<_>>(),
                "runnable": reason.is_none(),
                "reason": reason.unwrap_or_default(),
            })
        })
        .collect();
    if args.json {
        let detectors: Vec<_> = faultline_detect::all()
            .into_iter()
            .map(|d| json!({"name": d.name(), "summary": d.summary()}))
            .collect();
        let doc = json!({"kernel": kernel.release, "scenarios": rows, "detectors": detectors});
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        let here = if r["runnable"].as_bool() == Some(true) {
            "runnable here".to_string()
        } else {
            format!("not here: {}", r["reason"].as_str().unwrap_or(""))
        };
        println!(
            "{:26} {}\n{:26} needs {}; detector {}; {}",
            r["name"].as_str().unwrap_or(""),
            r["summary"].as_str().unwrap_or(""),
            "",
            r["requirements"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            r["detector"].as_str().unwrap_or(""),
            here
        );
    }
    println!("\ndetectors (faultline check NAME):");
    for d in faultline_detect::all() {
        println!("  {:18} {}", d.name(), d.summary());
    }
    Ok(ExitCode::SUCCESS)
}
