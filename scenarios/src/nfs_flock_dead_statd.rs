//! `nfs-flock-dead-statd`: on an NFSv3 mount, `flock(LOCK_EX)` hangs in the kernel (D state)
//! or fails because rpc.statd is not running on the client.
//!
//! Symptom: php-fpm workers stuck in D state during their first requests after the cluster
//! moved from NFSv4 to NFSv3; `strace` itself hangs and cannot be killed; the last syscall is
//! `flock(11, LOCK_EX` on a file opened `O_RDONLY`; reads and writes over the same mount work;
//! `dmesg` shows `lockd: server ... not responding`. On the affected nodes
//! `rpc-statd.service` was `inactive (dead)`: nodes that also served NFS had statd running
//! and worked by chance (seed 002, "Resolving frozen processes in kubernetes", A. Howden).
//!
//! Cause: NFSv2/v3 have no locks in the protocol; the kernel's NLM client (lockd,
//! fs/lockd/clntproc.c) first asks the local rpc.statd to monitor the server
//! (`nsm_monitor`, an RPC to program 100024 found through rpcbind) and only then sends
//! the lock. Linux emulates `flock()` on NFS with a whole-file NLM lock, so flock is
//! affected as much as fcntl. Without statd the monitor call does not complete: the task
//! sleeps in `rpc_wait_bit_killable` under `nsm_monitor`/`nlmclnt_lock` until statd
//! appears (it resumes on its own once statd registers), or fails with ENOLCK. This is
//! long-standing behaviour, not a regression, so expectations do not depend on the kernel.
//!
//! Runs in the VM backend (the host kernel has no NFS): the guest runs a kernel nfsd exporting
//! a tmpfs over loopback and mounts it with `mount.nfs -o vers=3` (locking on), like kubelet.
//! Variants:
//! - `statd-running`: statd runs; `LOCK_SH`, `LOCK_UN`, `LOCK_EX` on a file opened
//!   read-only all succeed. Clean.
//! - `statd-dead`: statd ran for the mount (mount.nfs insists on it) and was stopped
//!   (`systemctl stop rpc-statd`) before the first lock: the lock blocks past the deadline or
//!   fails. Records which, the errno, the task's state, wchan and kernel stack, and the
//!   kernel log's lockd lines; then starts statd again and records whether the stuck lock
//!   completes. Reproduced.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_core::guard::nfs::{GraceTimes, NfsServer, Statd};
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantOutcome,
};
use faultline_detect::nfs_lock_manager::{self, stat_state, LockWaiter};
use faultline_detect::{kernel_log, CheckInput};
use faultline_sys::mountinfo::read_mountinfo;
use serde_json::json;

/// A lock that has not returned by now is blocked, not slow: the statd-running variant
/// shows that a lock normally takes milliseconds, or up to lockd's 5 s retry when the server
/// is still in its (shortened) grace period.
const STUCK_AFTER: Duration = Duration::from_secs(4);
/// statd-running may meet the server's grace period once (lockd retries every 5 s).
const CLEAN_LIMIT: Duration = Duration::from_secs(20);
/// How long a blocked lock may take to complete once statd is back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

pub struct NfsFlockDeadStatd;

