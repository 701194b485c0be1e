//! `restart-missing`: the hostPath file is gone when the pod's container is started again.
//! The running container keeps the deleted inode (0 links, `//deleted`) and stale-bind
//! reports it; once the container exits its bind goes with it, and the restart meets a
//! missing source. What happens then is the runtime's choice, tabled here by runtime and
//! version with the upstream code that decides it:
//! - containerd's CRI plugin, the path a kubelet takes, acts before any OCI runtime:
//!   CreateContainer stats every host path and creates a missing one as a directory
//!   (pkg/cri/opts/spec_linux.go, WithMounts: "Create the host path if it doesn't exist"), so
//!   the container starts with an empty directory at `/data.txt`, and the host's next
//!   `mv -f` of a file onto that path fails (rename(2) of a file over a directory: EISDIR).
//!   kubelet checks a volume's `type: File` when it sets the volume up for the pod
//!   (pkg/volume/hostpath/host_path.go, checkType), not when it restarts a container of a pod
//!   already running (hostPath never asks for a remount), so the restart reaches CRI with the
//!   path missing.
//! - the OCI runtime driven directly (variant `oci-restart-missing`) refuses, in its own words.

use std::path::Path;

use anyhow::Context as _;
use faultline_detect::stale_bind;
use faultline_runtime::oci::{BindMount, Step, Version};
use serde_json::json;

use super::container::{Started, Starter};
use super::OLD;

/// What a runtime does when a container is started with a missing file bind source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    /// It refuses; part of its message, `<src>` for the source.
    Refused { says: &'static str },
    /// It creates the source as an empty directory and starts the container.
    MakesDirectory,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) runtime: &'static str,
    pub(super) from: Version,
    pub(super) until: Option<Version>,
    pub(super) restart: Restart,
    pub(super) upstream: &'static str,
    /// Seen by this scenario, or read from the runtime's source.
    pub(super) seen: bool,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        json!({
            "runtime": self.runtime,
            "restart": match self.restart {
                Restart::Refused { says } => json!({"refused": says}),
                Restart::MakesDirectory => json!("makes a directory at the host path"),
            },
            "upstream": self.upstream, "seen": self.seen,
            "from": self.from.to_string(), "until": self.until.map(|u| u.to_string()),
        })
    }
}

pub(super) const TABLE: &[Row] = &[
    Row {
        runtime: "containerd",
        from: Version(1, 1, 0),
        until: None,
        restart: Restart::MakesDirectory,
        upstream: "containerd's CRI (addOCIBindMounts in the cri plugin, WithMounts in pkg/cri/opts/spec_linux.go from 1.5, internal/cri/opts in 2.x): os.Stat of each host_path at CreateContainer, os.MkdirAll when it does not exist",
        seen: true,
    },
    Row {
        runtime: "runc",
        from: Version(1, 0, 0),
        until: Some(Version(1, 1, 0)),
        restart: Restart::Refused {
            says: "mounting \"<src>\" to rootfs at \"/data.txt\" caused: stat <src>: no such file or directory",
        },
        upstream: "runc v1.0 prepareBindMount: os.Stat of the source, wrapped by newSystemErrorWithCausef",
        seen: false,
    },
    Row {
        runtime: "runc",
        from: Version(1, 1, 0),
        until: Some(Version(1, 2, 0)),
        restart: Restart::Refused {
            says: "error mounting \"<src>\" to rootfs at \"/data.txt\": stat <src>: no such file or directory",
        },
        upstream: "runc v1.1 prepareBindMount: os.Stat of the source; e918d0213 (libcontainer: rm own error system) gives the wording",
        seen: true,
    },
    Row {
        runtime: "runc",
        from: Version(1, 2, 0),
        until: None,
        restart: Restart::Refused {
            says: "failed to fulfil mount request: open <src>: no such file or directory",
        },
        upstream: "runc ba0b5e269 (libcontainer: remove all mount logic from nsexec, v1.2.0): runc init's stat fails, so it asks runc's host side for the source (procMountPlease), whose open(O_PATH) fails too",
        seen: false,
    },
    Row {
        runtime: "crun",
        from: Version(0, 10, 0),
        until: None,
        restart: Restart::Refused {
            says: "error stat'ing file `<src>`: No such file or directory",
        },
        upstream: "crun src/libcrun/linux.c: every bind source's type is asked with crun_dir_p (statx), whose failure is `error stat'ing file`",
        seen: true,
    },
];

