//! An OCI bundle (runtime-spec "Filesystem Bundle"): `config.json` written with the oci-spec
//! crate, and a root file system of busybox-static and its applets. The spec starts from
//! oci-spec's defaults (those of `runc spec`: the pid, network, ipc, uts, mount and cgroup
//! namespaces, /proc, /dev, /sys and the cgroup file system mounted, the masked and read-only
//! paths, no terminal) and adds the volumes as bind mounts, the way containerd's CRI plugin
//! passes a pod's volumes to the runtime (`rbind`, `rprivate`, `ro` or `rw`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec};

use super::runner::OciError;

/// The applets the root file system links to busybox: what the scenarios run inside.
const APPLETS: &[&str] = &[
    "sh", "cat", "stat", "sleep", "true", "ls", "echo", "mkdir", "test",
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("busybox is not on PATH (apt-get install busybox-static, or run ci/setup)")]
    NoBusybox,
    #[error("{0} is linked dynamically; the container root needs busybox-static (apt-get install busybox-static)")]
    DynamicBusybox(PathBuf),
    #[error("failed to lay out the container root {path}")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the runtime spec")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// A volume: `source` on the host bound at `destination` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

impl BindMount {
    /// What the runtime gets for it: containerd's CRI plugin writes `rbind`, `rprivate` and
    /// `ro`/`rw` for every CRI mount without propagation (pkg/cri/opts/spec_linux.go,
    /// WithMounts).
    fn to_spec(&self) -> Result<Mount, BundleError> {
        MountBuilder::default()
            .destination(&self.destination)
            .typ("bind")
            .source(&self.source)
            .options(vec![
                "rbind".to_string(),
                "rprivate".to_string(),
                if self.read_only { "ro" } else { "rw" }.to_string(),
            ])
            .build()
            .map_err(BundleError::Spec)
    }
}

/// What the container runs and mounts.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The container's process, e.g. `["/bin/sleep", "600"]`.
    pub args: Vec<String>,
    pub mounts: Vec<BindMount>,
}

/// A bundle on disk: `dir/config.json` and `dir/rootfs`.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    /// Lays out `dir/rootfs` (busybox and its applets) and writes `dir/config.json`.
    pub fn create(dir: &Path, spec: &BundleSpec) -> Result<Bundle, BundleError> {
        busybox_rootfs(&dir.join("rootfs"))?;
        let config = runtime_spec(spec)?;
        let path = dir.join("config.json");
        config
            .save(&path)
            .map_err(|source| BundleError::Write { path, source })?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
        })
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Points the next container made from this bundle at `path` (`linux.cgroupsPath`,
    /// absolute: from each hierarchy's root). A bundle may serve several containers in turn,
    /// each with a cgroup of its own.
    pub fn set_cgroups_path(&self, path: &str) -> Result<(), OciError> {
        let file = self.dir.join("config.json");
        let files = |source: std::io::Error| OciError::Files {
            path: file.clone(),
            source,
        };
        let mut spec = Spec::load(&file).map_err(|e| files(std::io::Error::other(e)))?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(PathBuf::from(path)));
        spec.set_linux(Some(linux));
        spec.save(&file)
            .map_err(|e| files(std::io::Error::other(e)))
    }
}

/// The runtime spec for `spec`: oci-spec's defaults with our process, hostname and binds.
pub fn runtime_spec(spec: &BundleSpec) -> Result<Spec, BundleError> {
    let mut config = Spec::default();
    let process = ProcessBuilder::default()
        .args(spec.args.clone())
        .env(vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "HOME=/root".to_string(),
        ])
        .cwd("/")
        .terminal(false)
        .no_new_privileges(true)
        .build()
        .map_err(BundleError::Spec)?;
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()
            .map_err(BundleError::Spec)?,
    ));
    config.set_hostname(Some("faultline".to_string()));
    let mut mounts = config.mounts().clone().unwrap_or_default();
    for m in &spec.mounts {
        mounts.push(m.to_spec()?);
    }
    config.set_mounts(Some(mounts));
    Ok(config)
}

/// busybox-static at `root/bin/busybox`, each applet a symlink to it, and the directories
/// the runtime mounts on.
pub fn busybox_rootfs(root: &Path) -> Result<(), BundleError> {
    let busybox = faultline_sys::path::find_on_path("busybox").ok_or(BundleError::NoBusybox)?;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Rootfs { path, source }
    };
    let head = read_head(&busybox).map_err(err(&busybox))?;
    if elf_has_interpreter(&head) {
        return Err(BundleError::DynamicBusybox(busybox));
    }
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(err(&p))?;
    }
    let target = root.join("bin/busybox");
    std::fs::copy(&busybox, &target).map_err(err(&target))?;
    for applet in APPLETS {
        let link = root.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(err(&link))?;
    }
    Ok(())
}

/// The ELF header and program headers of a file (the first 4 KiB hold them for any
/// executable a linker writes).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)?
        .take(4096)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Whether a 64-bit little-endian ELF image names a program interpreter (`PT_INTERP`): a
/// dynamically linked executable, which would need its loader and libraries in the root.
/// Anything else (another class, a truncated header) counts as static.
pub fn elf_has_interpreter(head: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[0x20..0x28].try_into().unwrap_or_default()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        head.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_carries_the_process_and_the_binds_after_the_defaults() {
        let spec = BundleSpec {
            args: vec!["/bin/sleep".into(), "600".into()],
            mounts: vec![BindMount {
                source: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
                destination: "/vol".into(),
                read_only: false,
            }],
        };
        let config = runtime_spec(&spec).unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/bin/sleep", "600"])
        );
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["root"]["path"], "rootfs");
        let mounts = json["mounts"].as_array().unwrap();
        assert_eq!(mounts[0]["destination"], "/proc");
        let last = mounts.last().unwrap();
        assert_eq!(last["destination"], "/vol");
        assert_eq!(last["type"], "bind");
        assert_eq!(
            last["options"],
            serde_json::json!(["rbind", "rprivate", "rw"])
        );
    }

    #[test]
    fn a_bundle_has_a_config_and_a_busybox_root() {
        if faultline_sys::path::find_on_path("busybox").is_none() {
            eprintln!("skip: busybox not on PATH");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = BundleSpec {
            args: vec!["/bin/true".into()],
            mounts: Vec::new(),
        };
        let b = Bundle::create(dir.path(), &spec).unwrap();
        let back = Spec::load(b.dir.join("config.json")).unwrap();
        assert_eq!(back.hostname().as_deref(), Some("faultline"));
        assert_eq!(
            std::fs::read_link(b.rootfs().join("bin/cat")).unwrap(),
            Path::new("busybox")
        );
        assert!(b.rootfs().join("bin/busybox").is_file());
    }

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // /proc/self/exe is this test binary, linked dynamically by rustc's default.
        let me = read_head(Path::new("/proc/self/exe")).unwrap();
        assert!(elf_has_interpreter(&me));
        assert!(!elf_has_interpreter(b"#!/bin/sh\n"));
        assert!(!elf_has_interpreter(&me[..40]));
    }
}
