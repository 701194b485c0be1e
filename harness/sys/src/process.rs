//! A child in its own process group that dies with its parent: SIGTERM → grace → SIGKILL,
//! and every wait for it bounded. A process that does not exit after SIGKILL is in an
//! uninterruptible sleep (see "D" in proc(5)): no wait ends it, so it is left to init.

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

/// How long a group may take to go after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How long a SIGKILLed process may take to exit. Exiting is quick unless the process is in
/// an uninterruptible wait (a FUSE request the daemon took and never answers, an NFS server
/// that is gone): such a process cannot be reaped by waiting, so it is left to init.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Runs `cmd` (its program, arguments, environment changes and directory; stdin is
/// /dev/null) in its own process group with stdout and stderr captured, for at most `limit`.
/// `Ok(None)` when it did not finish in time: the group has been killed by then.
///
/// duct runs it: its handle captures both pipes on its own threads and waits with a deadline
/// on SIGCHLD rather than by polling. It counts the command finished once its output is
/// complete too, so a group member that keeps the pipes open keeps it running. duct's `kill`
/// signals only the direct child (see its docs); the helpers a tool starts (mount.nfs's
/// start-statd, runc's children) are in the group, so the group is signalled here instead.
pub fn run_bounded(
    label: &str,
    cmd: &mut Command,
    limit: Duration,
) -> io::Result<Option<std::process::Output>> {
    let mut expr = duct::cmd(cmd.get_program(), cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        expr = expr.dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        expr = match v {
            Some(v) => expr.env(k, v),
            None => expr.env_remove(k),
        };
    }
    let handle = expr
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .before_spawn(|c| {
            c.process_group(0);
            die_with_parent(c);
            Ok(())
        })
        .start()?;
    if let Some(out) = handle.wait_timeout(limit)? {
        return Ok(Some(out.clone()));
    }
    let pgid = Pid::from_raw(handle.pids()[0] as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    if handle.wait_timeout(GRACE)?.is_none() {
        let _ = killpg(pgid, Signal::SIGKILL);
        if handle.wait_timeout(KILL_WAIT)?.is_none() {
            // Dropping the handle leaves the child on duct's list of children to reap later.
            tracing::warn!(
                "{label} (pid {pgid}) did not exit within {KILL_WAIT:?} of SIGKILL; leaving it"
            );
        }
    }
    Ok(None)
}

/// A group leader that did not exit within its bound after SIGKILL: it is in an
/// uninterruptible wait, and only the end of that wait lets it exit. It was left behind
/// unreaped; once it exits it is reaped by init (or the subreaper) of its pid namespace when
/// this process is gone. Carried as the source of the `io::Error` that teardown returns
/// (kind `TimedOut`); [`Abandoned::of`] gets it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{label} (pid {pid}) did not exit within {waited:?} of SIGKILL (state {state}); left it to \
     be reaped by init"
)]
pub struct Abandoned {
    pub label: String,
    pub pid: i32,
    pub waited: Duration,
    /// Its state letter from /proc/PID/stat when it was left (`D`: uninterruptible).
    pub state: char,
}

impl Abandoned {
    /// The abandoned leader an error from [`ChildGroup::teardown`] is about, if it is one.
    pub fn of(e: &io::Error) -> Option<&Abandoned> {
        e.get_ref()?.downcast_ref()
    }
}

#[derive(Debug)]
pub struct ChildGroup {
    child: Option<Child>,
    label: String,
    grace: Duration,
    kill_wait: Duration,
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
            grace: GRACE,
            kill_wait: KILL_WAIT,
            status: None,
        })
    }

    /// How long teardown waits after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long teardown waits for the leader after SIGKILL before leaving it.
    pub fn with_kill_wait(mut self, kill_wait: Duration) -> Self {
        self.kill_wait = kill_wait;
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

    /// SIGTERM the group, wait `grace`, then SIGKILL it and reap the leader, waiting at most
    /// the kill wait. A leader still there then is left unreaped and the error says so
    /// ([`Abandoned`]); the group is torn down either way.
    pub fn teardown(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.child.is_none() {
            return Ok(self.status);
        }
        let pgid = Pid::from_raw(self.pid());
        if self.status.is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            self.wait_timeout(self.grace)?;
        }
        // Members of the group may outlive the leader; SIGKILL them all regardless.
        let _ = killpg(pgid, Signal::SIGKILL);
        if self.status.is_none() && self.wait_timeout(self.kill_wait)?.is_none() {
            return Err(self.abandon());
        }
        self.child = None;
        Ok(self.status)
    }

    /// Lets go of a leader that outlived SIGKILL, as the kernel leaves it no other choice.
    fn abandon(&mut self) -> io::Error {
        let pid = self.pid();
        self.child = None;
        let state = procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .map(|s| s.state)
            .unwrap_or('?');
        let a = Abandoned {
            label: self.label.clone(),
            pid,
            waited: self.kill_wait,
            state,
        };
        tracing::warn!("{a}");
        io::Error::new(io::ErrorKind::TimedOut, a)
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        match self.teardown() {
            // Already logged where it was left.
            Err(e) if Abandoned::of(&e).is_some() => {}
            Err(e) => tracing::warn!("failed to tear down {}: {e}", self.label),
            Ok(_) => {}
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
    fn run_bounded_passes_environment_and_directory() {
        let out = run_bounded(
            "env",
            Command::new("sh")
                .args(["-c", "echo $FAULTLINE_T; pwd"])
                .env("FAULTLINE_T", "seen")
                .current_dir("/proc"),
            Duration::from_secs(10),
        )
        .unwrap()
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "seen\n/proc\n");
    }

    /// A member left running holds the output pipe, so the command is not finished; at the
    /// limit the whole group is killed (duct's own kill would reach only the `sh`).
    #[test]
    fn run_bounded_kills_the_members_a_command_leaves() {
        let dir = std::env::temp_dir().join(format!("faultline-rb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; echo started", pidfile.display());
        let out = run_bounded(
            "leaver",
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(out.is_none());
        let member: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        crate::wait::wait_until("the member to be gone", Duration::from_secs(5), || {
            match std::fs::read_to_string(format!("/proc/{member}/stat")) {
                Err(_) => Ok(()),
                Ok(s) if s.contains(") Z ") => Ok(()),
                Ok(s) => Err(s),
            }
        })
        .unwrap();
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
