//! The runtime parts as this host has them: programs on PATH, or binaries given by path.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use faultline_sys::path::find_on_path;

use super::SelectError;

/// `name` on PATH, or an error naming the Debian package that provides it.
pub fn on_path(name: &str, spec: &str) -> Result<PathBuf, SelectError> {
    find_on_path(name).ok_or_else(|| SelectError::NotOnPath {
        name: name.to_string(),
        // Debian names the packages after these programs; another name is its own guess.
        package: match name {
            "containerd" | "containerd-shim-runc-v2" | "ctr" => "containerd",
            other => other,
        }
        .to_string(),
        spec: spec.to_string(),
    })
}

/// A binary given by path: it must be an executable file. Made absolute, because the
/// scenario processes and the VM guest do not share the caller's working directory.
pub fn executable(path: &Path) -> Result<PathBuf, SelectError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let ok = std::fs::metadata(&abs)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if ok {
        Ok(abs)
    } else {
        Err(SelectError::NotExecutable { path: abs })
    }
}

/// containerd finds its shims beside itself (the runtime layer puts that directory first on
/// PATH); every containerd since 1.2 ships `containerd-shim-runc-v2`.
pub fn check_shims(containerd: &Path) -> Result<(), SelectError> {
    let dir = containerd.parent().unwrap_or(Path::new("/"));
    if dir.join("containerd-shim-runc-v2").is_file() {
        Ok(())
    } else {
        Err(SelectError::NoShim {
            dir: dir.to_path_buf(),
        })
    }
}
