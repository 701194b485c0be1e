//! Each rule of harness/deploy/'s NPD configs, run the way node-problem-detector runs it
//! (see npd_plugin: its path and args in a process group, killed at the timeout, stdout
//! trimmed and cut to max_output_length, exit code mapped to OK/NonOK/Unknown), with this
//! build's binary in place of /opt/faultline/faultline: OK on a healthy node, NonOK with a
//! message that names the fault when the fault is there.
//!
//! The "node" is a fresh pid and mount namespace (`unshare --pid --fork --mount-proc`) and
//! the rule runs inside it through `nsenter`, as NPD with hostPID runs inside the node's.
//! Two reasons: on this test machine the host's pid 1 cannot be read even by root, so a
//! host-wide check is honestly partial (Unknown), never OK; and other tests on the machine
//! plant faults of their own at any time. In the namespace every process is readable and
//! the only faults are the ones the test makes. The kernel log is not namespaced: on the
//! healthy node the ext4-index-full rule reads a real capture (`--kmsg-file`, appended)
//! instead of this machine's log, which other tests fill with index-full warnings.

#[allow(dead_code)] // the helpers the check_* tests use
mod common;
mod node;
mod npd_plugin;

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::Requirement;
use node::Node;
use npd_plugin::{config, rules, PluginResult, Rule, Status, CONFIGS};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

fn require_runnable() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("unshare", "util-linux"),
        Requirement::binary("nsenter", "util-linux"),
        Requirement::binary("mount", "mount"),
        Requirement::binary("mkfs.ext4", "e2fsprogs"),
    ]);
}

fn all_rules() -> Vec<Rule> {
    CONFIGS.iter().flat_map(|c| rules(&config(c))).collect()
}

fn rule(detector: &str) -> Rule {
    all_rules()
        .into_iter()
        .find(|r| r.detector() == detector)
        .unwrap_or_else(|| panic!("no rule runs {detector}"))
}

fn kmsg_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../detect/tests/fixtures/ext4")
        .join(name)
}

/// A rule run inside `node` as NPD would run it there.
fn run_in(node: &Node, rule: &Rule, extra: &[&str]) -> PluginResult {
    let r = npd_plugin::run(rule, Path::new(FAULTLINE), extra, &node.enter());
    eprintln!(
        "{}: {:?} {:?} in {:?}",
        rule.detector(),
        r.status,
        r.message,
        r.elapsed
    );
    r
}
#[test]
fn every_rule_is_ok_on_a_healthy_node() {
    require_runnable();
    let node = Node::start("");
    let healthy_log = kmsg_fixture("kmsg-dmesg-T.txt");
    for rule in all_rules() {
        // A real capture (`dmesg -T`, taken on 2026-11-22) whose warnings are older than the
        // rule's `--since 1h` on a machine whose clock is past that date.
        let extra = match rule.detector() {
            "ext4-index-full" => vec!["--kmsg-file", healthy_log.to_str().unwrap()],
            _ => vec![],
        };
        let r = run_in(&node, &rule, &extra);
        assert_eq!(
            (r.status, r.message.as_str()),
            (
                Status::Ok,
                format!("OK: {} found no problem", rule.detector()).as_str()
            ),
            "{rule:?}"
        );
    }
}

/// A file bound into a "container" (its own mount namespace inside the node) at a
/// kubelet-like path, then replaced on the node with rename(2), as `mv -f` and config
/// management tools do.
#[test]
fn stale_bind_rule_is_nonok_and_names_the_bind() {
    require_runnable();
    let node = Node::start(&node::bound_file_setup());
    let rule = rule("stale-bind");
    assert_eq!(
        run_in(&node, &rule, &[]).status,
        Status::Ok,
        "before the rename"
    );

    node.replace_bound_file();
    let r = run_in(&node, &rule, &[]);
    assert_eq!(r.status, Status::NonOk, "{r:?}");
    let dir = node.dir.path().display().to_string();
    assert!(
        r.message.starts_with(&format!("stale bind {}", &dir[..5])),
        "{r:?}"
    );
    assert!(r.message.ends_with("/…/data.txt"), "{r:?}");
    assert!(r.message.len() <= rule.max_output_length, "{r:?}");
}

