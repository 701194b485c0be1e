//! The trigger: the stall (injected into the shim's umount2, or the slow storage's writes),
//! then containerd's part: delete the task within a deadline, else remove its state and
//! walk away from the shim.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_core::Context;
use faultline_inject::{Attached, Injector, Rule};
use faultline_runtime::shim::{ShimClient, ShimError};

use super::build::Env;
use super::{Kind, Options};

/// Makes the shim's unmount slow: `injected-delay` holds umount2 on entry, as containerd's
/// maintainers did with `strace -e inject=umount2:delay_enter=12s`
/// (containerd/containerd#9004); the others slow the upper layer's storage down.
pub(super) fn stall(
    ctx: &Context,
    kind: Kind,
    env: &mut Env,
    opts: &Options,
) -> anyhow::Result<Option<Attached>> {
    match kind {
        Kind::InjectedDelay => {
            let mut rule = Rule::new("umount2")?;
            rule.delay_enter = Some(opts.delay);
            ctx.progress(format!("injecting {} into the shim", rule.to_strace()));
            let attached = Injector::new(vec![rule])
                .detach_on_exec(true)
                .attach(env.shim.pid())?;
            Ok(Some(attached))
        }
        Kind::RealStall | Kind::Volatile => {
            env.set_write_latency(opts.write_latency)?;
            Ok(None)
        }
    }
}

/// What the runtime saw of its delete.
pub(super) struct Delete {
    pub(super) deadline_expired: bool,
    pub(super) answer: Option<String>,
    pub(super) waited_ms: u64,
}

/// containerd: delete the task within the deadline and shut the shim down; when the
/// deadline expires, remove the task's workdir and forget the shim (no `shutdown`).
pub(super) fn delete_task(
    ctx: &Context,
    env: &mut Env,
    mut client: ShimClient,
    deadline: Duration,
) -> anyhow::Result<Delete> {
    let t0 = Instant::now();
    match client.request("delete", deadline) {
        Ok(answer) => {
            let waited_ms = t0.elapsed().as_millis() as u64;
            client.request("shutdown", Duration::from_secs(10))?;
            env.shim
                .group_mut()
                .wait_timeout(Duration::from_secs(10))?
                .context("the shim did not exit after shutdown")?;
            std::fs::remove_dir_all(env.spec.workdir())?;
            Ok(Delete {
                deadline_expired: false,
                answer: Some(answer),
                waited_ms,
            })
        }
        Err(ShimError::DeadlineExceeded(_)) => {
            let waited_ms = t0.elapsed().as_millis() as u64;
            ctx.progress("delete: context deadline exceeded; removing the task's state");
            drop(client);
            std::fs::remove_dir_all(env.spec.workdir())?;
            Ok(Delete {
                deadline_expired: true,
                answer: None,
                waited_ms,
            })
        }
        Err(e) => Err(e).context("the shim failed to delete the task"),
    }
}
