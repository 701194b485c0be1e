//! The trigger: a slow rootfs unmount in the pod's shim (held on entry by faultline's
//! injector, or really slow on the slow storage), then kubelet's part, as containerd's
//! regression test for #7496 (integration/issue7496_linux_test.go) does it: StopPodSandbox
//! and RemovePodSandbox retried until both succeed, within 3 minutes.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_detect::hung_task::BlockedTask;
use faultline_inject::{Attached, Injector, Rule};
use faultline_runtime::cri::Cri;
use faultline_runtime::pod_removal::{stop_and_remove, Removal, CALL_LIMIT, REMOVAL_LIMIT};

use super::batch::Env;
use super::observe::DWatch;
use super::pod::Lab;
use super::storage::NodeLoad;
use super::Kind;

/// What containerd logs when CRI's 10 s deadline for the sandbox's TaskExit expired; the
/// slow storage is made fast again once it is there, so that the stop can finish.
pub(super) const SANDBOX_GAVE_UP: &str = "failed to handle sandbox TaskExit event";

/// What the trigger did and saw.
pub(super) struct Triggered {
    pub(super) removal: Removal,
    pub(super) injectors: Vec<Attached>,
    /// The first shim seen blocked in D (`cri-real-stall`, `cri-volatile`), or what was seen.
    pub(super) blocked: Option<Result<BlockedTask, String>>,
    /// When containerd gave up on the sandbox's TaskExit, since the removal started.
    pub(super) gave_up_ms: Option<u64>,
    pub(super) node_load_mib: u64,
}

/// Holds umount2 `delay` on entry in every shim of the pod, as upstream's test does with
/// `strace -f --detach-on=execve -e inject=umount2:delay_enter=12s` on the shim.
fn inject(env: &Env, kind: Kind, lab: &Lab) -> anyhow::Result<Vec<Attached>> {
    let mut rule = Rule::new("umount2")?;
    rule.delay_enter = Some(env.opts.delay);
    env.progress(
        kind,
        format!("injecting {} into the pod's shims", rule.to_strace()),
    );
    lab.shims
        .iter()
        .map(|s| {
            Injector::new(vec![rule.clone()])
                .detach_on_exec(true)
                .attach(s.pid)
                .with_context(|| format!("failed to attach to the shim {}", s.pid))
        })
        .collect()
}

/// Removes the pod on another thread (its own CRI connection) so the stall can be watched
/// and, once containerd gave up, lifted.
fn remove_in_background(socket: PathBuf, pod: String) -> JoinHandle<anyhow::Result<Removal>> {
    std::thread::spawn(move || {
        let cri = Cri::connect(&socket)?;
        Ok(stop_and_remove(&cri, &pod))
    })
}

/// The stall, the removal loop, and (slow storage) watching the shim in D until containerd
/// gives up on the sandbox, then making the storage fast again.
pub(super) fn trigger(env: &Env, lab: &mut Lab, kind: Kind) -> anyhow::Result<Triggered> {
    let opts = &env.opts;
    let injectors = match kind {
        Kind::CriShimV2 | Kind::CriShimV1 => inject(env, kind, lab)?,
        Kind::CriRealStall | Kind::CriVolatile | Kind::CriNoStall | Kind::Volatile => Vec::new(),
    };
    let mut load = None;
    if let Some(storage) = lab.storage.as_mut() {
        storage.set_write_latency(opts.write_latency)?;
        load = Some(NodeLoad::start(storage)?);
        env.progress(
            kind,
            format!(
                "slow storage: {} ms a write, the node rewriting a file on it",
                opts.write_latency.as_millis()
            ),
        );
    }
    let start = Instant::now();
    let removal = remove_in_background(lab.ctd.socket(), lab.pod.id.clone());
    let mut watch = lab.storage.as_ref().map(|_| DWatch::new());
    let shim = lab.shims[0].pid;
    let mut gave_up_ms = None;
    while !removal.is_finished() && start.elapsed() < REMOVAL_LIMIT {
        if let Some(w) = watch.as_mut() {
            w.poll(shim)?;
        }
        if gave_up_ms.is_none() && !lab.ctd.log_lines(SANDBOX_GAVE_UP).is_empty() {
            gave_up_ms = Some(start.elapsed().as_millis() as u64);
            env.progress(kind, "containerd gave up on the sandbox's TaskExit");
            if load.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut node_load_mib = 0;
    if let (Some(load), Some(storage)) = (load, lab.storage.as_mut()) {
        storage.set_write_latency(Duration::ZERO)?;
        node_load_mib = load.stop(Duration::from_secs(60));
        env.progress(kind, "slow storage fast again");
    }
    let removal = join_bounded(removal, REMOVAL_LIMIT.saturating_sub(start.elapsed()))?;
    env.progress(
        kind,
        format!(
            "pod removed={} after {} ms ({} calls)",
            removal.removed,
            removal.took_ms,
            removal.attempts.len()
        ),
    );
    Ok(Triggered {
        removal,
        injectors,
        blocked: watch.map(DWatch::into_result),
        gave_up_ms,
        node_load_mib,
    })
}

/// Joins the removal thread, waiting at most `limit` (its calls are bounded, so it ends).
fn join_bounded(
    handle: JoinHandle<anyhow::Result<Removal>>,
    limit: Duration,
) -> anyhow::Result<Removal> {
    faultline_sys::wait_until("the pod's removal loop", limit + CALL_LIMIT, || {
        handle
            .is_finished()
            .then_some(())
            .ok_or_else(|| "still calling".to_string())
    })?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("the removal thread panicked"))?
}
