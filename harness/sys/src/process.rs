//! A child in its own process group that dies with its parent: SIGTERM → grace → SIGKILL.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Makes the child die when the spawning thread's process dies, even by SIGKILL.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect. A child that is pid 1 of a
            // new pid namespace sees its parent as 0.
            let ppid = libc::getppid();
            if ppid != parent.as_raw() && ppid != 0 {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Runs `cmd` in its own process group with stdout and stderr captured, for at most `limit`.
/// `Ok(None)` when it did not finish in time: the group has been killed by then, and the
/// pipes are read on their own threads so a wedged child never blocks the caller.
pub fn run_bounded(
    label: &str,
    cmd: &mut Command,
    limit: Duration,
) -> io::Result<Option<std::process::Output>> {
    use std::io::Read;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut group = ChildGroup::spawn(label, cmd)?;
    let child = group.child_mut().expect("just spawned");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let Some(status) = group.wait_timeout(limit)? else {
        group.teardown()?;
        return Ok(None);
    };
    // The leader exited; members it left behind would keep the pipes open, so bound the reads.
    let grace = Duration::from_secs(1);
    Ok(Some(std::process::Output {
        status,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
    }))
}

#[derive(Debug)]
pub struct ChildGroup {
    child: Option<Child>,
    label: String,
    grace: Duration,
    status: Option<ExitStatus>,
}

impl ChildGroup {
    /// Spawns `cmd` as the leader of a new process group, killed with its parent.
    pub fn spawn(label: &str, cmd: &mut Command) -> io::Result<ChildGroup> {
        cmd.process_group(0);
        die_with_parent(cmd);
        let child = cmd.spawn()?;
        Ok(ChildGroup {
            child: Some(child),
            label: label.to_string(),
            grace: Duration::from_secs(2),
            status: None,
        })
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// `Some(status)` once the leader has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        match self.child.as_mut() {
            Some(c) => {
                let s = c.try_wait()?;
                self.status = s;
                Ok(s)
            }
            None => Ok(None),
        }
    }

    /// Waits for the leader to exit on its own, up to `deadline`.
    pub fn wait_timeout(&mut self, deadline: Duration) -> io::Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if start.elapsed() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `sig` to the whole group.
    pub fn signal(&self, sig: Signal) -> nix::Result<()> {
        killpg(Pid::from_raw(self.pid()), sig)
    }

    /// SIGTERM the group, wait `grace`, then SIGKILL; reaps the leader.
    pub fn teardown(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(self.status);
        };
        let pgid = Pid::from_raw(child.id() as i32);
        if self.status.is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < self.grace {
                if let Some(s) = child.try_wait()? {
                    self.status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // Members of the group may outlive the leader; SIGKILL them all regardless.
        let _ = killpg(pgid, Signal::SIGKILL);
        if self.status.is_none() {
            self.status = Some(child.wait()?);
        }
        Ok(self.status)
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("failed to tear down {}: {e}", self.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_bounded_captures_output_and_kills_past_its_limit() {
        let out = run_bounded(
            "echo",
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
        )
        .unwrap()
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let start = Instant::now();
        let late = run_bounded(
            "sleeper",
            Command::new("sh").args(["-c", "sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(late.is_none());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn teardown_kills_the_whole_group() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30 & wait"]);
        let mut g = ChildGroup::spawn("sleepers", &mut cmd).unwrap();
        let pgid = g.pid();
        let status = g.teardown().unwrap().unwrap();
        assert!(!status.success());
        // No member of the group is left once init has reaped the killed members.
        crate::wait::wait_until(
            "the group to be gone",
            Duration::from_secs(5),
            || match killpg(Pid::from_raw(pgid), None) {
                Err(nix::errno::Errno::ESRCH) => Ok(()),
                other => Err(format!("killpg(0) = {other:?}")),
            },
        )
        .unwrap();
    }
}
