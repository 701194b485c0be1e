//! `faultline image` for real: the OCI image the CLI writes is read back from its tarball,
//! imported into a private containerd of the runtime under test through faultline's
//! importer, and run through CRI as the DaemonSet runs it: a pod with the node's pid and
//! network namespaces, the container with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only, a
//! read-only root, seccomp RuntimeDefault. On the host, outside the pod, a process in a mount
//! namespace of its own holds a read-only bind of a file that is then replaced with `mv`
//! (hostpath-rename); `faultline check stale-bind --format npd`, run inside the pod with
//! CRI's ExecSync, must exit 1 naming that bind. The init container's `cp` works from the
//! image's busybox, and containerd's own importer (`ctr images import`, as the README says)
//! reads the same tarball.
//!
//! With host PID the container's own /proc is a procfs of the host's pid namespace, which is
//! all the DaemonSet relies on. The host's /proc is also mounted read-only at /host/proc, and
//! the test checks that both show the holder, so that the pod sees the host however it is
//! given it.
//!
//! Everything started here goes on drop, also when an assertion fails: the pods, containerd
//! with its shims, mounts and cgroup parent (`PrivateContainerd`), the holder (its process
//! group, and its mount namespace with it), the temporary files.

// Only `require` and `wait_ready` are used here.
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline_core::Requirement;
use faultline_runtime::config::{ContainerdConfig, Handler};
use faultline_runtime::containerd::PrivateContainerd;
use faultline_runtime::cri::Pod;
use faultline_runtime::image::{sha256, Blob, Image, ImageBuilder};
use faultline_sys::ChildGroup;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec,
    LinuxContainerConfig, LinuxContainerSecurityContext, Mount, NamespaceMode,
    RunPodSandboxRequest, SecurityProfile,
};

const FAULTLINE: &str = env!("CARGO_BIN_EXE_faultline");
const IMAGE: &str = concat!("faultline.local/faultline:", env!("CARGO_PKG_VERSION"));
/// The pod sandbox's image: busybox sleeping (the faultline image's entrypoint would exit).
const PAUSE: &str = "faultline.local/busybox:pause";
const BUSYBOX: &str = "/bin/busybox";
const CALL: Duration = Duration::from_secs(30);

/// `faultline image --output OUT`: exit code and stderr.
fn faultline_image(out: &Path) -> (Option<i32>, String) {
    let o = Command::new(FAULTLINE)
        .args(["image", "--output"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run faultline image");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        assert_eq!(stdout.trim(), IMAGE, "stdout names the image");
    }
    (o.status.code(), stderr)
}

/// The image in an OCI image-layout tarball, every blob checked against its digest.
fn read_layout(tarball: &Path) -> Image {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(tarball).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        files.insert(e.path().unwrap().display().to_string(), body);
    }
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(files.get(name).unwrap_or_else(|| panic!("no {name}"))).unwrap()
    };
    assert_eq!(json("oci-layout")["imageLayoutVersion"], "1.0.0");
    let blob = |descriptor: &serde_json::Value| -> Blob {
        let digest = descriptor["digest"].as_str().unwrap().to_string();
        let data = files[&format!("blobs/sha256/{}", &digest[7..])].clone();
        assert_eq!(sha256(&data), digest, "blob content matches its digest");
        assert_eq!(descriptor["size"], data.len(), "{descriptor}");
        Blob {
            media_type: descriptor["mediaType"].as_str().unwrap().into(),
            digest,
            data,
        }
    };
    let index = json("index.json");
    let m = &index["manifests"][0];
    let name = m["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap();
    let manifest = blob(m);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.data).unwrap();
    let config = blob(&parsed["config"]);
    let layer = blob(&parsed["layers"][0]);
    let c: serde_json::Value = serde_json::from_slice(&config.data).unwrap();
    assert_eq!(c["config"]["Entrypoint"][0], "/usr/local/bin/faultline");
    Image {
        name: name.to_string(),
        diff_id: c["rootfs"]["diff_ids"][0].as_str().unwrap().to_string(),
        config,
        layer,
        manifest,
    }
}

/// A stale bind made on the host: a process in a private mount namespace holds `data.txt`
/// bound read-only on `target.txt`, then the host replaces `data.txt` with `mv`.
struct StaleBind {
    holder: ChildGroup,
    target: PathBuf,
}

