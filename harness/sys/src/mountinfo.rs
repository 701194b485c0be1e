//! `/proc/PID/mountinfo`, parsed into [`MountInfo`] records (format: proc(5), "mountinfo").
//!
//! Written by hand rather than taken from the `procfs` crate (0.18, `procfs-core`'s
//! `MountInfo::from_line`), which we evaluated first and found unfit for detectors that must
//! not misread a live node:
//! - it leaves the kernel's octal escapes in place (`\040`, `\011`, `\012`, `\134`), so a mount
//!   point with a space or a newline in its name is reported as a path that does not exist;
//! - it reads lines as UTF-8 (`BufRead::lines`), so one mount path with non-UTF-8 bytes makes
//!   the whole file fail to parse;
//! - it splits on runs of whitespace, so an empty mount source (`mount -t tmpfs "" dir`, shown
//!   as two spaces) shifts every later field;
//! - it drops optional fields it does not know and treats `//deleted` (the marker the kernel
//!   appends to the root of a mount whose source was unlinked) as part of the path.
//!
//! This parser works on bytes, splits on single spaces, unescapes every field, keeps unknown
//! optional fields, and separates the `//deleted` marker into [`MountInfo::root_deleted`].

use std::borrow::Cow;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse line {line_no} of mountinfo ({reason}): {line}")]
    Parse {
        line_no: usize,
        reason: &'static str,
        line: String,
    },
}

/// What the kernel appends to a mount's root when the dentry it was bound from has been
/// unlinked (`dentry_path()` in fs/d_path.c); a path can never contain `//` otherwise.
pub const DELETED_MARKER: &[u8] = b"//deleted";

/// One optional field (between the mount options and the ` - ` separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionalField {
    /// `shared:N`: the mount is in peer group N.
    Shared(u32),
    /// `master:N`: the mount is a slave of peer group N.
    Master(u32),
    /// `propagate_from:N`: receives propagation from peer group N (its master is not
    /// reachable from the reader's root).
    PropagateFrom(u32),
    /// `unbindable`.
    Unbindable,
    /// A field this parser does not know (future kernels), kept verbatim.
    Other(String),
}

/// One line of `/proc/PID/mountinfo`, every path unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique id of the mount (reused after unmount); what `statx(STATX_MNT_ID)` returns.
    pub mount_id: u64,
    /// The parent mount's id (self for the namespace's root mount).
    pub parent_id: u64,
    /// `st_dev` of files on this mount.
    pub major: u32,
    pub minor: u32,
    /// The directory (or file, for a file bind) of the filesystem that forms this mount's root,
    /// without the `//deleted` marker.
    pub root: PathBuf,
    /// The root was shown with `//deleted`: the bind's source was unlinked (or renamed over)
    /// after the mount was made.
    pub root_deleted: bool,
    /// Where it is mounted, relative to the reading process's root directory.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `nosuid`, `relatime`, ...).
    pub mount_options: Vec<String>,
    pub optional_fields: Vec<OptionalField>,
    /// File system type, with subtype when there is one (`fuse.sshfs`).
    pub fstype: String,
    /// Mount source (a device, `server:/export`, or whatever string the mounter passed; may be
    /// empty).
    pub source: OsString,
    /// Per-superblock options.
    pub super_options: Vec<String>,
}

