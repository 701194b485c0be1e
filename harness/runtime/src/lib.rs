//! The container runtimes faultline's scenarios drive: real OCI runtimes (runc, crun) through
//! their command line ([`oci`]), and the `containerd-shim` stand-in still to be replaced,
//! split into the client half a scenario holds and the process half that runs behind a
//! re-exec entry point.

pub mod oci;
pub mod select;
pub mod shim;

/// The re-exec entry points this crate owns.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&shim::ENTRY];
