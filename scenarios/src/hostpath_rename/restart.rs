//! `restart-missing`: the hostPath file is gone when the pod's container is started again.
//! The running container keeps the deleted inode (0 links, `//deleted`) and stale-bind
//! reports it; once the container exits its bind goes with it, and the restart meets a
//! missing source. What happens then is the runtime's choice, tabled here by runtime and
//! version with the upstream code that decides it. containerd's CRI plugin (1.6, the path a
//! kubelet takes) acts before any OCI runtime: CreateContainer stats every host path and
//! creates a missing one as a directory (pkg/cri/opts/spec_linux.go, WithMounts: "Create the
//! host path if it doesn't exist"), so the container starts with an empty directory at
//! `/data.txt` and the host's next `mv -f` of a file onto that path fails; that path is
//! recorded once the CRI starter exists.

use std::path::Path;

use anyhow::Context as _;
use faultline_detect::stale_bind;
use faultline_runtime::oci::{BindMount, Step, Version};
use serde_json::json;

use super::container::{Started, Starter};
use super::OLD;

/// What a runtime says when `create` meets a missing file bind source.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    pub(super) runtime: &'static str,
    pub(super) from: Version,
    pub(super) until: Option<Version>,
    /// Part of the runtime's message, `<src>` for the source.
    pub(super) says: &'static str,
    pub(super) upstream: &'static str,
    /// Seen by this scenario, or read from the runtime's source.
    pub(super) seen: bool,
}

pub(super) const TABLE: &[Row] = &[
    Row {
        runtime: "runc",
        from: Version(1, 0, 0),
        until: Some(Version(1, 1, 0)),
        says: "mounting \"<src>\" to rootfs at \"/data.txt\" caused: stat <src>: no such file or directory",
        upstream: "runc v1.0 prepareBindMount: os.Stat of the source, wrapped by newSystemErrorWithCausef",
        seen: false,
    },
    Row {
        runtime: "runc",
        from: Version(1, 1, 0),
        until: Some(Version(1, 2, 0)),
        says: "error mounting \"<src>\" to rootfs at \"/data.txt\": stat <src>: no such file or directory",
        upstream: "runc v1.1 prepareBindMount: os.Stat of the source; e918d0213 (libcontainer: rm own error system) gives the wording",
        seen: true,
    },
    Row {
        runtime: "runc",
        from: Version(1, 2, 0),
        until: None,
        says: "failed to fulfil mount request: open <src>: no such file or directory",
        upstream: "runc ba0b5e269 (libcontainer: remove all mount logic from nsexec, v1.2.0): runc init's stat fails, so it asks runc's host side for the source (procMountPlease), whose open(O_PATH) fails too",
        seen: false,
    },
    Row {
        runtime: "crun",
        from: Version(0, 10, 0),
        until: None,
        says: "error stat'ing file `<src>`: No such file or directory",
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

/// Whether `said` is the row's message for `source`.
pub(super) fn says(row: &Row, said: &str, source: &Path) -> bool {
    said.contains(&row.says.replace("<src>", &source.display().to_string()))
}

/// What the variant saw.
pub(super) struct Outcome {
    pub(super) reproduced: bool,
    pub(super) observed: serde_json::Value,
    pub(super) findings: Vec<faultline_detect::Finding>,
}

/// Runs `restart-missing` with the file bound at `/data.txt`.
pub(super) fn run(
    starter: &Starter,
    host_file: &Path,
    bind: &BindMount,
) -> anyhow::Result<Outcome> {
    let Started::Running(first) = starter.start("app", std::slice::from_ref(bind))? else {
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
    let restart = match starter.start("app-restarted", std::slice::from_ref(bind))? {
        Started::Refused(step) => Ok(step),
        Started::Running(c) => {
            let inside = c
                .view("/data.txt")
                .map(|v| v.json())
                .map_err(|e| format!("{e:#}"));
            c.remove()?;
            Err(inside)
        }
    };
    let id = starter.identity();
    let row = expected(&id.name, id.version);
    if let (Some(row), Ok(step)) = (row, &restart) {
        let said = step.error.as_deref().unwrap_or_default();
        anyhow::ensure!(
            says(row, said, host_file),
            "{id} refused the restart saying {said:?}, the runtime table expects {:?} ({})",
            row.says,
            row.upstream
        );
    }
    let reproduced = after.content == OLD && after.nlink == 0 && restart.is_ok();
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
        "restart": restart_json(&restart),
        "runtime_table": row.map(|r| json!({
            "says": r.says, "upstream": r.upstream, "seen": r.seen,
            "from": r.from.to_string(), "until": r.until.map(|u| u.to_string()),
        })),
    });
    let mut findings = while_running;
    findings.extend(after_exit);
    Ok(Outcome {
        reproduced,
        observed,
        findings,
    })
}

fn restart_json(restart: &Result<Step, Result<serde_json::Value, String>>) -> serde_json::Value {
    match restart {
        Ok(step) => json!({
            "started": false,
            "refused_at": step.command,
            "runtime_said": step.error,
        }),
        Err(inside) => json!({"started": true, "data_txt_inside": match inside {
            Ok(v) => v.clone(),
            Err(e) => json!({"error": e}),
        }}),
    }
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
