//! The kernel log as detectors read it: the live ring buffer (`/dev/kmsg`, from its oldest
//! record), a saved capture in any of the formats people paste from a node (`dmesg`,
//! `dmesg -T`, `dmesg -x`, `dmesg --time-format iso`, `journalctl -k` in its short, precise
//! and iso forms, raw `/dev/kmsg` records), or records a scenario collected since its marker.
//!
//! Hand-written: no maintained crate parses these capture formats; `rmesg` reads only the live
//! buffer. Detectors match on the message text, so a prefix this parser does not know only
//! costs the timestamp, never the finding.

use std::io;
use std::path::Path;

use crate::{CheckInput, DetectError};
use faultline_sys::kmsg::{KmsgCursor, KmsgRecord};

/// One kernel message with the time it carried in its source, as written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `420.365809` (seconds since boot), `Sun Nov 22 06:24:01 2026`, `Nov 22 06:24:01`, ...
    pub when: Option<String>,
    pub message: String,
}

/// The kernel log named by `input`: the capture file if given, else live /dev/kmsg.
pub fn load(input: &CheckInput) -> Result<Vec<LogLine>, DetectError> {
    match &input.kmsg_file {
        Some(path) => read_capture(path),
        None => read_live().map_err(|source| DetectError::Read {
            what: "/dev/kmsg (the kernel log; needs root or CAP_SYSLOG, or pass --kmsg-file)"
                .into(),
            source,
        }),
    }
}

pub fn read_capture(path: &Path) -> Result<Vec<LogLine>, DetectError> {
    let raw = std::fs::read(path).map_err(|source| DetectError::Read {
        what: path.display().to_string(),
        source,
    })?;
    Ok(parse_capture(&String::from_utf8_lossy(&raw)))
}

/// Every record still in the kernel's ring buffer.
pub fn read_live() -> io::Result<Vec<LogLine>> {
    Ok(from_records(&KmsgCursor::from_start()?.read_new()?))
}

pub fn from_record(rec: &KmsgRecord) -> LogLine {
    LogLine {
        when: Some(rec.timestamp()),
        message: rec.message.clone(),
    }
}

pub fn from_records(records: &[KmsgRecord]) -> Vec<LogLine> {
    records.iter().map(from_record).collect()
}

pub fn parse_capture(text: &str) -> Vec<LogLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // journalctl's "-- Boot 1a2b... --" and "-- No entries --" separators.
        .filter(|l| !(l.starts_with("-- ") && l.trim_end().ends_with("--")))
        .map(parse_line)
        .collect()
}

pub fn parse_line(line: &str) -> LogLine {
    let line = line.trim_end_matches(['\r', '\n']);
    // Raw /dev/kmsg record: `4,1842,1234567890,-;message`.
    if let Some(rec) = KmsgRecord::parse(line) {
        return from_record(&rec);
    }
    // `dmesg -x`: `kern  :warn  : [  420.365809] message`.
    let line = strip_facility_level(line);
    // `dmesg` and `dmesg -T`: a bracketed time.
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((when, msg)) = rest.split_once("] ") {
            return LogLine {
                when: Some(when.trim().to_string()),
                message: msg.to_string(),
            };
        }
    }
    // `journalctl -k`: `Nov 22 06:24:01 host kernel: message` (or an ISO time first).
    if let Some((head, msg)) = line.split_once(" kernel: ") {
        let mut words: Vec<&str> = head.split_whitespace().collect();
        words.pop(); // the host name
        if !words.is_empty() && looks_like_time(words[0]) {
            return LogLine {
                when: Some(words.join(" ")),
                message: msg.to_string(),
            };
        }
    }
    // `dmesg --time-format iso`: `2026-11-22T06:24:01,538677+00:00 message`.
    if let Some((first, msg)) = line.split_once(' ') {
        if first.len() >= 19 && first.as_bytes()[4] == b'-' && first.as_bytes()[10] == b'T' {
            return LogLine {
                when: Some(first.to_string()),
                message: msg.to_string(),
            };
        }
    }
    LogLine {
        when: None,
        message: line.to_string(),
    }
}

fn strip_facility_level(line: &str) -> &str {
    const FACILITIES: &[&str] = &[
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
        "local7",
    ];
    let mut parts = line.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(fac), Some(_level), Some(rest)) if FACILITIES.contains(&fac.trim()) => {
            rest.trim_start()
        }
        _ => line,
    }
}

fn looks_like_time(word: &str) -> bool {
    const MONTHS: &[&str] = &[
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.contains(&word) || word.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines below are copied from real output on this machine (kernel 6.18.44, util-linux 2.38).
    #[test]
    fn dmesg_formats() {
        let l = parse_line("[  641.538677] EXT4-fs (loop0): unmounting filesystem 316b6b15-b3a5-42fd-a28a-56596ddc5e42.");
        assert_eq!(l.when.as_deref(), Some("641.538677"));
        assert!(l.message.starts_with("EXT4-fs (loop0)"));

        let l = parse_line("[Sun Nov 22 06:24:01 2026] EXT4-fs warning (device loop0): ext4_dx_add_entry:2532: Large directory feature is not enabled on this filesystem");
        assert_eq!(l.when.as_deref(), Some("Sun Nov 22 06:24:01 2026"));
        assert!(l.message.starts_with("EXT4-fs warning (device loop0)"));

        let l = parse_line("kern  :info  : [  641.538677] EXT4-fs (loop0): unmounting filesystem 316b6b15-b3a5-42fd-a28a-56596ddc5e42.");
        assert_eq!(l.when.as_deref(), Some("641.538677"));
        assert!(l.message.starts_with("EXT4-fs (loop0)"));

        let l = parse_line("2026-11-22T06:24:01,538677+00:00 EXT4-fs (loop0): unmounting filesystem 316b6b15-b3a5-42fd-a28a-56596ddc5e42.");
        assert_eq!(l.when.as_deref(), Some("2026-11-22T06:24:01,538677+00:00"));
        assert!(l.message.starts_with("EXT4-fs (loop0)"));
    }

    #[test]
    fn journalctl_formats() {
        // journald started by hand in a private namespace (no systemd in this container).
        let l = parse_line("Nov 22 06:30:56 vm kernel: EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2");
        assert_eq!(l.when.as_deref(), Some("Nov 22 06:30:56"));
        assert!(l.message.starts_with("EXT4-fs warning (device loop0)"));
        let l = parse_line("Nov 22 06:30:56.284474 vm kernel: EXT4-fs warning (device loop0): ext4_dx_add_entry:2528: Directory (ino: 13) index full, reach max htree level :2");
        assert_eq!(l.when.as_deref(), Some("Nov 22 06:30:56.284474"));
        assert!(l.message.starts_with("EXT4-fs warning"));
        assert!(parse_capture("-- No entries --\n").is_empty());
    }

    #[test]
    fn unknown_prefix_keeps_the_message() {
        let l = parse_line("EXT4-fs warning (device md1): ext4_dx_add_entry:2380: Directory (ino: 211566352) index full, reach max htree level :2");
        assert_eq!(l.when, None);
        assert!(l.message.starts_with("EXT4-fs warning"));
    }

    #[test]
    fn raw_kmsg_records() {
        let l = parse_line("4,1842,641538677,-;EXT4-fs (loop0): mounted");
        assert_eq!(l.when.as_deref(), Some("641.538677"));
        assert_eq!(l.message, "EXT4-fs (loop0): mounted");
    }
}
