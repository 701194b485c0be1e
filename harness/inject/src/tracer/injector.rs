//! [`Injector`]: the rules, and the three ways to apply them (start a command, attach on a
//! tracer thread, trace on the calling thread).

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};

use nix::unistd::Pid;

use super::super::spec::Rule;
use super::attached::Attached;
use super::engine::Engine;
use super::ptrace_calls::{seize, wait_exit};
use super::spawn::spawn_held;
use super::{InjectError, Report};

/// A set of rules and how to apply them.
#[derive(Debug, Clone)]
pub struct Injector {
    pub(super) rules: Vec<Rule>,
    pub(super) detach_on_exec: bool,
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
