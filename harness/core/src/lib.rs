//! faultline's harness core: the scenario contract, requirements, the runner that executes
//! each scenario in its own namespaces, the backends (namespace here, VM in `faultline-vm`),
//! the environment guards, and the output and comparison formats.

pub mod backend;
pub mod compare;
pub mod guard;
pub mod output;
pub mod requirement;
pub mod result;
pub mod runner;
pub mod runtime_under_test;
pub mod scenario;

pub use faultline_detect::{Finding, Severity};
pub use faultline_sys::KernelVersion;
pub use requirement::Requirement;
pub use result::{RunReport, ScenarioResult, Status, VariantResult};
pub use scenario::{
    Context, Expectation, Scenario, ScenarioOption, Variant, VariantKind, VariantOutcome,
    VariantSkipped,
};

/// The re-exec entry points this crate owns: a scenario's namespace init and the scenario.
pub const ENTRIES: &[&faultline_sys::entry::Entry] =
    &[&runner::child::NS_INIT, &runner::child::SCENARIO];
