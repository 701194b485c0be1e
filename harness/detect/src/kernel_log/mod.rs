//! The kernel log as detectors read it: the live ring buffer (`/dev/kmsg`, from its oldest
//! record), a saved capture in any of the formats people paste from a node (`dmesg`,
//! `dmesg -T`, `dmesg -x`, `dmesg --time-format iso`, `journalctl -k` in its short, precise
//! and iso forms, raw `/dev/kmsg` records), or records a scenario collected since its marker.
//!
//! Hand-written: no maintained crate parses these capture formats; `rmesg` reads only the live
//! buffer. Detectors match on the message text, so a prefix this parser does not know only
//! costs the timestamp, never the finding.
//!
//! Logs are read as streams ([`for_each`]): a 200 MB capture or a pipe from `dmesg` costs one
//! line of memory at a time.

mod source;
pub mod time;

use std::io;
use std::path::Path;

use crate::{CheckInput, DetectError};
use faultline_sys::kmsg::{KmsgCursor, KmsgRecord};

pub use source::{check_capture_path, is_stdin, is_stream, Spool, MAX_LINE};
pub use time::{parse_duration, Stamp, Window};

/// One kernel message with the time it carried in its source, as written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `420.365809` (seconds since boot), `Sun Nov 22 06:24:01 2026`, `Nov 22 06:24:01`, ...
    pub when: Option<String>,
    pub message: String,
}

impl LogLine {
    /// [`LogLine::when`] as a point in time, when its format is known.
    pub fn stamp(&self) -> Option<Stamp> {
        self.when.as_deref().and_then(time::parse_stamp)
    }
}

/// Where lines come from: this boot's /dev/kmsg, or a capture from anywhere and any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Live,
    Capture,
}

impl Origin {
    pub fn of(input: &CheckInput) -> Origin {
        match input.kmsg_file {
            Some(_) => Origin::Capture,
            None => Origin::Live,
        }
    }
}

/// The `--since` window of `input`, if any, measured from now.
pub fn window(input: &CheckInput) -> Option<Window> {
    input.since.map(Window::new)
}

/// Hands `f` every line of the kernel log named by `input` (the capture file if given, else
/// live /dev/kmsg from its oldest record), one at a time: nothing is kept, so memory stays
/// flat whatever the size. `f` may stop the reading with an error.
pub fn for_each(
    input: &CheckInput,
    mut f: impl FnMut(LogLine) -> Result<(), DetectError>,
) -> Result<(), DetectError> {
    let Some(path) = &input.kmsg_file else {
        let mut failed = None;
        let read = KmsgCursor::from_start().and_then(|mut cursor| {
            cursor.for_each_new(|rec| {
                if failed.is_none() {
                    failed = f(from_record(&rec)).err();
                }
            })
        });
        read.map_err(|source| DetectError::Read {
            what: "/dev/kmsg (the kernel log; needs root or CAP_SYSLOG, or pass --kmsg-file)"
                .into(),
            source,
        })?;
        return failed.map_or(Ok(()), Err);
    };
    let what = || {
        if is_stdin(path) {
            "standard input".to_string()
        } else {
            path.display().to_string()
        }
    };
    let reader = source::open_capture(path).map_err(|source| DetectError::Read {
        what: what(),
        source,
    })?;
    source::for_each_line(reader, |line| match capture_line(line) {
        Some(l) => f(l).map_err(Reading::Stop),
        None => Ok(()),
    })
    .map_err(|e| match e {
        Reading::Io(source) => DetectError::Read {
            what: what(),
            source,
        },
        Reading::Stop(e) => e,
    })
}

/// Why reading a capture stopped: the stream failed, or the consumer said stop.
enum Reading {
    Io(io::Error),
    Stop(DetectError),
}

impl From<io::Error> for Reading {
    fn from(e: io::Error) -> Self {
        Reading::Io(e)
    }
}

/// The kernel log named by `input`, every line in memory: for small logs and tests;
/// detectors use [`for_each`].
pub fn load(input: &CheckInput) -> Result<Vec<LogLine>, DetectError> {
    let mut lines = Vec::new();
    for_each(input, |l| {
        lines.push(l);
        Ok(())
    })?;
    Ok(lines)
}

pub fn read_capture(path: &Path) -> Result<Vec<LogLine>, DetectError> {
    load(&CheckInput {
        kmsg_file: Some(path.to_path_buf()),
        ..CheckInput::default()
    })
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

/// One line of a capture, unless it carries no message: blank, or journalctl's
/// `-- Boot 1a2b... --` and `-- No entries --` separators.
fn capture_line(line: &str) -> Option<LogLine> {
    if line.trim().is_empty() || (line.starts_with("-- ") && line.trim_end().ends_with("--")) {
        return None;
    }
    Some(parse_line(line))
}

pub fn parse_capture(text: &str) -> Vec<LogLine> {
    text.lines().filter_map(capture_line).collect()
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
