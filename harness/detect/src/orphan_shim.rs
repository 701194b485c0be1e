//! `orphan-shim`: containerd shims whose task is gone.
//!
//! When containerd's deadline for deleting a task expires (its 10 s "context deadline
//! exceeded", typically because unmounting the container's overlay rootfs blocks in
//! `sync_fs` under I/O load), containerd removes the task's state and forgets the shim; the
//! shim process stays forever. Seen at Cốc Cốc on containerd 1.6 with v1 shims.
//!
//! A shim is recognised by the base name of its argv[0] (`containerd-shim`,
//! `containerd-shim-runc-v1`, `containerd-shim-runc-v2`, plus names in
//! `FAULTLINE_SHIM_NAMES`, comma-separated). Its task is gone when:
//! - v1 (`-workdir DIR`): DIR no longer exists;
//! - v2 (`-id ID`): `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<ID>` has no
//!   bundle (`config.json`) and the directory is gone.
//!
//! Paths are resolved through `/proc/PID/root`, i.e. in the shim's own mount namespace.

use std::path::Path;

use serde_json::json;

use super::{CheckInput, DetectError, Detector, DetectorReport};
use crate::finding::{Finding, Severity};
use faultline_sys::proc::{describe, Gaps, Item, ProcessEntry, Snapshot, STAT};

pub const NAME: &str = "orphan-shim";

pub const SHIM_NAMES: &[&str] = &[
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
];

pub const V2_TASK_ROOT: &str = "/run/containerd/io.containerd.runtime.v2.task";

/// `/proc/PID/cmdline`, read by pid (see `faultline_sys::proc` for why not in the walk).
const CMDLINE: Item = Item {
    what: "the command line (/proc/PID/cmdline)",
    of: "processes",
};

/// A shim's task directory looked up through its root, which needs ptrace read access; when
/// denied, it is looked up in this process's view instead, which may be another namespace's.
const SHIM_ROOT: Item = Item {
    what: "the task directory through the shim's root (/proc/PID/root)",
    of: "shims",
};

/// A shim's command line, as containerd writes it (Go flag syntax: `-flag value`,
/// `-flag=value`, one or two dashes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShimArgs {
    pub binary: String,
    pub namespace: Option<String>,
    pub workdir: Option<String>,
    pub id: Option<String>,
    pub address: Option<String>,
}

impl ShimArgs {
    /// `None` when argv[0] is not a shim name in `names`.
    pub fn parse(argv: &[String], names: &[String]) -> Option<ShimArgs> {
        let binary = Path::new(argv.first()?).file_name()?.to_str()?.to_string();
        if !names.contains(&binary) {
            return None;
        }
        let mut out = ShimArgs {
            binary,
            ..ShimArgs::default()
        };
        let mut it = argv[1..].iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                continue;
            };
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (flag, None),
            };
            let slot = match key {
                "namespace" => &mut out.namespace,
                "workdir" => &mut out.workdir,
                "id" => &mut out.id,
                "address" => &mut out.address,
                _ => continue,
            };
            *slot = inline.or_else(|| it.next().cloned());
        }
        Some(out)
    }

    /// The container id: v2's `-id`, or v1's workdir base name.
    pub fn container_id(&self) -> Option<String> {
        self.id.clone().or_else(|| {
            self.workdir
                .as_deref()
                .and_then(|w| Path::new(w).file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
    }
}

/// The detector: the shim names it looks for beyond [`SHIM_NAMES`] and the v2 task root.
#[derive(Debug, Clone, Copy)]
pub struct OrphanShim {
    pub extra_names: &'static [&'static str],
    pub v2_root: &'static str,
}

impl OrphanShim {
    pub const DEFAULT: OrphanShim = OrphanShim {
        extra_names: &[],
        v2_root: V2_TASK_ROOT,
    };

    /// Every name that marks a shim: the built-in ones, `extra_names`, and
    /// `FAULTLINE_SHIM_NAMES` (comma-separated).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = SHIM_NAMES
            .iter()
            .chain(self.extra_names)
            .map(|s| s.to_string())
            .collect();
        if let Ok(extra) = std::env::var("FAULTLINE_SHIM_NAMES") {
            names.extend(
                extra
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        names
    }
}

/// Whether `path` exists as the process `pid` sees it (through its root); `None` when the
/// process is gone. When its root cannot be entered (another user's process), our own view
/// answers, and `gaps` says so.
fn exists_for(snap: &Snapshot, pid: i32, path: &Path, gaps: &mut Gaps) -> Option<bool> {
    gaps.tried(SHIM_ROOT);
    match std::fs::symlink_metadata(snap.path_in_root(pid, path)) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            gaps.failed(SHIM_ROOT, pid.into(), describe(&e));
            Some(path.exists())
        }
        Err(_) => snap.dir(pid).exists().then_some(false),
    }
}

