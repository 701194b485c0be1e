//! What the guest must carry for a set of scenarios, derived from their requirements:
//! host binaries (`Requirement::Binary`), kernel modules (`Requirement::Filesystem`), and
//! what those binaries and file systems need beyond themselves, which requirements do not
//! say (the NFS daemons' state directories, `nfsv3` for an `nfs` mount with `vers=3`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_core::{Requirement, Scenario};

use crate::initramfs::{Initramfs, InitramfsError};

#[derive(Debug, Default, Clone)]
pub struct GuestNeeds {
    /// Host binaries, copied with their libraries to the same path.
    pub binaries: BTreeSet<PathBuf>,
    /// Required binaries the host does not have: the guest's requirement check will name
    /// them; the builder only warns.
    pub missing_binaries: BTreeSet<String>,
    /// Module names to load, in the order asked (dependencies are resolved later).
    pub modules: Vec<String>,
}

impl GuestNeeds {
    /// `runtime` is the run's runtime under test: the scenarios that need an OCI runtime get
    /// that one (else runc from the host's PATH).
    pub fn for_scenarios(
        scenarios: &[&dyn Scenario],
        runtime: Option<&RuntimeUnderTest>,
    ) -> GuestNeeds {
        let mut needs = GuestNeeds::default();
        // Loop devices are how scenarios build file systems; cheap to carry always.
        needs.add_module("loop");
        for s in scenarios {
            for r in s.requirements() {
                needs.add_requirement(&r, runtime);
            }
        }
        needs
    }

    pub fn add_requirement(&mut self, r: &Requirement, runtime: Option<&RuntimeUnderTest>) {
        match r {
            Requirement::Binary { name, .. } => match faultline_sys::path::find_on_path(name) {
                Some(p) => {
                    self.binaries.insert(p);
                }
                None => {
                    self.missing_binaries.insert(name.to_string());
                }
            },
            Requirement::Filesystem(fs) => {
                for m in modules_for_filesystem(fs) {
                    self.add_module(m);
                }
            }
            // At its host path, which is the path the guest's runtime under test names.
            Requirement::OciRuntime { .. } => {
                match faultline_core::requirement::oci_runtime_binary(runtime) {
                    Ok(p) if p.is_file() => {
                        self.binaries.insert(p);
                    }
                    Ok(p) => {
                        self.missing_binaries.insert(p.display().to_string());
                    }
                    Err(_) => {
                        self.missing_binaries.insert("runc".into());
                    }
                }
            }
            _ => {}
        }
    }

    /// The runtime under test's binaries, copied with their libraries to the same paths
    /// (the guest's runner gets the same `RuntimeUnderTest`): containerd, the runc v2 shim
    /// beside it, and the OCI runtime. Not `ctr` (no scenario uses it) nor the v1 shims
    /// (`containerd-shim`, `containerd-shim-runc-v1`): containerd's v1 runtime needs cgroup v1
    /// hierarchies and the guest mounts cgroup2 alone, so cri-shim-v1 skips there anyway.
    /// That keeps 41 MiB of containerd 1.6.20's 100 out of the initramfs, which the guest
    /// unpacks under TCG before init.
    pub fn runtime_binaries(rt: &RuntimeUnderTest) -> Vec<PathBuf> {
        let dir = rt.bin_dir();
        let beside = ["containerd-shim-runc-v2"]
            .into_iter()
            .map(|name| dir.join(name))
            .filter(|p| p.is_file());
        std::iter::once(rt.containerd.clone())
            .chain(beside)
            .chain(std::iter::once(rt.oci.clone()))
            .collect()
    }

    fn add_module(&mut self, name: &str) {
        if !self.modules.iter().any(|m| m == name) {
            self.modules.push(name.to_string());
        }
    }