pub(super) fn expected(runtime: &str, version: Option<Version>) -> Option<&'static Row> {
    let v = version?;
    TABLE
        .iter()
        .find(|r| r.runtime == runtime && r.from <= v && r.until.is_none_or(|u| v < u))
}

/// Whether `said` is the row's refusal for `source`.
pub(super) fn says(row: &Row, said: &str, source: &Path) -> bool {
    match row.restart {
        Restart::Refused { says } => {
            said.contains(&says.replace("<src>", &source.display().to_string()))
        }
        Restart::MakesDirectory => false,
    }
}

/// What the variant saw.
pub(super) struct Outcome {
    pub(super) reproduced: bool,
    pub(super) observed: serde_json::Value,
    pub(super) findings: Vec<faultline_detect::Finding>,
}

/// Runs `restart-missing` with the file bound at `/data.txt`, its containers named after
/// `name`.
pub(super) fn run(
    starter: &Starter,
    name: &str,
    host_file: &Path,
    bind: &BindMount,
) -> anyhow::Result<Outcome> {
    let Started::Running(first) = starter.start(name, std::slice::from_ref(bind))? else {
        anyhow::bail!("the pod's first container did not start");
    };
    let before = first.view("/data.txt")?;
    anyhow::ensure!(
        before.content == OLD,
        "the container read {:?} first",
        before.content
    );
    std::fs::remove_file(host_file).context("failed to remove the host file")?;
    let after = first.view("/data.txt")?;
    let while_running = stale_bind::scan(Path::new("/proc")).context("stale-bind failed")?;
    // The container exits (a crash, an OOM kill): its mount namespace and the bind go.
    first.remove()?;
    let after_exit = stale_bind::scan(Path::new("/proc")).context("stale-bind failed")?;
    let restart = restart(starter, &format!("{name}-restarted"), host_file, bind)?;
    let (name, version) = starter.table_key();
    let row = expected(&name, version);
    if let Some(row) = row {
        check_row(row, &restart, host_file, &starter.who())?;
    }
    let ghost = after.content == OLD && after.nlink == 0;
    let reproduced = ghost && (restart.refused.is_some() || restart.made_directory);
    let subjects =
        |f: &[faultline_detect::Finding]| f.iter().map(|f| f.message.clone()).collect::<Vec<_>>();
    let observed = json!({
        "update": "the host removes the file (rm)",
        "mount": "single file",
        "starter": starter.describe(),
        "container_before": before.json(),
        "container_after_rm": after.json(),
        "stale_bind_while_running": subjects(&while_running),
        "stale_bind_after_exit": subjects(&after_exit),
        "stale_bind_after_restart": subjects(&restart.findings),
        "restart": restart.json(),
        "runtime_table": row.map(Row::json),
    });
    let mut findings = while_running;
    findings.extend(after_exit);
    findings.extend(restart.findings);
    Ok(Outcome {
        reproduced,
        observed,
        findings,
    })
}

/// What the second start did.
struct Restarted {
    /// The refusal, at the step that refused, in the runtime's words.
    refused: Option<Step>,
    /// It started; what `/data.txt` is inside, or why it could not be read.
    inside: Option<Result<serde_json::Value, String>>,
    /// The host path is a directory now.
    made_directory: bool,
    /// The host's next update (a new file renamed over the path), when it started.
    host_update: Option<Result<(), String>>,
    /// stale-bind while the restarted container runs.
    findings: Vec<faultline_detect::Finding>,
}

impl Restarted {
    fn json(&self) -> serde_json::Value {
        match &self.refused {
            Some(step) => json!({
                "started": false,
                "refused_at": step.command,
                "runtime_said": step.error,
            }),
            None => json!({
                "started": true,
                "data_txt_inside": match &self.inside {
                    Some(Ok(v)) => v.clone(),
                    Some(Err(e)) => json!({"error": e}),
                    None => serde_json::Value::Null,
                },
                "host_path_is_directory": self.made_directory,
                "host_mv_f_after": match &self.host_update {
                    Some(Ok(())) => json!("ok"),
                    Some(Err(e)) => json!({"error": e}),
                    None => serde_json::Value::Null,
                },
            }),
        }
    }
}

