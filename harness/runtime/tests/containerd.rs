//! The private containerd against the real one (containerd and runc from PATH, busybox-static
//! for the image): a pod with a container through CRI on each shim API, the image imported
//! through containerd's API, and nothing left afterwards (no process, cgroup or mount), also
//! when containerd and its shims were SIGKILLed first. Runs as root in a mount namespace of
//! its own (made first thing in `main`) and as a child subreaper, so that the shims and
//! containers re-parented on their parents' death are ours to see and reap.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline_core::runtime_under_test::RuntimeUnderTest;
use faultline_runtime::cgroups::{self, CgroupParent};
use faultline_runtime::config::{ContainerdConfig, Handler};
use faultline_runtime::containerd::PrivateContainerd;
use faultline_runtime::cri::{ContainerSpec, HostMount};
use faultline_runtime::image::ImageBuilder;
use faultline_runtime::process::{alive, ShimKind};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const IMAGE: &str = "faultline.local/busybox:test";
const BUSYBOX: &str = "/bin/busybox";

type R = Result<(), Failed>;
type Test = (&'static str, fn() -> R);

fn fail(msg: impl std::fmt::Display) -> Failed {
    Failed::from(msg.to_string())
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond { return Err(fail(format!($($arg)*))); }
    };
}

/// The runtime and busybox, or why the test cannot run here.
fn needs() -> Result<RuntimeUnderTest, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root".into());
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(format!("needs {BUSYBOX}: apt-get install busybox-static"));
    }
    faultline_runtime::select::system().map_err(|e| e.to_string())
}

struct Lab {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctd: PrivateContainerd,
}

fn lab() -> Result<Lab, Failed> {
    let runtime = needs().map_err(fail)?;
    let tmp = tempfile::tempdir().map_err(fail)?;
    let dir = tmp.path().join("containerd");
    let config = ContainerdConfig::new(&dir, &runtime.oci, IMAGE);
    let ctd = PrivateContainerd::start(&runtime, config).map_err(fail)?;
    let image = ImageBuilder::busybox(IMAGE, Path::new(BUSYBOX))
        .entrypoint(&["/bin/sleep", "2147483647"])
        .build()
        .map_err(fail)?;
    ctd.import(&image).map_err(fail)?;
    Ok(Lab {
        dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        ctd,
    })
}

/// A pod with one container that reads a host file mounted read-only; returns (pod id,
/// container id).
fn pod_with_container(lab: &Lab, handler: Handler) -> Result<(String, String), Failed> {
    let host_file = lab.dir.join("data.txt");
    std::fs::write(&host_file, "hello from the host\n").map_err(fail)?;
    let cri = lab.ctd.cri();
    let pod = cri
        .run_pod(&lab.ctd.pod_spec("p1", handler))
        .map_err(fail)?;
    let spec = ContainerSpec {
        name: "c1".into(),
        image: IMAGE.into(),
        command: ["sh", "-c", "echo hi > /tmp/x; exec sleep 1000"]
            .map(String::from)
            .to_vec(),
        mounts: vec![HostMount {
            host_path: host_file,
            container_path: "/data.txt".into(),
            readonly: true,
        }],
    };
    let ctr = cri.create_container(&pod, &spec).map_err(fail)?;
    cri.start_container(&ctr).map_err(fail)?;
    let read = cri
        .exec_sync(
            &ctr,
            &["cat", "/data.txt", "/tmp/x"],
            Duration::from_secs(10),
        )
        .map_err(fail)?;
    ensure!(
        read.exit_code == 0 && read.stdout == b"hello from the host\nhi\n",
        "exec read {:?} / {:?}",
        String::from_utf8_lossy(&read.stdout),
        String::from_utf8_lossy(&read.stderr)
    );
    let write = cri
        .exec_sync(
            &ctr,
            &["sh", "-c", "echo x > /data.txt"],
            Duration::from_secs(10),
        )
        .map_err(fail)?;
    ensure!(
        write.exit_code != 0 && String::from_utf8_lossy(&write.stderr).contains("Read-only"),
        "the read-only mount was writable: {write:?}"
    );
    Ok((pod.id, ctr))
}

