//! The snapshot against the live /proc (our own process, kthreadd, pid 1 as an unprivileged
//! user) and against a procfs-shaped directory for the cases a live system cannot be made to
//! show on demand (an entry gone before it was read, one that reads as an error).

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

/// A stat line captured on 6.18 from `sleep` run through a symlink named `a) b (c`.
const STAT_ODD_COMM: &str = include_str!("testdata/stat_odd_comm_6.18.txt");

fn me() -> i32 {
    std::process::id() as i32
}

#[test]
fn reads_our_own_process() {
    let snap = Snapshot::take(Path::new("/proc")).unwrap();
    let p = snap.get(me()).expect("our own pid is listed");
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(p.comm, comm.trim_end());
    // The main thread waits for the test threads; this one runs.
    assert!(matches!(p.state, 'R' | 'S'), "{}", p.state);
    let tid = nix::unistd::gettid().as_raw();
    let this = p.tasks.iter().find(|t| t.tid == tid).expect("this thread");
    assert_eq!(this.state, 'R');
    assert_eq!(p.ppid, nix::unistd::getppid().as_raw());
    assert!(!p.kernel_thread);
    let ns = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
    assert_eq!(p.mnt_ns, Some(ns));
    assert!(p.tasks.iter().any(|t| t.tid == me()), "{:?}", p.tasks);
    assert!(snap.processes().windows(2).all(|w| w[0].pid < w[1].pid));

    let holding: Vec<_> = snap
        .mount_namespaces()
        .into_iter()
        .filter(|n| n.pids.contains(&me()))
        .collect();
    assert_eq!(holding.len(), 1);
    assert_eq!(holding[0].inode, ns);
    let (pid, mounts) = holding[0].mountinfo(Path::new("/proc")).unwrap();
    assert!(holding[0].pids.contains(&pid));
    assert!(!mounts.is_empty());
    assert_eq!(
        snap.cmdline(me()).unwrap()[0],
        std::env::args().next().unwrap()
    );
}

#[test]
fn kernel_threads_have_no_mount_namespace() {
    // kthreadd is pid 2 when /proc belongs to the initial pid namespace.
    let snap = Snapshot::take(Path::new("/proc")).unwrap();
    let kthreadd = snap
        .get(2)
        .filter(|p| p.kernel_thread)
        .expect("cannot run here: pid 2 is not kthreadd (not the initial pid namespace)");
    assert_eq!(kthreadd.comm, "kthreadd");
    assert_eq!(kthreadd.mnt_ns, None);
    assert!(snap.user_processes().all(|p| p.pid != 2));
    assert!(snap
        .mount_namespaces()
        .iter()
        .all(|ns| !ns.pids.contains(&2)));
}

/// A directory shaped like procfs: `1000` has a real stat line, `424242` has nothing in it
/// (what a process that exited between the listing and the read looks like), and `77`'s stat
/// cannot be read (a directory: EISDIR).
#[test]
fn a_gone_pid_is_vanished_and_an_unreadable_one_is_a_gap() {
    let root = tempfile::tempdir().unwrap();
    let dir = |pid: &str| {
        let d = root.path().join(pid);
        std::fs::create_dir_all(d.join("task")).unwrap();
        d
    };
    std::fs::write(dir("1000").join("stat"), STAT_ODD_COMM).unwrap();
    dir("424242");
    std::fs::create_dir(dir("77").join("stat")).unwrap();
    std::fs::create_dir(root.path().join("not-a-pid")).unwrap();

    let snap = Snapshot::take(root.path()).unwrap();
    assert_eq!(snap.vanished(), [424242]);
    let pids: Vec<i32> = snap.processes().iter().map(|p| p.pid).collect();
    assert_eq!(pids, [1000]);
    assert_eq!(snap.processes()[0].comm, "a) b (c");
    assert_eq!(snap.processes()[0].ppid, 22430);
    assert_eq!(snap.gaps().failed_ids(STAT), [77]);
    let m = snap.gaps().messages();
    assert!(
        m.iter().any(
            |s| s.starts_with("could not read the status (/proc/PID/stat) of 1 of 2 processes")
        ),
        "{m:?}"
    );
    // Its ns/mnt is missing too, which reads as "gone", not as a gap.
    assert!(snap.gaps().failed_ids(MOUNT_NS).is_empty());
}

#[test]
fn a_missing_proc_root_is_an_error() {
    let e = Snapshot::take(Path::new("/nonexistent/proc")).unwrap_err();
    assert_eq!(e.path, Path::new("/nonexistent/proc"));
    assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
}

/// As an unprivileged user, root's processes' mount namespaces cannot be read (proc(5): the
/// ns links need ptrace read access): the snapshot must count them as gaps, not skip them.
#[test]
fn an_unprivileged_walk_records_what_it_could_not_read() {
    if !nix::unistd::geteuid().is_root() {
        return unprivileged_walk_as_this_user();
    }
    // A copy of this test binary that uid 65534 can reach: the checkout may sit under a
    // directory only root can enter (`mktemp -d` makes them 0700).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("proc-tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let out = std::process::Command::new(&exe)
        .current_dir("/")
        .args([
            "--exact",
            "proc::tests::unprivileged_walk_as_this_user",
            "--include-ignored",
            "--nocapture",
        ])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the walk as uid 65534 failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "run by an_unprivileged_walk_records_what_it_could_not_read as uid 65534"]
fn unprivileged_walk_as_this_user() {
    assert!(!nix::unistd::geteuid().is_root());
    let snap = Snapshot::take(Path::new("/proc")).unwrap();
    let init = snap.get(1).expect("pid 1 is listed");
    assert_eq!(init.mnt_ns, None);
    assert!(snap.gaps().failed_ids(MOUNT_NS).contains(&1));
    let m = snap.gaps().messages();
    assert!(
        m.iter()
            .any(|s| s.starts_with("could not read the mount namespace")
                && s.ends_with("permission denied (run as root)")),
        "{m:?}"
    );
    // Our own process is readable.
    assert!(snap.get(me()).unwrap().mnt_ns.is_some());
}

#[test]
fn stat_state_survives_odd_command_names() {
    assert_eq!(stat_state(STAT_ODD_COMM), Some('S'));
    assert_eq!(stat_state("garbage"), None);
}
