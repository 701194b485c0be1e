//! Detaching from every tracee, bounded in time.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::engine::Engine;
use super::ptrace_calls::{set_orig_rax, wait_any};
use super::tracee::Phase;

/// How long detaching waits for running tracees to stop (one stuck in the kernel, e.g. in
/// D state, only stops on its way back to user space; the thread's exit detaches it then).
const DETACH_LIMIT: Duration = Duration::from_secs(2);

impl Engine<'_> {
    /// Lets every tracee go: held ones at once (undoing an entry-time skip), running ones
    /// after `PTRACE_INTERRUPT` stops them, within `DETACH_LIMIT`.
    pub(super) fn detach_all(&mut self) {
        let pids: Vec<i32> = self.tracees.keys().copied().collect();
        for pid in pids {
            let Some(t) = self.tracees.get_mut(&pid) else {
                continue;
            };
            t.detaching = true;
            match t.held.take() {
                Some((_, Phase::Enter)) => {
                    if let Some(p) = t.pending.take() {
                        let rule = &self.injector.rules[p.rule];
                        if rule.fault.is_some() {
                            if let Err(e) = set_orig_rax(pid, rule.nr) {
                                tracing::warn!(pid, "failed to restore the syscall: {e}");
                            }
                        }
                    }
                    self.let_go(pid, 0);
                }
                Some((_, Phase::Exit)) => self.let_go(pid, 0),
                None => {
                    if let Err(e) = ptrace::interrupt(Pid::from_raw(pid)) {
                        tracing::debug!(pid, "failed to interrupt tracee: {e}");
                    }
                }
            }
        }
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        while !self.tracees.is_empty() && start.elapsed() < DETACH_LIMIT {
            match wait_any() {
                Ok(Some((pid, status))) => {
                    self.handle(pid, status);
                    pause = Duration::from_micros(20);
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if !self.tracees.is_empty() {
            tracing::warn!(
                "{} tracee(s) did not stop within {DETACH_LIMIT:?} (stuck in the kernel?); \
                 they are detached when the tracer thread ends",
                self.tracees.len()
            );
            self.tracees.clear();
        }
    }
}
