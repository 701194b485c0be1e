//! The ptrace and wait requests the engine makes: seize, resume, detach, listen, wait, and the
//! register writes that skip a call or replace its return value.

use nix::errno::Errno;
use nix::sys::ptrace::{self, Options};
use nix::unistd::Pid;

use super::Exit;

const OPTIONS: Options = Options::PTRACE_O_TRACESYSGOOD
    .union(Options::PTRACE_O_TRACEFORK)
    .union(Options::PTRACE_O_TRACEVFORK)
    .union(Options::PTRACE_O_TRACECLONE)
    .union(Options::PTRACE_O_TRACEEXEC);

pub(super) fn seize(pid: i32) -> Result<(), Errno> {
    ptrace::seize(Pid::from_raw(pid), OPTIONS)?;
    ptrace::interrupt(Pid::from_raw(pid))
}

/// Restarts a tracee to its next syscall stop, delivering `sig` (0 for none). Raw because
/// nix's `Signal` cannot carry real-time signals.
pub(super) fn resume(pid: i32, sig: i32) {
    // SAFETY: PTRACE_SYSCALL takes no pointers; addr and data are plain integers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, sig as libc::c_long) };
    if rc != 0 {
        tracing::debug!(pid, "failed to resume tracee: {}", Errno::last());
    }
}

pub(super) fn detach(pid: i32, sig: i32) {
    // SAFETY: PTRACE_DETACH takes no pointers; addr and data are plain integers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, sig as libc::c_long) };
    if rc != 0 {
        tracing::debug!(pid, "failed to detach tracee: {}", Errno::last());
    }
}

pub(super) fn listen(pid: i32) {
    // SAFETY: PTRACE_LISTEN takes no pointers.
    let rc = unsafe { libc::ptrace(libc::PTRACE_LISTEN as libc::c_uint, pid, 0, 0) };
    if rc != 0 {
        tracing::debug!(pid, "failed to listen on tracee: {}", Errno::last());
    }
}

/// One wait status, without blocking. Raw `waitpid` because nix's decoder fails on stops by
/// real-time signals.
pub(super) fn wait_any() -> Result<Option<(i32, i32)>, Errno> {
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

pub(super) fn wait_exit(pid: i32) -> Option<Exit> {
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

pub(super) fn set_orig_rax(pid: i32, value: i64) -> Result<(), Errno> {
    let mut regs = ptrace::getregs(Pid::from_raw(pid))?;
    regs.orig_rax = value as u64;
    ptrace::setregs(Pid::from_raw(pid), regs)
}

pub(super) fn set_rax(pid: i32, value: i64) -> Result<(), Errno> {
    let mut regs = ptrace::getregs(Pid::from_raw(pid))?;
    regs.rax = value as u64;
    ptrace::setregs(Pid::from_raw(pid), regs)
}
