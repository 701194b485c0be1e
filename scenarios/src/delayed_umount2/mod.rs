//! `delayed-umount2`: tearing down a container's overlay rootfs blocks in `umount2` while
//! the kernel flushes the upper layer (`sync_fs` under I/O load); containerd's deadline for
//! the task's exit expires, and the shim is never shut down: it stays, alive and unknown
//! to containerd, after its pod is gone.
//!
//! Symptom (a public debugging report by Cốc Cốc engineers, "mythical 0-link readable file and
//! other wonkeries", section "filesystem IO-load and containerd"; containerd 1.6 with v1
//! shims, during a 3-hour overlay deletion): `failed to handle container TaskExit event ...
//! failed to stop container: context deadline exceeded`, 10 s after `ExitedAt`; a day later
//! `containerd-shim -namespace k8s.io -workdir .../k8s.io/<id> -address ...` is still running
//! with no container. The kernel stack of the stuck unmount:
//! `cleanup_mnt → deactivate_locked_super → generic_shutdown_super → sync_filesystem →
//! ovl_sync_fs → sync_filesystem → __writeback_inodes_sb_nr → wb_wait_for_completion`.
//! Upstream: containerd/containerd#7496; the fixes and the releases that have them are in
//! [`versions`]. containerd's regression test (integration/issue7496_linux_test.go) holds
//! the shim's `umount2` 12 s on entry with strace, retries StopPodSandbox and
//! RemovePodSandbox until both succeed, and wants the shim gone 15 s later.
//!
//! Environment: a private containerd of the runtime under test (`--runtime`) with its CRI
//! plugin, driven as kubelet drives it ([`faultline_runtime::containerd`]): one host-network
//! pod whose container wrote `dirty-mib` MiB into its rootfs.
//!
//! Variants (expectations from [`versions`] for the containerd under test):
//! - `cri-shim-v2`: runtime io.containerd.runc.v2; faultline's injector holds the shim's
//!   `umount2` `delay-ms` (12 s) on entry. Reproduced on containerd < 1.6.24, 1.7.0–1.7.3.
//! - `cri-shim-v1`: the same on io.containerd.runtime.v1.linux (`containerd-shim -workdir`,
//!   one shim per container; the injector holds both). Reproduced on < 1.6.25, < 1.7.9.
//! - `cri-real-stall`: runc v2, no injection. containerd's root, with the overlayfs
//!   snapshotter's upper dirs, sits on ext4 on a loop device on slow FUSE, and the node
//!   keeps writing to it ([`storage`]): every rootfs unmount blocks in `sync_fs` (the shim
//!   is seen in D with that stack) past CRI's 10 s. Once containerd has given up on the
//!   sandbox, the storage is made fast again. Expected as `cri-shim-v2`.
//! - `cri-no-stall` (the control): the same pod, nothing slowed: the shim exits. Clean.
//! - `cri-volatile` (the fix proposed in containerd#4785): as `cri-real-stall`, with the
//!   snapshotter's `mount_options = ["volatile"]`: the unmount skips the sync. Clean;
//!   skipped where containerd has no such option (before 1.6.24 / 1.7.4).
//! - `volatile`: the same fix on the kernel alone, no runtime ([`volatile`]): an overlay on
//!   the same slow storage, mounted volatile, unmounts within CRI's 10 s. Clean. It shows
//!   the fix where `cri-volatile` cannot run.
//!
//! Reproduced = the pod is gone (removal succeeded, CRI lists no such pod, containerd knows
//! neither task) and a shim of the pod is still alive 15 s later; in `cri-real-stall` also
//! the shim was seen blocked in D in an unmount's sync. This is judged from what was
//! observed, independently of the detectors.
//! Detectors: orphan-shim (the shim outlived its pod) and hung-task (the shim in D).
//! The variants run side by side, each with its own containerd ([`batch`]): about 70 s in
//! all instead of three minutes.
//! Files: `pod` (containerd, image, pod), `storage` (slow disk, node load), `trigger`,
//! `observe`, `versions`, `batch`, `volatile`; the verdict is here.

mod batch;
mod observe;
mod pod;
mod storage;
mod trigger;
mod versions;
mod volatile;
mod where_it_runs;

