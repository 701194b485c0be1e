//! `fuse-daemon-restart`: a FUSE daemon (ceph-fuse) dies and is restarted on top of its own
//! dead mount; pods whose CSI volumes were bound from the old mount cannot start.
//!
//! Symptom (a public debugging report of ceph-fuse restarts, "记录一次 K8S Pod 启动异常问题排查"
//! by 孙高飞 on TesterHome, April 2023; a ceph-fuse CSI driver in production): pod start fails
//! in runc with "mount through procfd: no such file or directory" for
//! `.../kubelet/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`, although the directory
//! exists, for any image; a plain `mount --bind` of that path fails the same way. The node
//! had OOM-killed ceph-fuse, which was restarted with `nonempty` on the same mount point; the
//! CSI mount's source showed as deleted.
//!
//! Cause: when a FUSE daemon dies the kernel aborts the connection but keeps every mount of
//! it: the daemon's mount and each bind made from it (the CSI publish). All of them answer
//! ENOTCONN from then on. A restarted daemon with `nonempty` (a fusermount/libfuse option; the
//! kernel lets root mount anywhere) stacks a new mount on the same mount point: the path works
//! again, but the binds still reference the dead connection, and nothing remakes them. What a
//! new container then does depends on the OCI runtime and its version (`runtimes`, a table
//! with the upstream changes): runc stats the bind source and `create` fails with
//! `error mounting "<src>" to rootfs at "/vol": stat <src>: transport endpoint is not
//! connected`; crun asks only for the cached file type, makes the bind, and the container
//! starts with a volume that answers ENOTCONN. No kernel fix: this is how FUSE connections
//! and binds work.
//!
//! Environment: our own FUSE daemon (fuser, mounted through /dev/fuse, passthrough to a
//! scratch "ceph" directory) as `ceph-fuse` at `var/lib/ceph-fuse`; the CSI publish is a bind
//! of its `dashboard-folder` to the kubelet path. Each new container is started both ways a
//! node can: through a private containerd of the runtime under test with its CRI plugin, as
//! kubelet does (RunPodSandbox, CreateContainer with the kubelet path as a CRI mount at
//! `/vol`, StartContainer, ExecSync `cat /vol/dashboard.json`); and directly through the
//! runtime's OCI runtime (`--runtime … oci=…`) with its own `--root` in the scratch
//! directory: `create` and `start` on a bundle written with the oci-spec crate
//! (busybox-static root, the kubelet path bound at `/vol` as containerd passes a volume), then
//! `exec cat /vol/dashboard.json`. Each records its own words and the step that failed:
//! CRI's stat of the host path at CreateContainer, or the OCI runtime's mount. The daemon's
//! attribute cache lifetime is short and waited out after the kill, as hours pass on a node
//! before the next pod start.
//!
//! Variants:
//! - `kill`: SIGKILL the daemon (the OOM kill). Reproduced when the CSI path answers ENOTCONN
//!   and a new container cannot read its volume either way, each stopping where its table says.
//! - `restart-nonempty`: then start a new daemon on the same mount point with `nonempty`.
//!   Reproduced when the mount point works again but the CSI path and a new container still
//!   fail, and mountinfo shows two mounts stacked on one mount point (the new daemon's on the
//!   dead one), the bind on the old device.
//! - `remount` (the fix): unmount the stale CSI bind and the dead mount, restart the daemon on
//!   the empty mount point (no `nonempty` needed), bind the volume again from the new mount:
//!   the runtime starts the container and it reads the volume. Clean.
//!
//! Files: here the layout (build) and the detector run; `variants` the start every variant
//! shares (daemon killed) and each variant's steps after it (trigger, observe, judge);
//! `runtimes` what each runtime does with the dead volume.

mod runtimes;
mod variants;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::guard::Mount;
use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::VariantSkipped;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantOutcome,
};
use faultline_detect::dead_fuse;
use faultline_fuse::{FuseConfig, FuseDaemon};
use faultline_runtime::cri::HostMount;
use faultline_runtime::oci::{
    self, start_and_read, unique_id, BindMount, Bundle, BundleSpec, OciRuntime, ReadAttempt,
    Version,
};
use faultline_runtime::pod::CriPod;
use faultline_sys::mountinfo::{read_mountinfo, MountInfo};
use serde_json::json;

