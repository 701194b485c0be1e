//! The ptrace engine behind `faultline inject`.
//!
//! Why ptrace and not seccomp user notification: the fault has to be injected into a runtime
//! that is already running (containerd's maintainers attach to the shim with `strace -p`), and
//! a seccomp filter can only be installed by the process itself, before the fact. ptrace also
//! gives `delay_exit=` and `retval=` after a real call, which a notifier cannot do without
//! performing the call on the tracee's behalf.
//!
//! One thread owns every tracee (ptrace requests must come from the attaching thread). It
//! waits with `__WALL | __WNOTHREAD` so it never reaps children of other threads of the same
//! process (a scenario's own `Child`ren), and with `WNOHANG` because `waitpid` has no timeout
//! and a delayed tracee must be resumed at its deadline while the others keep running: a
//! delay is a deadline on one held tracee, never a sleep of the tracer.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;
use serde::Serialize;

use super::spec::{errno_name, Fault, Rule};

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("failed to attach to pid {pid}")]
    Attach {
        pid: i32,
        #[source]
        source: Errno,
    },
    #[error("no such process: {0}")]
    NoProcess(i32),
    #[error("failed to find program {0:?} on PATH")]
    NoProgram(String),
    #[error("failed to start {program}")]
    Spawn {
        program: String,
        #[source]
        source: Errno,
    },
    #[error("failed to wait for tracees")]
    Wait(#[source] Errno),
    #[error("failed to start the tracer thread")]
    Thread(#[source] std::io::Error),
    #[error("the tracer thread panicked")]
    Panicked,
}

/// One tampering the tracer performed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InjectionEvent {
    pub pid: i32,
    pub syscall: String,
    /// Which call of this rule's syscall it was (1-based, across the traced tree).
    pub call: u64,
    /// `delay_enter`, `delay_exit`, `error` or `retval`, with its value.
    pub action: String,
    /// Milliseconds since the tracer started.
    pub at_ms: u64,
}

/// How the started command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub events: Vec<InjectionEvent>,
    pub exit: Option<Exit>,
}

/// A set of rules and how to apply them.
#[derive(Debug, Clone)]
pub struct Injector {
    rules: Vec<Rule>,
    detach_on_exec: bool,
}

impl Injector {
    pub fn new(rules: Vec<Rule>) -> Injector {
        Injector {
            rules,
            detach_on_exec: false,
        }
    }

