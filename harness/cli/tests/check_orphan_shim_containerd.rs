//! `faultline check orphan-shim` on a real containerd's orphan (containerd#7496), as root.
//!
//! A private containerd (faultline-runtime's `PrivateContainerd`, its state at the default
//! /run/containerd, which only it and its shims see in their own /run) runs two pods
//! through CRI, as kubelet does.
//! One pod's shim gets its `umount2` held 12 s on entry by `faultline inject` (upstream's
//! integration/issue7496_linux_test.go does it with strace), then the pod is stopped and
//! removed: CRI's 10 s TaskExit deadline expires while the shim unmounts, containerd forgets
//! the task and never shuts the shim down. The check must report that shim, judged by
//! containerd, with its bundle still there, and not the healthy pod's shim beside it.
//!
//! Slow (about a minute: two 12 s holds of the rootfs unmount). Everything it started is
//! killed and removed on drop: containerd, shims, container processes, cgroups.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_core::Requirement;
use faultline_runtime::config::{ContainerdConfig, Handler};
use faultline_runtime::containerd::PrivateContainerd;
use faultline_runtime::image::ImageBuilder;
use faultline_runtime::pod_removal::stop_and_remove;
use faultline_sys::{wait_until, ChildGroup};

// Only `require` is used here.
#[allow(dead_code)]
mod common;

use common::{check_orphan_shim, finding_of};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");
const IMAGE: &str = "faultline.local/busybox:latest";
const BUSYBOX: &str = "/bin/busybox";
/// CRI's containerd namespace, and a node's default state directory.
const NS: &str = "k8s.io";
const STATE: &str = "/run/containerd";

/// A private containerd of the system's containerd and runc, state at [`STATE`], with the
/// busybox image imported.
fn containerd(dir: &Path) -> PrivateContainerd {
    let runtime = faultline_runtime::select::system().unwrap();
    let mut config = ContainerdConfig::new(dir, &runtime.oci, IMAGE);
    config.state = STATE.into();
    let ctd = PrivateContainerd::start(&runtime, config).unwrap();
    let image = ImageBuilder::busybox(IMAGE, Path::new(BUSYBOX))
        .entrypoint(&["/bin/sleep", "2147483647"])
        .build()
        .unwrap();
    ctd.import(&image).unwrap();
    ctd
}

/// The runc.v2 shim serving `pod` (one per pod, `-id` the sandbox's).
fn shim_of(ctd: &PrivateContainerd, pod: &str) -> i32 {
    wait_until("the pod's shim", Duration::from_secs(10), || {
        let shims = ctd.shims();
        shims
            .iter()
            .find(|s| s.id == pod)
            .map(|s| s.pid)
            .ok_or_else(|| format!("shims: {shims:?}"))
    })
    .unwrap()
}

/// Holds every `umount2` of `pid` 12 s on entry with `faultline inject`, and waits until all
/// its threads are traced.
fn hold_umount2(pid: i32) -> ChildGroup {
    let mut cmd = Command::new(FAULTLINE);
    cmd.args([
        "inject",
        "--syscall",
        "umount2",
        "--delay-enter",
        "12s",
        "--pid",
    ])
    .arg(pid.to_string())
    .stdin(Stdio::null());
    let mut inject = ChildGroup::spawn("faultline inject", &mut cmd).unwrap();
    let what = "the injector to trace every thread of the shim";
    wait_until(what, Duration::from_secs(10), || {
        if let Some(status) = inject.try_wait().unwrap() {
            panic!("faultline inject exited: {status}");
        }
        let untraced: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                status.lines().any(|l| l == "TracerPid:\t0")
            })
            .map(|t| t.file_name().to_string_lossy().into_owned())
            .collect();
        if untraced.is_empty() {
            Ok(())
        } else {
            Err(format!("untraced threads {untraced:?}"))
        }
    })
    .unwrap();
    inject
}