impl Scenario for NfsFlockDeadStatd {
    fn name(&self) -> &'static str {
        "nfs-flock-dead-statd"
    }

    fn summary(&self) -> &'static str {
        "NFSv3 flock(LOCK_EX) blocks in D state (or fails) because rpc.statd is not running"
    }

    fn detector(&self) -> &'static str {
        nfs_lock_manager::NAME
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            Requirement::VmBackend {
                why: "needs a kernel NFS server and client; the guest kernel has them",
            },
            Requirement::Filesystem("nfsd"),
            Requirement::Filesystem("nfs"),
            Requirement::binary("rpcbind", "rpcbind"),
            Requirement::binary("rpc.statd", "nfs-common"),
            Requirement::binary("mount.nfs", "nfs-common"),
            Requirement::binary("rpc.nfsd", "nfs-kernel-server"),
            Requirement::binary("rpc.mountd", "nfs-kernel-server"),
            Requirement::binary("exportfs", "nfs-kernel-server"),
        ]
    }

    fn variants(&self, _kernel: &KernelVersion) -> Vec<Variant> {
        vec![
            Variant::new(
                "statd-running",
                "rpc.statd runs: LOCK_SH and LOCK_EX on a read-only file succeed",
                Expectation::Clean,
            ),
            Variant::new(
                "statd-dead",
                "rpc.statd stopped before the first lock: LOCK_EX blocks or fails",
                Expectation::Reproduced,
            ),
        ]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(150)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let statd_dead = match variant.name {
            "statd-running" => false,
            "statd-dead" => true,
            other => anyhow::bail!("unknown variant {other:?}"),
        };
        let dir = ctx.variant_dir(variant.name)?;
        let export = dir.join("export");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&export)?;
        std::fs::create_dir_all(&mnt)?;
        // The workload's file, written on the server side.
        std::fs::write(export.join("app.js"), b"console.log('hello')\n")?;
        let setup = Instant::now();

        ctx.progress(format!("starting the NFS server ({})", variant.name));
        let fsid = if statd_dead { 2 } else { 1 };
        let mut server = NfsServer::start(&export, fsid, GraceTimes::default())
            .context("failed to start the NFS server")?;
        let mut statd = Statd::start().context("failed to start rpc.statd")?;
        let statd_pid = statd.pid();
        let mut mount = server
            .mount_client(&mnt, "vers=3,proto=tcp")
            .context("failed to mount the export")?
            .with_time_limit(Duration::from_secs(10));
        let mount_entry = read_mountinfo(Path::new("/proc"), None)
            .context("failed to read /proc/self/mountinfo")?
            .into_iter()
            .find(|m| m.mount_point == mnt)
            .map(|m| {
                json!({
                    "mount_id": m.mount_id,
                    "fstype": m.fstype,
                    "source": m.source_lossy(),
                    "mount_options": m.mount_options,
                    "super_options": m.super_options,
                })
            });
        let file = mnt.join("app.js");
        let content = std::fs::read_to_string(&file).context("failed to read over NFS")?;
        anyhow::ensure!(content.starts_with("console.log"), "read back {content:?}");

        let mut statd_after_stop = json!(null);
        if statd_dead {
            ctx.progress("stopping rpc.statd (systemctl stop rpc-statd)");
            let still_listed = statd.stop().context("failed to stop rpc.statd")?;
            statd_after_stop = json!({ "rpcbind_still_lists_statd": still_listed });
        }
        let setup_ms = setup.elapsed().as_millis() as u64;

        ctx.progress("locking: open O_RDONLY, LOCK_SH, LOCK_UN, LOCK_EX, LOCK_UN");
        let mut locker = Locker::spawn(&file).context("failed to start the locking process")?;
        let limit = if statd_dead { STUCK_AFTER } else { CLEAN_LIMIT };
        locker.wait(limit);
        let blocked = !locker.finished();

        // The detector, as `faultline check` runs it, while the problem is live; the kernel
        // log is this scenario's (since its marker), not the guest's whole buffer.
        let input = CheckInput::default();
        let log = kernel_log::from_records(&ctx.kmsg_since_marker());
        let observations =
            nfs_lock_manager::observe_with_log(&input, nfs_lock_manager::lockd_lines(&log))
                .context("failed to run the nfs-lock-manager detector")?;
        let findings = nfs_lock_manager::judge(&observations);
        let task = blocked.then(|| task_view(locker.pid, &observations.waiters));
        let nfs_log: Vec<String> = log
            .iter()
            .filter(|l| {
                let m = l.message.as_str();
                m.contains("lockd")
                    || m.contains("statd")
                    || m.contains("nlm")
                    || m.contains("NFSD")
            })
            .map(|l| l.message.clone())
            .collect();

        // The remedy: start statd; a blocked lock should go through by itself.
        let mut recovery = json!(null);
        let mut restarted = None;
        if statd_dead {
            let t = Instant::now();
            restarted = Some(Statd::start().context("failed to start rpc.statd again")?);
            if blocked {
                locker.wait(RECOVERY_LIMIT);
            }
            recovery = json!({
                "lock_completed_after_statd_started": locker.finished(),
                "ms": t.elapsed().as_millis() as u64,
                "steps": locker.steps_json(),
            });
        }
        let steps = locker.steps_json();
        let succeeded = locker.all_succeeded_before(limit);
        let killed = locker.kill();
        let reproduced = !succeeded;

        // Unmount while statd runs: the client unmonitors the server through it on unmount.
        ctx.progress("unmounting and stopping the server");
        mount
            .teardown()
            .context("failed to unmount the NFS mount")?;
        server.teardown().context("failed to stop the NFS server")?;
        drop(restarted);
        drop(statd);

        Ok(VariantOutcome {
            reproduced,
            observed: json!({
                "kernel": ctx.kernel.release,
                "mount": mount_entry,
                "statd_pid_at_mount": statd_pid,
                "statd_stopped": statd_dead,
                "statd_after_stop": statd_after_stop,
                "lock_steps": steps,
                "outcome": if succeeded { "locked" } else if blocked { "blocked" } else { "failed" },
                "deadline_ms": limit.as_millis() as u64,
                "blocked_task": task,
                "locker_killed": killed,
                "nfs_kernel_log": nfs_log,
                "recovery": recovery,
                "setup_ms": setup_ms,
                "waiters_seen_by_detector": observations.waiters.len(),
            }),
            findings,
        })
    }
}

