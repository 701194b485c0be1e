//! Stopping a run from another thread (the command line's signal thread, on SIGINT or
//! SIGTERM): the running scenario's process group is killed at once, exactly as a SIGKILL of
//! the whole harness would kill it (so its namespaces, mounts and loop devices go the same
//! way), no further scenario starts, and the runner returns the results it has, the
//! interrupted scenario as an `error`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The signal that stopped the run (0: none yet).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// The process group of the scenario running now, if any.
static RUNNING: Mutex<Option<i32>> = Mutex::new(None);

/// Stops the run: kills the running scenario's process group and keeps every later one from
/// starting. `signal` is what the run will report (`SIGINT`, `SIGTERM`).
pub fn request(signal: Signal) {
    REQUESTED.store(signal as i32, Ordering::SeqCst);
    // Read under the lock: a group registered before this point is killed here, one
    // registered after it sees REQUESTED in `Running::start` and is killed there.
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pgid) = *running {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// The signal that stopped the run, if one did.
pub fn requested() -> Option<Signal> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Signal::try_from(s).ok(),
    }
}

/// The scenario process group the runner is waiting on; unregistered when dropped.
pub(crate) struct Running(());

impl Running {
    /// Registers `pgid` as the group [`request`] kills; kills it at once when a stop was
    /// requested before it was registered.
    pub(crate) fn start(pgid: i32) -> Running {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running = Some(pgid);
        if requested().is_some() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
