//! SIGINT and SIGTERM during `faultline run`: the scenario running now is killed with its
//! namespaces (as a SIGKILL of the whole harness would kill it, so nothing is left behind),
//! no further scenario starts, and the main thread prints what finished, writes the JUnit
//! file and exits 130 or 143 (128 + the signal, as shells report a death by signal).
//!
//! A thread waiting in sigwait(2) on a blocked mask, not a signal handler (directly or through
//! the signal-hook crate): the work a signal starts (take the runner's lock, kill a process
//! group) is not async-signal-safe, and a waiting thread may do anything an ordinary thread
//! may; it also needs no new dependency. The main thread blocks the two signals while a
//! namespace pass runs, before it starts any thread, so the threads it starts inherit the
//! mask and only the signal thread receives them. A blocked mask also survives fork and
//! execve (sigprocmask(2)), so the scenario's first process (`ns-init`) empties its mask
//! before anything else, and the scenario's processes take SIGTERM as usual.

use std::sync::atomic::{AtomicBool, Ordering};

use faultline_core::runner::interrupt;
use nix::sys::signal::{raise, signal, SigHandler, SigSet, SigmaskHow, Signal};

use crate::UsageError;

/// Whether the backend running now can be stopped between scenarios with its results kept
/// (the namespace backend). The VM backend reports only when its guest is done, so there a
/// signal ends faultline as before, and qemu dies with it (PR_SET_PDEATHSIG).
static GRACEFUL: AtomicBool = AtomicBool::new(false);

/// Whether a signal now stops the run with its results kept (`true`: blocked in the calling
/// thread, which must be the main thread, and taken by the signal thread) or ends faultline
/// at once (`false`: the default action, as without [`install`]).
pub fn set_graceful(graceful: bool) {
    GRACEFUL.store(graceful, Ordering::SeqCst);
    let set = signals();
    let _ = if graceful {
        set.thread_block()
    } else {
        set.thread_unblock()
    };
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Starts the thread that takes SIGINT and SIGTERM once [`set_graceful`] blocks them.
pub fn install() -> Result<(), UsageError> {
    let set = signals();
    // The signal thread keeps them blocked for good: sigwait(2) takes only blocked signals.
    let old = set
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| UsageError(format!("failed to block SIGINT and SIGTERM: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            if !GRACEFUL.load(Ordering::SeqCst) || interrupt::requested().is_some() {
                // Not stoppable here, or a second signal while stopping: end at once.
                die(&set, sig);
            }
            interrupt::request(sig);
        })
        .map_err(|e| UsageError(format!("failed to start the signal thread: {e}")));
    // The calling thread goes back to its own mask until a graceful pass.
    let _ = old.thread_set_mask();
    thread.map(|_| ())
}

/// Ends the process by `sig` itself, with its default action.
fn die(set: &SigSet, sig: Signal) {
    // SAFETY: SIG_DFL installs no handler, so no handler can run unsafely.
    let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    let _ = set.thread_unblock();
    let _ = raise(sig);
}
