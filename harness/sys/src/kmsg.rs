//! The kernel log through `/dev/kmsg`: a cursor opened at the end of the log, a marker written
//! per scenario, and the records that follow it. Hand-rolled because no well-kept crate reads
//! /dev/kmsg's record format (`pri,seq,usec,flags;text` + continuation lines) incrementally.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgRecord {
    pub priority: u8,
    pub facility: u32,
    pub seq: u64,
    /// Microseconds since boot.
    pub usec: u64,
    pub message: String,
}

impl KmsgRecord {
    /// Parse one `/dev/kmsg` record: `pri,seq,usec,flags[,...];message\n[ KEY=VALUE\n]...`.
    pub fn parse(raw: &str) -> Option<KmsgRecord> {
        let (header, rest) = raw.split_once(';')?;
        let mut fields = header.split(',');
        let pri: u32 = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let usec = fields.next()?.parse().ok()?;
        let message = rest.lines().next().unwrap_or("");
        Some(KmsgRecord {
            priority: (pri & 7) as u8,
            facility: pri >> 3,
            seq,
            usec,
            message: unescape_kmsg(message),
        })
    }

    /// Seconds since boot as `dmesg` prints them, without its padding: `12.345678`.
    pub fn timestamp(&self) -> String {
        format!("{}.{:06}", self.usec / 1_000_000, self.usec % 1_000_000)
    }

    /// The line as `dmesg` prints it: `[   12.345678] message` (seconds padded to 5 places).
    pub fn to_dmesg_line(&self) -> String {
        format!("[{:>12}] {}", self.timestamp(), self.message)
    }
}

/// /dev/kmsg escapes non-printable bytes as `\xNN`.
fn unescape_kmsg(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // On bytes, not on the str: a line from a capture file may put a multi-byte
        // character right after `\x`, where a str slice would not fall on a char boundary.
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            if let Some(b) = bytes.get(i + 2..i + 4).and_then(hex_byte) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Two ASCII hex digits as the byte they spell.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u8::from_str_radix(text, 16).ok()
}

/// Kernel log lines that mean the kernel itself went wrong, whatever the scenario expected:
/// xfstests fails a test that leaves one of these behind, and so do we.
pub fn alerts(records: &[KmsgRecord]) -> Vec<&KmsgRecord> {
    const PATTERNS: &[&str] = &[
        "BUG:",
        "Oops",
        "WARNING: CPU:",
        "general protection fault",
        "Kernel panic",
        "UBSAN:",
        "KASAN:",
        "list_add corruption",
        "list_del corruption",
        "kernel BUG at",
    ];
    records
        .iter()
        .filter(|r| PATTERNS.iter().any(|p| r.message.contains(p)))
        .collect()
}

/// Reads the kernel log from the moment it was opened, starting after a marker it wrote.
pub struct KmsgCursor {
    file: File,
    marker: String,
    seen_marker: bool,
    records: Vec<KmsgRecord>,
}

