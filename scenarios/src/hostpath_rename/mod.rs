//! `hostpath-rename`: a single-file hostPath volume goes stale when the host replaces the file.
//!
//! Symptom: a pod mounts a host file as a hostPath volume of `type: File`; a host cronjob
//! updates it with `echo new > tmp; mv -f tmp data.txt`. The host sees the new data, the pod
//! keeps reading the old data forever: `stat /data.txt` in the container shows `Links: 0`, and
//! the container's mountinfo root for `/data.txt` ends in `//deleted`. Seen in production (a
//! public debugging report by Cốc Cốc engineers, "mythical 0-link readable file and other
//! wonkeries", section "ghost hostPath files"); the old inode is only kept alive by the
//! container's mount namespace and is still readable from the host as
//! `/proc/<pid>/root/data.txt`.
//!
//! Cause: kubelet (through the container runtime) implements hostPath as a bind mount,
//! which pins the inode that the path named at container start. rename(2) over the path
//! gives the path a new inode and unlinks the old one; the bind keeps the old one. This is
//! how bind mounts have always worked (no kernel fix; `dentry_path()` in fs/d_path.c appends
//! `//deleted` to unlinked roots), so the expectations do not depend on the kernel version.
//!
//! Environment: the pod is a real one of a private containerd of the runtime under test
//! (`--runtime`), driven through its CRI plugin as kubelet drives it: RunPodSandbox on the
//! node's network, CreateContainer with the host file as a CRI mount at `/data.txt`,
//! read-only, as kubelet passes a hostPath volume of type File (containerd makes it an
//! `rbind`, `rprivate`, `ro` bind for the OCI runtime); the scenario reads it from inside
//! with ExecSync `cat /data.txt` and `stat -c '%h %i' /data.txt`. The `oci-` variants start
//! the container with the OCI runtime alone (`create`/`start` on a bundle whose spec binds
//! the file the same way, `exec` to look inside), which is where the runtimes differ.
//!
//! Variants:
//! - `in-place`: the host truncates and writes the same inode: the container sees the update.
//! - `rename`: the host writes a new file and renames it over the path (`mv -f`): the
//!   container still reads the old content of a 0-link inode. Reproduced.
//! - `dir-bind`: the mitigation: bind the parent directory instead; after the rename the
//!   container sees the new content.
//! - `restart-missing` (file `restart`): the host removes the file while the container runs (it
//!   keeps reading the ghost), then the container is started again: containerd creates the
//!   missing path as a directory and starts it, and the host's next `mv -f` fails.
//!   Reproduced.
//! - `oci-rename`: `rename` with the OCI runtime alone. Reproduced.
//! - `oci-restart-missing`: `restart-missing` with the OCI runtime alone, which refuses, in
//!   words tabled per runtime and version. Reproduced.

mod container;
mod restart;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::{
    Context, Expectation, KernelVersion, Requirement, Scenario, Variant, VariantOutcome,
    VariantSkipped,
};
use faultline_detect::stale_bind;
use faultline_runtime::oci::{self, BindMount};
use faultline_sys::mountinfo::read_mountinfo;
use serde_json::json;

use container::{PodContainer, Started, Starter};

const OLD: &str = "version1\n";
const NEW: &str = "version2\n";

pub struct HostpathRename;

faultline_core::variant_kind! {
    /// How the host updates the file, and how the volume is mounted.
    enum Mode {
        InPlace = "in-place",
        Rename = "rename",
        DirBind = "dir-bind",
        RestartMissing = "restart-missing",
        OciRename = "oci-rename",
        OciRestartMissing = "oci-restart-missing",
    }
}

impl Mode {
    /// The same update without the starter's prefix.
    fn update(self) -> Mode {
        match self {
            Mode::OciRename => Mode::Rename,
            Mode::OciRestartMissing => Mode::RestartMissing,
            m => m,
        }
    }

    /// Whether the OCI runtime alone starts the container, not containerd's CRI.
    fn oci_alone(self) -> bool {
        matches!(self, Mode::OciRename | Mode::OciRestartMissing)
    }
}

