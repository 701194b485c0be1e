//! The locking process: the lock sequence of the public report's strace, in a forked child.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

/// The lock sequence of the report's strace, in a forked child so that a task stuck in the
/// kernel is not the scenario itself: open(O_RDONLY), flock(LOCK_SH), flock(LOCK_UN),
/// flock(LOCK_EX), flock(LOCK_UN). The child writes one record per finished step to a pipe.
pub(super) struct Locker {
    pub(super) pid: i32,
    pipe: std::fs::File,
    started: Instant,
    steps: Vec<Step>,
    exited: bool,
    reaped: bool,
}

#[derive(Debug, Clone)]
struct Step {
    op: &'static str,
    errno: i32,
    at: Duration,
}

const OPS: [&str; 5] = ["open(O_RDONLY)", "LOCK_SH", "LOCK_UN", "LOCK_EX", "LOCK_UN"];

impl Locker {
    pub(super) fn spawn(file: &Path) -> anyhow::Result<Locker> {
        let path = CString::new(file.as_os_str().as_bytes())?;
        let (rd, wr) = nix::unistd::pipe()?;
        let parent = nix::unistd::getpid();
        // SAFETY: the child only makes async-signal-safe calls (prctl, getppid, open,
        // flock, write, _exit) on data prepared before fork; it never returns into Rust code.
        match unsafe { nix::unistd::fork() }? {
            nix::unistd::ForkResult::Child => unsafe {
                drop(rd);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                // The name the detector and `ps` show for the stuck task.
                libc::prctl(libc::PR_SET_NAME, c"locker".as_ptr());
                if libc::getppid() != parent.as_raw() {
                    libc::_exit(1);
                }
                let out = wr.as_raw_fd();
                let report = |step: u8, rc: i32| {
                    let errno = if rc < 0 { *libc::__errno_location() } else { 0 };
                    let rec = [step, errno as u8];
                    libc::write(out, rec.as_ptr().cast(), 2);
                };
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                report(0, fd);
                if fd < 0 {
                    libc::_exit(1);
                }
                for (i, op) in [libc::LOCK_SH, libc::LOCK_UN, libc::LOCK_EX, libc::LOCK_UN]
                    .into_iter()
                    .enumerate()
                {
                    let rc = libc::flock(fd, op);
                    report(i as u8 + 1, rc);
                    if rc < 0 {
                        libc::_exit(1);
                    }
                }
                libc::_exit(0);
            },
            nix::unistd::ForkResult::Parent { child } => {
                drop(wr);
                nix::fcntl::fcntl(
                    &rd,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )?;
                let pipe = std::fs::File::from(rd);
                Ok(Locker {
                    pid: child.as_raw(),
                    pipe,
                    started: Instant::now(),
                    steps: Vec::new(),
                    exited: false,
                    reaped: false,
                })
            }
        }
    }

    fn read_steps(&mut self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    self.exited = true;
                    break;
                }
                Ok(n) => {
                    for rec in buf[..n].chunks(2) {
                        if let [step, errno] = rec {
                            self.steps.push(Step {
                                op: OPS.get(*step as usize).copied().unwrap_or("?"),
                                errno: *errno as i32,
                                at: self.started.elapsed(),
                            });
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }

    pub(super) fn finished(&mut self) -> bool {
        self.read_steps();
        self.exited || self.steps.len() == OPS.len() || self.steps.iter().any(|s| s.errno != 0)
    }

    /// Waits until the child finished its steps (or failed one), at most `limit` from now.
    pub(super) fn wait(&mut self, limit: Duration) {
        let _ = faultline_sys::wait_until("the locking process", limit, || {
            if self.finished() {
                Ok(())
            } else {
                Err(format!("{} of {} steps done", self.steps.len(), OPS.len()))
            }
        });
    }

    pub(super) fn all_succeeded_before(&mut self, limit: Duration) -> bool {
        self.read_steps();
        self.steps.len() == OPS.len() && self.steps.iter().all(|s| s.errno == 0 && s.at <= limit)
    }

    pub(super) fn steps_json(&mut self) -> serde_json::Value {
        self.read_steps();
        let mut v: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                json!({
                    "op": s.op,
                    "result": if s.errno == 0 { "ok".to_string() } else {
                        format!("{} ({})", nix::errno::Errno::from_raw(s.errno), std::io::Error::from_raw_os_error(s.errno))
                    },
                    "after_ms": s.at.as_millis() as u64,
                })
            })
            .collect();
        if let Some(next) = OPS.get(self.steps.len()) {
            if !self.steps.iter().any(|s| s.errno != 0) {
                v.push(json!({ "op": next, "result": "no answer yet", "after_ms": self.started.elapsed().as_millis() as u64 }));
            }
        }
        json!(v)
    }

    /// SIGKILL and reap, bounded: a task in an uninterruptible wait may not die; it is then
    /// left to the pid namespace (and, in the VM, to the power-off).
    pub(super) fn kill(&mut self) -> &'static str {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        self.reaped = true;
        let pid = nix::unistd::Pid::from_raw(self.pid);
        if let Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) =
            waitpid(pid, Some(WaitPidFlag::WNOHANG))
        {
            return "exited";
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let reaped = faultline_sys::wait_until(
            "the locking process to die",
            Duration::from_secs(10),
            || match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => Err("still alive".into()),
                _ => Ok(()),
            },
        );
        if reaped.is_ok() {
            "killed"
        } else {
            "unkillable"
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        if !self.reaped {
            let how = self.kill();
            tracing::debug!("locking process {}: {how}", self.pid);
        }
    }
}
