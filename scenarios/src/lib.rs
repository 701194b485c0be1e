//! faultline's scenarios, one file each, named after the scenario.

use faultline_core::Scenario;

pub mod delayed_umount2;
pub mod etxtbsy_exec_while_copy;
pub mod ext4_htree_exhaustion;
pub mod fuse_daemon_restart;
pub mod hostpath_rename;
pub mod nfs_flock_dead_statd;

/// Every scenario, in the order DESIGN.md lists them.
pub fn all() -> Vec<&'static dyn Scenario> {
    vec![
        &etxtbsy_exec_while_copy::EtxtbsyExecWhileCopy,
        &hostpath_rename::HostpathRename,
        &fuse_daemon_restart::FuseDaemonRestart,
        &nfs_flock_dead_statd::NfsFlockDeadStatd,
        &ext4_htree_exhaustion::Ext4HtreeExhaustion,
        &delayed_umount2::DelayedUmount2,
    ]
}
