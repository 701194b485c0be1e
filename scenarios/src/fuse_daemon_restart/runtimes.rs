//! What a new container does with a volume bound from a dead FUSE connection, by OCI runtime
//! and version ([`TABLE`]) and, started through CRI, by containerd release ([`CRI_TABLE`]), as
//! the kernel table does for kernels: every runtime tested is in a table with the upstream
//! change that decides its behaviour. The daemon died long enough ago that
//! the kernel's attribute cache for the volume has expired (the scenario waits out the
//! daemon's attribute lifetime), so any getattr the runtime sends reaches the dead
//! connection and answers ENOTCONN (fs/fuse/dir.c, fuse_update_get_attr).

use faultline_runtime::oci::{ReadAttempt, Version};
use serde::Serialize;

/// Where a new container on the dead volume stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// CRI's CreateContainer fails: containerd stats every host path before it makes the
    /// spec, and ENOTCONN is not ENOENT (which it would answer by creating a directory).
    CriHostPathStat,
    /// `create` fails: the runtime's stat of the bind source answers ENOTCONN.
    SourceStat,
    /// `create` fails at the mount itself, after a stat that passed: runc 1.0's
    /// `mount through procfd: …` (seen with a source whose directory was deleted).
    ProcfdMount,
    /// `create` fails when runc's host side is asked for the source (runc 1.2's
    /// `failed to fulfil mount request: …`, when its own open of the source fails).
    MountRequest,
    /// The runtime makes the container; its workload's first access of the volume answers
    /// ENOTCONN.
    WorkloadAccess,
}

/// One runtime release range and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub runtime: &'static str,
    /// First release with this behaviour.
    pub from: Version,
    /// First release without it, if any.
    pub until: Option<Version>,
    pub stop: Stop,
    /// What the runtime (or the workload) says, `<src>` for the bind source.
    pub says: &'static str,
    /// The upstream change that decides it.
    pub upstream: &'static str,
    /// Seen by this scenario, or read from the runtime's source.
    pub seen: bool,
}

pub const TABLE: &[Row] = &[
    Row {
        runtime: "runc",
        from: Version(1, 0, 0),
        until: Some(Version(1, 1, 0)),
        stop: Stop::SourceStat,
        says: "mounting \"<src>\" to rootfs at \"/vol\" caused: stat <src>: transport endpoint is not connected",
        upstream: "runc 0ca91f44f (rootfs: add mount destination validation, CVE-2021-30465, v1.0.0-rc95) mounts through /proc/self/fd after prepareBindMount's os.Stat of the source; that stat fails first here. `mount through procfd: …` is the procfd mount failing after a stat that passed (moosefs-csi#32: a source directory deleted on a live FUSE mount)",
        seen: false,
    },
    Row {
        runtime: "runc",
        from: Version(1, 1, 0),
        until: Some(Version(1, 2, 0)),
        stop: Stop::SourceStat,
        says: "error mounting \"<src>\" to rootfs at \"/vol\": stat <src>: transport endpoint is not connected",
        upstream: "runc e918d0213 (libcontainer: rm own error system) gives the `error mounting … to rootfs at …` wording; 36aefad45 (libct: wrap unix.Mount/Unmount errors) replaced `mount through procfd` (v1.1.0); prepareBindMount still stats the source first",
        seen: true,
    },
    Row {
        runtime: "runc",
        from: Version(1, 2, 0),
        until: None,
        stop: Stop::SourceStat,
        says: "error mounting \"<src>\" to rootfs at \"/vol\": create mountpoint for /vol mount: stat <src>: transport endpoint is not connected",
        upstream: "runc ba0b5e269 (libcontainer: remove all mount logic from nsexec, v1.2.0): when runc init's stat of a bind source fails it asks runc's host side for an O_PATH descriptor (procMountPlease); that open sends no FUSE request and works, and createMountpoint's stat of the descriptor fails; `failed to fulfil mount request` only when the host side's open fails",
        seen: false,
    },
    Row {
        runtime: "crun",
        from: Version(0, 10, 0),
        until: None,
        stop: Stop::WorkloadAccess,
        says: "cat: can't open '/vol/dashboard.json': Transport endpoint is not connected",
        upstream: "crun 972e2dc0 (utils: use statx(2) when available, 0.10) asks the bind source's type with statx(AT_STATX_DONT_SYNC, STATX_TYPE), which FUSE answers from the inode without a request (fs/fuse/dir.c, fuse_update_get_attr); so crun's `error stat'ing file `<src>`` does not happen, the bind is made and the container starts on the dead volume",
        seen: true,
    },
];

