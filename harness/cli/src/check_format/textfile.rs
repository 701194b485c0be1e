//! `check --textfile DIR`: the metrics written for node_exporter's textfile collector, which
//! reads every `*.prom` file in its directory at each scrape. A file written in place can be
//! read half-written (node_exporter's documentation says to write a temporary file and move
//! it into place), and a reader of a file being rewritten in place is the same race as
//! ETXTBSY's copier: so the new content goes to a temporary file in the same directory (one
//! file system, so rename(2) is atomic), is fsynced, and is renamed over the old one; the
//! directory is fsynced so the rename survives a crash.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The file node_exporter's textfile collector picks up.
pub const NAME: &str = "faultline.prom";

/// Writes `content` to `dir/name` atomically: readers see the old file or the new one whole.
pub fn write(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    // Not `*.prom`: the collector must not read the temporary file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(content)?;
        // The collector may run as another user (Debian's runs as `prometheus`).
        f.set_permissions(Permissions::from_mode(0o644))?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn replaces_the_file_by_rename_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), NAME, b"a 1\n").unwrap();
        let before = std::fs::metadata(dir.path().join(NAME)).unwrap().ino();
        // A reader that opened the old file keeps reading the old content, whole.
        let mut held = File::open(dir.path().join(NAME)).unwrap();
        write(dir.path(), NAME, b"a 2\n").unwrap();
        let after = std::fs::metadata(dir.path().join(NAME)).unwrap();
        assert_ne!(before, after.ino(), "rewritten in place, not renamed over");
        assert_eq!(after.mode() & 0o777, 0o644);
        let mut old = String::new();
        std::io::Read::read_to_string(&mut held, &mut old).unwrap();
        assert_eq!(old, "a 1\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NAME)).unwrap(),
            "a 2\n"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [NAME], "{names:?}");
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The target name is a non-empty directory: rename(2) fails.
        std::fs::create_dir_all(dir.path().join(NAME).join("x")).unwrap();
        assert!(write(dir.path(), NAME, b"a 1\n").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