impl MountInfo {
    /// Parses one line (without its trailing newline).
    pub fn parse_line(line: &[u8]) -> Result<MountInfo, &'static str> {
        // Fields are separated by exactly one space; escaped names never contain one, but an
        // empty source yields an empty field, so do not collapse runs of spaces.
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == b"-")
            .ok_or("no ' - ' separator")?;
        if sep < 6 {
            return Err("fewer than 6 fields before the separator");
        }
        if fields.len() < sep + 4 {
            return Err("fewer than 3 fields after the separator");
        }
        let mount_id = parse_num(fields[0]).ok_or("bad mount id")?;
        let parent_id = parse_num(fields[1]).ok_or("bad parent id")?;
        let (major, minor) = {
            let s = std::str::from_utf8(fields[2]).map_err(|_| "bad major:minor")?;
            let (ma, mi) = s.split_once(':').ok_or("bad major:minor")?;
            (
                ma.parse().map_err(|_| "bad major")?,
                mi.parse().map_err(|_| "bad minor")?,
            )
        };
        let raw_root = unescape(fields[3]);
        let (root, root_deleted) = match raw_root.strip_suffix(DELETED_MARKER) {
            Some(r) => (r.to_vec(), true),
            None => (raw_root, false),
        };
        let optional_fields = fields[6..sep]
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| parse_optional(&String::from_utf8_lossy(&unescape(f))))
            .collect();
        Ok(MountInfo {
            mount_id,
            parent_id,
            major,
            minor,
            root: PathBuf::from(OsString::from_vec(root)),
            root_deleted,
            mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
            mount_options: split_options(fields[5]),
            optional_fields,
            fstype: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
            source: OsString::from_vec(unescape(fields[sep + 2])),
            super_options: split_options(fields[sep + 3]),
        })
    }

    /// `major:minor`, as shown in the file.
    pub fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The root as the kernel showed it (with `//deleted` when unlinked), unescaped.
    pub fn root_as_shown(&self) -> String {
        let mut s = self.root.to_string_lossy().into_owned();
        if self.root_deleted {
            s.push_str("//deleted");
        }
        s
    }

    pub fn source_lossy(&self) -> Cow<'_, str> {
        self.source.to_string_lossy()
    }

    /// A per-mount option is set (`ro`, `nosuid`, ...).
    pub fn has_mount_option(&self, name: &str) -> bool {
        self.mount_options.iter().any(|o| o == name)
    }

    pub fn is_read_only(&self) -> bool {
        self.has_mount_option("ro")
    }

    /// The value of a per-superblock option: `Some("")` for a flag, `Some(v)` for `key=v`.
    pub fn super_option(&self, key: &str) -> Option<&str> {
        self.super_options
            .iter()
            .find_map(|o| match o.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if o == key => Some(""),
                _ => None,
            })
    }

    /// The peer group this mount shares propagation with, if any.
    pub fn shared_peer_group(&self) -> Option<u32> {
        self.optional_fields.iter().find_map(|f| match f {
            OptionalField::Shared(n) => Some(*n),
            _ => None,
        })
    }

    /// The peer group this mount is a slave of, if any.
    pub fn master_peer_group(&self) -> Option<u32> {
        self.optional_fields.iter().find_map(|f| match f {
            OptionalField::Master(n) => Some(*n),
            _ => None,
        })
    }

    /// A bind of part of a filesystem (a subdirectory or a single file) rather than its root.
    pub fn is_partial_bind(&self) -> bool {
        self.root != Path::new("/")
    }
}

/// Parses a whole mountinfo file.
pub fn parse(text: &[u8]) -> Result<Vec<MountInfo>, MountInfoError> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            MountInfo::parse_line(l).map_err(|reason| MountInfoError::Parse {
                line_no: i + 1,
                reason,
                line: String::from_utf8_lossy(l).into_owned(),
            })
        })
        .collect()
}

/// Reads and parses `<proc_root>/<pid>/mountinfo` (`self` when `pid` is `None`): the mounts of
/// that process's mount namespace, with mount points relative to that process's root.
pub fn read_mountinfo(
    proc_root: &Path,
    pid: Option<i32>,
) -> Result<Vec<MountInfo>, MountInfoError> {
    let path = match pid {
        Some(p) => proc_root.join(p.to_string()).join("mountinfo"),
        None => proc_root.join("self/mountinfo"),
    };
    let text = std::fs::read(&path).map_err(|source| MountInfoError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text)
}

/// Undoes the kernel's `mangle()`/`seq_escape()`: `\ooo` (three octal digits) is one byte.
/// The kernel escapes every backslash, so a backslash not followed by three octal digits
/// cannot occur; keep it literally rather than fail.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let digits = &field[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

fn parse_num(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn split_options(field: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(field)
        .split(',')
        .filter(|o| !o.is_empty())
        .map(|o| String::from_utf8_lossy(&unescape(o.as_bytes())).into_owned())
        .collect()
}

fn parse_optional(f: &str) -> OptionalField {
    let tagged = f
        .split_once(':')
        .and_then(|(tag, v)| Some((tag, v.parse::<u32>().ok()?)));
    match tagged {
        Some(("shared", n)) => OptionalField::Shared(n),
        Some(("master", n)) => OptionalField::Master(n),
        Some(("propagate_from", n)) => OptionalField::PropagateFrom(n),
        _ if f == "unbindable" => OptionalField::Unbindable,
        _ => OptionalField::Other(f.to_string()),
    }
}

#[cfg(test)]
#[path = "mountinfo_tests.rs"]
mod tests;
