//! Asking: the containerd at a shim's `-address` (Tasks.Get), and the filesystem as the shim
//! sees it (its v1 workdir, its v2 bundle).
//!
//! Both are resolved in the shim's mount namespace, through `/proc/PID/root` (proc(5)): a
//! containerd in a private mount namespace, or one whose state is a tmpfs only it sees, is
//! reached as its shims reach it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::{ShimArgs, ShimKind};
use super::judge::{Answer, Look};
use faultline_sys::containerd::{ContainerdError, GrpcSocket};
use faultline_sys::error_chain;
use faultline_sys::proc::{describe, ProcessEntry, Snapshot};

/// containerd's default state directory (`state` in its config; defaults.DefaultStateDir).
pub const DEFAULT_STATE: &str = "/run/containerd";
/// The v2 runtime's directory of task bundles under the state directory, one per
/// `<namespace>/<id>` (runtime/v2/manager.go: `bundle.Path`).
pub const V2_TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// Connections to the containerds the shims name, one per (mount namespace, address); one that
/// failed or ran into its bound is not asked again in this check.
pub struct Containerds {
    limit: Duration,
    conns: HashMap<(Option<u64>, String), Result<GrpcSocket, String>>,
}

impl Containerds {
    /// Every connect and call bounded by `limit`.
    pub fn new(limit: Duration) -> Containerds {
        Containerds {
            limit,
            conns: HashMap::new(),
        }
    }

    /// Whether the containerd at the shim's `-address` knows a task with its id, in its
    /// namespace.
    pub fn ask(&mut self, snap: &Snapshot, p: &ProcessEntry, shim: &ShimArgs) -> Answer {
        let (Some(address), Some(ns), Some(id)) =
            (&shim.address, &shim.namespace, shim.container_id())
        else {
            return Answer::NoAnswer(
                "its command line lacks -address, -namespace or the task id".into(),
            );
        };
        let limit = self.limit;
        let key = (p.mnt_ns, address.clone());
        let conn = self.conns.entry(key.clone()).or_insert_with(|| {
            let socket = snap.path_in_root(p.pid, Path::new(address));
            GrpcSocket::connect(&socket, limit).map_err(|e| error_chain(&e))
        });
        let answer = match conn {
            Err(why) => return Answer::NoAnswer(why.clone()),
            Ok(c) => c.task_exists(ns, &id),
        };
        match answer {
            Ok(true) => Answer::Known,
            Ok(false) => Answer::NotFound,
            Err(e) => {
                let why = error_chain(&e);
                // A containerd that let a call run out its bound is not asked again.
                if matches!(e, ContainerdError::Timeout { .. }) {
                    self.conns.insert(key, Err(why.clone()));
                }
                Answer::NoAnswer(why)
            }
        }
    }
}

/// What the filesystem shows of the shim's task: v1's `-workdir`; v2's bundle.
pub fn look(snap: &Snapshot, pid: i32, shim: &ShimArgs) -> Look {
    match (shim.kind(), &shim.workdir) {
        (ShimKind::V1, Some(workdir)) => exists(snap, pid, "workdir", Path::new(workdir)),
        _ => look_v2(snap, pid, shim),
    }
}

/// Whether `path` exists as process `pid` sees it.
fn exists(snap: &Snapshot, pid: i32, what: &'static str, path: &Path) -> Look {
    let shown = path.display().to_string();
    match std::fs::symlink_metadata(snap.path_in_root(pid, path)) {
        Ok(_) => Look::Present { what, path: shown },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if snap.dir(pid).exists() {
                Look::Gone { what, path: shown }
            } else {
                Look::Unknown("the shim exited while it was looked at".into())
            }
        }
        Err(e) => Look::Unknown(format!(
            "its {what} {shown} could not be read: {}",
            describe(&e)
        )),
    }
}

/// A v2 shim's bundle. containerd starts the shim in the bundle directory (runtime/v2/shim/
/// util.go `Command`: `cmd.Dir = path`) and runc.v2 starts its daemon in its own working
/// directory (runtime/v2/runc/manager/manager_linux.go `newCommand`: `cmd.Dir = cwd`), so
/// `/proc/PID/cwd` names the bundle, with " (deleted)" once it is removed (proc(5)),
/// whatever the state directory. When the cwd
/// cannot be read or is not a bundle, the bundle is looked for under the state directory:
/// the socket's directory (containerd's own layout and most distributions' put both in one
/// place, /run/containerd), then the default.
fn look_v2(snap: &Snapshot, pid: i32, shim: &ShimArgs) -> Look {
    let (Some(ns), Some(id)) = (&shim.namespace, &shim.id) else {
        return Look::Unknown("its command line names no -namespace or -id".into());
    };
    let cwd = std::fs::read_link(snap.dir(pid).join("cwd"));
    if let Ok(cwd) = &cwd {
        let text = cwd.to_string_lossy();
        let (path, deleted) = match text.strip_suffix(" (deleted)") {
            Some(p) => (PathBuf::from(p), true),
            None => (cwd.clone(), false),
        };
        if is_bundle(&path, ns, id) {
            let path = path.display().to_string();
            return if deleted {
                Look::Gone {
                    what: "bundle",
                    path,
                }
            } else {
                Look::Present {
                    what: "bundle",
                    path,
                }
            };
        }
    }
    let states = state_dirs(shim.address.as_deref());
    for state in &states {
        let tasks = state.join(V2_TASK_DIR).join(ns);
        if snap.path_in_root(pid, &tasks).is_dir() {
            return exists(snap, pid, "bundle", &tasks.join(id));
        }
    }
    let cwd_note = match cwd {
        Ok(c) => format!("its cwd {} is no bundle", c.display()),
        Err(e) => format!("its cwd could not be read: {}", describe(&e)),
    };
    let tried: Vec<String> = states
        .iter()
        .map(|s| s.join(V2_TASK_DIR).join(ns).display().to_string())
        .collect();
    Look::Unknown(format!(
        "{cwd_note}, and there is no {}",
        tried.join(" nor ")
    ))
}

