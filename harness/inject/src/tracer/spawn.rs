//! Starting the command to trace, held before its exec until the tracer has seized it.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use super::InjectError;

/// Forks a child that waits for the returned pipe end to close, then execs `argv`. The
/// tracer seizes it in between, so the command's first instruction is already traced.
pub(super) fn spawn_held(argv: &[OsString]) -> Result<(i32, OwnedFd), InjectError> {
    let program = argv
        .first()
        .ok_or_else(|| InjectError::NoProgram(String::new()))?;
    let shown = program.to_string_lossy().into_owned();
    let path =
        faultline_sys::path::find_on_path(&shown).ok_or(InjectError::NoProgram(shown.clone()))?;
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
