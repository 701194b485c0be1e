//! Guards: every resource a scenario builds is released by `Drop` (bounded in time, logging
//! instead of panicking), with an explicit `teardown()` for callers that want the error.

pub mod container;
pub mod ext4_image;
pub mod loop_device;
pub mod mount;
pub mod nfs;
pub mod process;
pub mod shim;
pub mod wait;

pub use ext4_image::{Ext4Image, MountedExt4};
pub use loop_device::{LoopDevice, LoopOptions};
pub use mount::Mount;
pub use process::ChildGroup;
pub use wait::{wait_until, WaitError};