/// Nothing of `lab`'s containerd is left: its processes, its cgroup parent in any
/// hierarchy, its mounts.
fn nothing_left(pids: &[i32], cgroup: &str, dir: &Path) -> R {
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    ensure!(alive.is_empty(), "processes left: {alive:?}");
    for h in cgroups::hierarchies().map_err(fail)? {
        let d = h.join(cgroup.trim_start_matches('/'));
        ensure!(!d.exists(), "cgroup left: {}", d.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(fail)?;
    let dir = dir.display().to_string();
    ensure!(!mounts.contains(&dir), "mounts left under {dir}:\n{mounts}");
    Ok(())
}

fn runs_a_pod_and_leaves_nothing(handler: Handler) -> R {
    let lab = lab()?;
    let (pod, ctr) = pod_with_container(&lab, handler)?;
    let ctd = &lab.ctd;
    let shims = ctd.shims();
    let tasks = ctd.tasks().map_err(fail)?;
    ensure!(tasks.len() == 2, "tasks {tasks:?}");
    ensure!(ctd.task_exists(&ctr).map_err(fail)?, "no task {ctr}");
    ensure!(!ctd.task_exists("nope").map_err(fail)?, "a task nope");
    match handler {
        // One shim per pod, named by the sandbox.
        Handler::RuncV2 => ensure!(
            shims.len() == 1 && shims[0].kind == ShimKind::V2 && shims[0].id == pod,
            "{shims:?}"
        ),
        // One shim per container: the sandbox's and the container's.
        Handler::ShimV1 => ensure!(
            shims.len() == 2 && shims.iter().all(|s| s.kind == ShimKind::V1),
            "{shims:?}"
        ),
    }
    let in_cgroup = cgroups::pids_in(ctd.cgroup_parent().trim_start_matches('/'));
    ensure!(
        in_cgroup.len() >= 2,
        "container processes in the cgroup: {in_cgroup:?}"
    );
    let cri = ctd.cri();
    cri.stop_pod(&pod, Duration::from_secs(30)).map_err(fail)?;
    cri.remove_pod(&pod, Duration::from_secs(30))
        .map_err(fail)?;
    ensure!(cri.pods().map_err(fail)?.is_empty(), "pods left");
    ensure!(ctd.tasks().map_err(fail)?.is_empty(), "tasks left");
    let mut pids: Vec<i32> = shims.iter().map(|s| s.pid).collect();
    pids.extend(in_cgroup);
    pids.push(ctd.pid());
    let (cgroup, dir) = (ctd.cgroup_parent(), lab.dir.clone());
    drop(lab);
    nothing_left(&pids, &cgroup, &dir)
}

/// Dropped with its pod running: the guard stops and removes the pod, then everything goes.
fn a_running_pod_goes_with_the_guard() -> R {
    let lab = lab()?;
    pod_with_container(&lab, Handler::RuncV2)?;
    let ctd = &lab.ctd;
    let mut pids: Vec<i32> = ctd.shims().iter().map(|s| s.pid).collect();
    pids.extend(cgroups::pids_in(
        ctd.cgroup_parent().trim_start_matches('/'),
    ));
    pids.push(ctd.pid());
    let (cgroup, dir) = (ctd.cgroup_parent(), lab.dir.clone());
    let Lab { mut ctd, _tmp, .. } = lab;
    let t = ctd.teardown();
    ensure!(t.errors.is_empty() && t.survivors.is_empty(), "{t:?}");
    drop(ctd);
    drop(_tmp);
    nothing_left(&pids, &cgroup, &dir)
}

/// containerd and its shims SIGKILLed: the containers run on, re-parented; dropping the
/// guard still kills them and removes their cgroups.
fn sigkilled_containerd_and_shims_are_cleaned_up() -> R {
    let lab = lab()?;
    pod_with_container(&lab, Handler::RuncV2)?;
    let ctd = &lab.ctd;
    let shims: Vec<i32> = ctd.shims().iter().map(|s| s.pid).collect();
    let containers = cgroups::pids_in(ctd.cgroup_parent().trim_start_matches('/'));
    for p in shims.iter().chain([ctd.pid()].iter()) {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    faultline_sys::wait_until("the shim to die", Duration::from_secs(10), || {
        match shims.iter().any(|p| alive(*p)) {
            true => Err("alive".into()),
            false => Ok(()),
        }
    })
    .map_err(fail)?;
    let running: Vec<i32> = containers.iter().copied().filter(|p| alive(*p)).collect();
    ensure!(
        !running.is_empty(),
        "the containers died with their shim (expected them to outlive it)"
    );
    let (cgroup, dir) = (ctd.cgroup_parent(), lab.dir.clone());
    drop(lab);
    let mut pids = shims;
    pids.extend(containers);
    nothing_left(&pids, &cgroup, &dir)
}

/// A parent whose owner is gone (its lock released) is removed with what runs in it; a
/// locked one is not.
fn stale_cgroup_parents_are_removed_locked_ones_kept() -> R {
    needs().map_err(fail)?;
    let held = CgroupParent::create().map_err(fail)?;
    let gone = CgroupParent::create().map_err(fail)?;
    let name = gone.name().to_string();
    // A process in a child cgroup of it, in the pids hierarchy, as runc would put it.
    let h = cgroups::hierarchies().map_err(fail)?;
    let pids_h = h
        .iter()
        .find(|p| p.ends_with("pids"))
        .unwrap_or(&h[0])
        .join(&name)
        .join("ctr");
    std::fs::create_dir_all(&pids_h).map_err(fail)?;
    let sleeper = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .map_err(fail)?;
    let pid = sleeper.id() as i32;
    std::fs::write(pids_h.join("cgroup.procs"), pid.to_string()).map_err(fail)?;
    gone.abandon(); // its owner "dies": the lock goes, the directories stay
    std::thread::sleep(Duration::from_millis(2100)); // past the creation grace
    let removed = cgroups::remove_stale(Duration::from_secs(10)).map_err(fail)?;
    ensure!(removed.contains(&name), "{removed:?}");
    ensure!(
        !removed.contains(&held.name().to_string()),
        "removed a live one"
    );
    ensure!(!alive(pid), "its process lives on");
    for hier in &h {
        ensure!(
            !hier.join(&name).exists(),
            "{} left",
            hier.join(&name).display()
        );
    }
    ensure!(h[0].join(held.name()).exists(), "the held one is gone");
    held.remove(Duration::from_secs(10)).map_err(fail)
}

fn main() {
    if nix::unistd::geteuid().is_root() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mount ns");
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / rprivate");
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }
    let mut args = Arguments::from_args();
    // containerd dies with the thread that started it (PR_SET_PDEATHSIG): one thread.
    args.test_threads = Some(1);
    let skip = needs().err();
    let tests: Vec<Test> = vec![
        ("runc_v2_pod_runs_and_leaves_nothing", || {
            runs_a_pod_and_leaves_nothing(Handler::RuncV2)
        }),
        ("shim_v1_pod_runs_and_leaves_nothing", || {
            runs_a_pod_and_leaves_nothing(Handler::ShimV1)
        }),
        (
            "a_running_pod_goes_with_the_guard",
            a_running_pod_goes_with_the_guard,
        ),
        (
            "sigkilled_containerd_and_shims_are_cleaned_up",
            sigkilled_containerd_and_shims_are_cleaned_up,
        ),
        (
            "stale_cgroup_parents_are_removed_locked_ones_kept",
            stale_cgroup_parents_are_removed_locked_ones_kept,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let t = Trial::test(name, f);
            match &skip {
                Some(why) => t.with_ignored_flag(true).with_kind(why.clone()),
                None => t,
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