fn stale_bind(dir: &Path) -> StaleBind {
    let (data, target) = (dir.join("data.txt"), dir.join("target.txt"));
    std::fs::write(&data, "version1\n").unwrap();
    std::fs::write(&target, "").unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && echo ready && exec sleep 600"#)
        .arg("sh")
        .arg(&data)
        .arg(&target)
        .stdout(Stdio::piped());
    let mut holder = ChildGroup::spawn("stale-bind holder", &mut cmd).unwrap();
    common::wait_ready(&mut holder, "stale-bind holder", Duration::from_secs(20));
    std::fs::write(dir.join("new.txt"), "version2\n").unwrap();
    let mv = Command::new("mv")
        .arg("-f")
        .arg(dir.join("new.txt"))
        .arg(&data)
        .status()
        .unwrap();
    assert!(mv.success(), "mv failed");
    StaleBind { holder, target }
}

/// A pod with the node's pid and network namespaces (`hostPID`, `hostNetwork`), as
/// kubelet asks CRI for the DaemonSet's pod.
fn run_host_pod(ctd: &PrivateContainerd) -> Pod {
    let mut config = ctd.pod_spec("faultline-npd", Handler::RuncV2).config();
    let linux = config.linux.as_mut().unwrap();
    let ns = linux
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    ns.pid = NamespaceMode::Node as i32;
    ns.network = NamespaceMode::Node as i32;
    let req = RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: Handler::RuncV2.name().into(),
    };
    let mut rs = RuntimeServiceClient::new(ctd.grpc().channel());
    let r = ctd
        .grpc()
        .call_within("RunPodSandbox", CALL, async move {
            rs.run_pod_sandbox(req).await
        })
        .unwrap();
    Pod {
        id: r.into_inner().pod_sandbox_id,
        config,
    }
}

/// The DaemonSet's npd-proc container, from the faultline image, sleeping: CAP_SYS_PTRACE
/// and CAP_DAC_READ_SEARCH only, no new privileges, a read-only root, seccomp
/// RuntimeDefault, AppArmor unconfined; the host's /proc at /host/proc.
fn create_npd_container(ctd: &PrivateContainerd, pod: &Pod) -> String {
    let security = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: vec!["SYS_PTRACE".into(), "DAC_READ_SEARCH".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        }),
        namespace_options: pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone()),
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            ..Default::default()
        }),
        apparmor: Some(SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "npd-proc".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "2147483647".into()],
        mounts: vec![Mount {
            host_path: "/proc".into(),
            container_path: "/host/proc".into(),
            readonly: true,
            ..Default::default()
        }],
        log_path: "npd-proc.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(security),
            ..Default::default()
        }),
        ..Default::default()
    };
    let req = CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(config),
        sandbox_config: Some(pod.config.clone()),
    };
    let mut rs = RuntimeServiceClient::new(ctd.grpc().channel());
    let r = ctd
        .grpc()
        .call_within("CreateContainer", CALL, async move {
            rs.create_container(req).await
        })
        .unwrap();
    r.into_inner().container_id
}