    /// strace's `--detach-on=execve`: let go of a traced process when it executes a new
    /// program (e.g. the `runc` a shim starts), except the started command's own exec.
    pub fn detach_on_exec(mut self, yes: bool) -> Injector {
        self.detach_on_exec = yes;
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Starts `argv` under the tracer and runs it to completion (or until `stop` is set, then
    /// detaches and waits for it). Blocks the calling thread, which becomes the tracer.
    pub fn run_command(&self, argv: &[OsString], stop: &AtomicBool) -> Result<Report, InjectError> {
        let mut engine = Engine::new(self, Arc::default());
        let (root, release) = spawn_held(argv)?;
        engine.root = Some(root);
        engine.armed_default = false;
        if let Err(e) = seize(root) {
            // SAFETY: plain kill(2) of the child we just forked.
            unsafe { libc::kill(root, libc::SIGKILL) };
            let _ = nix::sys::wait::waitpid(Pid::from_raw(root), None);
            return Err(InjectError::Attach {
                pid: root,
                source: e,
            });
        }
        engine.add(root, false);
        // The child execs once the pipe closes; it is traced from here on.
        drop(release);
        engine.run(stop)?;
        if engine.root_exit.is_none() {
            // Stopped early: the command runs on untraced; wait for it as its parent.
            engine.root_exit = wait_exit(root);
        }
        Ok(engine.report())
    }

    /// Attaches to every thread of `pid` (and whatever it forks from then on) on a new
    /// tracer thread. Returns once all its threads are seized.
    pub fn attach(&self, pid: i32) -> Result<Attached, InjectError> {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        let (stop2, events2) = (stop.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name(format!("inject-{pid}"))
            .spawn(move || {
                let mut engine = Engine::new(&me, events2);
                match engine.seize_process(pid) {
                    Ok(()) => {
                        let _ = tx.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(Report::default());
                    }
                }
                engine.run(&stop2)?;
                Ok(engine.report())
            })
            .map_err(InjectError::Thread)?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Attached {
                stop,
                events,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(InjectError::Panicked),
        }
    }

    /// Attaches to `pid` and traces it on the calling thread until it exits or `stop` is set.
    pub fn trace_pid(&self, pid: i32, stop: &AtomicBool) -> Result<Report, InjectError> {
        let mut engine = Engine::new(self, Arc::default());
        engine.seize_process(pid)?;
        engine.run(stop)?;
        Ok(engine.report())
    }
}

/// A tracer thread attached to a running process. Dropping it detaches (bounded in time).
pub struct Attached {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<InjectionEvent>>>,
    thread: Option<JoinHandle<Result<Report, InjectError>>>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Enter,
    Exit,
}

#[derive(Debug)]
struct Pending {
    nr: i64,
    fault: Option<Fault>,
    delay_exit: Option<Duration>,
}

#[derive(Debug, Default)]
struct Tracee {
    /// Counting and tampering starts at the started command's exec (not in our pre-exec code).
    armed: bool,
    held: Option<(Instant, Phase)>,
    pending: Option<Pending>,
    detaching: bool,
}

struct Engine<'a> {
    injector: &'a Injector,
    counts: Vec<u64>,
    tracees: HashMap<i32, Tracee>,
    root: Option<i32>,
    root_exit: Option<Exit>,
    armed_default: bool,
    events: Arc<Mutex<Vec<InjectionEvent>>>,
    start: Instant,
}

const OPTIONS: Options = Options::PTRACE_O_TRACESYSGOOD
    .union(Options::PTRACE_O_TRACEFORK)
    .union(Options::PTRACE_O_TRACEVFORK)
    .union(Options::PTRACE_O_TRACECLONE)
    .union(Options::PTRACE_O_TRACEEXEC);

/// How long detaching waits for running tracees to stop (one stuck in the kernel, e.g. in
/// D state, only stops on its way back to user space; the thread's exit detaches it then).
const DETACH_LIMIT: Duration = Duration::from_secs(2);

fn seize(pid: i32) -> Result<(), Errno> {
    ptrace::seize(Pid::from_raw(pid), OPTIONS)?;
    ptrace::interrupt(Pid::from_raw(pid))
}

/// Restarts a tracee to its next syscall stop, delivering `sig` (0 for none). Raw because
/// nix's `Signal` cannot carry real-time signals.
fn resume(pid: i32, sig: i32) {
    // SAFETY: PTRACE_SYSCALL takes no pointers; addr and data are plain integers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, sig as libc::c_long) };
    if rc != 0 {
        tracing::debug!(pid, "failed to resume tracee: {}", Errno::last());
    }
}

fn detach(pid: i32, sig: i32) {
    // SAFETY: PTRACE_DETACH takes no pointers; addr and data are plain integers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, sig as libc::c_long) };
    if rc != 0 {
        tracing::debug!(pid, "failed to detach tracee: {}", Errno::last());
    }
}

fn listen(pid: i32) {
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_LISTEN as libc::c_uint, pid, 0, 0) };
    if rc != 0 {
        tracing::debug!(pid, "failed to listen on tracee: {}", Errno::last());
    }
}

/// One wait status, without blocking. Raw `waitpid` because nix's decoder fails on stops by
/// real-time signals.
fn wait_any() -> Result<Option<(i32, i32)>, Errno> {
    let mut status = 0;
    // SAFETY: waitpid writes one int into `status`, which we own.
    let pid = unsafe {
        libc::waitpid(
            -1,
            &mut status,
            libc::__WALL | libc::__WNOTHREAD | libc::WNOHANG,
        )
    };
    match pid {
        0 => Ok(None),
        p if p > 0 => Ok(Some((p, status))),
        _ => Err(Errno::last()),
    }
}

fn wait_exit(pid: i32) -> Option<Exit> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes one int into `status`, which we own.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return None;
        }
        if libc::WIFEXITED(status) {
            return Some(Exit::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Some(Exit::Signal(libc::WTERMSIG(status)));
        }
    }
}

