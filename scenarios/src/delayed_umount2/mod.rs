//! `delayed-umount2`: tearing down a container's overlay rootfs blocks in `umount2` while
//! the kernel flushes the upper layer (`sync_fs` under I/O load); containerd's deadline for
//! deleting the task expires, it removes the task's state and forgets the shim, and the
//! `containerd-shim` process stays forever.
//!
//! Symptom (a public debugging report by Cốc Cốc engineers, "mythical 0-link readable file and
//! other wonkeries", section "filesystem IO-load and containerd"; containerd 1.6 with v1
//! shims, during a 3-hour overlay deletion): `failed to handle container TaskExit event ...
//! failed to stop container: context deadline exceeded`, 10 s after `ExitedAt`; a day later
//! `containerd-shim -namespace k8s.io -workdir .../k8s.io/<id> -address ...` is still running
//! with no container. The kernel stack of the stuck unmount:
//! `cleanup_mnt → deactivate_locked_super → generic_shutdown_super → sync_filesystem →
//! ovl_sync_fs → sync_filesystem → __writeback_inodes_sb_nr → wb_wait_for_completion`.
//! containerd's maintainers reproduced it with `strace -p <shim> -f --detach-on=execve
//! -e inject=umount2:delay_enter=12s` (containerd/containerd#9004); the proposed fix mounts
//! the rootfs overlay with `volatile` (containerd/containerd#4785), whose unmount skips the
//! sync (overlayfs `volatile`, Linux 5.10; Documentation/filesystems/overlayfs.rst,
//! "Volatile mount").
//!
//! Environment: a `containerd-shim` stand-in with the v1 command line
//! ([`faultline_runtime::shim`]) owns a container whose rootfs is an overlay at
//! `<bundle>/rootfs` (lower on the scratch tmpfs; the container writes `dirty-mib` MiB into
//! the upper layer, no fsync). The scenario plays containerd: it asks the shim to delete
//! the task with a `deadline-ms` deadline (containerd's is 10 s; 1 s here) and, when it
//! expires, removes the task's workdir and walks away without `shutdown`.
//!
//! Variants:
//! - `injected-delay`: upper on tmpfs; the shim's `umount2` is delayed on entry by
//!   `delay-ms` (default 3 × deadline) with the syscall injector, as in containerd's repro.
//! - `real-stall`: no injection. The upper layer sits on ext4 on a loop device whose
//!   backing file lives on our FUSE file system; the FUSE daemon's writes take
//!   `write-latency-ms` (1000) each, so the unmount's `sync_fs` really blocks in the kernel. The
//!   shim's state (D) and kernel stack are recorded.
//! - `volatile` (the fix): as `real-stall`, but the overlay is mounted with `volatile`: no
//!   sync on unmount, the delete answers before the deadline, the shim is shut down. Clean.
//!
//! Reproduced = the deadline expired and the shim outlived its task (alive, workdir gone);
//! in `real-stall` also the shim was seen blocked in D (continuously for 500 ms).
//! The orphaned shim lives in the scenario's pid namespace and is killed at the end.
//! Detectors: orphan-shim (the shim outlived its task) and, in `real-stall`, hung-task (the
//! shim blocked in D inside the unmount).
//!
//! Files: `build` (layers, storage, shim), `trigger` (the stall and containerd's delete),
//! `observe` (the blocked shim, the detectors); the verdict is here.

mod build;
mod observe;
mod trigger;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, ScenarioOption, Variant,
    VariantOutcome,
};
use faultline_detect::{hung_task, orphan_shim};
use serde_json::json;

use build::Env;

pub struct DelayedUmount2;

faultline_core::variant_kind! {
    enum Kind {
        InjectedDelay = "injected-delay",
        RealStall = "real-stall",
        Volatile = "volatile",
    }
}

const OPTIONS: &[ScenarioOption] = &[
    ScenarioOption {
        key: "deadline-ms",
        check: faultline_core::scenario::positive_number,
        help: "the supervisor's delete deadline in ms (containerd's is 10000; default 1000)",
    },
    ScenarioOption {
        key: "delay-ms",
        check: faultline_core::scenario::positive_number,
        help: "injected-delay: how long the shim's umount2 is held, in ms (default 3 x deadline)",
    },
    ScenarioOption {
        key: "write-latency-ms",
        check: faultline_core::scenario::positive_number,
        help: "real-stall: the FUSE backing store's write latency in ms (default 1000)",
    },
    ScenarioOption {
        key: "dirty-mib",
        check: dirty_mib,
        help: "MiB of dirty data written into the upper layer before the stop (default 16)",
    },
];

/// The ext4 image under the upper layer of `real-stall` and `volatile`.
pub(crate) const UPPER_IMAGE_MIB: u64 = 256;
/// What fits in it: mkfs.ext4 leaves about 214 MiB of a 256 MiB image free (journal, inode
/// tables, 5% reserved); the rest is margin for the overlay's own files.
const MAX_DIRTY_MIB: u64 = 200;

