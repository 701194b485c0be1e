use std::process::ExitCode;

use faultline_core::runner::skip_reason;
use faultline_core::scenario::Placement;
use faultline_core::{KernelVersion, Scenario};
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
    let scenarios = scenarios::all();
    if args.json {
        let rows: Vec<serde_json::Value> = scenarios
            .iter()
            .map(|s| scenario_json(*s, &kernel))
            .collect();
        let detectors: Vec<_> = faultline_detect::all()
            .into_iter()
            .map(|d| json!({"name": d.name(), "summary": d.summary()}))
            .collect();
        let doc = json!({"kernel": kernel.release, "scenarios": rows, "detectors": detectors});
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(ExitCode::SUCCESS);
    }
    for s in &scenarios {
        print_scenario(*s, &kernel);
    }
    println!("\ndetectors (faultline check NAME):");
    for d in faultline_detect::all() {
        println!("  {:18} {}", d.name(), d.summary());
    }
    Ok(ExitCode::SUCCESS)
}

fn backend(s: &dyn Scenario) -> &'static str {
    match s.placement() {
        Placement::Namespace => "namespace",
        Placement::VmOnly => "vm",
    }
}

fn scenario_json(s: &dyn Scenario, kernel: &KernelVersion) -> serde_json::Value {
    let reason = skip_reason(s);
    json!({
        "name": s.name(),
        "summary": s.summary(),
        "detectors": s.detectors(),
        "backend": backend(s),
        "requirements": s.requirements().iter().map(|r| r.describe()).collect::<Vec<_>>(),
        "variants": s.variants(kernel).iter().map(|v| json!({
            "name": v.name, "expected": v.expected.as_str(), "summary": v.summary,
        })).collect::<Vec<_>>(),
        "options": s.options().iter().map(|o| json!({
            "key": o.key, "help": o.help,
        })).collect::<Vec<_>>(),
        "runnable": reason.is_none(),
        "reason": reason.unwrap_or_default(),
    })
}

/// One scenario as an indented block: what it is, where it runs, its detectors, variants
/// (with the outcome each must have on this kernel) and options.
fn print_scenario(s: &dyn Scenario, kernel: &KernelVersion) {
    let here = match skip_reason(s) {
        None => "runnable here".to_string(),
        Some(reason) => format!("not here: {reason}"),
    };
    let needs: Vec<String> = s.requirements().iter().map(|r| r.describe()).collect();
    println!("{:26} {}", s.name(), s.summary());
    println!("{:26} needs {}; {here}", "", needs.join(", "));
    println!("{:26} detectors: {}", "", s.detectors().join(", "));
    println!("{:26} variants:", "");
    for v in s.variants(kernel) {
        println!(
            "{:28} {:18} {:10} {}",
            "",
            v.name,
            v.expected.as_str(),
            v.summary
        );
    }
    if !s.options().is_empty() {
        println!("{:26} options (-o KEY=VALUE):", "");
        for o in s.options() {
            println!("{:28} {:18} {}", "", o.key, o.help);
        }
    }
}
