//! The container runtimes faultline's scenarios drive: real OCI runtimes (runc, crun) through
//! their command line ([`oci`]); a private containerd of the runtime under test with its CRI
//! plugin ([`containerd`], [`config`]), a CRI client as kubelet uses it ([`cri`]), the images
//! faultline builds and imports ([`image`], [`import`]), the cgroup parent each run owns
//! ([`cgroups`]) and the processes it leaves ([`process`]); the runtime under test is chosen
//! by [`select`]. [`pod`] drives one pod through CRI as kubelet does.

pub mod cgroups;
pub mod config;
pub mod containerd;
pub mod cri;
pub mod image;
pub mod import;
mod launch;
pub mod oci;
pub mod pod;
pub mod pod_removal;
pub mod process;
pub mod select;

/// The re-exec entry points this crate owns.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[];