/// Runs `cmd` in the container: exit code, stdout, stderr.
fn exec(ctd: &PrivateContainerd, ctr: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = ctd
        .cri()
        .exec_sync(ctr, cmd, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {}", faultline_sys::error_chain(&e)));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Field order is drop order: containerd (pods, shims, mounts, cgroups) first, then the
/// holder, then the files.
struct Lab {
    ctd: PrivateContainerd,
    bind: StaleBind,
    _tmp: tempfile::TempDir,
}

fn lab() -> (Lab, PathBuf) {
    let runtime = faultline_runtime::select::system()
        .unwrap_or_else(|e| panic!("cannot run here: {}", faultline_sys::error_chain(&e)));
    let tmp = tempfile::Builder::new().prefix("img-").tempdir().unwrap();
    let tarball = tmp.path().join("faultline-oci.tar");
    let (code, stderr) = faultline_image(&tarball);
    assert_eq!(code, Some(0), "faultline image failed: {stderr}");
    assert!(stderr.contains("faultline: building"), "{stderr}");
    let config = ContainerdConfig::new(&tmp.path().join("containerd"), &runtime.oci, PAUSE);
    let ctd = PrivateContainerd::start(&runtime, config).unwrap();
    let pause = ImageBuilder::busybox(PAUSE, Path::new(BUSYBOX))
        .entrypoint(&["/bin/sleep", "2147483647"])
        .build()
        .unwrap();
    ctd.import(&pause).unwrap();
    let image = read_layout(&tarball);
    assert_eq!(image.name, IMAGE);
    ctd.import(&image).unwrap();
    let dir = tmp.path().join("sb");
    std::fs::create_dir(&dir).unwrap();
    let bind = stale_bind(&dir);
    let lab = Lab {
        ctd,
        bind,
        _tmp: tmp,
    };
    (lab, tarball)
}

#[test]
fn in_a_host_pid_pod_the_image_finds_a_stale_bind_made_on_the_host() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("containerd", "containerd"),
        Requirement::binary("ctr", "containerd"),
        Requirement::binary("runc", "runc"),
        Requirement::binary("busybox", "busybox-static"),
        Requirement::binary("unshare", "util-linux"),
        Requirement::binary("mount", "mount"),
        Requirement::binary("objcopy", "binutils"),
    ]);
    let (mut lab, tarball) = lab();
    let ctd = &lab.ctd;
    let pod = run_host_pod(ctd);
    let ctr = create_npd_container(ctd, &pod);
    ctd.cri().start_container(&ctr).unwrap();
    let holder = lab.bind.holder.pid();
    let target = lab.bind.target.display().to_string();

    // The pod sees the host's processes, through its own /proc and the host's alike.
    for proc in ["/proc", "/host/proc"] {
        let (code, out, err) = exec(ctd, &ctr, &["cat", &format!("{proc}/{holder}/cmdline")]);
        assert_eq!(code, 0, "{proc}/{holder} not visible in the pod: {err}");
        assert!(out.starts_with("sleep"), "{proc}/{holder}/cmdline: {out:?}");
    }

    // The DaemonSet's init container copies the binary out with the image's busybox `cp`
    // (here into the sandbox's /dev/shm: the root is read-only).
    for cmd in [
        &["/bin/cp", "/usr/local/bin/faultline", "/dev/shm/faultline"][..],
        &["cmp", "/usr/local/bin/faultline", "/dev/shm/faultline"],
        &["rm", "/dev/shm/faultline"],
    ] {
        let (code, out, err) = exec(ctd, &ctr, cmd);
        assert_eq!(code, 0, "{cmd:?}: {out}{err}");
    }

    let check = |format: &str| {
        exec(
            ctd,
            &ctr,
            &[
                "/usr/local/bin/faultline",
                "check",
                "stale-bind",
                "--format",
                format,
            ],
        )
    };
    // Every stale bind on the host (other tests may hold some meanwhile): ours among them.
    let (code, out, err) = check("json");
    assert_eq!(code, 1, "check --json in the pod: {out}\n{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let findings = doc["findings"].as_array().unwrap();
    let ours = findings
        .iter()
        .find(|f| f["subject"] == target.as_str() && f["pid"] == holder)
        .unwrap_or_else(|| panic!("no finding for {target} (pid {holder}): {doc:#}"));
    assert_eq!(ours["evidence"]["root_deleted"], true, "{ours:#}");
    let mut subjects: Vec<&str> = findings
        .iter()
        .filter_map(|f| f["subject"].as_str())
        .collect();
    subjects.sort_unstable();
    subjects.dedup();

    let (code, out, err) = check("npd");
    let line = out.trim();
    eprintln!("check stale-bind --format npd in the pod: exit {code}: {line}");
    assert_eq!(code, 1, "check --format npd in the pod: {line}\n{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    if subjects.len() == 1 {
        assert_eq!(line, format!("stale bind {target}"));
    } else {
        // The line names the most severe problem and counts the rest.
        eprintln!("other stale binds on this host: {subjects:?}");
        assert!(line.starts_with("stale bind "), "{line}");
        let more = format!("(+{} more)", subjects.len() - 1);
        assert!(line.ends_with(&more), "{line}");
    }

    // containerd's own importer reads the same file as the same image.
    let ctr_import = Command::new("ctr")
        .arg("--address")
        .arg(ctd.socket())
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&tarball)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ctr_import.stdout).into_owned()
        + &String::from_utf8_lossy(&ctr_import.stderr);
    assert!(ctr_import.status.success(), "ctr images import: {said}");
    assert!(said.contains(IMAGE), "ctr images import: {said}");

    let t = lab.ctd.teardown();
    assert!(t.errors.is_empty() && t.survivors.is_empty(), "{t:?}");
}

/// A missing directory or a directory as the file: one line, exit 2, before building.
#[test]
fn a_bad_output_is_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/faultline-oci.tar");
    for (out, says) in [
        (missing.as_path(), "does not exist"),
        (dir.path(), "is a directory"),
    ] {
        let (code, stderr) = faultline_image(out);
        assert_eq!(code, Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("faultline: --output") && stderr.contains(says),
            "{stderr}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