/// The container started again with the file missing, and what the host then meets.
fn restart(
    starter: &Starter,
    name: &str,
    host_file: &Path,
    bind: &BindMount,
) -> anyhow::Result<Restarted> {
    let c = match starter.start(name, std::slice::from_ref(bind))? {
        Started::Refused(step) => {
            return Ok(Restarted {
                refused: Some(step),
                inside: None,
                made_directory: false,
                host_update: None,
                findings: Vec::new(),
            })
        }
        Started::Running(c) => c,
    };
    let inside = Some(
        c.view("/data.txt")
            .map(|v| v.json())
            .map_err(|e| format!("{e:#}")),
    );
    let made_directory = host_file.is_dir();
    // The host's cronjob runs again: `echo new > tmp; mv -f tmp data.txt`.
    let host_update = Some(
        super::update(
            super::Mode::Rename,
            host_file.parent().unwrap_or(host_file),
            host_file,
        )
        .map_err(|e| format!("{e:#}")),
    );
    let findings = stale_bind::scan(Path::new("/proc")).context("stale-bind failed")?;
    c.remove()?;
    Ok(Restarted {
        refused: None,
        inside,
        made_directory,
        host_update,
        findings,
    })
}

/// The restart did what the table says for this runtime and release.
fn check_row(row: &Row, restart: &Restarted, host_file: &Path, who: &str) -> anyhow::Result<()> {
    match (row.restart, &restart.refused) {
        (Restart::Refused { says: want }, Some(step)) => {
            let said = step.error.as_deref().unwrap_or_default();
            anyhow::ensure!(
                says(row, said, host_file),
                "{who} refused the restart saying {said:?}, the runtime table expects {want:?} ({})",
                row.upstream
            );
        }
        (Restart::Refused { says: want }, None) => anyhow::bail!(
            "{who} started the container again without its file, the runtime table expects a refusal {want:?} ({})",
            row.upstream
        ),
        (Restart::MakesDirectory, Some(step)) => anyhow::bail!(
            "{who} refused the restart at {}: {:?}, the runtime table expects it to make a directory at the host path ({})",
            step.command,
            step.error,
            row.upstream
        ),
        (Restart::MakesDirectory, None) => anyhow::ensure!(
            restart.made_directory,
            "{who} started the container again, but {} is not the directory the runtime table expects ({})",
            host_file.display(),
            row.upstream
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_match_their_releases() {
        let from = |name: &str, v| expected(name, Some(v)).map(|r| r.from);
        assert_eq!(from("runc", Version(1, 0, 2)), Some(Version(1, 0, 0)));
        assert_eq!(from("runc", Version(1, 1, 5)), Some(Version(1, 1, 0)));
        assert_eq!(from("runc", Version(1, 2, 4)), Some(Version(1, 2, 0)));
        assert_eq!(from("crun", Version(1, 8, 1)), Some(Version(0, 10, 0)));
        assert_eq!(from("youki", Version(0, 4, 0)), None);
        assert_eq!(
            from("containerd", Version(1, 6, 20)),
            Some(Version(1, 1, 0))
        );
        assert_eq!(
            expected("containerd", Some(Version(2, 1, 0))).map(|r| r.restart),
            Some(Restart::MakesDirectory)
        );
    }

    #[test]
    fn the_runtimes_own_words_match_their_rows() {
        let src = Path::new("/tmp/hostpath-rename/restart-missing/host/var/lib/app/data.txt");
        // runc 1.1.5 `create`, as its logfmt msg read in the runtime driver's test.
        let runc = format!("runc create failed: unable to start container process: error during container init: error mounting \"{0}\" to rootfs at \"/data.txt\": stat {0}: no such file or directory", src.display());
        let row = expected("runc", Some(Version(1, 1, 5))).unwrap();
        assert!(says(row, &runc, src));
        // crun 1.8.1's message in the guest.
        let crun = format!(
            "error stat'ing file `{}`: No such file or directory",
            src.display()
        );
        assert!(says(
            expected("crun", Some(Version(1, 8, 1))).unwrap(),
            &crun,
            src
        ));
        assert!(!says(row, &crun, src));
        let runc12 = expected("runc", Some(Version(1, 2, 0))).unwrap();
        assert!(!says(runc12, &runc, src));
    }
}