impl<'a> Engine<'a> {
    fn new(injector: &'a Injector, events: Arc<Mutex<Vec<InjectionEvent>>>) -> Engine<'a> {
        Engine {
            injector,
            counts: vec![0; injector.rules.len()],
            tracees: HashMap::new(),
            root: None,
            root_exit: None,
            armed_default: true,
            events,
            start: Instant::now(),
        }
    }

    fn add(&mut self, pid: i32, armed: bool) {
        self.tracees.entry(pid).or_insert(Tracee {
            armed,
            ..Tracee::default()
        });
    }

    fn report(&self) -> Report {
        Report {
            events: self.events.lock().map(|e| e.clone()).unwrap_or_default(),
            exit: self.root_exit,
        }
    }

    /// Seizes every thread of `pid`, re-reading its task list until no new thread appears
    /// (threads started meanwhile by a seized thread are attached by TRACECLONE anyway).
    fn seize_process(&mut self, pid: i32) -> Result<(), InjectError> {
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

    fn run(&mut self, stop: &AtomicBool) -> Result<(), InjectError> {
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

    fn handle(&mut self, pid: i32, status: i32) {
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

    fn let_go(&mut self, pid: i32, sig: i32) {
        detach(pid, sig);
        self.tracees.remove(&pid);
    }

    fn record(&self, pid: i32, rule: &Rule, call: u64, action: String) {
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

    fn on_syscall(&mut self, pid: i32) {
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
                let armed = t.armed;
                let Some(idx) = self.injector.rules.iter().position(|r| r.nr == nr) else {
                    resume(pid, 0);
                    return;
                };
                if !armed {
                    resume(pid, 0);
                    return;
                }
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
                let pending = Pending {
                    nr,
                    fault: rule.fault,
                    delay_exit: rule.delay_exit,
                };
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
                let idx = self.injector.rules.iter().position(|r| r.nr == p.nr);
                let rule = idx.map(|i| &self.injector.rules[i]);
                let call = idx.map(|i| self.counts[i]).unwrap_or(0);
                if let Some(f) = p.fault {
                    let (rax, action) = match f {
                        Fault::Error(e) => (-(e as i64), format!("error={}", errno_name(e))),
                        Fault::Retval(v) => (v, format!("retval={v}")),
                    };
                    match set_rax(pid, rax) {
                        Ok(()) => {
                            if let Some(r) = rule {
                                self.record(pid, r, call, action);
                            }
                        }
                        Err(e) => tracing::warn!(pid, "failed to set the return value: {e}"),
                    }
                }
                if detaching {
                    self.let_go(pid, 0);
                    return;
                }
                match p.delay_exit {
                    Some(d) => {
                        if let Some(r) = rule {
                            self.record(pid, r, call, format!("delay_exit={}ms", d.as_millis()));
                        }
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

    /// Lets every tracee go: held ones at once (undoing an entry-time skip), running ones
    /// after `PTRACE_INTERRUPT` stops them, within `DETACH_LIMIT`.
    fn detach_all(&mut self) {
        let pids: Vec<i32> = self.tracees.keys().copied().collect();
        for pid in pids {
            let Some(t) = self.tracees.get_mut(&pid) else {
                continue;
            };
            t.detaching = true;
            match t.held.take() {
                Some((_, Phase::Enter)) => {
                    if let Some(p) = t.pending.take() {
                        if p.fault.is_some() {
                            if let Err(e) = set_orig_rax(pid, p.nr) {
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

fn set_orig_rax(pid: i32, value: i64) -> Result<(), Errno> {
    let mut regs = ptrace::getregs(Pid::from_raw(pid))?;
    regs.orig_rax = value as u64;
    ptrace::setregs(Pid::from_raw(pid), regs)
}

fn set_rax(pid: i32, value: i64) -> Result<(), Errno> {
    let mut regs = ptrace::getregs(Pid::from_raw(pid))?;
    regs.rax = value as u64;
    ptrace::setregs(Pid::from_raw(pid), regs)
}

/// Forks a child that waits for the returned pipe end to close, then execs `argv`. The
/// tracer seizes it in between, so the command's first instruction is already traced.
fn spawn_held(argv: &[OsString]) -> Result<(i32, OwnedFd), InjectError> {
    let program = argv
        .first()
        .ok_or_else(|| InjectError::NoProgram(String::new()))?;
    let shown = program.to_string_lossy().into_owned();
    let path =
        crate::requirement::find_on_path(&shown).ok_or(InjectError::NoProgram(shown.clone()))?;
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| InjectError::NoProgram(shown.clone()));
    // Everything the child needs is allocated before fork: after it, only async-signal-safe
    // calls are allowed.
    let c_path = cstr(path.as_os_str().as_bytes())?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut p_args: Vec<*const libc::c_char> = c_args.iter().map(|c| c.as_ptr()).collect();
    p_args.push(std::ptr::null());
    let mut p_env: Vec<*const libc::c_char> = c_env.iter().map(|c| c.as_ptr()).collect();
    p_env.push(std::ptr::null());
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| InjectError::Spawn {
            program: shown.clone(),
            source: e,
        })?;
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: between fork and exec the child only calls async-signal-safe functions (prctl,
    // getppid, close, read, execve, write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(InjectError::Spawn {
            program: shown,
            source: Errno::last(),
        });
    }
    if pid == 0 {
        // SAFETY: see above; this is the child and never returns.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                libc::_exit(127);
            }
            libc::close(wr.as_raw_fd());
            let mut b = 0u8;
            while libc::read(rd.as_raw_fd(), &mut b as *mut u8 as *mut libc::c_void, 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::execve(c_path.as_ptr(), p_args.as_ptr(), p_env.as_ptr());
            let msg = b"faultline inject: failed to execute the command\n";
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
            libc::_exit(127);
        }
    }
    drop(rd);
    Ok((pid, wr))
}
