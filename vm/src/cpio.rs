//! A writer for the cpio "newc" format, the only archive format the kernel unpacks into its
//! initramfs. Hand-written on purpose: the format is a 110-byte ASCII header per entry plus
//! 4-byte padding, and the crates that write it either stream only regular files or pull in
//! more than the initramfs needs (device nodes and symlinks are what we use).

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// What an entry is; the mode's file-type bits come from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDev { major: u32, minor: u32 },
}

impl Kind {
    fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::CharDev { .. } => libc::S_IFCHR,
        }
    }
}

/// The fields of a newc header we set; owner, mtime and device are always 0 so that the
/// archive is reproducible.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    namesize: u32,
}

impl Header {
    fn encode(&self) -> String {
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            0,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            self.namesize,
            0,
        ];
        let mut out = String::with_capacity(110);
        out.push_str(MAGIC);
        for f in fields {
            out.push_str(&format!("{f:08x}"));
        }
        out
    }
}

/// Streams entries into `W`; `finish` writes the trailer. Inode numbers are assigned in
/// order, so every entry is its own inode (no hard links).
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// One entry. `path` is relative to the archive root (no leading `/`); for a symlink
    /// `data` is the link target.
    pub fn entry(&mut self, path: &str, kind: Kind, perm: u32, data: &[u8]) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        let (rdev_major, rdev_minor) = match kind {
            Kind::CharDev { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is too large for a newc archive"),
            )
        })?;
        let nlink = if kind == Kind::Dir { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino += 1;
        let header = Header {
            ino,
            mode: kind.type_bits() | (perm & 0o7777),
            nlink,
            size,
            rdev: (rdev_major, rdev_minor),
            namesize: path.len() as u32 + 1,
        }
        .encode();
        self.write(header.as_bytes())?;
        self.write(path.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, Kind::File, perm, data)
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, Kind::Dir, perm, &[])
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, Kind::Symlink, 0o777, target.as_bytes())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let header = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
            namesize: TRAILER.len() as u32 + 1,
        }
        .encode();
        self.write(header.as_bytes())?;
        self.write(TRAILER.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal reader for the test: (name, mode, data) per entry.
    fn read_all(mut buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            assert_eq!(&buf[..6], MAGIC.as_bytes());
            let mode = field(1);
            let size = field(6) as usize;
            let namesize = field(11) as usize;
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            let mut pos = 110 + namesize;
            pos += (4 - (offset + pos) % 4) % 4;
            let data = buf[pos..pos + size].to_vec();
            pos += size;
            pos += (4 - (offset + pos) % 4) % 4;
            offset += pos;
            buf = &buf[pos..];
            if name == TRAILER {
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn round_trips_entries_with_alignment() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("/bin/x", 0o755, b"abcde").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.entry(
            "dev/console",
            Kind::CharDev { major: 5, minor: 1 },
            0o600,
            &[],
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_all(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "bin/x", "bin/sh", "dev/console"]);
        assert_eq!(entries[0].1, libc::S_IFDIR | 0o755);
        assert_eq!(entries[1].2, b"abcde");
        assert_eq!(entries[2].1 & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(entries[2].2, b"busybox");
        assert_eq!(entries[3].1, libc::S_IFCHR | 0o600);
    }

    #[test]
    fn busybox_cpio_lists_what_we_wrote() {
        // The kernel's unpacker and busybox's share the format rules; busybox is the
        // independent check available on the host.
        let Some(busybox) = faultline_sys::path::find_on_path("busybox") else {
            eprintln!("skipped: busybox not installed (apt-get install busybox-static)");
            return;
        };
        let mut w = CpioWriter::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/odd-length-name", 0o644, b"x").unwrap();
        w.symlink("etc/link", "odd-length-name").unwrap();
        let bytes = w.finish().unwrap();
        let mut child = std::process::Command::new(busybox)
            .args(["cpio", "-t"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            listed.lines().collect::<Vec<_>>(),
            ["etc", "etc/odd-length-name", "etc/link"]
        );
    }
}
