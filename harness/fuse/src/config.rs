//! How to start a FUSE daemon, and the command line that carries it to the daemon process:
//! [`FuseConfig::args`] writes it in the client, [`parse_args`] reads it back in the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to start a daemon. `FuseConfig::new(backing, mount_point)` then the builder methods.
#[derive(Debug, Clone)]
pub struct FuseConfig {
    pub backing: PathBuf,
    pub mount_point: PathBuf,
    /// The mount's source in mountinfo (ceph-fuse shows `ceph-fuse`).
    pub fsname: String,
    /// The `fuse.<subtype>` file system type.
    pub subtype: String,
    /// Mount even if the mount point is not empty (fusermount's `nonempty`; the kernel itself
    /// lets root mount anywhere, so without it the daemon refuses the way fusermount did).
    pub nonempty: bool,
    /// Entry and attribute cache lifetime handed to the kernel.
    pub ttl: Duration,
    pub read_latency: Duration,
    pub write_latency: Duration,
    /// Request-serving threads (each with its own cloned /dev/fuse descriptor).
    pub threads: usize,
    pub ready_timeout: Duration,
}

impl FuseConfig {
    pub fn new(backing: &Path, mount_point: &Path) -> FuseConfig {
        FuseConfig {
            backing: backing.to_path_buf(),
            mount_point: mount_point.to_path_buf(),
            fsname: "faultline".into(),
            subtype: "faultline".into(),
            nonempty: false,
            ttl: Duration::from_secs(1),
            read_latency: Duration::ZERO,
            write_latency: Duration::ZERO,
            threads: 4,
            ready_timeout: Duration::from_secs(10),
        }
    }

    pub fn fsname(mut self, name: &str) -> Self {
        self.fsname = name.into();
        self
    }

    pub fn subtype(mut self, name: &str) -> Self {
        self.subtype = name.into();
        self
    }

    pub fn nonempty(mut self, yes: bool) -> Self {
        self.nonempty = yes;
        self
    }

    pub(crate) fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--backing".into(),
            self.backing.display().to_string(),
            "--mount".into(),
            self.mount_point.display().to_string(),
            "--fsname".into(),
            self.fsname.clone(),
            "--subtype".into(),
            self.subtype.clone(),
            "--ttl-ms".into(),
            self.ttl.as_millis().to_string(),
            "--read-latency-us".into(),
            self.read_latency.as_micros().to_string(),
            "--write-latency-us".into(),
            self.write_latency.as_micros().to_string(),
            "--threads".into(),
            self.threads.to_string(),
        ];
        if self.nonempty {
            a.push("--nonempty".into());
        }
        a
    }
}

/// The daemon's arguments are the parent's `FuseConfig`, with its defaults for what was not given.
pub(crate) fn parse_args(args: &[String]) -> Result<FuseConfig, String> {
    let mut a = FuseConfig::new(Path::new(""), Path::new(""));
    let mut it = args.iter();
    let num = |v: Option<&String>, k: &str| -> Result<u64, String> {
        v.ok_or(format!("{k} needs a value"))?
            .parse()
            .map_err(|e| format!("{k}: {e}"))
    };
    while let Some(k) = it.next() {
        match k.as_str() {
            "--backing" => a.backing = it.next().ok_or("--backing needs a value")?.into(),
            "--mount" => a.mount_point = it.next().ok_or("--mount needs a value")?.into(),
            "--fsname" => a.fsname = it.next().ok_or("--fsname needs a value")?.clone(),
            "--subtype" => a.subtype = it.next().ok_or("--subtype needs a value")?.clone(),
            "--nonempty" => a.nonempty = true,
            "--ttl-ms" => a.ttl = Duration::from_millis(num(it.next(), k)?),
            "--read-latency-us" => a.read_latency = Duration::from_micros(num(it.next(), k)?),
            "--write-latency-us" => a.write_latency = Duration::from_micros(num(it.next(), k)?),
            "--threads" => a.threads = num(it.next(), k)?.max(1) as usize,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.backing.as_os_str().is_empty() || a.mount_point.as_os_str().is_empty() {
        return Err("--backing and --mount are required".into());
    }
    Ok(a)
}
