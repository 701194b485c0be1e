//! A real FUSE file system for the scenarios: a passthrough tree served by a daemon process
//! the harness starts, mounts through /dev/fuse itself (no libfuse, no fusermount), can slow
//! down, and can SIGKILL while keeping the mount.

pub mod daemon;
pub mod passthrough;

pub use daemon::{FuseConfig, FuseDaemon, FuseError};
pub use passthrough::Latency;

/// The re-exec entry points this crate owns: the FUSE daemon process.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&daemon::ENTRY];
