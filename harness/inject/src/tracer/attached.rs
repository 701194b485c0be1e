//! [`Attached`]: a tracer thread attached to a running process, detached on drop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{InjectError, InjectionEvent, Report};

/// A tracer thread attached to a running process. Dropping it detaches (bounded in time).
pub struct Attached {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) events: Arc<Mutex<Vec<InjectionEvent>>>,
    pub(super) thread: Option<JoinHandle<Result<Report, InjectError>>>,
}

impl Attached {
    /// What was injected so far.
    pub fn events(&self) -> Vec<InjectionEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Whether every tracee is gone (exited) and the tracer thread finished.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Detaches from every tracee, leaving them running (a held delay ends now; an error
    /// injected at entry but not yet returned is undone, so the call runs for real).
    pub fn detach(mut self) -> Result<Report, InjectError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Report, InjectError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| InjectError::Panicked)?,
            None => Ok(Report::default()),
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("failed to detach the injector: {e}");
        }
    }
}