use variants::{kill, remount, restart_nonempty, DeadDaemon, Step};

const POD_UID: &str = "92f2591b-66b5-4843-b7a7-42d0acd2be07";
const VOLUME: &str = "dashboard-folder";
/// The volume's file and where the container sees it.
const FILE: &str = "dashboard.json";
const CONTENT: &[u8] = b"{\"panels\":[]}\n";
const IN_CONTAINER: &str = "/vol/dashboard.json";
/// The daemon's entry and attribute cache lifetime. After the kill the scenario waits it
/// out: the kernel answers a stat from its cache until then, and a node's next pod start
/// comes long after the last lookup.
const ATTR_TTL: Duration = Duration::from_millis(200);

pub struct FuseDaemonRestart;

faultline_core::variant_kind! {
    enum Kind {
        Kill = "kill",
        RestartNonempty = "restart-nonempty",
        Remount = "remount",
    }
}

struct Layout {
    dir: PathBuf,
    backing: PathBuf,
    ceph_mount: PathBuf,
    csi_target: PathBuf,
    /// The OCI runtime under test, with its state under this variant's directory.
    oci: OciRuntime,
    /// The pod's new container: busybox, the CSI path bound at /vol.
    bundle: Bundle,
    /// Whose containerd starts the pod's new container through CRI.
    runtime: RuntimeUnderTest,
}

/// A new container of the pod on the volume, started both ways a node can start it.
pub(crate) struct NewContainer {
    /// Directly through the OCI runtime: `create`, `start`, `exec cat`.
    oci: ReadAttempt,
    /// Through containerd's CRI: CreateContainer with the CSI path as a CRI mount at /vol,
    /// StartContainer, ExecSync `cat`.
    cri: ReadAttempt,
    /// containerd's release as CRI reported it, and what ran the pod.
    containerd: Option<Version>,
    cri_runtime: serde_json::Value,
}

impl NewContainer {
    /// Neither way read the volume.
    fn read_neither(&self) -> bool {
        !self.oci.read() && !self.cri.read()
    }

    /// Both ways started the container and read the volume's content.
    fn read_both(&self) -> bool {
        let content = String::from_utf8_lossy(CONTENT);
        [&self.oci, &self.cri]
            .iter()
            .all(|a| a.started() && a.content.as_deref() == Some(&content[..]))
    }
}

impl Layout {
    fn new(ctx: &Context, dir: PathBuf) -> anyhow::Result<Layout> {
        let backing = dir.join("ceph-cluster");
        let ceph_mount = dir.join("var/lib/ceph-fuse");
        let csi_target = dir.join(format!(
            "var/lib/kubelet/pods/{POD_UID}/volumes/kubernetes.io~csi/{VOLUME}/mount"
        ));
        for d in [&backing.join(VOLUME), &ceph_mount, &csi_target] {
            std::fs::create_dir_all(d)
                .with_context(|| format!("failed to create {}", d.display()))?;
        }
        std::fs::write(backing.join(VOLUME).join(FILE), CONTENT)
            .context("failed to write the volume's file")?;
        let runtime = ctx.runtime.clone().ok_or_else(|| {
            VariantSkipped::error(
                "no container runtime under test: its new containers are started through containerd's CRI and directly through the OCI runtime (faultline run --runtime)",
            )
        })?;
        let binary = oci::oci_runtime_binary(Some(&runtime)).map_err(anyhow::Error::msg)?;
        let oci = OciRuntime::new(&binary, &dir.join("run/oci-runtime"))
            .context("failed to set up the OCI runtime")?;
        let bundle = Bundle::create(
            &dir.join("run/containerd/io.containerd.runtime.v2.task/k8s.io/new-container"),
            &BundleSpec {
                args: vec!["/bin/sleep".into(), "600".into()],
                mounts: vec![BindMount {
                    source: csi_target.clone(),
                    destination: "/vol".into(),
                    read_only: false,
                }],
            },
        )
        .context("failed to write the container's bundle")?;
        Ok(Layout {
            dir,
            backing,
            ceph_mount,
            csi_target,
            oci,
            bundle,
            runtime,
        })
    }

