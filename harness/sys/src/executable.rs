//! Putting faultline into a root file system it did not come with (the VM's initramfs, the
//! faultline OCI image): a copy of the running executable without its debug information, and
//! the shared libraries a binary needs, as the dynamic loader resolves them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum ExecutableError {
    #[error("failed to copy the running executable {from} to {to}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run ldd on {path}: {reason}")]
    Ldd { path: PathBuf, reason: String },
}

/// Copies the running executable to `dest` (mode 0755), without debug information when
/// binutils' `objcopy` is there to remove it: a debug build of faultline is mostly DWARF,
/// which a root file system only carries around. Read through /proc/PID/exe, so a rebuild
/// of the file on disk meanwhile does not matter; a plain copy when objcopy fails.
pub fn copy_running_executable(dest: &Path) -> Result<(), ExecutableError> {
    let self_exe = Path::new("/proc/self/exe");
    let err = |from: &Path| {
        let (from, to) = (from.to_path_buf(), dest.to_path_buf());
        move |source| ExecutableError::Copy { from, to, source }
    };
    // objcopy's own /proc/self would be objcopy: name this process, provided /proc shows it
    // under that pid (it would not in a pid namespace with the host's /proc).
    let exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    let same_file = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    let stripped = same_file(&exe, self_exe)
        && Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&exe)
            .arg(dest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !stripped {
        let _ = std::fs::remove_file(dest);
        std::fs::copy(self_exe, dest).map_err(err(self_exe))?;
    }
    // Whatever mode objcopy gave its output, the copy must be executable.
    std::fs::set_permissions(dest, PermissionsExt::from_mode(0o755)).map_err(err(self_exe))
}

/// The shared libraries `binary` loads, the dynamic loader included, as absolute paths from
/// `ldd`'s output; none for a static binary. ldd runs the real dynamic loader, so it
/// resolves exactly what a loader given the same files will look for (no ELF/ld.so.conf
/// reimplementation needed).
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ExecutableError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ExecutableError::Ldd {
            path: binary.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Static binaries: "not a dynamic executable" (exit 1) or "statically linked".
    if !out.status.success() || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&text))
}

pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_ldd_output() {
        // `ldd /usr/sbin/rpc.statd` on Debian 12.
        let text = "\tlinux-vdso.so.1 (0x00007ffd6b3f2000)\n\
            \tlibwrap.so.0 => /lib/x86_64-linux-gnu/libwrap.so.0 (0x00007f258addf000)\n\
            \tlibtirpc.so.3 => /lib/x86_64-linux-gnu/libtirpc.so.3 (0x00007f258ada5000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f258abc3000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f258ae20000)\n";
        let libs = parse_ldd(text);
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libwrap.so.0"),
                PathBuf::from("/lib/x86_64-linux-gnu/libtirpc.so.3"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn the_running_executable_is_copied_runnable_with_its_loader() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("exe");
        copy_running_executable(&copy).unwrap();
        let meta = std::fs::metadata(&copy).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert!(meta.len() > 0);
        // This test binary is dynamically linked (Rust's default on glibc): libc and the
        // loader are among its libraries.
        let libs = shared_libraries(&copy).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }
}
