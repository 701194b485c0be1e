//! `--runtime` resolution against this host's real binaries (ci/setup installs containerd,
//! runc and crun from Debian).

use faultline_runtime::select::{resolve_str, SelectError};

fn resolve(
    text: &str,
) -> Result<faultline_core::runtime_under_test::RuntimeUnderTest, SelectError> {
    resolve_str(text, &mut |line| {
        panic!("nothing is fetched for {text}: {line}")
    })
}

#[test]
fn system_is_containerd_and_runc_on_path() {
    let rt = resolve("system").unwrap();
    assert_eq!(rt.spec, "system");
    assert!(rt.containerd.ends_with("containerd"), "{rt:?}");
    assert!(rt.bin_dir().join("containerd-shim-runc-v2").is_file());
    assert!(rt.oci.ends_with("runc"), "{rt:?}");
    assert!(
        rt.versions.containerd.starts_with("containerd ")
            && rt.versions.containerd.contains("1.6.20"),
        "{:?}",
        rt.versions
    );
    assert!(
        rt.versions.oci.starts_with("runc version "),
        "{:?}",
        rt.versions
    );
}

#[test]
fn items_replace_what_the_base_gives() {
    let rt = resolve("system,oci=crun").unwrap();
    assert!(rt.oci.ends_with("crun"), "{rt:?}");
    assert!(
        rt.versions.oci.starts_with("crun version "),
        "{:?}",
        rt.versions
    );
    assert!(rt.versions.containerd.contains("1.6.20"));

    let containerd = rt.containerd.display().to_string();
    let rt = resolve(&format!("containerd={containerd},oci=/usr/sbin/runc")).unwrap();
    assert_eq!(rt.containerd.display().to_string(), containerd);
    assert_eq!(rt.oci, std::path::Path::new("/usr/sbin/runc"));
    assert!(rt.versions.oci.starts_with("runc version "));
}

#[test]
fn unusable_parts_are_one_line_errors() {
    let e = resolve("system,oci=/nonexistent/runc")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "/nonexistent/runc is not an executable file");

    let e = resolve("oci=no-such-oci-runtime").unwrap_err().to_string();
    assert!(e.contains("needs `no-such-oci-runtime` on PATH"), "{e}");

    // A containerd without its shims beside it.
    let dir = tempfile::tempdir().unwrap();
    let containerd = faultline_sys::path::find_on_path("containerd").unwrap();
    let lonely = dir.path().join("containerd");
    std::os::unix::fs::symlink(&containerd, &lonely).unwrap();
    let e = resolve(&format!("containerd={}", lonely.display()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "no containerd-shim-runc-v2 in {}: containerd's shims must be beside it",
            dir.path().display()
        )
    );

    // A containerd that is no containerd: `--version` fails.
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).unwrap();
    std::os::unix::fs::symlink("/bin/false", fake.join("containerd")).unwrap();
    std::os::unix::fs::symlink("/bin/false", fake.join("containerd-shim-runc-v2")).unwrap();
    let e = resolve(&format!("containerd={}/containerd", fake.display()))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("failed to run `"), "{e}");
    assert!(e.contains("--version`: exited with exit status: 1"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    assert!(matches!(resolve("bogus"), Err(SelectError::Spec(_))));
}
