//! A real FUSE file system for the scenarios: a passthrough tree served by a daemon process
//! the harness starts, mounts through /dev/fuse itself (no libfuse, no fusermount), can slow
//! down, and can SIGKILL while keeping the mount. Two halves: [`client`] (the guard a scenario
//! holds) and [`process`] (the daemon), which agree on [`config`]'s command line.

pub mod client;
pub mod config;
pub mod passthrough;
pub mod process;

pub use client::{FuseDaemon, FuseError};
pub use config::FuseConfig;
pub use passthrough::Latency;

/// The re-exec entry points this crate owns: the FUSE daemon process.
pub const ENTRIES: &[&faultline_sys::entry::Entry] = &[&process::ENTRY];
