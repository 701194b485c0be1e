//! The one seam between "which scenarios" and "where they run". The namespace backend runs
//! each scenario in its own namespaces on the running kernel; the VM backend (crate
//! `faultline-vm`) boots a guest kernel and runs the same runner there. `faultline run` and
//! the scenarios' test binary both pick a backend here and nowhere else.

use crate::result::{RunReport, ScenarioResult};
use crate::runner::{self, RunOptions};
use crate::scenario::{Placement, Scenario};

/// What a backend reports while it runs, for progress lines.
pub enum Progress<'a> {
    /// A scenario is about to start.
    Started(&'a dyn Scenario),
    /// A scenario finished with this result.
    Finished(&'a ScenarioResult),
    /// A long step of the backend itself (booting a guest, fetching a kernel).
    Step(String),
}

pub trait Backend {
    /// What runs the scenarios: `host`, or the guest kernel's spec (`debian:6.12`).
    fn label(&self) -> String;
    /// Runs `scenarios` with `opts` and reports every one of them (a scenario this backend
    /// cannot run is a `skip` or `error` result with the reason, never missing).
    fn run(
        &self,
        scenarios: &[&'static dyn Scenario],
        opts: &RunOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> RunReport;
}

/// Each scenario in a child process with private mount and pid namespaces, on the kernel
/// this process runs on (the host, or the VM's guest when faultline runs inside it).
pub struct NamespaceBackend;

impl Backend for NamespaceBackend {
    fn label(&self) -> String {
        "host".into()
    }

    fn run(
        &self,
        scenarios: &[&'static dyn Scenario],
        opts: &RunOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> RunReport {
        runner::run_all_reporting(scenarios, opts, |s, done| match done {
            None => progress(Progress::Started(s)),
            Some(r) => progress(Progress::Finished(r)),
        })
    }
}

/// Whether `s` needs the VM backend from where this process runs: a VM-only scenario,
/// outside the guest.
pub fn needs_vm(s: &dyn Scenario) -> bool {
    s.placement() == Placement::VmOnly && !crate::requirement::in_vm_guest()
}
