//! faultline's scenarios, one file each, named after the scenario.

use harness::Scenario;

pub mod fuse_daemon_restart;
pub mod hostpath_rename;

/// Every scenario, in the order DESIGN.md lists them.
pub fn all() -> Vec<&'static dyn Scenario> {
    vec![
        &hostpath_rename::HostpathRename,
        &fuse_daemon_restart::FuseDaemonRestart,
    ]
}
