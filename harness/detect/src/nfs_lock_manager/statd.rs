//! rpc.statd: whether it runs (a process named `rpc.statd`) and whether rpcbind lists it
//! (program 100024), which is how the kernel's lockd finds it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use faultline_sys::error_chain::error_chain;
use faultline_sys::portmap::{self, IPPROTO_UDP, NSM_PROGRAM, NSM_VERSION};
use faultline_sys::proc::Snapshot;

/// What rpcbind says about rpc.statd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatdRegistration {
    Registered {
        udp_port: u16,
    },
    NotRegistered,
    /// rpcbind itself did not answer.
    RpcbindUnreachable(String),
}

pub fn statd_registration(rpcbind: SocketAddr) -> StatdRegistration {
    match portmap::getport(
        rpcbind,
        NSM_PROGRAM,
        NSM_VERSION,
        IPPROTO_UDP,
        Duration::from_millis(500),
    ) {
        Ok(Some(port)) => StatdRegistration::Registered { udp_port: port },
        Ok(None) => StatdRegistration::NotRegistered,
        Err(e) => StatdRegistration::RpcbindUnreachable(error_chain(&e)),
    }
}

/// Pids whose command is `rpc.statd`.
pub fn statd_pids(snap: &Snapshot) -> Vec<i32> {
    snap.user_processes()
        .filter(|p| p.comm == "rpc.statd")
        .map(|p| p.pid)
        .collect()
}

pub(super) fn registration_json(r: &StatdRegistration) -> serde_json::Value {
    match r {
        StatdRegistration::Registered { udp_port } => {
            json!({"statd_registered": true, "udp_port": udp_port})
        }
        StatdRegistration::NotRegistered => json!({"statd_registered": false}),
        StatdRegistration::RpcbindUnreachable(e) => json!({"statd_registered": null, "error": e}),
    }
}
