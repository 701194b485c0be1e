//! The VM side of `faultline_core::backend`: one guest kernel, every selected scenario run
//! inside it by the same runner, the guest's report handed back as the host's would be.

use faultline_core::backend::{Backend, Progress};
use faultline_core::runner::RunOptions;
use faultline_core::{RunReport, Scenario};

use crate::KernelSpec;

pub struct VmBackend {
    pub spec: KernelSpec,
}

impl Backend for VmBackend {
    fn label(&self) -> String {
        self.spec.to_string()
    }

    fn run(
        &self,
        scenarios: &[&'static dyn Scenario],
        opts: &RunOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> RunReport {
        let start = std::time::Instant::now();
        progress(Progress::Step(format!(
            "booting {} for {} scenario(s) ...",
            self.spec,
            scenarios.len()
        )));
        let report = crate::run_report_in_vm(&self.spec, scenarios, opts);
        for r in &report.scenarios {
            progress(Progress::Finished(r));
        }
        progress(Progress::Step(format!(
            "{} done in {:.1}s (console: {})",
            self.spec,
            start.elapsed().as_secs_f64(),
            opts.artifacts_root
                .join("vm")
                .join(self.spec.label())
                .join("console.log")
                .display()
        )));
        report
    }
}