impl Scenario for HostpathRename {
    fn name(&self) -> &'static str {
        "hostpath-rename"
    }

    fn summary(&self) -> &'static str {
        "single-file hostPath bind pins the inode: after the host's mv -f the container reads the old, 0-link file"
    }

    /// The runtime under test starts the container (`--runtime`).
    fn uses_runtime(&self) -> bool {
        true
    }

    /// Through containerd's CRI, but for the `oci-` variants.
    fn uses_containerd(&self) -> bool {
        true
    }

    fn detectors(&self) -> &'static [&'static str] {
        &[stale_bind::NAME]
    }

    fn requirements(&self) -> Vec<Requirement> {
        vec![
            Requirement::Root,
            // containerd's overlayfs snapshotter mounts the pod's rootfs.
            Requirement::Filesystem("overlay"),
            Requirement::binary("busybox", "busybox-static"),
            Requirement::OciRuntime { probe: oci::probe },
        ]
    }

    fn variants(&self, _kernel: &KernelVersion) -> Vec<Variant> {
        vec![
            Variant::new(
                Mode::InPlace,
                "file bind; the host writes the same inode (truncate + write)",
                Expectation::Clean,
            ),
            Variant::new(
                Mode::Rename,
                "file bind; the host writes a new file and renames it over the path (mv -f)",
                Expectation::Reproduced,
            ),
            Variant::new(
                Mode::DirBind,
                "the parent directory is bound; the host renames a new file over the path",
                Expectation::Clean,
            ),
            Variant::new(
                Mode::RestartMissing,
                "file bind; the host removes the file, the container is started again: containerd meets a missing source",
                Expectation::Reproduced,
            ),
            Variant::new(
                Mode::OciRename,
                "rename, the container started by the OCI runtime alone",
                Expectation::Reproduced,
            ),
            Variant::new(
                Mode::OciRestartMissing,
                "restart-missing, the container started by the OCI runtime alone: it meets a missing source",
                Expectation::Reproduced,
            ),
        ]
    }

    fn run_variant(&self, ctx: &mut Context, variant: &Variant) -> anyhow::Result<VariantOutcome> {
        let mode: Mode = variant.kind()?;
        let dir = ctx
            .variant_dir(variant.name)
            .context("failed to create the variant directory")?;
        let volume = Volume::build(&dir, mode)?;
        let starter = starter(ctx, mode, &dir)?;
        ctx.progress(format!("starting the container ({})", variant.name));
        let mode = mode.update();
        if mode == Mode::RestartMissing {
            let out = restart::run(&starter, variant.name, &volume.host_file, &volume.bind)?;
            return Ok(VariantOutcome {
                reproduced: out.reproduced,
                observed: out.observed,
                findings: out.findings,
            });
        }
        let container = match starter.start(variant.name, std::slice::from_ref(&volume.bind))? {
            Started::Running(c) => c,
            Started::Refused(step) => anyhow::bail!(
                "the runtime refused the container at {}: {}",
                step.command,
                step.error.unwrap_or_default()
            ),
        };
        let (reproduced, mut observed) = update_and_look(ctx, mode, &volume, &container)?;
        observed["starter"] = starter.describe();
        // The same code `faultline check stale-bind` runs; /proc here is the scenario's own pid
        // namespace, so every finding is about this scenario's processes.
        let findings = stale_bind::scan(Path::new("/proc")).context("stale-bind failed")?;
        container.remove().context("failed to stop the container")?;
        Ok(VariantOutcome {
            reproduced,
            observed,
            findings,
        })
    }

    /// About 2 s on the host; under TCG each runc start or exec takes about 2.5 s, and the
    /// scenario makes about 35 of them (88 s on debian:6.1 with runc).
    fn timeout(&self) -> Duration {
        Duration::from_secs(240)
    }
}

/// What starts the variant's containers: the OCI runtime alone for the `oci-` variants,
/// else the scenario's pod of a containerd of the runtime under test.
fn starter(ctx: &mut Context, mode: Mode, dir: &Path) -> anyhow::Result<Starter> {
    if mode.oci_alone() {
        let binary = oci::oci_runtime_binary(ctx.runtime.as_ref()).map_err(anyhow::Error::msg)?;
        return Starter::oci(&binary, &dir.join("runtime"));
    }
    // One pod for the scenario, each variant's containers in it, as on a node.
    let pod = ctx.shared(|ctx| {
        let runtime = ctx.runtime.as_ref().ok_or_else(|| {
            VariantSkipped::error(
                "no container runtime under test: the pod runs on a containerd of the runtime under test (faultline run --runtime)",
            )
        })?;
        Starter::pod(runtime, &ctx.scratch().join("cri"))
    })?;
    Ok(Starter::Cri(pod))
}

