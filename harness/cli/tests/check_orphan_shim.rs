//! `faultline check orphan-shim` on this live node when the containerd a shim names does not
//! answer: the filesystem decides. Processes with containerd's shim command lines (argv[0]
//! `containerd-shim` or `containerd-shim-runc-v2`; a shell that sleeps, so its arguments are
//! not interpreted) name a containerd socket that does not exist:
//! - v1, workdir gone: reported, judged by the filesystem;
//! - v2, bundle (its working directory, as containerd starts v2 shims) removed: reported;
//! - v1, workdir present: not reported, and the check says it is partial, not clean;
//! - any of them younger than the grace period: not reported.
//!
//! Asserts only on its own processes (other developers' shims may be visible).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_sys::{wait_until, ChildGroup};

#[allow(dead_code)]
mod common;

use common::{check_orphan_shim, finding_of};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");

/// A stand-in shim: a copy of `sh` named `name` (so the kernel's command, which the
/// detector selects candidates by, is the shim's), running `sleep 1000; exit 0` (the `exit`
/// keeps the shell from replacing itself with sleep) with argv[0] `name` and the shim's
/// flags after it, started in `cwd`.
fn fake_shim(name: &str, flags: &[String], cwd: &Path) -> ChildGroup {
    // In cargo's scratch directory for tests; put in place by rename, since another test
    // may be running the same copy (writing over a running executable is ETXTBSY).
    let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-shims");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join(name);
    let staged = bin.join(format!(
        ".{name}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::copy(faultline_sys::path::find_on_path("sh").unwrap(), &staged).unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.arg0(name)
        .args(["-c", "sleep 1000; exit 0", name])
        .args(flags)
        .current_dir(cwd)
        .stdin(Stdio::null());
    let group = ChildGroup::spawn(name, &mut cmd).unwrap();
    let pid = group.pid();
    wait_until(
        "the stand-in's command line",
        Duration::from_secs(5),
        || {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
            let argv0 = raw.split(|b| *b == 0).next().unwrap_or_default();
            if argv0 == name.as_bytes() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&raw).into_owned())
            }
        },
    )
    .unwrap();
    group
}

fn v1_flags(workdir: &Path, sock: &Path) -> Vec<String> {
    [
        "-namespace",
        "k8s.io",
        "-workdir",
        &workdir.display().to_string(),
        "-address",
        &sock.display().to_string(),
        "-containerd-binary",
        "/usr/bin/containerd",
    ]
    .map(String::from)
    .to_vec()
}

struct Shims {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    v1_gone: ChildGroup,
    v1_gone_id: String,
    v2_gone: ChildGroup,
    v2_bundle: PathBuf,
    v1_there: ChildGroup,
}

fn start_shims() -> Shims {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("no-containerd/containerd.sock");
    let v1_root = dir
        .path()
        .join("root/io.containerd.runtime.v1.linux/k8s.io");
    let v1_gone_id = "513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f";
    let gone_workdir = v1_root.join(v1_gone_id);
    let there_workdir = v1_root.join("c0ffee");
    std::fs::create_dir_all(&there_workdir).unwrap();
    let v1_gone = fake_shim(
        "containerd-shim",
        &v1_flags(&gone_workdir, &sock),
        dir.path(),
    );
    let v1_there = fake_shim(
        "containerd-shim",
        &v1_flags(&there_workdir, &sock),
        dir.path(),
    );
    let v2_bundle = dir
        .path()
        .join("state/io.containerd.runtime.v2.task/k8s.io/feedface");
    std::fs::create_dir_all(&v2_bundle).unwrap();
    let v2_flags = [
        "-namespace",
        "k8s.io",
        "-id",
        "feedface",
        "-address",
        &sock.display().to_string(),
    ]
    .map(String::from);
    let v2_gone = fake_shim("containerd-shim-runc-v2", &v2_flags, &v2_bundle);
    // containerd removed the task's bundle; the shim stayed in it.
    std::fs::remove_dir(&v2_bundle).unwrap();
    Shims {
        _dir: dir,
        sock,
        v1_gone,
        v1_gone_id: v1_gone_id.to_string(),
        v2_gone,
        v2_bundle,
        v1_there,
    }
}

#[test]
fn without_an_answer_from_containerd_the_filesystem_decides_and_says_so() {
    let s = start_shims();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, doc) = check_orphan_shim(1);
    assert_eq!(code, Some(1), "a finding makes check exit 1: {doc:#}");

    let f = finding_of(&doc, s.v1_gone.pid()).unwrap_or_else(|| panic!("v1 orphan: {doc:#}"));
    let ev = &f["evidence"];
    assert_eq!(f["detector"], "orphan-shim");
    assert_eq!(ev["id"], s.v1_gone_id.as_str());
    assert_eq!(ev["namespace"], "k8s.io");
    let judged = ev["judged_by"].as_str().unwrap();
    assert!(
        judged.starts_with("filesystem (containerd did not answer: ")
            && judged.contains(&s.sock.display().to_string()),
        "{f:#}"
    );
    assert_eq!(ev["workdir"]["exists"], false, "{f:#}");
    assert!(ev["age_s"].is_u64(), "{f:#}");
    assert_eq!(ev["in_d"], false, "{f:#}");
    let remedy = f["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("1.6.25") && remedy.contains("#9309"),
        "{remedy}"
    );
    assert!(
        remedy.contains(&format!("kill {}", s.v1_gone.pid())),
        "{remedy}"
    );

    let f = finding_of(&doc, s.v2_gone.pid()).unwrap_or_else(|| panic!("v2 orphan: {doc:#}"));
    assert_eq!(
        f["evidence"]["bundle"]["path"],
        s.v2_bundle.display().to_string(),
        "{f:#}"
    );
    assert_eq!(f["evidence"]["bundle"]["exists"], false, "{f:#}");
    assert!(f["remedy"].as_str().unwrap().contains("1.6.24"), "{f:#}");

    // Its workdir is there, and containerd did not answer: not healthy, not reported, and
    // the check says it could not tell.
    assert!(
        finding_of(&doc, s.v1_there.pid()).is_none(),
        "the shim with a workdir was reported: {doc:#}"
    );
    let entry = doc["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "orphan-shim")
        .unwrap();
    assert_eq!(entry["partial"], true, "{entry:#}");
    let unreadable = entry["unreadable"].to_string();
    assert!(
        unreadable.contains("whether containerd still knows the task"),
        "{unreadable}"
    );
}

#[test]
fn shims_younger_than_the_grace_period_are_not_judged() {
    let s = start_shims();
    let (_, doc) = check_orphan_shim(3600);
    for pid in [s.v1_gone.pid(), s.v2_gone.pid(), s.v1_there.pid()] {
        assert!(finding_of(&doc, pid).is_none(), "{pid} reported: {doc:#}");
    }
    // The same shims once past a 1 s grace: reported, so the silence above was the grace
    // period's, not a detector that did not see them.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, doc) = check_orphan_shim(1);
    for pid in [s.v1_gone.pid(), s.v2_gone.pid()] {
        assert!(
            finding_of(&doc, pid).is_some(),
            "{pid} not reported: {doc:#}"
        );
    }
}

#[test]
fn a_bad_grace_period_is_a_one_line_error() {
    let out = Command::new(FAULTLINE)
        .args(["check", "orphan-shim"])
        .env("FAULTLINE_SHIM_GRACE_SECS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAULTLINE_SHIM_GRACE_SECS") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
