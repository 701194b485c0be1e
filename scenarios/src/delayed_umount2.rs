//! `delayed-umount2`: tearing down a container's overlay rootfs blocks in `umount2` while
//! the kernel flushes the upper layer (`sync_fs` under I/O load); containerd's deadline for
//! deleting the task expires, it removes the task's state and forgets the shim, and the
//! `containerd-shim` process stays forever.
//!
//! Symptom (seed 001, Cốc Cốc, containerd 1.6 with v1 shims, during a 3-hour overlay
//! deletion): `failed to handle container TaskExit event ... failed to stop container:
//! context deadline exceeded`, 10 s after `ExitedAt`; a day later
//! `containerd-shim -namespace k8s.io -workdir .../k8s.io/<id> -address ...` is still running
//! with no container. The kernel stack of the stuck unmount:
//! `cleanup_mnt → deactivate_locked_super → generic_shutdown_super → sync_filesystem →
//! ovl_sync_fs → sync_filesystem → __writeback_inodes_sb_nr → wb_wait_for_completion`.
//! containerd's maintainers reproduced it with `strace -p <shim> -f --detach-on=execve
//! -e inject=umount2:delay_enter=12s` (containerd/containerd#9004); the proposed fix mounts
//! the rootfs overlay with `volatile` (containerd/containerd#4785), whose unmount skips the
//! sync (overlayfs `volatile`, Linux 5.10).
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use faultline_core::guard::ext4_image::{Ext4Image, MountedExt4};
use faultline_core::guard::mount::unmount_bounded;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, ScenarioOption, Variant,
    VariantOutcome,
};
use faultline_detect::hung_task::DSample;
use faultline_detect::orphan_shim::OrphanShim;
use faultline_fuse::{FuseConfig, FuseDaemon};
use faultline_inject::{Injector, Rule};
use faultline_runtime::shim::{Shim, ShimError, ShimSpec};
use faultline_sys::wait_until;
use serde_json::json;

/// The container id from the seed's orphan.
const ID: &str = "513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f";

pub struct DelayedUmount2;

fn option_u64(ctx: &Context, key: &str, default: u64) -> anyhow::Result<u64> {
    match ctx.option(key) {
        Some(v) => v
            .parse()
            .with_context(|| format!("option {key}={v:?} is not a whole number")),
        None => Ok(default),
    }
}

/// The upper layer's storage for the variants with real I/O: ext4 on a loop device on FUSE.
struct SlowStorage {
    // Field order is drop order: the ext4 mount (and its loop device) before the daemon.
    ext4: MountedExt4,
    fuse: FuseDaemon,
}

impl SlowStorage {
    fn build(dir: &Path) -> anyhow::Result<SlowStorage> {
        let backing = dir.join("fuse-backing");
        let mp = dir.join("fuse");
        let fs_dir = dir.join("upper-fs");
        for d in [&backing, &mp, &fs_dir] {
            std::fs::create_dir_all(d)?;
        }
        let fuse = FuseDaemon::start(&FuseConfig::new(&backing, &mp).fsname("slow-disk"))
            .context("failed to start the FUSE daemon")?;
        let image = mp.join("upper.img");
        Ext4Image::new(UPPER_IMAGE_MIB << 20)
            .create(&image)
            .context("failed to make the ext4 image on FUSE")?;
        let ext4 =
            MountedExt4::mount(&image, &fs_dir, None).context("failed to mount the ext4 image")?;
        Ok(SlowStorage { ext4, fuse })
    }
}

struct Observation {
    deadline_expired: bool,
    delete_answer: Option<String>,
    delete_ms: u64,
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
const UPPER_IMAGE_MIB: u64 = 256;
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

