//! A loop device attached to a backing file by the harness itself, through loop-control
//! ioctls: no `losetup` on the host. It is attached with `LO_FLAGS_AUTOCLEAR`, so the kernel
//! detaches it when its last user goes (our descriptor, the mount on it); a SIGKILL of the
//! scenario therefore leaves nothing behind once its mount namespace is torn down. `Drop`
//! detaches it if it is still attached to our backing file.
//!
//! Hand-written rather than through loopdev-3: that crate generates its bindings with bindgen
//! at build time (libclang on every CI host), attaches in two steps (LOOP_SET_FD, then
//! LOOP_SET_STATUS64, leaving a window without autoclear) and does not retry when another
//! process takes the device that LOOP_CTL_GET_FREE returned, which happens here because other
//! suites attach loop devices concurrently. LOOP_CONFIGURE (Linux 5.8) attaches and sets the
//! flags atomically; older kernels fall back to the two-step attach.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_sys::wait::wait_until;

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Attempts before giving up when other processes keep taking the free device we were given.
const ATTACH_ATTEMPTS: usize = 16;

/// `struct loop_info64` from <linux/loop.h> (not in the libc crate).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl Default for LoopInfo64 {
    fn default() -> Self {
        // SAFETY: the struct is plain integers and byte arrays; all-zero is the value the
        // kernel documents as "no offset, no limit, no flags".
        unsafe { std::mem::zeroed() }
    }
}

/// `struct loop_config` from <linux/loop.h>, the argument of LOOP_CONFIGURE.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_write_int_bad!(loop_set_fd, 0x4C00);
nix::ioctl_write_ptr_bad!(loop_set_status64, 0x4C04, LoopInfo64);
nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("failed to open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to get a free loop device from /dev/loop-control")]
    GetFree(#[source] nix::Error),
    #[error("failed to attach {backing} to {device}")]
    Attach {
        backing: PathBuf,
        device: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to attach {backing}: every free loop device was taken by another process ({ATTACH_ATTEMPTS} attempts)")]
    AllBusy { backing: PathBuf },
    #[error("failed to detach {device}")]
    Detach {
        device: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to see {device} detach: {source}")]
    StillAttached {
        device: PathBuf,
        #[source]
        source: faultline_sys::WaitError,
    },
}

/// Options for [`LoopDevice::attach`].
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    pub read_only: bool,
    /// Detach when the last user closes the device (default: on).
    pub autoclear: bool,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            read_only: false,
            autoclear: true,
        }
    }
}

#[derive(Debug)]
pub struct LoopDevice {
    /// Open descriptor on /dev/loopN; holding it keeps an autoclear device attached.
    file: Option<File>,
    path: PathBuf,
    number: u32,
    backing: PathBuf,
    backing_dev: u64,
    backing_ino: u64,
    detach_limit: Duration,
}

impl LoopDevice {
    /// Attaches `backing` to the first free loop device, with autoclear on by default.
    pub fn attach(backing: &Path, opts: LoopOptions) -> Result<LoopDevice, LoopError> {
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LoopError::Open { path, source }
        };
        let backing_file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(backing)
            .map_err(open_err(backing))?;
        let meta = backing_file.metadata().map_err(open_err(backing))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")
            .map_err(open_err(Path::new("/dev/loop-control")))?;

