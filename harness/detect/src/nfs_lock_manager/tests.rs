//! Unit tests of nfs-lock-manager on text captured for real: the guest's mountinfo line and
//! kernel stacks of a task stuck in `flock()` (Debian 6.1.0-56 and 6.12.117 cloud kernels,
//! saved from the nfs-flock-dead-statd scenario's report), this host's own stack for a task
//! that is not in the NLM, and the lockd kernel log lines quoted in Andrew Howden's public case
//! study "Resolving frozen processes in kubernetes" (php-fpm on NFSv3 without rpc.statd).

use super::*;
use crate::finding::Severity;
use faultline_sys::mountinfo::MountInfo;

const MOUNTINFO_6_1: &str = include_str!("../testdata/nfs_mountinfo_6.1.txt");
const STACK_6_1: &str = include_str!("../testdata/nfs_stack_nsm_monitor_6.1.txt");
const STACK_6_12: &str = include_str!("../testdata/nfs_stack_nsm_monitor_6.12.txt");
const STACK_NOT_NLM: &str = include_str!("../testdata/stack_read_proc_6.18.txt");
const DMESG_CASE_STUDY: &str = include_str!("../testdata/nfs_lockd_dmesg_howden_case_study.txt");

fn mount(line: &str) -> MountInfo {
    MountInfo::parse_line(line.trim_end().as_bytes()).unwrap()
}

#[test]
fn nfsv3_mount_with_locking_uses_nlm() {
    let m = nlm_mount(&mount(MOUNTINFO_6_1)).expect("an NLM mount");
    assert_eq!(m.mount_point, "/tmp/nfs-flock-dead-statd/statd-dead/mnt");
    assert_eq!(
        m.source,
        "127.0.0.1:/tmp/nfs-flock-dead-statd/statd-dead/export"
    );
    assert_eq!(m.version, "3");
    assert_eq!(m.local_lock, "none");
}

#[test]
fn mounts_that_keep_locks_local_do_not_count() {
    // The captured line with one option changed as `mount -o` would change it.
    let with = |from: &str, to: &str| mount(&MOUNTINFO_6_1.replace(from, to));
    assert!(nlm_mount(&with("local_lock=none", "nolock,local_lock=all")).is_none());
    assert!(nlm_mount(&with("local_lock=none", "local_lock=flock")).is_none());
    assert!(nlm_mount(&with("local_lock=none", "local_lock=posix")).is_some());
    assert!(nlm_mount(&with(" - nfs ", " - nfs4 ").clone()).is_none());
    assert!(nlm_mount(&with("vers=3,", "vers=4.2,")).is_none());
    assert!(nlm_mount(&with("vers=3,", "vers=2,")).is_some());
}

#[test]
fn stacks_in_nsm_monitor_are_lock_waits() {
    assert_eq!(nlm_frame(STACK_6_1).as_deref(), Some("nsm_monitor"));
    assert_eq!(nlm_frame(STACK_6_12).as_deref(), Some("nsm_monitor"));
    assert_eq!(nlm_frame(STACK_NOT_NLM), None);
    assert_eq!(nlm_frame(""), None);
}

#[test]
fn lockd_lines_from_the_seed_node() {
    let lines = lockd_lines(&kernel_log::parse_capture(DMESG_CASE_STUDY));
    let kinds: Vec<_> = lines.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LockdLineKind::NotResponding,
            LockdLineKind::Recovered,
            LockdLineKind::OutOfSync
        ]
    );
    assert_eq!(lines[0].server.as_deref(), Some("10.1.84.31"));
    assert_eq!(lines[0].when.as_deref(), Some("927063.519245"));
}

fn observations(registration: StatdRegistration, statd_pids: Vec<i32>) -> Observations {
    Observations {
        mounts: vec![nlm_mount(&mount(MOUNTINFO_6_1)).unwrap()],
        statd_pids,
        registration,
        waiters: vec![],
        log: vec![],
        gaps: Default::default(),
    }
}

#[test]
fn judges_statd_state_for_nlm_mounts() {
    let ok = observations(StatdRegistration::Registered { udp_port: 57322 }, vec![105]);
    assert!(judge(&ok).is_empty());

    let dead = observations(StatdRegistration::NotRegistered, vec![]);
    let f = judge(&dead);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].subject, "/tmp/nfs-flock-dead-statd/statd-dead/mnt");
    assert!(
        f[0].message.contains("not running and not registered"),
        "{}",
        f[0].message
    );
    assert!(f[0].remedy.contains("rpc-statd"));

    let stale = observations(StatdRegistration::Registered { udp_port: 57322 }, vec![]);
    assert!(judge(&stale)[0]
        .message
        .contains("died without unregistering"));
    let unregistered = observations(StatdRegistration::NotRegistered, vec![105]);
    assert!(judge(&unregistered)[0]
        .message
        .contains("not registered with rpcbind"));
    let no_rpcbind = observations(
        StatdRegistration::RpcbindUnreachable("connection refused".into()),
        vec![],
    );
    assert!(judge(&no_rpcbind)[0]
        .message
        .contains("rpcbind does not answer"));

    // No NFS mounts, nothing blocked: statd's absence is nobody's problem.
    let mut quiet = observations(StatdRegistration::NotRegistered, vec![]);
    quiet.mounts.clear();
    assert!(judge(&quiet).is_empty());
}

#[test]
fn reports_blocked_tasks_and_the_latest_lockd_line_per_server() {
    let mut o = observations(StatdRegistration::Registered { udp_port: 1 }, vec![9]);
    o.waiters.push(LockWaiter {
        pid: 19,
        comm: "php-fpm".into(),
        state: 'D',
        wchan: "rpc_wait_bit_killable".into(),
        frame: nlm_frame(STACK_6_1).unwrap(),
        stack: STACK_6_1.lines().map(str::to_string).collect(),
    });
    // "not responding" then "OK" for the same server: over. The out-of-sync line stays.
    o.log = lockd_lines(&kernel_log::parse_capture(DMESG_CASE_STUDY));
    let f = judge(&o);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_eq!(f[0].pid, Some(19));
    assert!(f[0].message.contains("php-fpm (pid 19) is blocked"));
    assert!(f[1].message.contains("out of sync"));

    // Only "not responding": still a warning naming the server.
    o.waiters.clear();
    o.log = lockd_lines(&kernel_log::parse_capture(
        DMESG_CASE_STUDY.lines().next().unwrap(),
    ));
    let f = judge(&o);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].severity, Severity::Warning);
    assert_eq!(f[0].subject, "10.1.84.31");
}
