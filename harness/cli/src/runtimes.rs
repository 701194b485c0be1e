//! `run --runtime SPEC...`: the container runtimes the suite runs on, resolved on the host
//! before anything runs (a spec that cannot be resolved is a usage error, exit 2).

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::Scenario;
use faultline_runtime::select::{self, RuntimeSpec};
use faultline_sys::error_chain;

use crate::UsageError;

/// One entry per pass of the suite: each `--runtime` in order, or without any the default
/// (`system` where containerd is on PATH, else `debian`) when a selected scenario drives a
/// runtime, else `None` (nothing to resolve or fetch, and the result records no runtime).
pub fn resolve(
    specs: &[String],
    selected: &[&dyn Scenario],
) -> Result<Vec<Option<RuntimeUnderTest>>, UsageError> {
    let uses_runtime = selected.iter().any(|s| s.uses_runtime());
    // Every spec is parsed before the first is resolved: a typo in the second must not
    // wait for the first one's download.
    let mut parsed = specs
        .iter()
        .map(|s| RuntimeSpec::parse(s).map_err(|e| UsageError(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        if !uses_runtime {
            return Ok(vec![None]);
        }
        parsed.push(select::default_spec());
    }
    let resolved = parsed
        .iter()
        .map(|spec| {
            select::resolve(spec, &mut |line| eprintln!("faultline: {line}"))
                .map(Some)
                .map_err(|e| UsageError(error_chain(&e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !uses_runtime {
        eprintln!(
            "faultline: no selected scenario drives a container runtime; --runtime only labels the results"
        );
    }
    Ok(resolved)
}
