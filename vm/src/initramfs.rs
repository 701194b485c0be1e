//! The guest's whole root file system: one uncompressed cpio archive the kernel unpacks into
//! its rootfs. Uncompressed on purpose: under TCG the guest would spend longer inflating a
//! gzip archive than qemu spends reading the bigger file.
//!
//! Contents: busybox and its applets, the faultline binary (whatever executable is running
//! on the host: the `faultline` CLI or the scenarios' test binary) with its shared
//! libraries, the host binaries scenarios require (with libraries, found with `ldd`: see
//! [`faultline_sys::executable`]), the configuration files those daemons read, the kernel
//! modules in load order, and the request telling the guest what to run.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use faultline_sys::executable::{copy_running_executable, shared_libraries, ExecutableError};

use crate::cpio::{CpioWriter, Kind};
use crate::modules::Module;

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("failed to read {path} for the initramfs")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Executable(#[from] ExecutableError),
    #[error("failed to write the initramfs {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("busybox is not installed on the host (apt-get install busybox-static)")]
    NoBusybox,
}

/// Where the guest finds things the builder put there.
pub const GUEST_BINARY: &str = "/faultline";
pub const MODULE_DIR: &str = "/lib/modules/faultline";
pub const MODULE_ORDER: &str = "/lib/modules/faultline/order";
pub const REQUEST: &str = "/etc/faultline/request.json";

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, perm: u32 },
    Symlink(String),
    CharDev(u32, u32),
}

/// An initramfs being assembled: guest path -> entry. Parents are created on demand and the
/// archive is written in path order, so every directory precedes its contents.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn new() -> Initramfs {
        let mut fs = Initramfs::default();
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run",
            "root", "var/tmp", "mnt",
        ] {
            fs.dir(d);
        }
        // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
        fs.insert("dev/console", Entry::CharDev(5, 1));
        fs
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent {
            let s = p.to_string_lossy();
            if s.is_empty() {
                break;
            }
            self.entries.entry(s.into_owned()).or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    pub fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/');
        if !self.entries.contains_key(path) {
            self.insert(path, Entry::Dir);
        }
    }

    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        self.insert(path, Entry::File { data, perm });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_string()));
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// A host file at `guest` (symlinks followed: the guest gets the content).
    pub fn host_file(&mut self, host: &Path, guest: &str) -> Result<(), InitramfsError> {
        let data = std::fs::read(host).map_err(|source| InitramfsError::Read {
            path: host.to_path_buf(),
            source,
        })?;
        let perm = std::fs::metadata(host)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        self.file(guest, perm, data);
        Ok(())
    }

    /// An executable at the same path as on the host, with every shared library `ldd`
    /// names (and the dynamic loader) at their host paths.
    pub fn binary(&mut self, host: &Path) -> Result<(), InitramfsError> {
        self.binary_at(host, &host.to_string_lossy())
    }

    pub fn binary_at(&mut self, host: &Path, guest: &str) -> Result<(), InitramfsError> {
        self.host_file(host, guest)?;
        for lib in shared_libraries(host)? {
            let guest_lib = lib.to_string_lossy().into_owned();
            if !self.contains(&guest_lib) {
                self.host_file(&lib, &guest_lib)?;
            }
        }
        Ok(())
    }

    /// The running executable at `guest`, with its libraries, and without debug information
    /// when objcopy can remove it: every byte of the archive is copied and unpacked at each
    /// boot.
    pub fn running_executable(&mut self, guest: &str) -> Result<(), InitramfsError> {
        let tmp = tempfile::Builder::new()
            .prefix("faultline-guest-")
            .tempdir()
            .map_err(|source| InitramfsError::Read {
                path: std::env::temp_dir(),
                source,
            })?;
        let copy = tmp.path().join("faultline");
        copy_running_executable(&copy)?;
        self.binary_at(&copy, guest)
    }

    /// busybox at /bin/busybox (and linked from its host path) and a symlink for each of its
    /// applets that no real binary occupies.
    pub fn busybox(&mut self) -> Result<(), InitramfsError> {
        let host = faultline_sys::path::find_on_path("busybox").ok_or(InitramfsError::NoBusybox)?;
        self.binary_at(&host, "/bin/busybox")?;
        // Scenarios that copy busybox into a container root find it on PATH at its host
        // path: one file, not two.
        let host_path = host.to_string_lossy();
        if host_path != "/bin/busybox" {
            self.symlink(&host_path, "/bin/busybox");
        }
        let out = Command::new(&host)
            .arg("--list")
            .output()
            .map_err(|source| InitramfsError::Read {
                path: host.clone(),
                source,
            })?;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let path = format!("bin/{applet}");
            if applet != "busybox" && !self.contains(&path) {
                self.symlink(&path, "busybox");
            }
        }
        Ok(())
    }

    /// The modules, flat under [`MODULE_DIR`], and the order file the guest loads them by.
    pub fn modules(&mut self, modules: &[Module]) {
        let mut order = String::new();
        for m in modules {
            self.file(
                &format!("{MODULE_DIR}/{}.ko", m.name),
                0o644,
                m.image.clone(),
            );
            order.push_str(&m.name);
            order.push('\n');
        }
        self.file(MODULE_ORDER, 0o644, order.into_bytes());
    }

    /// Writes the archive to `path` and returns its size.
    pub fn write(&self, path: &Path) -> Result<u64, InitramfsError> {
        let err = |source| InitramfsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(path).map_err(err)?;
        let mut w = CpioWriter::new(BufWriter::new(file));
        for (p, e) in &self.entries {
            match e {
                Entry::Dir => w.dir(p, 0o755),
                Entry::File { data, perm } => w.file(p, *perm, data),
                Entry::Symlink(t) => w.symlink(p, t),
                Entry::CharDev(major, minor) => w.entry(
                    p,
                    Kind::CharDev {
                        major: *major,
                        minor: *minor,
                    },
                    0o600,
                    &[],
                ),
            }
            .map_err(err)?;
        }
        let mut out = w.finish().map_err(err)?;
        out.flush().map_err(err)?;
        let file = out.into_inner().map_err(|e| err(e.into_error()))?;
        Ok(file.metadata().map_err(err)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        let mut fs = Initramfs::new();
        fs.file("/var/lib/nfs/state", 0o644, vec![0; 4]);
        fs.symlink("/etc/mtab", "/proc/self/mounts");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("i.cpio");
        fs.write(&out).unwrap();
        let keys: Vec<&String> = fs.entries.keys().collect();
        let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap();
        assert!(pos("var") < pos("var/lib"));
        assert!(pos("var/lib/nfs") < pos("var/lib/nfs/state"));
        assert!(fs.contains("/dev/console"));
    }
}
