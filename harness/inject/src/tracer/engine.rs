//! The event loop: one thread waits for every tracee's stops without blocking, resumes held
//! tracees at their deadlines, and follows forks, clones and execs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::super::spec::Rule;
use super::super::syscalls;
use super::injector::Injector;
use super::ptrace_calls::{detach, listen, resume, seize, wait_any};
use super::tracee::Tracee;
use super::{Exit, InjectError, InjectionEvent, Report, SyscallCount};

pub(super) struct Engine<'a> {
    pub(super) injector: &'a Injector,
    pub(super) counts: Vec<u64>,
    /// Every call entered by an armed tracee, by number: what the program did instead when
    /// a rule matched nothing.
    pub(super) seen: HashMap<i64, u64>,
    pub(super) tracees: HashMap<i32, Tracee>,
    pub(super) root: Option<i32>,
    pub(super) root_exit: Option<Exit>,
    pub(super) armed_default: bool,
    pub(super) events: Arc<Mutex<Vec<InjectionEvent>>>,
    pub(super) start: Instant,
}

impl<'a> Engine<'a> {
    pub(super) fn new(
        injector: &'a Injector,
        events: Arc<Mutex<Vec<InjectionEvent>>>,
    ) -> Engine<'a> {
        Engine {
            injector,
            counts: vec![0; injector.rules.len()],
            seen: HashMap::new(),
            tracees: HashMap::new(),
            root: None,
            root_exit: None,
            armed_default: true,
            events,
            start: Instant::now(),
        }
    }

    pub(super) fn add(&mut self, pid: i32, armed: bool) {
        self.tracees.entry(pid).or_insert(Tracee {
            armed,
            ..Tracee::default()
        });
    }

    pub(super) fn report(&self) -> Report {
        let mut seen: Vec<SyscallCount> = self
            .seen
            .iter()
            .map(|(nr, calls)| SyscallCount {
                syscall: syscalls::name(*nr)
                    .map(str::to_string)
                    .unwrap_or_else(|| nr.to_string()),
                calls: *calls,
            })
            .collect();
        seen.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| a.syscall.cmp(&b.syscall))
        });
        Report {
            events: self.events.lock().map(|e| e.clone()).unwrap_or_default(),
            exit: self.root_exit,
            calls: self.counts.clone(),
            seen,
        }
    }

    /// Seizes every thread of `pid`, re-reading its task list until no new thread appears
    /// (threads started meanwhile by a seized thread are attached by TRACECLONE anyway).
    pub(super) fn seize_process(&mut self, pid: i32) -> Result<(), InjectError> {
        let task_dir = format!("/proc/{pid}/task");
        loop {
            let tids: Vec<i32> = match std::fs::read_dir(&task_dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect(),
                Err(_) if self.tracees.is_empty() => return Err(InjectError::NoProcess(pid)),
                Err(_) => return Ok(()),
            };
            let mut new = false;
            for tid in tids {
                if self.tracees.contains_key(&tid) {
                    continue;
                }
                match seize(tid) {
                    Ok(()) => {
                        self.add(tid, true);
                        new = true;
                    }
                    // The thread ended between listing and seizing.
                    Err(Errno::ESRCH) if tid != pid => {}
                    Err(Errno::ESRCH) => return Err(InjectError::NoProcess(pid)),
                    Err(e) => {
                        return Err(InjectError::Attach {
                            pid: tid,
                            source: e,
                        })
                    }
                }
            }
            if !new {
                return Ok(());
            }
        }
    }

    pub(super) fn run(&mut self, stop: &AtomicBool) -> Result<(), InjectError> {
        let mut idle = Duration::ZERO;
        loop {
            if stop.load(Ordering::SeqCst) {
                self.detach_all();
                return Ok(());
            }
            if self.tracees.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            let due: Vec<i32> = self
                .tracees
                .iter()
                .filter(|(_, t)| t.held.is_some_and(|(until, _)| until <= now))
                .map(|(pid, _)| *pid)
                .collect();
            for pid in due {
                if let Some(t) = self.tracees.get_mut(&pid) {
                    t.held = None;
                }
                resume(pid, 0);
            }
            let mut got = false;
            loop {
                match wait_any() {
                    Ok(Some((pid, status))) => {
                        got = true;
                        self.handle(pid, status);
                    }
                    Ok(None) => break,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECHILD) => {
                        // Nothing left to wait for: every tracee went away unseen.
                        self.tracees.clear();
                        break;
                    }
                    Err(e) => return Err(InjectError::Wait(e)),
                }
            }
            if got {
                idle = Duration::ZERO;
                continue;
            }
            // Back off while nothing happens; a tracee that was just resumed usually stops
            // again within microseconds, so start small.
            idle = (idle * 2).clamp(Duration::from_micros(20), Duration::from_millis(2));
            let next_deadline = self
                .tracees
                .values()
                .filter_map(|t| t.held.map(|(u, _)| u.saturating_duration_since(now)))
                .min()
                .unwrap_or(idle);
            std::thread::sleep(idle.min(next_deadline));
        }
    }

    pub(super) fn handle(&mut self, pid: i32, status: i32) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.tracees.remove(&pid);
            if self.root == Some(pid) {
                self.root_exit = Some(if libc::WIFEXITED(status) {
                    Exit::Code(libc::WEXITSTATUS(status))
                } else {
                    Exit::Signal(libc::WTERMSIG(status))
                });
            }
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        if !self.tracees.contains_key(&pid) {
            // An auto-attached child whose first stop beat its parent's fork event.
            let armed = self.armed_default;
            self.add(pid, armed);
        }
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        let detaching = self.tracees.get(&pid).is_some_and(|t| t.detaching);
        if sig == libc::SIGTRAP | 0x80 {
            self.on_syscall(pid);
            return;
        }
        if event == 0 {
            // Signal-delivery stop: pass the signal on.
            if detaching {
                self.let_go(pid, sig);
            } else {
                resume(pid, sig);
            }
            return;
        }
        match event {
            libc::PTRACE_EVENT_STOP => {
                let group_stop = matches!(
                    sig,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                );
                if detaching {
                    self.let_go(pid, 0);
                } else if group_stop {
                    listen(pid);
                } else {
                    resume(pid, 0);
                }
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(child) = ptrace::getevent(Pid::from_raw(pid)) {
                    let armed = self.tracees.get(&pid).is_some_and(|t| t.armed);
                    self.add(child as i32, armed);
                }
                if detaching {
                    self.let_go(pid, 0);
                } else {
                    resume(pid, 0);
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                // A non-leader thread that execs takes over the leader's pid.
                if let Ok(former) = ptrace::getevent(Pid::from_raw(pid)) {
                    if former as i32 != pid {
                        self.tracees.remove(&(former as i32));
                    }
                }
                let was_armed = self.tracees.get(&pid).is_some_and(|t| t.armed);
                if self.root == Some(pid) && !was_armed {
                    self.armed_default = true;
                    if let Some(t) = self.tracees.get_mut(&pid) {
                        t.armed = true;
                    }
                    resume(pid, 0);
                } else if detaching || self.injector.detach_on_exec {
                    self.let_go(pid, 0);
                } else {
                    resume(pid, 0);
                }
            }
            _ => {
                if detaching {
                    self.let_go(pid, 0);
                } else {
                    resume(pid, 0);
                }
            }
        }
    }

    pub(super) fn let_go(&mut self, pid: i32, sig: i32) {
        detach(pid, sig);
        self.tracees.remove(&pid);
    }

    pub(super) fn record(&self, pid: i32, rule: &Rule, call: u64, action: String) {
        tracing::info!(pid, syscall = %rule.syscall, call, "injected {action}");
        if let Ok(mut ev) = self.events.lock() {
            ev.push(InjectionEvent {
                pid,
                syscall: rule.syscall.clone(),
                call,
                action,
                at_ms: self.start.elapsed().as_millis() as u64,
            });
        }
    }
}
