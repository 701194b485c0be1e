//! Syscall stops: counting a rule's calls, skipping or delaying at entry, and replacing the
//! return value or delaying at exit.

use std::time::Instant;

use nix::sys::ptrace;
use nix::unistd::Pid;

use super::super::spec::{errno_name, Fault};
use super::engine::Engine;
use super::ptrace_calls::{resume, set_orig_rax, set_rax};
use super::tracee::{Pending, Phase};

impl Engine<'_> {
    pub(super) fn on_syscall(&mut self, pid: i32) {
        let info = match ptrace::syscall_info(Pid::from_raw(pid)) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(pid, "failed to read syscall info: {e}");
                resume(pid, 0);
                return;
            }
        };
        let Some(t) = self.tracees.get_mut(&pid) else {
            return;
        };
        match info.op {
            libc::PTRACE_SYSCALL_INFO_ENTRY => {
                if t.detaching {
                    self.let_go(pid, 0);
                    return;
                }
                // SAFETY: op == ENTRY, so the `entry` member of the union is the valid one.
                let nr = unsafe { info.u.entry.nr } as i64;
                if !t.armed {
                    resume(pid, 0);
                    return;
                }
                *self.seen.entry(nr).or_default() += 1;
                let Some(idx) = self.injector.rules.iter().position(|r| r.nr == nr) else {
                    resume(pid, 0);
                    return;
                };
                self.counts[idx] += 1;
                let call = self.counts[idx];
                let rule = &self.injector.rules[idx];
                if !rule.when.matches(call) {
                    resume(pid, 0);
                    return;
                }
                if rule.fault.is_some() {
                    // An invalid number makes the kernel skip the call; its return value is
                    // replaced at the exit stop.
                    if let Err(e) = set_orig_rax(pid, -1) {
                        tracing::warn!(pid, "failed to skip {}: {e}", rule.syscall);
                    }
                }
                let pending = Pending { rule: idx, call };
                let delay_enter = rule.delay_enter;
                if let Some(d) = delay_enter {
                    self.record(pid, rule, call, format!("delay_enter={}ms", d.as_millis()));
                }
                let t = self.tracees.get_mut(&pid).expect("tracee present");
                t.pending = Some(pending);
                match delay_enter {
                    Some(d) => t.held = Some((Instant::now() + d, Phase::Enter)),
                    None => resume(pid, 0),
                }
            }
            libc::PTRACE_SYSCALL_INFO_EXIT => {
                let Some(p) = t.pending.take() else {
                    if t.detaching {
                        self.let_go(pid, 0);
                    } else {
                        resume(pid, 0);
                    }
                    return;
                };
                let detaching = t.detaching;
                let rule = &self.injector.rules[p.rule];
                if let Some(f) = rule.fault {
                    let (rax, action) = match f {
                        Fault::Error(e) => (-(e as i64), format!("error={}", errno_name(e))),
                        Fault::Retval(v) => (v, format!("retval={v}")),
                    };
                    match set_rax(pid, rax) {
                        Ok(()) => self.record(pid, rule, p.call, action),
                        Err(e) => tracing::warn!(pid, "failed to set the return value: {e}"),
                    }
                }
                if detaching {
                    self.let_go(pid, 0);
                    return;
                }
                match rule.delay_exit {
                    Some(d) => {
                        self.record(pid, rule, p.call, format!("delay_exit={}ms", d.as_millis()));
                        if let Some(t) = self.tracees.get_mut(&pid) {
                            t.held = Some((Instant::now() + d, Phase::Exit));
                        }
                    }
                    None => resume(pid, 0),
                }
            }
            _ => {
                if t.detaching {
                    self.let_go(pid, 0);
                } else {
                    resume(pid, 0);
                }
            }
        }
    }
}