    fn daemon(&self, nonempty: bool) -> anyhow::Result<FuseDaemon> {
        let mut config = FuseConfig::new(&self.backing, &self.ceph_mount)
            .fsname("ceph-fuse")
            .subtype("ceph-fuse")
            .nonempty(nonempty);
        config.ttl = ATTR_TTL;
        FuseDaemon::start(&config).context("failed to start the ceph-fuse stand-in")
    }

    /// What the CSI node plugin's NodePublishVolume does: bind the volume's directory of the
    /// FUSE mount onto kubelet's path.
    fn csi_publish(&self) -> anyhow::Result<Mount> {
        Mount::bind(&self.ceph_mount.join(VOLUME), &self.csi_target, false)
            .context("failed to bind the CSI volume")
    }

    /// A new container of the pod directly through the OCI runtime: create, start, read
    /// its volume, delete.
    fn start_oci(&self) -> anyhow::Result<ReadAttempt> {
        start_and_read(&self.oci, &self.bundle, &unique_id("fdr"), IN_CONTAINER)
            .context("failed to drive the OCI runtime")
    }

    /// A new container of the pod both ways: directly through the OCI runtime, and through a
    /// containerd started now (its mount namespace is a copy of ours as it is now, as a
    /// node's containerd sees the node's mounts when the pod starts) with the CSI path as
    /// the CRI mount kubelet passes for the volume.
    fn start_new(&self) -> anyhow::Result<NewContainer> {
        let oci = self.start_oci()?;
        let pod = CriPod::start(&self.runtime, &self.dir.join("cri"), "dashboard")
            .context("failed to run the pod through containerd's CRI")?;
        let cri = pod
            .start_and_read(
                "new-container",
                &[HostMount {
                    host_path: self.csi_target.clone(),
                    container_path: "/vol".into(),
                    readonly: false,
                }],
                IN_CONTAINER,
            )
            .context("failed to drive containerd's CRI")?;
        Ok(NewContainer {
            oci,
            cri,
            containerd: pod.containerd_release(),
            cri_runtime: pod.describe(),
        })
    }

    /// mountinfo lines under this variant's directory, as the kernel shows them.
    fn mounts(&self, mounts: &[MountInfo]) -> serde_json::Value {
        json!(mounts
            .iter()
            .filter(|m| m.mount_point.starts_with(&self.dir))
            .map(|m| json!({
                "mount_id": m.mount_id,
                "parent_id": m.parent_id,
                "dev": m.device(),
                "root": m.root_as_shown(),
                "mount_point": m.mount_point.strip_prefix(&self.dir).unwrap_or(&m.mount_point).display().to_string(),
                "fstype": m.fstype,
                "source": m.source_lossy(),
            }))
            .collect::<Vec<_>>())
    }
}

/// errno and message of an access, `null` when it worked.
fn access(r: std::io::Result<()>) -> serde_json::Value {
    match r {
        Ok(()) => serde_json::Value::Null,
        Err(e) => json!({"errno": e.raw_os_error(), "error": e.to_string()}),
    }
}

fn errno_of(v: &serde_json::Value) -> Option<i64> {
    v.get("errno").and_then(|e| e.as_i64())
}

fn list(path: &Path) -> std::io::Result<()> {
    std::fs::read_dir(path)?
        .collect::<Result<Vec<_>, _>>()
        .map(|_| ())
}

/// Reads the volume through kubelet's path, as the pod's existing containers do.
fn csi_access(l: &Layout) -> serde_json::Value {
    access(list(&l.csi_target).and_then(|_| std::fs::read(l.csi_target.join(FILE)).map(|_| ())))
}

