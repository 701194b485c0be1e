//! node-problem-detector's custom plugin monitor, as the deploy tests need it: the configs in
//! harness/deploy/, Go's duration syntax, and a rule run the way NPD runs it
//! (kubernetes/node-problem-detector, pkg/custompluginmonitor/plugin/plugin.go and
//! pkg/util/exec_unix.go):
//!
//! - the rule's `path` with its `args`, in a new process group (`Setpgid: true`);
//! - killed, group and all, with SIGKILL at the rule's timeout when it is shorter than the
//!   global one, else at the global timeout; the message then says so ("Timeout when
//!   running plugin ...");
//! - stdout and stderr each read up to 4096 bytes, the rest drained;
//! - stdout trimmed of white space, then cut at `max_output_length` bytes;
//! - exit code 0 is OK, 1 NonOK, anything else (a signal included) Unknown.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// NPD's `maxCustomPluginBufferBytes`.
const BUFFER_BYTES: u64 = 4096;

pub const CONFIGS: [&str; 2] = ["faultline-proc.json", "faultline-kernel.json"];

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn config(name: &str) -> Value {
    let path = deploy_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

/// Go's `time.ParseDuration` for what configs use: one or more decimal numbers each with a
/// unit (ns, us, µs, ms, s, m, h), or `0`. No sign: a negative timeout means nothing here.
pub fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let units = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ];
        // Longest unit first: "ms" before "m", "ns" before "s".
        let (unit, scale) = units
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        total += value * scale;
        rest = &rest[unit.len()..];
    }
    Some(Duration::from_secs_f64(total))
}

/// NPD's plugin result codes (pkg/custompluginmonitor/types/types.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    NonOk,
    Unknown,
}

#[derive(Debug)]
pub struct PluginResult {
    pub status: Status,
    pub message: String,
    pub elapsed: Duration,
}

/// One rule of a config, with the global settings that apply to it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: String,
    pub condition: Option<String>,
    pub reason: String,
    pub path: PathBuf,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub max_output_length: usize,
}

impl Rule {
    pub fn detector(&self) -> &str {
        self.args.get(1).map(String::as_str).unwrap_or("")
    }
}

/// The rules of `config`, with NPD's defaults applied (timeout 5s, max_output_length 80).
pub fn rules(config: &Value) -> Vec<Rule> {
    let global = &config["pluginConfig"];
    let global_timeout = global["timeout"]
        .as_str()
        .map(|t| go_duration(t).expect("global timeout"))
        .unwrap_or(Duration::from_secs(5));
    let max_output_length = global["max_output_length"].as_u64().unwrap_or(80) as usize;
    config["rules"]
        .as_array()
        .expect("rules[]")
        .iter()
        .map(|r| {
            let own = r["timeout"]
                .as_str()
                .map(|t| go_duration(t).expect("timeout"));
            Rule {
                kind: r["type"].as_str().unwrap_or_default().to_string(),
                condition: r["condition"].as_str().map(str::to_string),
                reason: r["reason"].as_str().unwrap_or_default().to_string(),
                path: PathBuf::from(r["path"].as_str().unwrap_or_default()),
                args: r["args"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
                // plugin.go: the rule's timeout when shorter than the global one.
                timeout: own
                    .filter(|t| *t < global_timeout)
                    .unwrap_or(global_timeout),
                max_output_length,
            }
        })
        .collect()
}

/// Runs `rule` as NPD does, with `binary` in place of the rule's path and `extra` appended
/// to its arguments. `prefix` (e.g. `nsenter ... --`) is put in front, so the rule runs
/// inside a test's "node" namespaces; it must pass on the exit status and stay in the
/// process group.
pub fn run(rule: &Rule, binary: &Path, extra: &[&str], prefix: &[OsString]) -> PluginResult {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(&rule.args)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("failed to start the plugin");
    let pgid = child.id() as i32;
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(BUFFER_BYTES).read_to_end(&mut kept);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            kept
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() >= rule.timeout && !timed_out {
            timed_out = true;
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let out = stdout.join().unwrap();
    let err = stderr.join().unwrap();
    let mut message = String::from_utf8_lossy(&out).trim().to_string();
    if timed_out {
        message = format!(
            "Timeout when running plugin {:?}: state - {status}. output - {message:?}",
            rule.path
        );
    }
    if message.len() > rule.max_output_length {
        let cut = &message.as_bytes()[..rule.max_output_length];
        message = String::from_utf8_lossy(cut).into_owned();
    }
    let status = match status.code() {
        Some(0) => Status::Ok,
        Some(1) => Status::NonOk,
        _ => Status::Unknown,
    };
    if !err.is_empty() {
        eprintln!("{} stderr: {}", rule.reason, String::from_utf8_lossy(&err));
    }
    PluginResult {
        status,
        message,
        elapsed,
    }
}
