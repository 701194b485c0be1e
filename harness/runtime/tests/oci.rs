//! The OCI runtime driver against the real runc (and crun, where it can run): a container's
//! whole lifecycle with a read-only file bind, a refused create, and the probe. Needs root
//! and runc on PATH; without them each test says so and returns.

use std::path::{Path, PathBuf};

use faultline_runtime::oci::{
    self, start_and_read, unique_id, BindMount, Bundle, BundleSpec, Created, OciRuntime,
};
use oci_spec::runtime::ContainerState;

/// runc, when this process can start containers with it.
fn runc() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: needs root");
        return None;
    }
    let Some(runc) = faultline_sys::path::find_on_path("runc") else {
        eprintln!("skip: needs runc on PATH (apt-get install runc)");
        return None;
    };
    if faultline_sys::path::find_on_path("busybox").is_none() {
        eprintln!("skip: needs busybox-static");
        return None;
    }
    Some(runc)
}

fn bundle(dir: &Path, source: &Path, destination: &str, args: &[&str]) -> Bundle {
    Bundle::create(
        &dir.join("bundle"),
        &BundleSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            mounts: vec![BindMount {
                source: source.to_path_buf(),
                destination: destination.into(),
                read_only: true,
            }],
        },
    )
    .unwrap()
}

#[test]
fn a_container_lives_through_create_start_exec_kill_delete() {
    let Some(runc) = runc() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.txt");
    std::fs::write(&file, "version1\n").unwrap();
    let b = bundle(dir.path(), &file, "/data.txt", &["/bin/sleep", "600"]);
    let rt = OciRuntime::new(&runc, &dir.path().join("state")).unwrap();
    assert_eq!(rt.identity().name, "runc");
    let Created::Container(c) = rt.create(&unique_id("life"), &b).unwrap() else {
        panic!("runc refused a plain container");
    };
    assert_eq!(*c.state().unwrap().status(), ContainerState::Created);
    assert!(c.start().unwrap().ok);
    assert_eq!(*c.state().unwrap().status(), ContainerState::Running);
    assert!(c.pid().unwrap() > 0);
    let cat = c.exec(&["cat", "/data.txt"]).unwrap();
    assert_eq!((cat.ok, cat.stdout.as_str()), (true, "version1\n"));
    let links = c.exec(&["stat", "-c", "%h", "/data.txt"]).unwrap();
    assert_eq!(links.stdout.trim(), "1");
    // Read-only, as the spec asked.
    let write = c.exec(&["sh", "-c", "echo x > /data.txt"]).unwrap();
    assert!(!write.ok);
    assert!(
        write
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("Read-only"),
        "{write:?}"
    );
    assert!(c.kill("KILL").unwrap().ok);
    let id = c.id().to_string();
    assert!(c.delete().unwrap().ok);
    // Gone from the runtime's state directory.
    assert!(!dir.path().join("state").join(&id).exists());
}

#[test]
fn a_missing_source_is_refused_in_the_runtimes_words() {
    let Some(runc) = runc() else { return };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file");
    let b = bundle(dir.path(), &missing, "/data.txt", &["/bin/sleep", "600"]);
    let rt = OciRuntime::new(&runc, &dir.path().join("state")).unwrap();
    let id = unique_id("missing");
    let Created::Refused(step) = rt.create(&id, &b).unwrap() else {
        panic!("runc created a container whose bind source is missing");
    };
    assert_eq!(step.command, "create");
    let said = step.error.unwrap();
    assert!(said.contains("no such file or directory"), "{said}");
    assert!(said.contains(&missing.display().to_string()), "{said}");
    assert!(!dir.path().join("state").join(&id).exists());
}

#[test]
fn a_read_attempt_records_each_step() {
    let Some(runc) = runc() else { return };
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "hello\n").unwrap();
    let b = bundle(dir.path(), &vol, "/vol", &["/bin/sleep", "600"]);
    let rt = OciRuntime::new(&runc, &dir.path().join("state")).unwrap();
    let a = start_and_read(&rt, &b, &unique_id("read"), "/vol/f").unwrap();
    assert!(a.started() && a.read(), "{a:?}");
    assert_eq!(a.content.as_deref(), Some("hello\n"));
    let commands: Vec<&str> = a.steps.iter().map(|s| s.command.as_str()).collect();
    assert_eq!(commands, ["create", "start", "exec cat /vol/f"]);
    let missing = start_and_read(&rt, &b, &unique_id("read"), "/vol/none").unwrap();
    assert!(missing.started() && !missing.read());
    assert_eq!(
        missing.failed_step().map(|s| s.command.as_str()),
        Some("exec cat /vol/none")
    );
}

#[test]
fn the_probe_passes_runc_and_says_why_crun_cannot_run() {
    let Some(runc) = runc() else { return };
    assert_eq!(oci::probe(&runc), Ok(()));
    let Some(crun) = faultline_sys::path::find_on_path("crun") else {
        eprintln!("skip the crun half: crun is not installed (apt-get install crun)");
        return;
    };
    match oci::probe(&crun) {
        Ok(()) => eprintln!("crun starts containers here"),
        Err(why) => {
            // e.g. `crun 1.8.1 cannot start a container here: cgroups in hybrid mode not
            // supported, drop all controllers from cgroupv2`
            eprintln!("{why}");
            assert!(why.starts_with("crun "), "{why}");
            let said = why.split_once("cannot start a container here: ").unwrap().1;
            assert!(!said.is_empty());
        }
    }
    // Asked again, the same answer without trying again.
    assert_eq!(oci::probe(&crun), oci::probe(&crun));
}
