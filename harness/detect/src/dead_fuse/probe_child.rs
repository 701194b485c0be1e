//! The probe process (`fuse-probe`): stats paths and reads fusectl on behalf of the detector,
//! so a stat that blocks forever blocks only this child.

use std::io::Write;
use std::path::Path;

/// `statx(path, STATX_TYPE, AT_STATX_FORCE_SYNC)`: forces a GETATTR to the daemon. It must
/// ask for the type: an empty mask is answered from the inode and succeeds on a dead mount.
fn statx_type_errno(path: &Path) -> Result<u32, i32> {
    faultline_sys::statx::statx(
        path,
        libc::AT_NO_AUTOMOUNT | libc::AT_STATX_FORCE_SYNC,
        libc::STATX_TYPE,
    )
    .map(|s| s.file_type())
    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

const FUSECTL_MAGIC: i64 = 0x6573_5543;
const FUSECTL_DIR: &str = "/sys/fs/fuse/connections";

/// Makes fusectl readable at its usual place in a private mount namespace of this (probe)
/// process, so the node's mount table is never touched.
fn private_fusectl() -> bool {
    let mounted = || {
        nix::sys::statfs::statfs(FUSECTL_DIR)
            .map(|s| s.filesystem_type().0 == FUSECTL_MAGIC)
            .unwrap_or(false)
    };
    if mounted() {
        return true;
    }
    use nix::mount::{mount, MsFlags};
    let ok = faultline_sys::mount_namespace::unshare_private().is_ok()
        && mount(
            Some("fusectl"),
            FUSECTL_DIR,
            Some("fusectl"),
            MsFlags::empty(),
            None::<&str>,
        )
        .is_ok();
    ok && mounted()
}

/// Entry point `fuse-probe ITEM...`: `conn:MINOR` prints `conn MINOR WAITING|-`, `path:P`
/// prints `path ok MODE` or `path err ERRNO`, one line each, in order, flushed.
pub fn probe_main(args: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let mut out = std::io::stdout().lock();
    let fusectl = args.iter().any(|a| a.as_bytes().starts_with(b"conn:")) && private_fusectl();
    for a in args {
        let a = a.as_bytes();
        if let Some(minor) = a.strip_prefix(b"conn:") {
            let minor = String::from_utf8_lossy(minor);
            let waiting = if fusectl {
                std::fs::read_to_string(format!("{FUSECTL_DIR}/{minor}/waiting"))
                    .ok()
                    .map(|s| s.trim().to_string())
            } else {
                None
            };
            let _ = writeln!(out, "conn {minor} {}", waiting.as_deref().unwrap_or("-"));
        } else if let Some(p) = a.strip_prefix(b"path:") {
            let _ = match statx_type_errno(Path::new(std::ffi::OsStr::from_bytes(p))) {
                Ok(mode) => writeln!(out, "path ok {mode:o}"),
                Err(e) => writeln!(out, "path err {e}"),
            };
        }
        let _ = out.flush();
    }
    0
}
