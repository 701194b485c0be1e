//! Guards: every resource a scenario builds is released by `Drop` (bounded in time, logging
//! instead of panicking), with an explicit `teardown()` for callers that want the error.

pub mod ext4_image;
pub mod loop_device;
pub mod mount;
pub mod nfs;

pub use ext4_image::{Ext4Image, MountedExt4};
pub use faultline_sys::process::ChildGroup;
pub use faultline_sys::wait::{wait_until, WaitError};
pub use loop_device::{LoopDevice, LoopOptions};
pub use mount::Mount;