/// Whether `path` is a task bundle of `ns`/`id`: `.../<ns>/<id>`.
fn is_bundle(path: &Path, ns: &str, id: &str) -> bool {
    path.file_name().is_some_and(|n| n == id)
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == ns)
}

/// Where containerd's state directory may be: the socket's directory, then the default.
fn state_dirs(address: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = address
        .and_then(|a| Path::new(a).parent())
        .filter(|d| d.is_absolute() && *d != Path::new("/"))
        .map(|d| vec![d.to_path_buf()])
        .unwrap_or_default();
    if !dirs.iter().any(|d| d == Path::new(DEFAULT_STATE)) {
        dirs.push(PathBuf::from(DEFAULT_STATE));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_ends_in_namespace_and_id() {
        let p = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc");
        assert!(is_bundle(p, "k8s.io", "abc"));
        assert!(!is_bundle(p, "default", "abc"));
        assert!(!is_bundle(Path::new("/"), "k8s.io", "abc"));
    }

    #[test]
    fn state_dirs_are_the_sockets_then_the_default_once() {
        assert_eq!(
            state_dirs(Some("/run/containerd/containerd.sock")),
            vec![PathBuf::from("/run/containerd")]
        );
        assert_eq!(
            state_dirs(Some("/run/k3s/containerd/containerd.sock")),
            vec![
                PathBuf::from("/run/k3s/containerd"),
                PathBuf::from("/run/containerd")
            ]
        );
        assert_eq!(state_dirs(None), vec![PathBuf::from("/run/containerd")]);
    }

    /// A child in `cwd`, and a snapshot that has it.
    fn child_in(cwd: &Path) -> (std::process::Child, Snapshot) {
        let child = std::process::Command::new("sleep")
            .arg("100")
            .current_dir(cwd)
            .spawn()
            .unwrap();
        let snap = Snapshot::take(Path::new("/proc")).unwrap();
        (child, snap)
    }

    fn v2(ns: &str, id: &str, address: &Path) -> ShimArgs {
        ShimArgs {
            binary: "containerd-shim-runc-v2".into(),
            namespace: Some(ns.into()),
            id: Some(id.into()),
            address: Some(address.display().to_string()),
            workdir: None,
        }
    }

    #[test]
    fn a_v2_bundle_is_the_shims_cwd_and_gone_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("io.containerd.runtime.v2.task/k8s.io/abc");
        std::fs::create_dir_all(&bundle).unwrap();
        let (mut child, snap) = child_in(&bundle);
        let shim = v2("k8s.io", "abc", Path::new("/nonexistent/containerd.sock"));
        let shown = bundle.display().to_string();
        let present = look(&snap, child.id() as i32, &shim);
        std::fs::remove_dir(&bundle).unwrap();
        let gone = look(&snap, child.id() as i32, &shim);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            present,
            Look::Present {
                what: "bundle",
                path: shown.clone()
            }
        );
        assert_eq!(
            gone,
            Look::Gone {
                what: "bundle",
                path: shown
            }
        );
    }

    #[test]
    fn without_a_bundle_for_cwd_the_state_dir_beside_the_socket_is_looked_in() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("io.containerd.runtime.v2.task/k8s.io");
        std::fs::create_dir_all(tasks.join("there")).unwrap();
        let sock = dir.path().join("containerd.sock");
        let (mut child, snap) = child_in(Path::new("/"));
        let pid = child.id() as i32;
        let there = look(&snap, pid, &v2("k8s.io", "there", &sock));
        let gone = look(&snap, pid, &v2("k8s.io", "gone", &sock));
        let unknown = look(&snap, pid, &v2("elsewhere", "x", &sock));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(there, Look::Present { .. }), "{there:?}");
        assert_eq!(
            gone,
            Look::Gone {
                what: "bundle",
                path: tasks.join("gone").display().to_string()
            }
        );
        // No task directory of that namespace anywhere: it cannot tell.
        let Look::Unknown(why) = unknown else {
            panic!("{unknown:?}")
        };
        assert!(
            why.contains("is no bundle") && why.contains("/run/containerd"),
            "{why}"
        );
    }
}
