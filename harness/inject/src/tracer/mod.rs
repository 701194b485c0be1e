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

mod attached;
mod detach;
mod engine;
mod injector;
mod ptrace_calls;
mod spawn;
mod syscall_stop;
mod tracee;

use nix::errno::Errno;
use serde::Serialize;

pub use attached::Attached;
pub use injector::Injector;

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

/// How often the traced tree entered one system call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyscallCount {
    pub syscall: String,
    pub calls: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub events: Vec<InjectionEvent>,
    pub exit: Option<Exit>,
    /// Per rule (in the injector's order): how many calls of its syscall were made, counted
    /// as `when=` counts them.
    pub calls: Vec<u64>,
    /// Every syscall the traced tree entered while armed (from the started command's exec,
    /// or from attaching), most frequent first.
    pub seen: Vec<SyscallCount>,
}

impl Report {
    /// Calls made in all, across every syscall.
    pub fn total_calls(&self) -> u64 {
        self.seen.iter().map(|s| s.calls).sum()
    }
}
