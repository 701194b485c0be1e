//! faultline's scenarios, one file each, named after the scenario.

use faultline_core::Scenario;

pub mod delayed_umount2;
pub mod etxtbsy_exec_while_copy;
pub mod ext4_htree_exhaustion;
pub mod fuse_daemon_restart;
pub mod hostpath_rename;
pub mod nfs_flock_dead_statd;

/// Every scenario: `faultline list` and `run` show them in this order.
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

#[cfg(test)]
mod tests {
    use faultline_core::KernelVersion;

    #[test]
    fn every_scenario_declares_known_detectors() {
        for s in super::all() {
            assert!(
                !s.detectors().is_empty(),
                "{} declares no detector",
                s.name()
            );
            for d in s.detectors() {
                assert!(
                    faultline_detect::by_name(d).is_some(),
                    "{} declares {d:?}, which is no detector",
                    s.name()
                );
            }
        }
    }

    #[test]
    fn variant_names_are_unique() {
        let kernel = KernelVersion::running();
        for s in super::all() {
            let mut names: Vec<&str> = s.variants(&kernel).iter().map(|v| v.name).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{}: duplicate variant names", s.name());
        }
    }
}