use where_it_runs::lacking;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, ScenarioOption, Variant,
    VariantOutcome, VariantSkipped,
};
use faultline_detect::hung_task::BlockClass;
use faultline_detect::{hung_task, orphan_shim};
use serde_json::json;

use versions::{Release, ShimApi};

pub struct DelayedUmount2;

faultline_core::variant_kind! {
    enum Kind {
        CriShimV2 = "cri-shim-v2",
        CriShimV1 = "cri-shim-v1",
        CriRealStall = "cri-real-stall",
        CriNoStall = "cri-no-stall",
        CriVolatile = "cri-volatile",
        Volatile = "volatile",
    }
}

/// How long a shim may take to exit after its pod is gone (upstream's test: 15 s).
const EXIT_WINDOW: Duration = Duration::from_secs(15);
/// CRI's deadline for handling a task's exit (`handleEventTimeout`).
pub(crate) const CRI_EVENT_TIMEOUT_MS: u64 = 10_000;

const OPTIONS: &[ScenarioOption] = &[
    ScenarioOption {
        key: "delay-ms",
        check: faultline_core::scenario::positive_number,
        help: "cri-shim-v1/v2: how long the shim's umount2 is held on entry, in ms (default 12000, as upstream's test)",
    },
    ScenarioOption {
        key: "write-latency-ms",
        check: faultline_core::scenario::positive_number,
        help: "cri-real-stall/cri-volatile: the slow storage's write latency in ms (default 300)",
    },
    ScenarioOption {
        key: "dirty-mib",
        check: dirty_mib,
        help: "MiB the container writes into its rootfs before its pod is stopped (default 4)",
    },
];

/// What fits the slow storage's ext4 image beside containerd's root and the node's load.
const MAX_DIRTY_MIB: u64 = 160;

fn dirty_mib(value: &str) -> Result<(), String> {
    faultline_core::scenario::positive_number(value)?;
    match value.parse::<u64>() {
        Ok(mib) if mib > MAX_DIRTY_MIB => Err(format!(
            "at most {MAX_DIRTY_MIB} MiB fit the slow storage's {} MiB ext4 image",
            storage::IMAGE_MIB
        )),
        _ => Ok(()),
    }
}

/// [`OPTIONS`] as read for one run.
#[derive(Debug, Clone)]
struct Options {
    delay: Duration,
    write_latency: Duration,
    dirty_bytes: u64,
}

