//! The container runtimes faultline's scenarios drive: real OCI runtimes (runc, crun) through
//! their command line ([`oci`]), and the stand-ins still to be replaced (a hand-made
//! container, a `containerd-shim` stand-in), each split into the client half a scenario holds
//! and the process half that runs behind a re-exec entry point.

pub mod container;
pub mod oci;
pub mod select;
pub mod shim;

/// The re-exec entry points this crate owns.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&container::ENTRY, &shim::ENTRY];