/// state, wchan and kernel stack of a task, as the seed's engineer looked at it: the
/// detector's entry when it counted the task as an NLM waiter, else read from /proc.
fn task_view(pid: i32, waiters: &[LockWaiter]) -> serde_json::Value {
    if let Some(w) = waiters.iter().find(|w| w.pid == pid) {
        return json!({
            "pid": pid,
            "state": w.state.to_string(),
            "wchan": w.wchan,
            "stack": w.stack,
            "waiter": true,
        });
    }
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
    json!({
        "pid": pid,
        "state": stat_state(&read("stat")).map(|c| c.to_string()),
        "wchan": read("wchan"),
        "stack": read("stack").lines().map(str::trim).collect::<Vec<_>>(),
        "waiter": false,
    })
}

/// The lock sequence of the seed's strace, in a forked child so that a task stuck in the
/// kernel is not the scenario itself: open(O_RDONLY), flock(LOCK_SH), flock(LOCK_UN),
/// flock(LOCK_EX), flock(LOCK_UN). The child writes one record per finished step to a pipe.
struct Locker {
    pid: i32,
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
    fn spawn(file: &Path) -> anyhow::Result<Locker> {
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

    fn finished(&mut self) -> bool {
        self.read_steps();
        self.exited || self.steps.len() == OPS.len() || self.steps.iter().any(|s| s.errno != 0)
    }

    /// Waits until the child finished its steps (or failed one), at most `limit` from now.
    fn wait(&mut self, limit: Duration) {
        let _ = faultline_sys::wait_until("the locking process", limit, || {
            if self.finished() {
                Ok(())
            } else {
                Err(format!("{} of {} steps done", self.steps.len(), OPS.len()))
            }
        });
    }

    fn all_succeeded_before(&mut self, limit: Duration) -> bool {
        self.read_steps();
        self.steps.len() == OPS.len() && self.steps.iter().all(|s| s.errno == 0 && s.at <= limit)
    }

    fn steps_json(&mut self) -> serde_json::Value {
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
    fn kill(&mut self) -> &'static str {
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