/// Debian's bindfs, a FUSE daemon faultline did not write, SIGKILLed under its mount (the
/// kernel answers ENOTCONN at once), then SIGSTOPped instead (every request waits for an
/// answer that never comes); a second bindfs mount stays healthy. The rule must answer
/// inside NPD's timeout, which a stat of the hung mount is bounded in a child for: past the
/// timeout NPD kills the plugin and the answer is a "Timeout when running plugin" Unknown.
#[test]
fn dead_fuse_rule_is_nonok_within_the_timeout() {
    require_runnable();
    common::require(&[
        Requirement::binary("bindfs", "bindfs"),
        Requirement::binary("mountpoint", "util-linux"),
        Requirement::Path {
            path: "/dev/fuse",
            why: "the FUSE device (modprobe fuse)",
        },
    ]);
    let setup = r#"
mkdir "$1/src" "$1/dead" "$1/live"
bindfs -f "$1/src" "$1/dead" & dead=$!
bindfs -f "$1/src" "$1/live" &
i=0; until mountpoint -q "$1/dead" && mountpoint -q "$1/live"; do
  i=$((i+1)); [ $i -lt 400 ] || exit 1; sleep 0.05
done
"#;
    let rule = rule("dead-fuse");
    let healthy = Node::start(setup);
    assert_eq!(
        run_in(&healthy, &rule, &[]).status,
        Status::Ok,
        "live bindfs mounts"
    );
    drop(healthy);

    let node = Node::start(&format!("{setup}\nkill -9 $dead; wait $dead || true"));
    let r = run_in(&node, &rule, &[]);
    assert_eq!(r.status, Status::NonOk, "{r:?}");
    assert_eq!(
        r.message,
        format!("dead FUSE mount {}", node.path("dead").display()),
        "{r:?}"
    );
    drop(node);

    let node = Node::start(&format!("{setup}\nkill -STOP $dead"));
    let r = run_in(&node, &rule, &[]);
    assert_eq!(r.status, Status::NonOk, "{r:?}");
    assert_eq!(
        r.message,
        format!("hung FUSE mount {}", node.path("dead").display()),
        "{r:?}"
    );
}

/// The node's kubelet directory (ext4 without large_dir) filled until creates fail: the
/// kernel logs `index full` now, and the ext4-index-full rule (the live kernel log, the last
/// hour) reports the directory as failing creates; htree-capacity's temporary rule, which
/// measures that very directory, reports it full.
#[test]
fn ext4_rules_are_nonok_when_the_kubelet_directory_index_fills() {
    require_runnable();
    common::require(&[Requirement::Path {
        path: "/dev/kmsg",
        why: "the kernel log",
    }]);
    let node = Node::start("");
    node.fill_index("/var/lib/kubelet/pods");
    let r = run_in(&node, &rule("ext4-index-full"), &[]);
    assert_eq!(r.status, Status::NonOk, "{r:?}");
    // Other tests on this machine leave index-full warnings of their own in the kernel log:
    // they are history, and the failing directory leads.
    assert!(
        r.message
            .starts_with("ext4 dir index full, creates fail: /var/lib/kubelet/pods"),
        "{r:?}"
    );
    let r = run_in(&node, &rule("htree-capacity"), &[]);
    assert_eq!(r.status, Status::NonOk, "{r:?}");
    assert_eq!(r.message, "ext4 dir index 100% full: /var/lib/kubelet/pods");
}

/// NPD's side of the contract, checked on the runner itself: a plugin past its timeout is
/// killed with its process group and reported Unknown.
#[test]
fn the_runner_kills_at_the_timeout_like_npd() {
    let mut r = rule("stale-bind");
    r.timeout = Duration::from_millis(300);
    r.path = PathBuf::from("/bin/sh");
    r.args = vec!["-c".into(), "echo started; sleep 30 & wait".into()];
    let out = npd_plugin::run(&r, Path::new("/bin/sh"), &[], &[]);
    assert_eq!(out.status, Status::Unknown, "{out:?}");
    assert!(
        out.message.starts_with("Timeout when running plugin"),
        "{out:?}"
    );
    assert!(out.elapsed < Duration::from_secs(10), "{out:?}");
}
