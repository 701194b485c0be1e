//! The container runtimes faultline's scenarios drive: a private containerd of the runtime
//! under test with its CRI plugin ([`containerd`], [`config`]), a CRI client as kubelet
//! uses it ([`cri`]), the images faultline builds and imports ([`image`], [`import`]), the
//! cgroup parent each run owns ([`cgroups`]) and the processes it leaves ([`process`]);
//! the runtime under test is chosen by [`select`]. Beside them, two stand-ins that
//! scenarios without containerd use: a hand-made container and runc's procfd bind.

pub mod cgroups;
pub mod config;
pub mod container;
pub mod containerd;
pub mod cri;
pub mod image;
pub mod import;
mod launch;
pub mod process;
pub mod runc_bind;
pub mod select;

/// The re-exec entry points this crate owns.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&container::ENTRY, &runc_bind::ENTRY];
