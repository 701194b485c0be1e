//! faultline's scenarios, one file each, named after the scenario.

mod ext4_htree_exhaustion;

use harness::Scenario;

/// Every scenario, in the order DESIGN.md lists them.
pub fn all() -> Vec<&'static dyn Scenario> {
    vec![&ext4_htree_exhaustion::Ext4HtreeExhaustion]
}