impl KmsgCursor {
    /// Opens /dev/kmsg at its end and writes `faultline: <label> begin <nonce>` into the log.
    pub fn open_with_marker(label: &str) -> io::Result<KmsgCursor> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(SeekFrom::End(0))?;
        let marker = format!(
            "faultline: {label} begin {}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let seen_marker = match OpenOptions::new().write(true).open("/dev/kmsg") {
            Ok(mut w) => w.write_all(format!("{marker}\n").as_bytes()).is_err(),
            // Without write access the cursor still starts at the end of the log.
            Err(_) => true,
        };
        Ok(KmsgCursor {
            file,
            marker,
            seen_marker,
            records: Vec::new(),
        })
    }

    /// Opens /dev/kmsg at its oldest record still in the ring buffer, with no marker: every
    /// record counts.
    pub fn from_start() -> io::Result<KmsgCursor> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/kmsg")?;
        Ok(KmsgCursor {
            file,
            marker: String::new(),
            seen_marker: true,
            records: Vec::new(),
        })
    }

    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Every record since the marker, reading whatever arrived since the last call (the
    /// cursor keeps them: a scenario reads its records more than once).
    pub fn read_new(&mut self) -> io::Result<Vec<KmsgRecord>> {
        let mut new = Vec::new();
        self.for_each_new(|rec| new.push(rec))?;
        self.records.extend(new);
        Ok(self.records.clone())
    }

    /// Hands `f` each record since the marker that arrived since the last call, keeping none:
    /// memory stays flat however long the log is.
    pub fn for_each_new(&mut self, mut f: impl FnMut(KmsgRecord)) -> io::Result<()> {
        // Each read(2) of /dev/kmsg returns exactly one record; the kernel refuses (EINVAL)
        // a buffer too small for it (Documentation/ABI/testing/dev-kmsg), and it formats a
        // record into at most CONSOLE_EXT_LOG_MAX (8 KiB) bytes (kernel/printk/printk.c).
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let raw = String::from_utf8_lossy(&buf[..n]);
                    let Some(rec) = KmsgRecord::parse(&raw) else {
                        continue;
                    };
                    if !self.seen_marker {
                        if rec.message.contains(&self.marker) {
                            self.seen_marker = true;
                        }
                        continue;
                    }
                    f(rec);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // EPIPE: records were overwritten before we read them; the next read resumes.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Now, on the clock /dev/kmsg stamps its records with: time since boot, as CLOCK_MONOTONIC
/// counts it (printk's local_clock(); journald files these stamps as the record's
/// `_SOURCE_MONOTONIC_TIMESTAMP`, systemd src/journal/journald-kmsg.c).
pub fn now_since_boot() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(std::time::Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_records() {
        // Captured from /dev/kmsg on 6.18.
        let raw = "4,1842,1234567890,-;EXT4-fs warning (device loop0): ext4_dx_add_entry:2596: Directory (ino: 2) index full, reach max htree level :2\n SUBSYSTEM=block\n DEVICE=b7:0\n";
        let rec = KmsgRecord::parse(raw).unwrap();
        assert_eq!(rec.priority, 4);
        assert_eq!(rec.facility, 0);
        assert_eq!(rec.seq, 1842);
        assert_eq!(rec.usec, 1_234_567_890);
        assert!(rec.message.starts_with("EXT4-fs warning (device loop0)"));
        assert!(!rec.message.contains("SUBSYSTEM"));
        assert_eq!(&rec.to_dmesg_line()[..14], "[ 1234.567890]");
        assert_eq!(rec.timestamp(), "1234.567890");
        let early = KmsgRecord::parse("6,1,5,-;x").unwrap();
        assert_eq!(early.to_dmesg_line(), "[    0.000005] x");
        let late = KmsgRecord::parse("6,1,123456789000001,-;x").unwrap();
        assert_eq!(late.to_dmesg_line(), "[123456789.000001] x");

        let user = KmsgRecord::parse("12,99,5,-;faultline: x begin 1\n").unwrap();
        assert_eq!((user.facility, user.priority), (1, 4));
        assert!(KmsgRecord::parse("no header").is_none());
    }

    #[test]
    fn alerts_pick_kernel_bugs_not_filesystem_warnings() {
        let recs: Vec<KmsgRecord> = [
            "4,1,1,-;EXT4-fs warning (device loop0): ext4_dx_add_entry:2596: Directory (ino: 2) index full, reach max htree level :2",
            "4,2,2,-;WARNING: CPU: 1 PID: 337 at fs/namespace.c:1234 umount_tree+0x1/0x2",
            "1,3,3,-;BUG: kernel NULL pointer dereference, address: 0000000000000008",
        ]
        .iter()
        .map(|r| KmsgRecord::parse(r).unwrap())
        .collect();
        let a = alerts(&recs);
        assert_eq!(a.len(), 2);
        assert!(a[0].message.starts_with("WARNING: CPU:"));
    }

    #[test]
    fn streams_the_live_log_from_its_start() {
        // Needs read access to /dev/kmsg (root or CAP_SYSLOG); the tests run as root.
        let mut cursor = KmsgCursor::from_start().expect("open /dev/kmsg");
        let mut seqs = Vec::new();
        cursor.for_each_new(|r| seqs.push(r.seq)).unwrap();
        assert!(!seqs.is_empty(), "the kernel log is never empty after boot");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "records come in order"
        );
        let last = seqs.last().copied().unwrap();
        let mut again = 0;
        cursor
            .for_each_new(|r| again += usize::from(r.seq <= last))
            .unwrap();
        assert_eq!(again, 0, "a second call returns only what arrived since");
        assert!(now_since_boot().as_secs() > 0);
    }

    #[test]
    fn unescapes_hex() {
        assert_eq!(unescape_kmsg("a\\x09b"), "a\tb");
        assert_eq!(unescape_kmsg("plain"), "plain");
        // A capture file's line may put any character after `\x`: kept as it is, no panic.
        assert_eq!(unescape_kmsg("a\\x€b"), "a\\x€b");
        assert_eq!(unescape_kmsg("a\\x+fb"), "a\\x+fb");
        assert_eq!(unescape_kmsg("end\\x4"), "end\\x4");
    }
}