fn dirty_mib(value: &str) -> Result<(), String> {
    faultline_core::scenario::positive_number(value)?;
    match value.parse::<u64>() {
        Ok(mib) if mib > MAX_DIRTY_MIB => Err(format!(
            "at most {MAX_DIRTY_MIB} MiB fit the upper layer's {UPPER_IMAGE_MIB} MiB ext4 image"
        )),
        _ => Ok(()),
    }
}

/// [`OPTIONS`] as read for one run.
struct Options {
    deadline: Duration,
    delay: Duration,
    write_latency: Duration,
    dirty_bytes: u64,
}

impl Options {
    fn read(ctx: &Context) -> anyhow::Result<Options> {
        let deadline = Duration::from_millis(option_u64(ctx, "deadline-ms", 1000)?);
        let delay_default = 3 * deadline.as_millis() as u64;
        Ok(Options {
            deadline,
            delay: Duration::from_millis(option_u64(ctx, "delay-ms", delay_default)?),
            write_latency: Duration::from_millis(option_u64(ctx, "write-latency-ms", 1000)?),
            dirty_bytes: option_u64(ctx, "dirty-mib", 16)? << 20,
        })
    }
}

fn option_u64(ctx: &Context, key: &str, default: u64) -> anyhow::Result<u64> {
    match ctx.option(key) {
        Some(v) => v
            .parse()
            .with_context(|| format!("option {key}={v:?} is not a whole number")),
        None => Ok(default),
    }
}

impl Scenario for DelayedUmount2 {
    fn options(&self) -> &'static [ScenarioOption] {
        OPTIONS
    }

    /// The injected delay must outlast the deadline, or nothing is orphaned.
    fn check_options(&self, options: &BTreeMap<String, String>) -> Result<(), String> {
        let number = |key, default| {
            options
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let deadline = number("deadline-ms", 1000);
        let delay = number("delay-ms", 3 * deadline);
        if delay <= deadline {
            return Err(format!(
                "delay-ms ({delay}) must be longer than deadline-ms ({deadline}): the delete must outlast the deadline"
            ));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "delayed-umount2"
    }

    fn summary(&self) -> &'static str {
        "the shim's umount2 of the overlay rootfs blocks in sync_fs past the runtime's deadline; the shim is orphaned"
    }

    fn detectors(&self) -> &'static [&'static str] {
        &[orphan_shim::NAME, hung_task::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            Requirement::Filesystem("overlay"),
            Requirement::Filesystem("ext4"),
            Requirement::Filesystem("fuse"),
            Requirement::Path {
                path: "/dev/fuse",
                why: "the FUSE device (modprobe fuse; in a container, pass --device /dev/fuse)",
            },
            Requirement::binary("mkfs.ext4", "e2fsprogs"),
            Requirement::binary("sleep", "coreutils"),
        ]
    }

    fn variants(&self, _kernel: &KernelVersion) -> Vec<Variant> {
        vec![
            Variant::new(
                Kind::InjectedDelay,
                "the shim's umount2 delayed on entry with the syscall injector (containerd's strace repro)",
                Expectation::Reproduced,
            ),
            Variant::new(
                Kind::RealStall,
                "upper layer on ext4 on a loop device on slow FUSE: umount2's sync_fs blocks in the kernel (D)",
                Expectation::Reproduced,
            ),
            Variant::new(
                Kind::Volatile,
                "same slow storage, overlay mounted with volatile: no sync on unmount, delete within the deadline",
                Expectation::Clean,
            ),
        ]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(170)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let kind: Kind = variant.kind()?;
        let opts = Options::read(ctx)?;
        let (mut env, client) = Env::build(ctx, kind, &opts)?;
        let injector = trigger::stall(ctx, kind, &mut env, &opts)?;
        let delete = trigger::delete_task(ctx, &mut env, client, opts.deadline)?;

        let shim_pid = env.shim.pid();
        let shim_alive = env.shim.alive();
        let workdir_gone = !env.spec.workdir().exists();
        let mut observed = json!({
            "shim": {"pid": shim_pid, "argv0": "containerd-shim", "args": env.spec.argv()},
            "overlay_options": env.overlay,
            "dirty_bytes": opts.dirty_bytes,
            "deadline_ms": opts.deadline.as_millis() as u64,
            "deadline_expired": delete.deadline_expired,
            "delete_answer": delete.answer,
            "delete_waited_ms": delete.waited_ms,
            "shim_alive_after_runtime_gave_up": shim_alive,
            "workdir_removed": workdir_gone,
        });
        let mut findings = observe::orphan_findings(shim_pid)?;
        // The stall must be the kernel's in real-stall: the shim blocked in D in the unmount.
        let blocked_if_required = match kind {
            Kind::RealStall if shim_alive => {
                let blocked = observe::blocked_shim(shim_pid)?;
                observed["shim_blocked"] = observe::blocked_json(&blocked);
                findings.extend(blocked.as_ref().ok().map(|t| t.finding()));
                blocked.is_ok()
            }
            Kind::RealStall => false,
            Kind::InjectedDelay | Kind::Volatile => true, // not required
        };
        let reproduced =
            delete.deadline_expired && shim_alive && workdir_gone && blocked_if_required;

        // Let the unmount finish, then clear away the orphan.
        if let Some(a) = injector {
            observed["injections"] = json!(a.detach()?.events);
        }
        env.teardown()?;
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }
}
