//! What a scenario or detector needs from the host, checked before anything is built.
//! A missing requirement becomes a `skip` whose reason names it and how to get it.

use std::path::{Path, PathBuf};

use caps::{CapSet, Capability};
pub use faultline_sys::path::find_on_path;
use faultline_sys::process::run_bounded;

use crate::runtime_under_test::RuntimeUnderTest;

/// Set in the VM backend's guest, where VM-only scenarios can run.
pub const GUEST_ENV: &str = "FAULTLINE_VM_GUEST";

/// Whether this process runs inside the VM backend's guest.
pub fn in_vm_guest() -> bool {
    std::env::var_os(GUEST_ENV).is_some()
}

const MODPROBE_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone)]
pub enum Requirement {
    /// Effective uid 0.
    Root,
    /// An effective capability, checked with the caps crate.
    Capability(Capability),
    /// A file system type listed in /proc/filesystems (after trying to load its module).
    Filesystem(&'static str),
    /// A program on PATH, and the Debian package that provides it.
    Binary {
        name: &'static str,
        package: &'static str,
    },
    /// A device node or other path that must exist.
    Path {
        path: &'static str,
        why: &'static str,
    },
    /// Only runs inside the disposable VM backend (the host kernel lacks something).
    VmBackend { why: &'static str },
    /// An OCI runtime that can start a container here: the runtime under test's (`--runtime
    /// … oci=…`), else runc on PATH. `probe` (faultline-runtime's, which core cannot name)
    /// tries it and says why not in the runtime's own words; the VM backend copies that
    /// runtime into the guest.
    OciRuntime {
        probe: fn(&Path) -> Result<(), String>,
    },
}

impl Requirement {
    pub fn binary(name: &'static str, package: &'static str) -> Requirement {
        Requirement::Binary { name, package }
    }

    /// `Ok(())` when met, else the reason the scenario cannot run here and how to fix it.
    /// [`Requirement::OciRuntime`] is checked against runc on PATH; see [`Self::check_with`].
    pub fn check(&self) -> Result<(), String> {
        self.check_with(None)
    }

    /// [`Self::check`] for a run whose runtime under test is `runtime`.
    pub fn check_with(&self, runtime: Option<&RuntimeUnderTest>) -> Result<(), String> {
        match self {
            Requirement::Root => {
                if nix::unistd::geteuid().is_root() {
                    Ok(())
                } else {
                    Err("needs root: effective uid is not 0 (run with sudo)".into())
                }
            }
            Requirement::Capability(cap) => match caps::has_cap(None, CapSet::Effective, *cap) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "needs root: {cap} missing (checked with the caps crate); run as root or in a privileged container"
                )),
                Err(e) => Err(format!("failed to read capabilities: {e}")),
            },
            Requirement::Filesystem(fs) => {
                if filesystem_available(fs) {
                    Ok(())
                } else {
                    Err(format!(
                        "needs the {fs} file system: not in /proc/filesystems and `modprobe {fs}` did not load it"
                    ))
                }
            }
            Requirement::Binary { name, package } => {
                if find_on_path(name).is_some() {
                    Ok(())
                } else {
                    Err(format!(
                        "needs `{name}` on PATH: install it with `apt-get install {package}` (or run ci/setup)"
                    ))
                }
            }
            Requirement::Path { path, why } => {
                if Path::new(path).exists() {
                    Ok(())
                } else {
                    Err(format!("needs {path}: {why}"))
                }
            }
            Requirement::VmBackend { why } => {
                if in_vm_guest() {
                    Ok(())
                } else {
                    Err(format!(
                        "runs only in the VM backend ({why}): use `faultline run --vm`"
                    ))
                }
            }
            Requirement::OciRuntime { probe } => probe(&oci_runtime_binary(runtime)?),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Requirement::Root => "root".into(),
            Requirement::Capability(cap) => cap.to_string(),
            Requirement::Filesystem(fs) => format!("fs:{fs}"),
            Requirement::Binary { name, .. } => format!("bin:{name}"),
            Requirement::Path { path, .. } => path.to_string(),
            Requirement::VmBackend { .. } => "vm".into(),
            Requirement::OciRuntime { .. } => "oci-runtime".into(),
        }
    }
}

/// The OCI runtime binary a run uses: the runtime under test's, else runc on PATH.
pub fn oci_runtime_binary(runtime: Option<&RuntimeUnderTest>) -> Result<PathBuf, String> {
    match runtime {
        Some(r) => Ok(r.oci.clone()),
        None => find_on_path("runc").ok_or_else(|| {
            "needs an OCI runtime: `runc` on PATH (apt-get install runc, or run ci/setup), or one given with --runtime".to_string()
        }),
    }
}

/// The first unmet requirement's reason, if any.
pub fn first_unmet(reqs: &[Requirement]) -> Option<String> {
    first_unmet_with(reqs, None)
}

/// [`first_unmet`] for a run whose runtime under test is `runtime`.
pub fn first_unmet_with(
    reqs: &[Requirement],
    runtime: Option<&RuntimeUnderTest>,
) -> Option<String> {
    reqs.iter().find_map(|r| r.check_with(runtime).err())
}

pub fn filesystem_available(fs: &str) -> bool {
    let listed = || {
        std::fs::read_to_string("/proc/filesystems")
            .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
            .unwrap_or(false)
    };
    if listed() {
        return true;
    }
    if find_on_path("modprobe").is_some() {
        // Bounded: a module load can hang on a wedged kernel, and a requirement check must
        // answer; a modprobe still running at the limit is killed with its group.
        let mut cmd = std::process::Command::new("modprobe");
        cmd.arg("-q").arg(fs);
        if let Err(e) = run_bounded("modprobe", &mut cmd, MODPROBE_LIMIT) {
            tracing::debug!("failed to run modprobe {fs}: {e}");
        }
    }
    listed()
}
