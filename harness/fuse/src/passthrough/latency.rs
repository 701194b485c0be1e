//! Read and write slow-down: the injected fault that makes the daemon a slow storage backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Delay added to each read, and to each write/fsync, in microseconds. Shared with the
/// daemon's control loop so it can be changed while the file system serves.
#[derive(Debug, Default)]
pub struct Latency {
    read_us: AtomicU64,
    write_us: AtomicU64,
}

impl Latency {
    pub fn set(&self, read: Duration, write: Duration) {
        self.read_us
            .store(read.as_micros() as u64, Ordering::SeqCst);
        self.write_us
            .store(write.as_micros() as u64, Ordering::SeqCst);
    }

    // The delay is the injected fault (a slow storage backend), not synchronisation.
    pub(super) fn read_delay(&self) {
        let us = self.read_us.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }

    pub(super) fn write_delay(&self) {
        let us = self.write_us.load(Ordering::SeqCst);
        if us > 0 {
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}