impl OrphanShim {
    /// Why the shim's task is gone, or `None` if it still has one (or we cannot tell).
    pub fn task_gone(
        &self,
        snap: &Snapshot,
        pid: i32,
        shim: &ShimArgs,
        gaps: &mut Gaps,
    ) -> Option<String> {
        if let Some(workdir) = &shim.workdir {
            let w = Path::new(workdir);
            return (!exists_for(snap, pid, w, gaps)?)
                .then(|| format!("its workdir {workdir} no longer exists"));
        }
        if let (Some(id), Some(ns)) = (&shim.id, &shim.namespace) {
            let bundle = Path::new(self.v2_root).join(ns).join(id);
            return (!exists_for(snap, pid, &bundle, gaps)?)
                .then(|| format!("it has no bundle under {}", bundle.display()));
        }
        None
    }

    /// Every orphaned shim in `snap`, and what could not be read.
    pub fn report(&self, snap: &Snapshot) -> DetectorReport {
        let mut gaps = snap.gaps().select(&[STAT]);
        let uptime = std::fs::read_to_string(snap.proc_root().join("uptime"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
        let names = self.names();
        let mut findings = Vec::new();
        for p in snap.user_processes() {
            let Some(argv) = gaps.read(CMDLINE, p.pid.into(), snap.cmdline(p.pid)) else {
                continue;
            };
            let Some(shim) = ShimArgs::parse(&argv, &names) else {
                continue;
            };
            let Some(why) = self.task_gone(snap, p.pid, &shim, &mut gaps) else {
                continue;
            };
            findings.push(orphan_finding(p, &argv, &shim, &why, uptime));
        }
        DetectorReport::new(findings, &gaps)
    }

    /// [`OrphanShim::report`]'s findings on a fresh walk of `proc_root` (for a scenario; see
    /// [`DetectorReport::into_findings`]).
    pub fn scan(&self, proc_root: &Path) -> Result<Vec<Finding>, DetectError> {
        Ok(self.report(&Snapshot::take(proc_root)?).into_findings(NAME))
    }
}

fn orphan_finding(
    p: &ProcessEntry,
    argv: &[String],
    shim: &ShimArgs,
    why: &str,
    uptime: Option<f64>,
) -> Finding {
    let tps = procfs::ticks_per_second() as f64;
    let age_s = uptime.map(|up| (up - p.starttime as f64 / tps).max(0.0).round() as u64);
    let id = shim.container_id().unwrap_or_else(|| "?".into());
    let ns = shim.namespace.clone().unwrap_or_else(|| "?".into());
    let age_text = age_s
        .map(|a| format!(", running for {a}s"))
        .unwrap_or_default();
    Finding::new(
        NAME,
        Severity::Warning,
        format!("{} {id}", shim.binary),
        format!(
            "{} pid {} for container {id} (namespace {ns}) is orphaned: {why}{age_text}",
            shim.binary, p.pid
        ),
        format!(
            "the runtime gave up on this task (look for \"context deadline exceeded\" in containerd's log for {id}); \
             check the shim is not still blocked in umount (state D, /proc/{}/stack), then kill it: kill {}",
            p.pid, p.pid
        ),
    )
    .with_pid(p.pid)
    .with_evidence(json!({
        "pid": p.pid,
        "id": id,
        "namespace": ns,
        "age_s": age_s,
        "binary": shim.binary,
        "workdir": shim.workdir,
        "address": shim.address,
        "cmdline": argv,
        "reason": why,
    }))
}

impl Detector for OrphanShim {
    fn name(&self) -> &'static str {
        NAME
    }
    fn summary(&self) -> &'static str {
        "containerd shims whose task is gone (runtime gave up after a deadline; the shim stays forever)"
    }
    fn check(&self, input: &CheckInput) -> Result<DetectorReport, DetectError> {
        Ok(self.report(&*input.processes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        SHIM_NAMES.iter().map(|s| s.to_string()).collect()
    }

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn parses_v1_command_line_from_the_seed() {
        // The orphan from the Cốc Cốc report, verbatim.
        let a = argv("containerd-shim -namespace k8s.io -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/k8s.io/513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f -address /run/containerd/containerd.sock -containerd-binary /usr/bin/containerd -systemd-cgroup");
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.binary, "containerd-shim");
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(
            s.container_id().as_deref(),
            Some("513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f")
        );
        assert_eq!(
            s.address.as_deref(),
            Some("/run/containerd/containerd.sock")
        );
    }

    #[test]
    fn parses_v2_and_ignores_others() {
        let a = argv("/usr/bin/containerd-shim-runc-v2 -namespace=k8s.io --id abc -address /run/containerd/containerd.sock");
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.id.as_deref(), Some("abc"));
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        assert!(s.workdir.is_none());
        assert!(ShimArgs::parse(&argv("containerd --config x"), &names()).is_none());
        assert!(ShimArgs::parse(&argv("my-shim -id x"), &names()).is_none());
        let mut more = names();
        more.push("my-shim".into());
        assert!(ShimArgs::parse(&argv("my-shim -id x"), &more).is_some());
    }
}
