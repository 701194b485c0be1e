//! Guards: every resource a scenario builds is released by `Drop` (bounded in time, logging
//! instead of panicking), with an explicit `teardown()` for callers that want the error.

pub mod container;
pub mod mount;
pub mod process;
pub mod wait;

pub use mount::Mount;
pub use process::ChildGroup;
pub use wait::{wait_until, WaitError};
