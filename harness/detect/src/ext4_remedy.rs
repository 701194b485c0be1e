//! The fix for a full ext4 htree index, as both ext4 detectors tell it: spread the files,
//! or enable `large_dir` (Linux 4.13, commit e08ac99fa2a2 "ext4: add largedir feature";
//! e2fsprogs 1.44), and rebuild the index offline since it never shrinks (`e2fsck -D`).

use faultline_sys::shell;

/// `target` is what tune2fs/e2fsck should act on (`/dev/md1`, `UUID=...`); `None` when it is
/// not known here, and the commands then say so instead of carrying an empty word.
pub fn fix(target: Option<&str>, large_dir: bool) -> String {
    let command = |words: &[&str]| match target {
        Some(t) => format!("`{}`", shell::join(words.iter().copied().chain([t]))),
        None => format!(
            "`{} DEVICE` (the file system's device; not found under /dev here)",
            shell::join(words.iter().copied())
        ),
    };
    let rebuild = command(&["e2fsck", "-fD"]);
    if large_dir {
        format!("spread the files over subdirectories; after deleting files, rebuild the index offline, unmounted, with {rebuild}")
    } else {
        format!(
            "spread the files over subdirectories, or enable large_dir ({}; needs Linux >= 4.13 and e2fsprogs >= 1.44, and older kernels and boot loaders can no longer read the file system); deleting files does not shrink the index: rebuild it offline, unmounted, with {rebuild}",
            command(&["tune2fs", "-O", "large_dir"])
        )
    }
}