impl Scenario for FuseDaemonRestart {
    fn name(&self) -> &'static str {
        "fuse-daemon-restart"
    }

    fn summary(&self) -> &'static str {
        "the FUSE daemon (ceph-fuse) dies and is restarted on top (nonempty); CSI binds still point at the dead connection and new containers cannot use the volume"
    }

    /// The runtime under test starts the new containers (`--runtime`).
    fn uses_runtime(&self) -> bool {
        true
    }

    /// Through containerd's CRI too.
    fn uses_containerd(&self) -> bool {
        true
    }

    fn detectors(&self) -> &'static [&'static str] {
        &[dead_fuse::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            // containerd's overlayfs snapshotter mounts the pod's rootfs.
            Requirement::Filesystem("overlay"),
            Requirement::Filesystem("fuse"),
            Requirement::Path {
                path: "/dev/fuse",
                why: "the FUSE device (modprobe fuse; in a container, pass --device /dev/fuse)",
            },
            Requirement::binary("busybox", "busybox-static"),
            Requirement::OciRuntime { probe: oci::probe },
        ]
    }

    fn variants(&self, _kernel: &KernelVersion) -> Vec<Variant> {
        vec![
            Variant::new(
                Kind::Kill,
                "SIGKILL the daemon (OOM kill): the CSI bind answers ENOTCONN, a new container cannot read its volume",
                Expectation::Reproduced,
            ),
            Variant::new(
                Kind::RestartNonempty,
                "restart the daemon on the same mount point with nonempty: the mount point works, the CSI bind and new containers still fail",
                Expectation::Reproduced,
            ),
            Variant::new(
                Kind::Remount,
                "unmount the stale bind and the dead mount, restart on an empty mount point, bind again: the runtime starts the container and it reads the volume",
                Expectation::Clean,
            ),
        ]
    }

    /// A few seconds on the host; 50 to 65 s under TCG with runc, each variant starting a
    /// containerd and its pod.
    fn timeout(&self) -> Duration {
        Duration::from_secs(180)
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let kind: Kind = variant.kind()?;
        let l = Layout::new(ctx, ctx.variant_dir(variant.name)?)?;
        let mut dead = DeadDaemon::build(ctx, &l)?;
        let mut observed = dead.observed.take();
        let step = match kind {
            Kind::Kill => kill(&l, &dead)?,
            Kind::RestartNonempty => restart_nonempty(&l, &dead)?,
            Kind::Remount => remount(&l, &mut dead)?,
        };
        let Step {
            reproduced,
            start,
            detail,
            second,
            mounts,
        } = step;
        if let Some((key, value)) = detail {
            observed[key] = value;
        }
        let new_container = new_container_evidence(&start);
        observed["new_container"] = new_container.clone();
        let mounts =
            mounts.unwrap_or_else(|| read_mountinfo(Path::new("/proc"), None).unwrap_or_default());
        observed["mountinfo"] = l.mounts(&mounts);
        let mut findings = dead_fuse::scan(
            Path::new("/proc"),
            std::slice::from_ref(&l.dir),
            dead_fuse::PROBE_LIMIT,
        )
        .context("dead-fuse failed")?;
        // What the runtime itself said, beside the detector's finding on the kubelet path.
        let csi = l.csi_target.display().to_string();
        for f in findings.iter_mut().filter(|f| f.subject == csi) {
            f.evidence["new_container_in_this_scenario"] = new_container.clone();
        }

        // Newest first: the restarted daemon's mount sits on top of the old one.
        drop(second);
        drop(dead);
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }
}

/// The new container's steps both ways, where each stopped and what its table expects.
fn new_container_evidence(new: &NewContainer) -> serde_json::Value {
    json!({
        "oci": attempt_evidence(&new.oci, runtimes::expected(&new.oci.runtime.name, new.oci.runtime.version)),
        "cri": {
            "runtime": new.cri_runtime,
            "attempt": attempt_evidence(&new.cri, runtimes::expected_cri(new.containerd)),
        },
    })
}

fn attempt_evidence(start: &ReadAttempt, row: Option<&runtimes::Row>) -> serde_json::Value {
    json!({
        "runtime": start.runtime,
        "steps": start.steps,
        "read": start.content,
        "failed_step": start.failed_step().map(|s| &s.command),
        "runtime_said": start.failed_step().and_then(|s| s.error.as_deref()),
        "stopped_at": runtimes::stop_of(start),
        "runtime_table": row.map(|r| json!({
            "from": r.from.to_string(),
            "until": r.until.map(|u| u.to_string()),
            "stop": r.stop,
            "says": r.says,
            "upstream": r.upstream,
            "seen": r.seen,
        })),
    })
}