#[test]
fn reports_the_shim_containerd_forgot_and_not_the_healthy_one() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("containerd", "containerd"),
        Requirement::binary("containerd-shim-runc-v2", "containerd"),
        Requirement::binary("runc", "runc"),
        Requirement::Path {
            path: BUSYBOX,
            why: "the pods' image: apt-get install busybox-static",
        },
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let ctd = containerd(&tmp.path().join("containerd"));
    let run = |name| {
        ctd.cri()
            .run_pod(&ctd.pod_spec(name, Handler::RuncV2))
            .unwrap()
            .id
    };
    let healthy_pod = run("healthy");
    let orphan_pod = run("orphan");
    let healthy = shim_of(&ctd, &healthy_pod);
    let orphan = shim_of(&ctd, &orphan_pod);
    assert_ne!(healthy, orphan, "runc.v2 runs one shim per pod");

    let mut inject = hold_umount2(orphan);
    let start = Instant::now();
    let removal = stop_and_remove(ctd.cri(), &orphan_pod);
    assert!(removal.removed, "pod not removed: {:?}", removal.attempts);
    eprintln!("pod stopped and removed in {:?}", start.elapsed());
    wait_until(
        "containerd to forget the pod's task",
        Duration::from_secs(30),
        || match ctd.task_exists(&orphan_pod) {
            Ok(false) => Ok(()),
            Ok(true) => Err("Tasks.Get still finds it".into()),
            Err(e) => Err(faultline_sys::error_chain(&e)),
        },
    )
    .unwrap();
    let _ = inject.teardown();
    // containerd#7496: the shim outlives its pod; upstream's test gives it 15 s to exit (on
    // a fixed containerd it exits within them). Watched, so an exit fails at once.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(15) {
        assert!(
            Path::new(&format!("/proc/{orphan}")).exists(),
            "the shim exited {:?} after its pod was removed: this containerd did not orphan \
             it (fixed in 1.6.24 / 1.7.4 / 2.0?)\n{:?}",
            watched.elapsed(),
            ctd.log_lines("level=error")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let bundle = format!("{STATE}/io.containerd.runtime.v2.task/{NS}/{orphan_pod}");
    assert!(
        Path::new(&format!("/proc/{orphan}/root{bundle}")).is_dir(),
        "the orphan's bundle {bundle} was expected to stay"
    );
    assert!(ctd.task_exists(&healthy_pod).unwrap());

    // With a grace period longer than its life, it is not reported yet.
    let (_, doc) = check_orphan_shim(3600);
    assert!(
        finding_of(&doc, orphan).is_none(),
        "reported within grace: {doc:#}"
    );

    let (code, doc) = check_orphan_shim(5);
    assert_eq!(code, Some(1), "a finding makes check exit 1: {doc:#}");
    let f = finding_of(&doc, orphan)
        .unwrap_or_else(|| panic!("orphaned shim {orphan} not reported: {doc:#}"));
    eprintln!("{f:#}");
    let sock = ctd.socket().display().to_string();
    let ev = &f["evidence"];
    assert_eq!(f["detector"], "orphan-shim");
    assert_eq!(ev["judged_by"], "containerd", "{f:#}");
    assert_eq!(
        ev["containerd"],
        format!("containerd at {sock}: no task {orphan_pod} in namespace {NS}"),
        "{f:#}"
    );
    assert_eq!(ev["id"], orphan_pod.as_str());
    assert_eq!(ev["bundle"]["path"], bundle.as_str(), "{f:#}");
    assert_eq!(ev["bundle"]["exists"], true, "{f:#}");
    assert!(ev["age_s"].as_u64().unwrap() >= 5, "{f:#}");
    let remedy = f["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("1.6.24") && remedy.contains("#7496"),
        "{remedy}"
    );
    assert!(remedy.contains(&format!("kill {orphan}")), "{remedy}");
    assert!(
        finding_of(&doc, healthy).is_none(),
        "the healthy pod's shim {healthy} was reported: {doc:#}"
    );
}
