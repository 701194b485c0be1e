//! A small ext4 file system in a sparse image file: `mkfs.ext4` (e2fsprogs) with the options a
//! scenario needs, attached to a [`LoopDevice`] and mounted through the [`Mount`] guard in the
//! caller's (private) mount namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mount::MsFlags;

use crate::guard::loop_device::{LoopDevice, LoopError, LoopOptions};
use crate::guard::mount::{Mount, MountError};
use faultline_sys::process::run_bounded;

#[derive(Debug, thiserror::Error)]
pub enum Ext4ImageError {
    #[error("failed to create the image file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to run mkfs.ext4 (from e2fsprogs)")]
    Spawn(#[source] std::io::Error),
    #[error("failed to make the file system: `{command}` {outcome}")]
    Mkfs { command: String, outcome: String },
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// What `mkfs.ext4` gets. Features are passed as `-O` items (`large_dir`, `^large_dir`,
/// `^has_journal`), extended options as `-E` items (`hash_seed=UUID`).
#[derive(Debug, Clone)]
pub struct Ext4Image {
    size_bytes: u64,
    block_size: Option<u32>,
    inodes: Option<u64>,
    inode_size: Option<u32>,
    reserved_percent: Option<u32>,
    features: Vec<String>,
    extended: Vec<String>,
    mkfs_limit: Duration,
}

impl Ext4Image {
    pub fn new(size_bytes: u64) -> Ext4Image {
        Ext4Image {
            size_bytes,
            block_size: None,
            inodes: None,
            inode_size: None,
            reserved_percent: None,
            features: Vec::new(),
            extended: Vec::new(),
            mkfs_limit: Duration::from_secs(60),
        }
    }

    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// `-N`: the inode count, sized to the workload.
    pub fn inodes(mut self, count: u64) -> Self {
        self.inodes = Some(count);
        self
    }

    pub fn inode_size(mut self, bytes: u32) -> Self {
        self.inode_size = Some(bytes);
        self
    }

    /// `-m`: blocks reserved for root, in percent.
    pub fn reserved_percent(mut self, percent: u32) -> Self {
        self.reserved_percent = Some(percent);
        self
    }

    pub fn feature(mut self, feature: &str) -> Self {
        self.features.push(feature.to_string());
        self
    }

    pub fn extended(mut self, option: &str) -> Self {
        self.extended.push(option.to_string());
        self
    }

    /// The mkfs.ext4 arguments for an image at `path`.
    pub fn mkfs_args(&self, path: &Path) -> Vec<String> {
        let mut args = vec!["-q".to_string(), "-F".to_string()];
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_string());
            args.push(value);
        };
        if let Some(b) = self.block_size {
            push("-b", b.to_string());
        }
        if let Some(n) = self.inodes {
            push("-N", n.to_string());
        }
        if let Some(i) = self.inode_size {
            push("-I", i.to_string());
        }
        if let Some(m) = self.reserved_percent {
            push("-m", m.to_string());
        }
        if !self.features.is_empty() {
            push("-O", self.features.join(","));
        }
        if !self.extended.is_empty() {
            push("-E", self.extended.join(","));
        }
        args.push(path.display().to_string());
        args
    }

    /// Creates the sparse image at `path` and makes the file system in it.
    pub fn create(&self, path: &Path) -> Result<PathBuf, Ext4ImageError> {
        let create_err = |source| Ext4ImageError::Create {
            path: path.to_path_buf(),
            source,
        };
        File::create(path)
            .and_then(|f| f.set_len(self.size_bytes))
            .map_err(create_err)?;
        let args = self.mkfs_args(path);
        let command = format!("mkfs.ext4 {}", args.join(" "));
        let mut cmd = Command::new(
            faultline_sys::path::find_on_path("mkfs.ext4").unwrap_or_else(|| "mkfs.ext4".into()),
        );
        cmd.args(&args).stdin(Stdio::null());
        let output =
            run_bounded("mkfs.ext4", &mut cmd, self.mkfs_limit).map_err(Ext4ImageError::Spawn)?;
        match output {
            Some(o) if o.status.success() => Ok(path.to_path_buf()),
            Some(o) => Err(Ext4ImageError::Mkfs {
                command,
                outcome: format!(
                    "exited with {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            }),
            None => Err(Ext4ImageError::Mkfs {
                command,
                outcome: format!("did not finish within {:?}", self.mkfs_limit),
            }),
        }
    }
}

/// An ext4 image attached to a loop device and mounted. Fields drop in order: the mount
/// goes first, then the loop device it was holding open.
#[derive(Debug)]
pub struct MountedExt4 {
    mount: Mount,
    device: LoopDevice,
}

impl MountedExt4 {
    /// Attaches `image` (autoclear) and mounts it on `target` with `data` mount options.
    pub fn mount(image: &Path, target: &Path, data: Option<&str>) -> Result<Self, Ext4ImageError> {
        let device = LoopDevice::attach(image, LoopOptions::default())?;
        let mount = Mount::new(
            Some(device.path()),
            target,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data,
        )?;
        Ok(MountedExt4 { mount, device })
    }

    pub fn target(&self) -> &Path {
        self.mount.target()
    }

    pub fn device(&self) -> &LoopDevice {
        &self.device
    }

    /// Unmounts, then detaches; the first error wins, both are attempted.
    pub fn teardown(&mut self) -> Result<(), Ext4ImageError> {
        let m = self.mount.teardown();
        let d = self.device.teardown();
        m?;
        d?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkfs_arguments() {
        let img = Ext4Image::new(1 << 25)
            .block_size(1024)
            .inodes(100)
            .feature("^large_dir")
            .feature("^has_journal")
            .extended("hash_seed=00000000-0000-0000-0000-000000000001");
        assert_eq!(
            img.mkfs_args(Path::new("/x/img")).join(" "),
            "-q -F -b 1024 -N 100 -O ^large_dir,^has_journal -E hash_seed=00000000-0000-0000-0000-000000000001 /x/img"
        );
    }
}
