//! The scenario's stand-in for the node: a host bin dir with `cdc` v1 running, v2 in a vendor
//! dir, and the version marker that tells them apart.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::Context;
use faultline_sys::path::find_on_path;
use faultline_sys::{wait_until, ChildGroup};

use super::{NAME, NEW_VERSION, OLD_VERSION};

const MARKER: &[u8] = b"\0faultline-cdc-";

/// The host bin dir with `cdc` v1 running, and v2 waiting in the vendor dir.
pub(super) struct HostBin {
    pub(super) bin_dir: PathBuf,
    pub(super) target: PathBuf,
    pub(super) src: PathBuf,
    pub(super) old_dev: u64,
    pub(super) old_inode: u64,
    pub(super) running: ChildGroup,
}

impl HostBin {
    pub(super) fn build(ctx: &Context, variant: &str) -> anyhow::Result<HostBin> {
        let dir = ctx
            .variant_dir(variant)
            .context("failed to create the variant's directory")?;
        let bin_dir = dir.join("home/kubernetes/bin");
        let vendor = dir.join("vendor/default");
        for d in [&bin_dir, &vendor] {
            fs::create_dir_all(d).with_context(|| format!("failed to create {}", d.display()))?;
        }
        let sleep = find_on_path("sleep").context("sleep is not on PATH")?;
        let base =
            fs::read(&sleep).with_context(|| format!("failed to read {}", sleep.display()))?;
        let target = bin_dir.join(NAME);
        let src = vendor.join(NAME);
        write_version(&target, &base, OLD_VERSION)?;
        write_version(&src, &base, NEW_VERSION)?;
        let meta = fs::metadata(&target)?;

        let mut cmd = Command::new(&target);
        cmd.arg("3600").stdin(Stdio::null());
        let running = ChildGroup::spawn("cdc v1", &mut cmd)
            .with_context(|| format!("failed to start {}", target.display()))?;
        let exe = PathBuf::from(format!("/proc/{}/exe", running.pid()));
        wait_until(
            "cdc v1 to be executing",
            Duration::from_secs(10),
            || match fs::metadata(&exe) {
                Ok(m) if m.ino() == meta.ino() => Ok(()),
                Ok(m) => Err(format!("{} is inode {}", exe.display(), m.ino())),
                Err(e) => Err(format!("{}: {e}", exe.display())),
            },
        )?;
        Ok(HostBin {
            bin_dir,
            target,
            src,
            old_dev: meta.dev(),
            old_inode: meta.ino(),
            running,
        })
    }
}

fn write_version(path: &Path, base: &[u8], version: &str) -> anyhow::Result<()> {
    let mut bytes = base.to_vec();
    bytes.extend_from_slice(MARKER);
    bytes.extend_from_slice(version.as_bytes());
    bytes.push(b'\n');
    fs::write(path, &bytes).with_context(|| format!("failed to write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to chmod {}", path.display()))
}

/// The version marker appended to an ELF image (the loader ignores trailing bytes).
fn version_of(bytes: &[u8]) -> Option<String> {
    let at = bytes.windows(MARKER.len()).rposition(|w| w == MARKER)?;
    let rest = &bytes[at + MARKER.len()..];
    Some(String::from_utf8_lossy(rest).trim_end().to_string())
}

pub(super) fn read_version(path: &Path) -> Option<String> {
    fs::read(path).ok().and_then(|b| version_of(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_marker_is_read_back() {
        let mut bytes = b"\x7fELF...".to_vec();
        bytes.extend_from_slice(MARKER);
        bytes.extend_from_slice(b"v2-new\n");
        assert_eq!(version_of(&bytes).as_deref(), Some("v2-new"));
        assert_eq!(version_of(b"\x7fELF"), None);
    }
}