    /// Configuration and state files the included binaries expect.
    pub fn add_support_files(&self, fs: &mut Initramfs) -> Result<(), InitramfsError> {
        fs.file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\n_rpc:x:100:65534::/run/rpcbind:/usr/sbin/nologin\nstatd:x:101:65534::/var/lib/nfs:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_vec(),
        );
        fs.file(
            "/etc/group",
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        );
        fs.file(
            "/etc/hosts",
            0o644,
            b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
        );
        // containerd's CRI copies the node's resolv.conf into every host-network sandbox
        // (pkg/cri/server/sandbox_run_linux.go, setupSandboxFiles) and fails without one.
        // The guest has only loopback: no name server.
        fs.file(
            "/etc/resolv.conf",
            0o644,
            b"# faultline guest: loopback only, no name server\n".to_vec(),
        );
        fs.file("/etc/hostname", 0o644, b"faultline-guest\n".to_vec());
        fs.file(
            "/etc/nsswitch.conf",
            0o644,
            b"passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\nrpc: files\n"
                .to_vec(),
        );
        fs.symlink("/etc/mtab", "/proc/self/mounts");
        // libtirpc's transport table and the name databases the RPC daemons look up.
        for f in [
            "/etc/netconfig",
            "/etc/services",
            "/etc/protocols",
            "/etc/rpc",
        ] {
            let p = std::path::Path::new(f);
            if p.exists() {
                fs.host_file(p, f)?;
            }
        }
        let has = |name: &str| {
            self.binaries
                .iter()
                .any(|b| b.file_name().is_some_and(|n| n == name))
        };
        if has("rpc.statd") || has("rpc.mountd") || has("exportfs") || has("mount.nfs") {
            for d in [
                "/var/lib/nfs/sm",
                "/var/lib/nfs/sm.bak",
                "/var/lib/nfs/v4recovery",
                "/var/lib/nfs/rpc_pipefs",
            ] {
                fs.dir(d);
            }
            fs.file("/var/lib/nfs/etab", 0o644, Vec::new());
            fs.file("/var/lib/nfs/rmtab", 0o644, Vec::new());
            fs.file("/etc/exports", 0o644, Vec::new());
        }
        Ok(())
    }
}

/// The modules that give the kernel a file system type. `nfs` mounts with `vers=3` need the
/// separate `nfsv3` module, which the kernel would request through modprobe; the guest has
/// no modprobe database, so it is loaded up front.
pub fn modules_for_filesystem(fs: &str) -> Vec<&str> {
    match fs {
        "nfs" => vec!["nfs", "nfsv3"],
        "nfsd" => vec!["nfsd"],
        "fuse" | "fuseblk" => vec!["fuse"],
        "ext2" | "ext3" => vec!["ext4"],
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystems_map_to_modules() {
        assert_eq!(modules_for_filesystem("nfs"), ["nfs", "nfsv3"]);
        assert_eq!(modules_for_filesystem("overlay"), ["overlay"]);
        let mut n = GuestNeeds::default();
        n.add_requirement(&Requirement::Filesystem("nfs"), None);
        n.add_requirement(&Requirement::Filesystem("nfs"), None);
        n.add_requirement(&Requirement::binary("no-such-binary-here", "nothing"), None);
        assert_eq!(n.modules, ["nfs", "nfsv3"]);
        assert!(n.missing_binaries.contains("no-such-binary-here"));
    }

    #[test]
    fn the_runtime_brings_its_shims_and_oci_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["containerd", "containerd-shim-runc-v2", "ctr", "unrelated"] {
            std::fs::write(bin.join(name), b"").unwrap();
        }
        let rt = RuntimeUnderTest {
            spec: "containerd=...,oci=crun".into(),
            containerd: bin.join("containerd"),
            oci: "/usr/bin/crun".into(),
            versions: Default::default(),
        };
        assert_eq!(
            GuestNeeds::runtime_binaries(&rt),
            [
                bin.join("containerd"),
                bin.join("containerd-shim-runc-v2"),
                PathBuf::from("/usr/bin/crun"),
            ]
        );
    }

    #[test]
    fn the_runtime_under_test_is_carried_at_its_host_path() {
        let probe: fn(&std::path::Path) -> Result<(), String> = |_| Ok(());
        let oci = Requirement::OciRuntime { probe };
        let runtime = |oci: &str| RuntimeUnderTest {
            spec: "test".into(),
            containerd: "/usr/bin/containerd".into(),
            oci: oci.into(),
            versions: Default::default(),
        };
        let mut n = GuestNeeds::default();
        // Any file stands for the binary here; the builder copies what is named.
        n.add_requirement(&oci, Some(&runtime("/bin/sh")));
        assert!(n.binaries.contains(std::path::Path::new("/bin/sh")));
        n.add_requirement(&oci, Some(&runtime("/no/such/crun")));
        assert!(n.missing_binaries.contains("/no/such/crun"));
    }
}
