//! The kernel log's lines about the lock manager: `lockd: server ... not responding` and
//! `... OK` (fs/lockd/host.c, via the RPC client), `lockd: cannot monitor ...`
//! (fs/lockd/mon.c), `VFS is out of sync with lock manager!` (fs/lockd/clntproc.c).

use crate::kernel_log::LogLine;

/// A kernel log line about the lock manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockdLine {
    pub when: Option<String>,
    pub message: String,
    /// The server (or host) the line names, if any.
    pub server: Option<String>,
    pub kind: LockdLineKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockdLineKind {
    NotResponding,
    Recovered,
    CannotMonitor,
    OutOfSync,
}

pub fn lockd_lines(lines: &[LogLine]) -> Vec<LockdLine> {
    lines
        .iter()
        .filter_map(|l| {
            let m = l.message.trim();
            let (kind, server) = if let Some(rest) = m.strip_prefix("lockd: server ") {
                let server = rest.split_whitespace().next().map(str::to_string);
                if rest.contains("not responding") {
                    (LockdLineKind::NotResponding, server)
                } else if rest.trim_end().ends_with(" OK") {
                    (LockdLineKind::Recovered, server)
                } else {
                    return None;
                }
            } else if let Some(rest) = m.strip_prefix("lockd: cannot monitor ") {
                (
                    LockdLineKind::CannotMonitor,
                    rest.split_whitespace().next().map(str::to_string),
                )
            } else if m.contains("VFS is out of sync with lock manager") {
                (LockdLineKind::OutOfSync, None)
            } else {
                return None;
            };
            Some(LockdLine {
                when: l.when.clone(),
                message: m.to_string(),
                server,
                kind,
            })
        })
        .collect()
}
