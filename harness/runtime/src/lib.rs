//! The container runtimes faultline's scenarios drive. For now these are stand-ins (a
//! hand-made container, a `containerd-shim` stand-in and runc's procfd bind); each is split
//! into the client half a scenario holds and the process half that runs behind a re-exec
//! entry point.

pub mod container;
pub mod runc_bind;
pub mod select;
pub mod shim;

/// The re-exec entry points this crate owns.
pub const ENTRIES: &[&faultline_sys::entry::Entry] =
    &[&container::ENTRY, &shim::ENTRY, &runc_bind::ENTRY];
