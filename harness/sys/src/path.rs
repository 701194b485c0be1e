//! Finding programs the way a shell would, plus the sbin directories root's PATH may lack.

use std::path::{Path, PathBuf};

/// `name` resolved on PATH (or `name` itself when it holds a `/` and exists).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| name.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