    fn detector(&self) -> &'static str {
        "orphan-shim"
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
                "injected-delay",
                "the shim's umount2 delayed on entry with the syscall injector (containerd's strace repro)",
                Expectation::Reproduced,
            ),
            Variant::new(
                "real-stall",
                "upper layer on ext4 on a loop device on slow FUSE: umount2's sync_fs blocks in the kernel (D)",
                Expectation::Reproduced,
            ),
            Variant::new(
                "volatile",
                "same slow storage, overlay mounted with volatile: no sync on unmount, delete within the deadline",
                Expectation::Clean,
            ),
        ]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(170)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let deadline = Duration::from_millis(option_u64(ctx, "deadline-ms", 1000)?);
        let delay = Duration::from_millis(option_u64(
            ctx,
            "delay-ms",
            3 * deadline.as_millis() as u64,
        )?);
        let write_latency = Duration::from_millis(option_u64(ctx, "write-latency-ms", 1000)?);
        let dirty = option_u64(ctx, "dirty-mib", 16)? << 20;
        let dir = ctx.variant_dir(variant.name)?;

        let lower = dir.join("lower");
        std::fs::create_dir_all(lower.join("etc"))?;
        std::fs::write(lower.join("etc/os-release"), "ID=faultline\n")?;
        let mut storage = match variant.name {
            "injected-delay" => None,
            _ => Some(SlowStorage::build(&dir)?),
        };
        let upper_root = match &storage {
            Some(s) => s.ext4.target().to_path_buf(),
            None => dir.join("upper-tmp"),
        };
        let (upper, work) = (upper_root.join("upper"), upper_root.join("work"));
        std::fs::create_dir_all(&upper)?;
        std::fs::create_dir_all(&work)?;
        let mut overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        if variant.name == "volatile" {
            overlay += ",volatile";
        }

        let spec = ShimSpec {
            namespace: "k8s.io".into(),
            id: ID.into(),
            state_root: dir.join("var/lib/containerd/io.containerd.runtime.v1.linux"),
            bundle: dir
                .join("run/containerd/io.containerd.runtime.v1.linux/k8s.io")
                .join(ID),
            address: dir.join("shim.sock"),
        };
        let mut shim =
            Shim::start(&spec, Duration::from_secs(10)).context("failed to start the shim")?;
        let mut client = shim.connect()?;
        let created = client
            .request(
                &format!("create {overlay} {dirty}"),
                Duration::from_secs(60),
            )
            .context("the shim failed to create the container")?;
        ctx.progress(format!(
            "shim pid {} created the container ({created}); {} MiB dirty in the upper layer",
            shim.pid(),
            dirty >> 20
        ));

        // The trigger.
        let injector = match variant.name {
            "injected-delay" => {
                let mut rule = Rule::new("umount2")?;
                rule.delay_enter = Some(delay);
                ctx.progress(format!("injecting {} into the shim", rule.to_strace()));
                Some(
                    Injector::new(vec![rule])
                        .detach_on_exec(true)
                        .attach(shim.pid())?,
                )
            }
            _ => None,
        };
        if let Some(s) = storage.as_mut() {
            s.fuse.set_latency(Duration::ZERO, write_latency)?;
        }

        // containerd: delete the task within the deadline, else give up.
        let t0 = Instant::now();
        let obs = match client.request("delete", deadline) {
            Ok(answer) => {
                let delete_ms = t0.elapsed().as_millis() as u64;
                client.request("shutdown", Duration::from_secs(10))?;
                shim.group_mut()
                    .wait_timeout(Duration::from_secs(10))?
                    .context("the shim did not exit after shutdown")?;
                std::fs::remove_dir_all(spec.workdir())?;
                Observation {
                    deadline_expired: false,
                    delete_answer: Some(answer),
                    delete_ms,
                }
            }
            Err(ShimError::DeadlineExceeded(_)) => {
                let delete_ms = t0.elapsed().as_millis() as u64;
                ctx.progress("delete: context deadline exceeded; removing the task's state");
                drop(client);
                std::fs::remove_dir_all(spec.workdir())?;
                Observation {
                    deadline_expired: true,
                    delete_answer: None,
                    delete_ms,
                }
            }
            Err(e) => return Err(e).context("the shim failed to delete the task"),
        };

        let shim_pid = shim.pid();
        let shim_alive = shim.alive();
        let workdir_gone = !spec.workdir().exists();
        let mut reproduced = obs.deadline_expired && shim_alive && workdir_gone;
        let mut observed = json!({
            "shim": {"pid": shim_pid, "argv0": "containerd-shim", "args": spec.argv()},
            "overlay_options": overlay,
            "dirty_bytes": dirty,
            "deadline_ms": deadline.as_millis() as u64,
            "deadline_expired": obs.deadline_expired,
            "delete_answer": obs.delete_answer,
            "delete_waited_ms": obs.delete_ms,
            "shim_alive_after_runtime_gave_up": shim_alive,
            "workdir_removed": workdir_gone,
        });
        if variant.name == "real-stall" {
            // The stall must be the kernel's: the shim blocked in D inside the unmount.
            let in_d = if shim_alive {
                let (in_d, seen) = blocked_shim(shim_pid)?;
                observed["shim_blocked"] = seen;
                in_d
            } else {
                false
            };
            reproduced &= in_d;
        }

        let findings: Vec<_> = OrphanShim::DEFAULT
            .scan(Path::new("/proc"))?
            .into_iter()
            .filter(|f| f.pid == Some(shim_pid))
            .collect();

        // Let the unmount finish, then clear away the orphan.
        if let Some(a) = injector {
            observed["injections"] = json!(a.detach()?.events);
        }
        if let Some(s) = storage.as_mut() {
            s.fuse.set_latency(Duration::ZERO, Duration::ZERO)?;
        }
        finish_unmount(&spec.rootfs());
        shim.teardown()?;
        unmount_if_mounted(&spec.rootfs());
        drop(storage);
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }
}

