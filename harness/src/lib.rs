//! faultline's harness: the scenario contract, the runner that executes each scenario in its own
//! namespaces, the environment guards, fault injection, the detectors that also run on live
//! nodes, and the output formats.

pub mod compare;
pub mod detect;
pub mod error_chain;
pub mod ext4;
pub mod finding;
pub mod fuse;
pub mod guard;
pub mod inject;
pub mod internal;
pub mod kernel;
pub mod kmsg;
pub mod mount_namespace;
pub mod mountinfo;
pub mod output;
pub mod portmap;
pub mod requirement;
pub mod result;
pub mod runc_bind;
pub mod runner;
pub mod scenario;

pub use error_chain::error_chain;
pub use finding::{Finding, Severity};
pub use kernel::KernelVersion;
pub use requirement::Requirement;
pub use result::{RunReport, ScenarioResult, Status, VariantResult};
pub use scenario::{Context, Expectation, Scenario, ScenarioOption, Variant, VariantOutcome};