/// What containerd's CRI does with a host path on a dead FUSE connection, by release.
pub const CRI_TABLE: &[Row] = &[Row {
    runtime: "containerd",
    from: Version(1, 1, 0),
    until: None,
    stop: Stop::CriHostPathStat,
    says: "failed to stat \"<src>\": stat <src>: transport endpoint is not connected",
    upstream: "containerd's CRI (pkg/cri/opts/spec_linux.go WithMounts in 1.5 to 1.7, internal/cri/opts in 2.x; addOCIBindMounts in the cri plugin before) stats each CRI mount's host_path at CreateContainer, creates it when missing and fails with `failed to stat` on any other error; 2.1 bounds that stat with a timeout (`mountpath ... could be stuck`), which an aborted FUSE connection answers at once",
    seen: true,
}];

/// The CRI row for containerd at `release`.
pub fn expected_cri(release: Option<Version>) -> Option<&'static Row> {
    lookup(CRI_TABLE, "containerd", release)
}

/// The row for `runtime` at `version`.
pub fn expected(runtime: &str, version: Option<Version>) -> Option<&'static Row> {
    lookup(TABLE, runtime, version)
}

fn lookup(table: &'static [Row], runtime: &str, version: Option<Version>) -> Option<&'static Row> {
    let v = version?;
    table
        .iter()
        .find(|r| r.runtime == runtime && r.from <= v && r.until.is_none_or(|u| v < u))
}

/// Where `attempt` stopped, from its steps and the runtime's words; `None` when it read
/// the volume, or stopped somewhere this table does not know.
pub fn stop_of(attempt: &ReadAttempt) -> Option<Stop> {
    let failed = attempt.failed_step()?;
    let error = failed.error.as_deref().unwrap_or_default().to_lowercase();
    let enotconn = error.contains("transport endpoint is not connected");
    // The OCI runtime's `create` fails on its own; through CRI its words come back wrapped
    // in containerd's from StartContainer (`failed to create containerd task: ... OCI
    // runtime create failed: ...`).
    let runtime_create = matches!(failed.command.as_str(), "create" | "StartContainer");
    match failed.command.as_str() {
        "CreateContainer" if enotconn && error.contains("failed to stat") => {
            Some(Stop::CriHostPathStat)
        }
        _ if runtime_create && error.contains("mount through procfd") => Some(Stop::ProcfdMount),
        _ if runtime_create && error.contains("failed to fulfil mount request") => {
            Some(Stop::MountRequest)
        }
        _ if runtime_create
            && enotconn
            && (error.contains("stat ") || error.contains("stat'ing")) =>
        {
            Some(Stop::SourceStat)
        }
        c if (c.starts_with("exec ") || c.starts_with("ExecSync ")) && enotconn => {
            Some(Stop::WorkloadAccess)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_runtime::oci::{Identity, Step};
    use std::path::Path;

    fn step(command: &str, error: Option<&str>) -> Step {
        Step {
            command: command.into(),
            ok: error.is_none(),
            exit: Some(if error.is_none() { 0 } else { 1 }),
            error: error.map(String::from),
            stdout: String::new(),
        }
    }

    fn attempt(steps: Vec<Step>) -> ReadAttempt {
        ReadAttempt {
            runtime: Identity::from_line(Path::new("/usr/sbin/runc"), "runc version 1.1.5+ds1"),
            steps,
            content: None,
        }
    }

    #[test]
    fn each_release_finds_its_row() {
        let row = |name: &str, v| expected(name, Some(v)).map(|r| (r.from, r.stop));
        assert_eq!(
            row("runc", Version(1, 0, 3)),
            Some((Version(1, 0, 0), Stop::SourceStat))
        );
        assert_eq!(row("runc", Version(1, 1, 5)).unwrap().0, Version(1, 1, 0));
        assert_eq!(row("runc", Version(1, 2, 0)).unwrap().0, Version(1, 2, 0));
        assert_eq!(row("runc", Version(1, 3, 1)).unwrap().0, Version(1, 2, 0));
        assert_eq!(
            row("crun", Version(1, 8, 1)),
            Some((Version(0, 10, 0), Stop::WorkloadAccess))
        );
        assert_eq!(row("runc", Version(0, 1, 1)), None);
        assert_eq!(row("crun", Version(0, 9, 0)), None);
        assert_eq!(row("youki", Version(0, 5, 0)), None);
        assert_eq!(expected("runc", None).map(|r| r.from), None);
    }

    #[test]
    fn rows_of_one_runtime_do_not_overlap() {
        let all = || TABLE.iter().chain(CRI_TABLE);
        for a in all() {
            for b in all().filter(|b| b.runtime == a.runtime) {
                if std::ptr::eq(a, b) {
                    continue;
                }
                let a_end = a.until.unwrap_or(Version(u32::MAX, 0, 0));
                let b_end = b.until.unwrap_or(Version(u32::MAX, 0, 0));
                assert!(a_end <= b.from || b_end <= a.from, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn every_row_is_what_its_words_classify_as() {
        for r in TABLE.iter().chain(CRI_TABLE) {
            let src = "/s/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount";
            let says = r.says.replace("<src>", src);
            let a = match r.stop {
                Stop::WorkloadAccess => attempt(vec![
                    step("create", None),
                    step("start", None),
                    step("exec cat /vol/dashboard.json", Some(&says)),
                ]),
                Stop::CriHostPathStat => attempt(vec![step("CreateContainer", Some(&says))]),
                _ => attempt(vec![step("create", Some(&says))]),
            };
            assert_eq!(stop_of(&a), Some(r.stop), "{} from {}", r.runtime, r.from);
        }
    }

    #[test]
    fn the_runtimes_own_words_classify() {
        // runc 1.1.5's message as `create` printed it (its whole logfmt msg).
        let runc = "runc create failed: unable to start container process: error during container init: error mounting \"/tmp/s/csi\" to rootfs at \"/vol\": stat /tmp/s/csi: transport endpoint is not connected";
        assert_eq!(
            stop_of(&attempt(vec![step("create", Some(runc))])),
            Some(Stop::SourceStat)
        );
        let procfd = "container init caused: rootfs_linux.go:76: mounting \"/x\" to rootfs at \"/vol\" caused: mount through procfd: no such file or directory";
        assert_eq!(
            stop_of(&attempt(vec![step("create", Some(procfd))])),
            Some(Stop::ProcfdMount)
        );
        let crun_stat = "error stat'ing file `/x`: Transport endpoint is not connected";
        assert_eq!(
            stop_of(&attempt(vec![step("create", Some(crun_stat))])),
            Some(Stop::SourceStat)
        );
        // containerd 1.6.20's CRI on the dead CSI path (CreateContainer's gRPC status).
        let cri = "failed to generate container \"8f3c\" spec: failed to generate spec: failed to stat \"/tmp/s/csi\": stat /tmp/s/csi: transport endpoint is not connected";
        assert_eq!(
            stop_of(&attempt(vec![step("CreateContainer", Some(cri))])),
            Some(Stop::CriHostPathStat)
        );
        assert!(expected_cri(Some(Version(1, 6, 20)))
            .is_some_and(|r| cri.contains(&r.says.replace("<src>", "/tmp/s/csi"))));
        // The same runc words through CRI's StartContainer.
        let wrapped = format!("failed to create containerd task: failed to create shim task: OCI runtime create failed: {runc}: unknown");
        assert_eq!(
            stop_of(&attempt(vec![
                step("CreateContainer", None),
                step("StartContainer", Some(&wrapped))
            ])),
            Some(Stop::SourceStat)
        );
        // Something else entirely, or no failure at all.
        let other = "cgroups in hybrid mode not supported, drop all controllers from cgroupv2";
        assert_eq!(stop_of(&attempt(vec![step("create", Some(other))])), None);
        assert_eq!(
            stop_of(&attempt(vec![step("create", None), step("start", None)])),
            None
        );
    }
}