/// The shim's state and kernel stack while its unmount is stuck: it must be in D, not
/// scheduled, for a while (the hung-task detector's measure). Returns whether it was, and
/// what was seen.
fn blocked_shim(pid: i32) -> anyhow::Result<(bool, serde_json::Value)> {
    let proc_root = Path::new("/proc");
    let mut first = DSample::take(proc_root)?;
    let found = wait_until(
        "the shim blocked in D for 500 ms",
        Duration::from_secs(10),
        || {
            let now = first.still_blocked(proc_root).map_err(|e| e.to_string())?;
            match now.into_iter().find(|t| t.pid == pid) {
                Some(t) if t.blocked_for_ms >= 500 => Ok(t),
                Some(t) => Err(format!("blocked for {} ms so far", t.blocked_for_ms)),
                None => {
                    // Not in D at `first`, or it ran since: measure from a fresh sample.
                    first = DSample::take(proc_root).map_err(|e| e.to_string())?;
                    Err(format!(
                        "shim not continuously in D; stat: {}",
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
                    ))
                }
            }
        },
    );
    Ok(match found {
        Ok(t) => (
            true,
            json!({
                "state": "D",
                "proc_stack": std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default(),
                "wchan": t.wchan,
                "stack": t.stack,
                "class": t.class,
                "blocked_for_ms": t.blocked_for_ms,
            }),
        ),
        Err(e) => (false, json!({"state": "not D", "why": e.to_string()})),
    })
}

/// Waits (bounded) for the shim's own umount2 to complete once the stall is lifted.
fn finish_unmount(rootfs: &Path) {
    let _ = wait_until(
        "the shim's unmount to finish",
        Duration::from_secs(60),
        || {
            if is_mount_point(rootfs) {
                Err("rootfs still mounted".into())
            } else {
                Ok(())
            }
        },
    );
}

fn unmount_if_mounted(rootfs: &Path) {
    if is_mount_point(rootfs) {
        if let Err(e) = unmount_bounded(rootfs, Duration::from_secs(30)) {
            tracing::warn!("{e}");
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    let parent: PathBuf = p.parent().map(Path::to_path_buf).unwrap_or_default();
    match (
        faultline_core::guard::mount::mount_id(p),
        faultline_core::guard::mount::mount_id(&parent),
    ) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}
