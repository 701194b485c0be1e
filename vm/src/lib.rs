//! The disposable VM backend: guest kernel fetch, initramfs builder, qemu runner.

pub mod cpio;
pub mod fetch;
pub mod kernel;
pub mod modules;
