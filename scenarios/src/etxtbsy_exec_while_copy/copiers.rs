//! The built-in copiers: the agent's in-place copy, the fix (temp file plus rename), and
//! unlink-then-copy.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What core-dump-handler's agent does.
pub(super) fn copy_naive(src: &Path, dst: &Path) -> io::Result<()> {
    fs::copy(src, dst).map(|_| ())
}

/// The fix: a new inode written next to the target, made durable, then renamed over it.
/// `between` runs after the temp file is complete and before the rename.
pub(super) fn copy_atomic(src: &Path, dst: &Path, between: impl FnOnce()) -> io::Result<()> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        io::copy(&mut File::open(src)?, &mut out)?;
        out.sync_all()?;
        drop(out);
        between();
        fs::rename(&tmp, dst)?;
        // The rename itself is durable once the directory is.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The "lazybones way" of the public report this scenario follows ("the mystery of pod
/// crashloops and etxtbsy"). `between` runs while the path is missing.
pub(super) fn copy_unlink_first(src: &Path, dst: &Path, between: impl FnOnce()) -> io::Result<()> {
    match fs::remove_file(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    between();
    fs::copy(src, dst).map(|_| ())
}