/// The host's update and what the container and the host see before and after it. The
/// symptom a user sees is the old content; the 0 link count and `//deleted` root are its
/// signature, recorded and checked independently by the detector.
fn update_and_look(
    ctx: &Context,
    mode: Mode,
    volume: &Volume,
    container: &PodContainer,
) -> anyhow::Result<(bool, serde_json::Value)> {
    let before = container
        .view(&volume.inside)
        .context("the container failed to read the volume before the update")?;
    anyhow::ensure!(
        before.content == OLD,
        "the container read {:?} before any update, expected {OLD:?}",
        before.content
    );
    ctx.progress(format!("host updates the file ({mode:?})"));
    let old_inode = inode(&volume.host_file)?;
    update(mode, &volume.host_dir, &volume.host_file)?;
    let host_after =
        std::fs::read_to_string(&volume.host_file).context("failed to read the host file")?;
    let new_inode = inode(&volume.host_file)?;
    let after = container
        .view(&volume.inside)
        .context("the container failed to read the volume after the update")?;
    let pid = container.pid()?;
    let (through_proc_root, mountinfo_root) = host_view(pid, &volume.inside, &volume.bind)?;
    let reproduced = after.content == OLD;
    let observed = json!({
        "update": match mode {
            Mode::InPlace => "truncate + write into the same inode",
            _ => "write a new file, rename(2) it over the path (what mv -f does)",
        },
        "mount": match mode {
            Mode::DirBind => "parent directory",
            _ => "single file",
        },
        "container_pid": pid,
        "path_in_container": volume.inside,
        "host_content_after": host_after,
        "host_inode_before": old_inode,
        "host_inode_after": new_inode,
        "container_before": before.json(),
        "container_after": after.json(),
        "container_reads_old_content": reproduced,
        "via_proc_root": through_proc_root,
        "mountinfo_root": mountinfo_root,
    });
    Ok((reproduced, observed))
}

/// The host file and what kubelet asks the runtime for: a read-only bind of the file
/// itself, or (the mitigation) of its directory.
struct Volume {
    host_dir: PathBuf,
    host_file: PathBuf,
    bind: BindMount,
    /// The file's path inside the container.
    inside: String,
}

impl Volume {
    fn build(dir: &Path, mode: Mode) -> anyhow::Result<Volume> {
        let host_dir = dir.join("host/var/lib/app");
        std::fs::create_dir_all(&host_dir).context("failed to create the host directory")?;
        let host_file = host_dir.join("data.txt");
        std::fs::write(&host_file, OLD).context("failed to write the host file")?;
        let (source, destination, inside) = match mode {
            Mode::DirBind => (host_dir.clone(), "/data", "/data/data.txt"),
            _ => (host_file.clone(), "/data.txt", "/data.txt"),
        };
        Ok(Volume {
            host_dir,
            host_file,
            bind: BindMount {
                source,
                destination: destination.into(),
                read_only: true,
            },
            inside: inside.into(),
        })
    }
}

/// What the host sees of the container's file: its content through `/proc/PID/root`, and
/// the root of the container's mount as mountinfo shows it (`//deleted` when stale).
fn host_view(
    pid: i32,
    inside: &str,
    bind: &BindMount,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let through_proc_root = std::fs::read_to_string(
        Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(inside.trim_start_matches('/')),
    )
    .ok();
    let mountinfo_root = read_mountinfo(Path::new("/proc"), Some(pid))
        .context("failed to read the container's mountinfo")?
        .into_iter()
        .find(|m| m.mount_point == bind.destination)
        .map(|m| m.root_as_shown());
    Ok((through_proc_root, mountinfo_root))
}

fn update(mode: Mode, host_dir: &Path, host_file: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    match mode {
        Mode::InPlace => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(host_file)
                .context("failed to open the host file for writing")?;
            f.write_all(NEW.as_bytes())
                .and_then(|()| f.sync_all())
                .context("failed to write the host file in place")?;
        }
        Mode::Rename
        | Mode::DirBind
        | Mode::RestartMissing
        | Mode::OciRename
        | Mode::OciRestartMissing => {
            let tmp = host_dir.join("data.txt.new");
            let mut f = std::fs::File::create(&tmp).context("failed to create the new file")?;
            f.write_all(NEW.as_bytes())
                .and_then(|()| f.sync_all())
                .context("failed to write the new file")?;
            std::fs::rename(&tmp, host_file)
                .context("failed to rename the new file over the path")?;
        }
    }
    Ok(())
}

fn inode(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("failed to stat {}", path.display()))?
        .ino())
}
