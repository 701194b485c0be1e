//! Syscall fault injection with strace's `-e inject=` semantics (`delay_enter`, `delay_exit`,
//! `error`, `retval`, `when`), following forks, attaching to a running process or starting a
//! command, and detaching cleanly. Used by scenarios (a delayed `umount2` in the shim) and by
//! `faultline inject` for users' own runtimes.

pub mod cli;
pub mod spec;
pub mod summary;
pub mod syscalls;
pub mod tracer;

pub use spec::{Fault, Rule, SpecError, When};
pub use tracer::{Attached, Exit, InjectError, InjectionEvent, Injector, Report, SyscallCount};
