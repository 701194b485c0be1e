//! Bounded probes in a child process: each FUSE connection is stat'ed once with a time limit,
//! and its fusectl `waiting` count read; a probe that does not answer in time is abandoned.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faultline_sys::entry::Entry;
use faultline_sys::proc::describe;

/// What a probe of one connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// ENOTCONN: the daemon is gone.
    Dead,
    /// No answer within the limit: the daemon is alive but stuck.
    Hung,
    /// The mount point it was probed through is gone (unmounted meanwhile).
    Gone,
    /// Probed but failed otherwise (errno), or no mount of it could be probed safely.
    Unknown(String),
}

#[derive(Debug, Default)]
pub(super) struct ProbeReport {
    pub(super) liveness: BTreeMap<(u32, u32), Liveness>,
    /// minor → `waiting` count (None when fusectl could not be read).
    pub(super) waiting: BTreeMap<u32, Option<u64>>,
}

/// The probe process: `fuse-probe ITEM...` (see [`super::probe_child::probe_main`]).
pub static ENTRY: Entry = Entry::new("fuse-probe", super::probe_child::probe_main);

fn spawn_probe(args: &[OsString]) -> std::io::Result<(Child, mpsc::Receiver<String>)> {
    let mut cmd = ENTRY.command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    faultline_sys::process::die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Kills a probe child and reaps it only if it goes quickly: a child stuck in an
/// uninterruptible wait on a FUSE mount is left to be reaped by init.
fn abandon(mut child: Child) {
    let _ = child.kill();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(200) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!(
        "probe process {} did not exit after SIGKILL; leaving it",
        child.id()
    );
}

pub(super) fn run_probes(
    probes: &[((u32, u32), PathBuf)],
    minors: &[u32],
    limit: Duration,
) -> ProbeReport {
    let mut report = ProbeReport::default();
    if !minors.is_empty() {
        let args: Vec<OsString> = minors.iter().map(|m| format!("conn:{m}").into()).collect();
        match spawn_probe(&args) {
            Ok((child, rx)) => {
                for _ in minors {
                    let Ok(line) = rx.recv_timeout(limit) else {
                        break;
                    };
                    let w: Vec<&str> = line.split_whitespace().collect();
                    if let ["conn", minor, value] = w.as_slice() {
                        if let Ok(minor) = minor.parse() {
                            report.waiting.insert(minor, value.parse().ok());
                        }
                    }
                }
                abandon(child);
            }
            Err(e) => tracing::debug!("failed to start the fusectl probe: {e}"),
        }
    }
    // Paths are probed in one child; when one hangs, the child is abandoned and a new one
    // takes the rest.
    let mut next = 0;
    while next < probes.len() {
        // Paths are bytes: a mount point that is not UTF-8 is probed as it is.
        let args: Vec<OsString> = probes[next..]
            .iter()
            .map(|(_, p)| {
                let mut a = OsString::from("path:");
                a.push(p.as_os_str());
                a
            })
            .collect();
        let (child, rx) = match spawn_probe(&args) {
            Ok(v) => v,
            Err(e) => {
                for (dev, _) in &probes[next..] {
                    report.liveness.insert(
                        *dev,
                        Liveness::Unknown(format!("failed to start probe: {e}")),
                    );
                }
                break;
            }
        };
        while next < probes.len() {
            let dev = probes[next].0;
            match rx.recv_timeout(limit) {
                Ok(line) => {
                    report.liveness.insert(dev, parse_probe_line(&line));
                    next += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    report.liveness.insert(dev, Liveness::Hung);
                    next += 1;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    report
                        .liveness
                        .insert(dev, Liveness::Unknown("probe process died".into()));
                    next += 1;
                    break;
                }
            }
        }
        abandon(child);
    }
    report
}

fn parse_probe_line(line: &str) -> Liveness {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["path", "ok", ..] => Liveness::Alive,
        ["path", "err", errno, ..] => match errno.parse::<i32>() {
            Ok(libc::ENOTCONN) => Liveness::Dead,
            Ok(libc::ENOENT) => Liveness::Gone,
            Ok(e) => Liveness::Unknown(describe(&std::io::Error::from_raw_os_error(e))),
            Err(_) => Liveness::Unknown(format!("bad probe answer {line:?}")),
        },
        _ => Liveness::Unknown(format!("bad probe answer {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers() {
        assert_eq!(parse_probe_line("path ok 40000"), Liveness::Alive);
        assert_eq!(parse_probe_line("path err 107"), Liveness::Dead);
        let Liveness::Unknown(why) = parse_probe_line("path err 13") else {
            panic!("EACCES is not an answer");
        };
        assert!(why.starts_with("permission denied"), "{why}");
        assert_eq!(parse_probe_line("path err 2"), Liveness::Gone);
    }
}