        let mut info = LoopInfo64::default();
        if opts.autoclear {
            info.lo_flags |= LO_FLAGS_AUTOCLEAR;
        }
        if opts.read_only {
            info.lo_flags |= LO_FLAGS_READ_ONLY;
        }
        // The name shows in `losetup -a`, which helps whoever hunts a leftover device.
        let name = backing.as_os_str().as_encoded_bytes();
        let tail = &name[name.len().saturating_sub(LO_NAME_SIZE - 1)..];
        info.lo_file_name[..tail.len()].copy_from_slice(tail);

        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
                .map_err(LoopError::GetFree)? as u32;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let dev = OpenOptions::new()
                .read(true)
                .write(!opts.read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(open_err(&path))?;
            match configure(&dev, &backing_file, &info) {
                Ok(()) => {
                    tracing::debug!(device = %path.display(), backing = %backing.display(), "attached loop device");
                    return Ok(LoopDevice {
                        file: Some(dev),
                        path,
                        number,
                        backing: backing.to_path_buf(),
                        backing_dev: meta.dev(),
                        backing_ino: meta.ino(),
                        detach_limit: Duration::from_secs(5),
                    });
                }
                // Another process attached this device between GET_FREE and our attach.
                Err(nix::Error::EBUSY) => continue,
                Err(source) => {
                    return Err(LoopError::Attach {
                        backing: backing.to_path_buf(),
                        device: path,
                        source,
                    })
                }
            }
        }
        Err(LoopError::AllBusy {
            backing: backing.to_path_buf(),
        })
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `loopN`: the name the kernel uses in its log (`EXT4-fs (loopN)`).
    pub fn name(&self) -> String {
        format!("loop{}", self.number)
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Whether the device is still attached to the file this guard attached.
    pub fn is_ours(&self) -> bool {
        match &self.file {
            Some(f) => {
                matches!(status(f), Ok(info) if info.lo_inode == self.backing_ino && info.lo_device == self.backing_dev)
            }
            None => false,
        }
    }

    /// Detaches now if the device is still ours, and waits (bounded) until the kernel has
    /// released it. With a mount still on it, the kernel defers the detach to the last close.
    pub fn teardown(&mut self) -> Result<(), LoopError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        if !matches!(status(&file), Ok(info) if info.lo_inode == self.backing_ino && info.lo_device == self.backing_dev)
        {
            tracing::debug!(device = %self.path.display(), "not detaching: no longer attached to our file");
            return Ok(());
        }
        // SAFETY: LOOP_CLR_FD takes no argument; `file` is an open loop device.
        match unsafe { loop_clr_fd(file.as_raw_fd()) } {
            // ENXIO: already detached.
            Ok(_) | Err(nix::Error::ENXIO) => {}
            Err(source) => {
                return Err(LoopError::Detach {
                    device: self.path.clone(),
                    source,
                })
            }
        }
        drop(file);
        let sysfs = PathBuf::from(format!("/sys/block/loop{}/loop/backing_file", self.number));
        wait_until(
            "the loop device to detach",
            self.detach_limit,
            || match std::fs::read_to_string(&sysfs) {
                Ok(b) if Path::new(b.trim()) == self.backing => Err(format!(
                    "{} still backed by {}",
                    self.path.display(),
                    b.trim()
                )),
                _ => Ok(()),
            },
        )
        .map_err(|source| LoopError::StillAttached {
            device: self.path.clone(),
            source,
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e}");
        }
    }
}

fn status(dev: &File) -> nix::Result<LoopInfo64> {
    let mut info = LoopInfo64::default();
    // SAFETY: LOOP_GET_STATUS64 fills a `struct loop_info64`, which `info` is.
    unsafe { loop_get_status64(dev.as_raw_fd(), &mut info) }?;
    Ok(info)
}

fn configure(dev: &File, backing: &File, info: &LoopInfo64) -> nix::Result<()> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: *info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is; both
    // descriptors are open for the duration of the call.
    match unsafe { loop_configure(dev.as_raw_fd(), &config) } {
        Ok(_) => Ok(()),
        // Before Linux 5.8: attach, then set the flags.
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOTTY) => {
            // SAFETY: LOOP_SET_FD takes the backing descriptor as its integer argument.
            unsafe { loop_set_fd(dev.as_raw_fd(), backing.as_raw_fd()) }?;
            // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`.
            if let Err(e) = unsafe { loop_set_status64(dev.as_raw_fd(), info) } {
                // SAFETY: as above; undo the half-done attach.
                let _ = unsafe { loop_clr_fd(dev.as_raw_fd()) };
                return Err(e);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_linux_loop_h() {
        // sizeof(struct loop_info64) == 232, sizeof(struct loop_config) == 304 on every arch.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn attach_and_detach_a_real_loop_device() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            panic!("cannot run here: needs root and /dev/loop-control");
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        let mut dev = LoopDevice::attach(&img, LoopOptions::default()).unwrap();
        assert!(dev.is_ours());
        let sysfs = format!("/sys/block/{}/loop/autoclear", dev.name());
        assert_eq!(std::fs::read_to_string(&sysfs).unwrap().trim(), "1");
        let backing = format!("/sys/block/{}/loop/backing_file", dev.name());
        assert_eq!(
            std::fs::read_to_string(&backing).unwrap().trim(),
            img.to_str().unwrap()
        );
        dev.teardown().unwrap();
        assert!(!dev.is_ours());
        // The device may already be someone else's; it must at least not be backed by our file.
        let now = std::fs::read_to_string(&backing).unwrap_or_default();
        assert_ne!(now.trim(), img.to_str().unwrap());
    }
}
