//! faultline's leaf crate: what both the detectors (on live nodes) and the scenario harness
//! need from the system. /proc and mount tables, mount namespaces, the kernel log, ext4's
//! on-disk structures, the rpcbind client, process groups with bounded waits, packages
//! fetched from Debian's archive into faultline's cache, the running executable and the
//! libraries a binary loads, and the registry of re-exec entry points. It depends on no other
//! faultline crate.

pub mod containerd;
pub mod debian;
pub mod entry;
pub mod error_chain;
pub mod executable;
pub mod ext4;
pub mod kernel;
pub mod kmsg;
pub mod mount_namespace;
pub mod mountinfo;
pub mod path;
pub mod portmap;
pub mod proc;
pub mod process;
pub mod shell;
pub mod statx;
pub mod wait;

pub use error_chain::error_chain;
pub use kernel::KernelVersion;
pub use process::ChildGroup;
pub use wait::{wait_until, WaitError};
