//! The disposable VM backend: guest kernel fetch, initramfs builder, qemu runner.