impl Options {
    fn read(ctx: &Context) -> anyhow::Result<Options> {
        Ok(Options {
            delay: Duration::from_millis(option_u64(ctx, "delay-ms", 12_000)?),
            write_latency: Duration::from_millis(option_u64(ctx, "write-latency-ms", 300)?),
            dirty_bytes: option_u64(ctx, "dirty-mib", 4)? << 20,
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

/// The containerd release under test; `None` without a runtime (every variant skips) or
/// when its version line cannot be read (the expectations are then those of a release
/// without the fixes).
fn release(runtime: Option<&RuntimeUnderTest>) -> Option<Release> {
    Release::parse(&runtime?.versions.containerd)
}

fn expect(reproduced: bool) -> Expectation {
    if reproduced {
        Expectation::Reproduced
    } else {
        Expectation::Clean
    }
}

impl Scenario for DelayedUmount2 {
    fn options(&self) -> &'static [ScenarioOption] {
        OPTIONS
    }

    /// The shim's unmount calls umount2 until it fails (twice: mount.UnmountAll); together
    /// the held calls must outlast CRI's 10 s, or nothing is orphaned.
    fn check_options(&self, options: &BTreeMap<String, String>) -> Result<(), String> {
        let delay = options
            .get("delay-ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(12_000);
        if 2 * delay <= CRI_EVENT_TIMEOUT_MS {
            return Err(format!(
                "delay-ms ({delay}) must be above {}: the shim's two umount2 calls must outlast CRI's 10 s deadline",
                CRI_EVENT_TIMEOUT_MS / 2
            ));
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "delayed-umount2"
    }

    fn summary(&self) -> &'static str {
        "the shim's umount2 of the overlay rootfs blocks past CRI's deadline; containerd forgets the shim, which stays"
    }

    /// Its CRI variants drive the containerd of the runtime under test.
    fn uses_runtime(&self) -> bool {
        true
    }

    fn uses_containerd(&self) -> bool {
        true
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
            Requirement::Path {
                path: pod::BUSYBOX,
                why: "a static busybox for the pods' image: apt-get install busybox-static (or run ci/setup)",
            },
            Requirement::binary("mkfs.ext4", "e2fsprogs"),
        ]
    }

    /// Expectations as on a containerd without the fixes (the runtime is not known here).
    fn variants(&self, kernel: &KernelVersion) -> Vec<Variant> {
        self.variants_for(kernel, &BTreeMap::new(), None)
    }

    fn variants_for(
        &self,
        _kernel: &KernelVersion,
        _options: &BTreeMap<String, String>,
        runtime: Option<&RuntimeUnderTest>,
    ) -> Vec<Variant> {
        let (v2, v1) = match release(runtime) {
            Some(r) => (
                versions::leaks(ShimApi::V2, r),
                versions::leaks(ShimApi::V1, r),
            ),
            None => (true, true),
        };
        vec![
            Variant::new(
                Kind::CriShimV2,
                "runc v2 shim's umount2 held 12 s on entry; StopPodSandbox + RemovePodSandbox retried",
                expect(v2),
            ),
            Variant::new(
                Kind::CriShimV1,
                "the same on the v1 shim (containerd-shim -workdir), one shim per container",
                expect(v1),
            ),
            Variant::new(
                Kind::CriRealStall,
                "containerd's root on ext4 on slow FUSE under node I/O: the unmount's sync_fs blocks (D)",
                expect(v2),
            ),
            Variant::new(
                Kind::CriNoStall,
                "the same pod, nothing slowed: the shim exits once the pod is removed",
                Expectation::Clean,
            ),
            Variant::new(
                Kind::CriVolatile,
                "slow storage, snapshotter mount_options = [\"volatile\"]: no sync on unmount",
                Expectation::Clean,
            ),
            Variant::new(
                Kind::Volatile,
                "kernel only: an overlay on the same slow storage mounted volatile unmounts within CRI's 10 s",
                Expectation::Clean,
            ),
        ]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let kind: Kind = variant.kind()?;
        let runtime = ctx.runtime.clone();
        let r = match &runtime {
            Some(rt) => Some(release(Some(rt)).with_context(|| {
                format!(
                    "failed to read containerd's release from {:?}",
                    rt.versions.containerd
                )
            })?),
            None => None,
        };
        if let Some(why) = lacking(ctx, kind, r) {
            return Err(VariantSkipped::error(why));
        }
        // Every variant this run asks for that can run here, to run side by side.
        let all: Vec<Kind> = self
            .variants_for(&ctx.kernel, &ctx.options, runtime.as_ref())
            .iter()
            .filter_map(|v| v.kind::<Kind>().ok())
            .filter(|&k| lacking(ctx, k, r).is_none())
            .collect();
        let env = batch::Env::new(ctx, runtime, Options::read(ctx)?);
        batch::outcome(&env, kind, &all, timed_run)
    }
}

/// [`run`], with the variant's wall time in what it observed.
fn timed_run(env: &batch::Env, kind: Kind) -> anyhow::Result<VariantOutcome> {
    let start = std::time::Instant::now();
    let mut outcome = match kind {
        Kind::Volatile => volatile::run(env)?,
        _ => run(env, kind)?,
    };
    outcome.observed["wall_ms"] = json!(start.elapsed().as_millis() as u64);
    Ok(outcome)
}

fn run(env: &batch::Env, kind: Kind) -> anyhow::Result<VariantOutcome> {
    let opts = &env.opts;
    let mut lab = pod::Lab::build(env, kind)?;
    let mut t = trigger::trigger(env, &mut lab, kind)?;
    let fates = observe::watch_exit(&lab.shims, EXIT_WINDOW);
    let view = observe::containerd_view(&lab)?;
    let findings = observe::findings(&fates, t.blocked.as_ref())?;

    // The pod must be gone before anything is judged: a removal that never succeeded (or a
    // pod containerd still has) says nothing about the shim, and must not pass as clean.
    anyhow::ensure!(
        t.removal.removed,
        "StopPodSandbox + RemovePodSandbox did not succeed: {:?}",
        t.removal.attempts.last()
    );
    anyhow::ensure!(
        !view.pod_listed && !view.pod_task && !view.container_task,
        "containerd still has the pod after its removal: {}",
        view.json
    );
    let shim_outlived_pod = fates.iter().any(|f| f.alive);
    let blocked_in_sync = t
        .blocked
        .as_ref()
        .is_some_and(|b| b.as_ref().is_ok_and(|t| t.class == BlockClass::UnmountSync));
    let stall_required = kind == Kind::CriRealStall;
    let reproduced = shim_outlived_pod && (blocked_in_sync || !stall_required);

    let mut observed = json!({
        "containerd": lab.ctd.version(),
        "handler": lab.shims[0].kind,
        "pod": lab.pod.id,
        "container": lab.container,
        "dirty_bytes": opts.dirty_bytes,
        "removal": t.removal,
        "pod_gone": true,
        "shims": fates,
        "shim_outlived_pod": shim_outlived_pod,
        "exit_window_ms": EXIT_WINDOW.as_millis() as u64,
        "containerd_view": view.json,
        "sandbox_task_exit_gave_up_ms": t.gave_up_ms,
    });
    if let Some(b) = &t.blocked {
        observed["shim_blocked"] = observe::blocked_json(b);
        observed["write_latency_ms"] = json!(opts.write_latency.as_millis() as u64);
        observed["node_load_mib_written"] = json!(t.node_load_mib);
    }
    let mut injections = Vec::new();
    for a in t.injectors.drain(..) {
        injections.extend(a.detach()?.events);
    }
    if kind == Kind::CriShimV2 || kind == Kind::CriShimV1 {
        observed["delay_ms"] = json!(opts.delay.as_millis() as u64);
        observed["injections"] = json!(injections);
    }
    let teardown = lab.ctd.teardown();
    observed["teardown"] = json!(teardown);
    Ok(VariantOutcome {
        reproduced,
        observed,
        findings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(version: &str) -> RuntimeUnderTest {
        RuntimeUnderTest {
            spec: "system".into(),
            containerd: "/usr/bin/containerd".into(),
            oci: "/usr/sbin/runc".into(),
            versions: faultline_core::runtime_under_test::RuntimeVersions {
                containerd: format!("containerd github.com/containerd/containerd {version}"),
                oci: "runc version 1.1.5".into(),
            },
        }
    }

    fn expectations(version: &str) -> Vec<(&'static str, Expectation)> {
        let kernel = KernelVersion::running();
        DelayedUmount2
            .variants_for(&kernel, &BTreeMap::new(), Some(&runtime(version)))
            .into_iter()
            .map(|v| (v.name, v.expected))
            .collect()
    }

    #[test]
    fn expectations_follow_the_containerd_release() {
        use Expectation::{Clean, Reproduced};
        assert_eq!(
            expectations("1.6.20~ds1"),
            [
                ("cri-shim-v2", Reproduced),
                ("cri-shim-v1", Reproduced),
                ("cri-real-stall", Reproduced),
                ("cri-no-stall", Clean),
                ("cri-volatile", Clean),
                ("volatile", Clean),
            ]
        );
        // v2 fixed in 1.6.24, v1 only in 1.6.25.
        let on_1_6_24 = expectations("1.6.24");
        assert_eq!(on_1_6_24[0], ("cri-shim-v2", Clean));
        assert_eq!(on_1_6_24[1], ("cri-shim-v1", Reproduced));
        assert_eq!(on_1_6_24[2], ("cri-real-stall", Clean));
        assert!(expectations("2.1.4").iter().all(|(_, e)| *e == Clean));
        assert_eq!(expectations("1.7.3")[0], ("cri-shim-v2", Reproduced));
    }

    #[test]
    fn a_delay_that_cannot_outlast_the_deadline_is_refused() {
        let opts = |d: &str| BTreeMap::from([("delay-ms".to_string(), d.to_string())]);
        assert!(DelayedUmount2.check_options(&opts("12000")).is_ok());
        let why = DelayedUmount2.check_options(&opts("5000")).unwrap_err();
        assert!(why.contains("above 5000"), "{why}");
        assert!(DelayedUmount2.check_options(&BTreeMap::new()).is_ok());
    }
}
