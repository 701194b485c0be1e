//! The pod's container as this scenario uses it, whatever starts it: containerd's CRI, as
//! kubelet does (a pod of a private containerd, CreateContainer with the hostPath as a CRI
//! mount, ExecSync to look inside), or the OCI runtime under test driven directly
//! (`create`/`start` on a bundle whose spec binds the hostPath, `exec` to look inside).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Context as _;
use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_runtime::cri::HostMount;
use faultline_runtime::oci::{
    self, unique_id, BindMount, Bundle, BundleSpec, Created, OciRuntime, Step, Version,
};
use faultline_runtime::pod::{CriContainer, CriPod};
use serde_json::json;

/// What starts the pod's containers.
pub(super) enum Starter {
    /// The OCI runtime under test, driven directly, its state and bundles under `dir`.
    Oci { runtime: OciRuntime, dir: PathBuf },
    /// A pod of a private containerd of the runtime under test, through its CRI plugin.
    Cri(Rc<CriPod>),
}

/// A container of the pod, running.
pub(super) enum PodContainer<'a> {
    Oci(oci::Container<'a>),
    Cri(CriContainer<'a>),
}

/// What a start gave: the container, or the refusal in the starter's own words.
pub(super) enum Started<'a> {
    Running(PodContainer<'a>),
    Refused(Step),
}

/// The volume's file as the container sees it: `cat` and `stat -c '%h %i'` inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileView {
    pub(super) content: String,
    pub(super) nlink: u64,
    pub(super) inode: u64,
}

impl FileView {
    pub(super) fn json(&self) -> serde_json::Value {
        json!({"content": self.content, "nlink": self.nlink, "inode": self.inode})
    }
}

impl Starter {
    /// The OCI runtime `binary`, keeping its state under `dir`.
    pub(super) fn oci(binary: &Path, dir: &Path) -> anyhow::Result<Starter> {
        let runtime = OciRuntime::new(binary, &dir.join("state"))
            .context("failed to set up the OCI runtime")?;
        Ok(Starter::Oci {
            runtime,
            dir: dir.to_path_buf(),
        })
    }

    /// The pod of a containerd of `runtime`, under `dir`.
    pub(super) fn pod(runtime: &RuntimeUnderTest, dir: &Path) -> anyhow::Result<CriPod> {
        CriPod::start(runtime, dir, "app").context("failed to run the pod through containerd's CRI")
    }

    /// Who starts the containers, for the result.
    pub(super) fn describe(&self) -> serde_json::Value {
        match self {
            Starter::Oci { runtime, .. } => json!({"oci": runtime.identity()}),
            Starter::Cri(pod) => pod.describe(),
        }
    }

    /// Whose behaviour the runtime table holds, and its release: the OCI runtime driven
    /// directly, or containerd, whose CRI plugin acts on host paths before any OCI runtime.
    pub(super) fn table_key(&self) -> (String, Option<Version>) {
        match self {
            Starter::Oci { runtime, .. } => {
                (runtime.identity().name.clone(), runtime.identity().version)
            }
            Starter::Cri(pod) => ("containerd".into(), pod.containerd_release()),
        }
    }

    /// Who the table key names, for messages.
    pub(super) fn who(&self) -> String {
        match self {
            Starter::Oci { runtime, .. } => runtime.identity().to_string(),
            Starter::Cri(pod) => format!("containerd {}", pod.containerd().version()),
        }
    }

    /// Starts container `name` of the pod (its process sleeps; the scenario looks inside
    /// with exec) with `mounts`, as kubelet asks for a pod's volumes.
    pub(super) fn start(&self, name: &str, mounts: &[BindMount]) -> anyhow::Result<Started<'_>> {
        match self {
            Starter::Oci { runtime, dir } => {
                let bundle = Bundle::create(
                    &dir.join("bundles").join(name),
                    &BundleSpec {
                        args: vec!["/bin/sleep".into(), "600".into()],
                        mounts: mounts.to_vec(),
                    },
                )
                .context("failed to write the container's bundle")?;
                let created = runtime
                    .create(&unique_id(&format!("hpr-{name}")), &bundle)
                    .context("failed to drive the OCI runtime")?;
                let container = match created {
                    Created::Refused(step) => return Ok(Started::Refused(step)),
                    Created::Container(c) => c,
                };
                let start = container
                    .start()
                    .context("failed to drive the OCI runtime")?;
                if !start.ok {
                    return Ok(Started::Refused(start));
                }
                Ok(Started::Running(PodContainer::Oci(container)))
            }
            Starter::Cri(pod) => {
                let mounts: Vec<HostMount> = mounts
                    .iter()
                    .map(|m| HostMount {
                        host_path: m.source.clone(),
                        container_path: m.destination.display().to_string(),
                        readonly: m.read_only,
                    })
                    .collect();
                match pod
                    .start_container(name, &mounts)
                    .context("failed to drive containerd's CRI")?
                {
                    Ok(c) => Ok(Started::Running(PodContainer::Cri(c))),
                    Err(step) => Ok(Started::Refused(step)),
                }
            }
        }
    }
}

impl PodContainer<'_> {
    /// The container's init process, as this scenario's pid namespace numbers it.
    pub(super) fn pid(&self) -> anyhow::Result<i32> {
        match self {
            PodContainer::Oci(c) => c.pid().context("failed to ask the runtime for the pid"),
            PodContainer::Cri(c) => c
                .pid()
                .context("failed to ask containerd for the pid")?
                .context("containerd's ContainerStatus gave no pid"),
        }
    }

    fn exec(&self, args: &[&str]) -> anyhow::Result<Step> {
        match self {
            PodContainer::Oci(c) => c.exec(args).context("failed to drive the OCI runtime"),
            PodContainer::Cri(c) => c.exec(args).context("failed to drive containerd's CRI"),
        }
    }

    /// `cat PATH` and `stat -c '%h %i' PATH` inside, as a workload would see the file.
    pub(super) fn view(&self, path: &str) -> anyhow::Result<FileView> {
        let cat = self.exec(&["cat", path])?;
        anyhow::ensure!(
            cat.ok,
            "`cat {path}` in the container failed: {:?}",
            cat.error
        );
        let stat = self.exec(&["stat", "-c", "%h %i", path])?;
        anyhow::ensure!(
            stat.ok,
            "`stat {path}` in the container failed: {:?}",
            stat.error
        );
        let (nlink, inode) = parse_links_and_inode(&stat.stdout)
            .with_context(|| format!("unreadable stat output {:?}", stat.stdout))?;
        Ok(FileView {
            content: cat.stdout,
            nlink,
            inode,
        })
    }

    /// Stops and removes the container (`delete --force` for the OCI runtime, RemoveContainer
    /// through CRI).
    pub(super) fn remove(self) -> anyhow::Result<()> {
        match self {
            PodContainer::Oci(c) => {
                let deleted = c.delete().context("failed to drive the OCI runtime")?;
                anyhow::ensure!(
                    deleted.ok,
                    "failed to delete the container: {:?}",
                    deleted.error
                );
                Ok(())
            }
            PodContainer::Cri(c) => c.remove().context("failed to remove the container"),
        }
    }
}

/// `%h %i` of busybox stat: link count and inode.
fn parse_links_and_inode(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let nlink = words.next()?.parse().ok()?;
    let inode = words.next()?.parse().ok()?;
    Some((nlink, inode))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_output_parses() {
        assert_eq!(
            super::parse_links_and_inode("0 68812816\n"),
            Some((0, 68812816))
        );
        assert_eq!(super::parse_links_and_inode("1"), None);
        assert_eq!(super::parse_links_and_inode("x 1"), None);
    }
}
