//! A "node" for tests of how faultline runs on one: a fresh pid and mount namespace with its
//! own /proc (`unshare --pid --fork --mount-proc`), in which every process is readable and
//! the only faults are the ones the test makes. On this test machine the host's pid 1
//! cannot be read even by root, so a host-wide check is honestly partial there, and other
//! tests plant faults of their own at any time. Commands run inside through `nsenter`, as a
//! DaemonSet with hostPID runs inside the real node's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_sys::ChildGroup;

use super::common;

/// A node: a process that is pid 1 of its own pid namespace, with its own mount namespace
/// and /proc, after `setup` (a shell script; `$1` is the test's directory) has run in it.
/// Killed, with everything in it, when dropped; the directory goes after it.
pub struct Node {
    init: ChildGroup,
    pub dir: tempfile::TempDir,
}

/// Mounts an ext4 file system at /var/lib/kubelet (on a tmpfs over /var/lib, all inside the
/// node's mount namespace), as on a node whose kubelet directory is on ext4: the
/// htree-capacity rule measures /var/lib/kubelet/pods. 1 KiB blocks, no `large_dir` and
/// enough inodes that a test can fill a directory's index in a second or two
/// ([`Node::fill_index`]).
const KUBELET_ON_EXT4: &str = r#"
mount -t tmpfs tmpfs /var/lib
mkdir -p /var/lib/kubelet
truncate -s 24M "$1/kubelet.img"
mkfs.ext4 -q -F -b 1024 -N 30000 -m 0 -O ^large_dir "$1/kubelet.img"
mount -o loop "$1/kubelet.img" /var/lib/kubelet
mkdir /var/lib/kubelet/pods
"#;

impl Node {
    pub fn start(setup: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("npd-node")
            .tempdir()
            .unwrap();
        let script = format!("set -e\n{KUBELET_ON_EXT4}\n{setup}\necho ready\nexec sleep 600\n");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--mount",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", &script, "sh"])
        .arg(dir.path())
        .stdout(Stdio::piped());
        let mut init = ChildGroup::spawn("npd node", &mut cmd).expect("failed to spawn unshare");
        common::wait_ready(&mut init, "npd node", Duration::from_secs(30));
        Node { init, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `nsenter` into the node's mount namespace and, for the command it starts, its pid
    /// namespace (unshare's own pid namespace is the host's; its children's is the node's).
    pub fn enter(&self) -> Vec<OsString> {
        let pid = self.init.pid();
        vec![
            "nsenter".into(),
            format!("--mount=/proc/{pid}/ns/mnt").into(),
            format!("--pid=/proc/{pid}/ns/pid_for_children").into(),
            "--".into(),
        ]
    }

    /// `path` (absolute, as the node sees it) from outside the node, through its root.
    pub fn inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init.pid())).join(path.trim_start_matches('/'))
    }

    /// Creates files with long names in `dir` (as the node sees it) until the kernel refuses
    /// with ENOSPC: the directory's htree index is full (the kernel logs `index full`).
    pub fn fill_index(&self, dir: &str) {
        let dir = self.inside(dir);
        for i in 0..100_000u32 {
            let name = format!("{i:08}-{}", "x".repeat(246));
            if let Err(e) = std::fs::File::create_new(dir.join(name)) {
                assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
                return;
            }
        }
        panic!("the index of {} never filled", dir.display());
    }

    /// Replaces the file [`bound_file_setup`] bound, on the node, with rename(2) (what
    /// `mv -f` and configuration management tools do): the bind goes stale.
    pub fn replace_bound_file(&self) {
        std::fs::write(self.path("new.txt"), "version2\n").unwrap();
        std::fs::rename(self.path("new.txt"), self.path("data.txt")).unwrap();
    }
}

/// Where [`bound_file_setup`] binds the file, under the node's directory: a kubelet-like
/// pod volume path, long enough to need shortening in an 80-byte line.
pub const BOUND_FILE: &str =
    "pods/0f5ac4e2-4d36-4a53-9f1e-1d1cf5f2f7a0/volumes/kubernetes.io~configmap/config/data.txt";

/// Setup for [`Node::start`]: a "container" (its own mount namespace inside the node) holding
/// a bind of the node's `data.txt` at [`BOUND_FILE`].
pub fn bound_file_setup() -> String {
    format!(
        r#"
mkdir -p "$1/{parent}"
echo version1 > "$1/data.txt"; : > "$1/{BOUND_FILE}"
unshare -m --propagation private sh -c 'mount --bind "$1/data.txt" "$1/{BOUND_FILE}" && touch "$1/held" && exec sleep 600' sh "$1" &
i=0; until [ -e "$1/held" ]; do i=$((i+1)); [ $i -lt 400 ] || exit 1; sleep 0.05; done
"#,
        parent = std::path::Path::new(BOUND_FILE).parent().unwrap().display()
    )
}
