//! `run --runtime`: a spec that cannot be used stops the run before anything runs (exit 2,
//! one line); the runtime that ran is in the result document; several give the matrix,
//! which `compare --markdown` prints as a Markdown table.

use faultline_core::Requirement;

// Only `require` is used here.
#[allow(dead_code)]
mod common;

use common::faultline;

/// Exit 2 and exactly one line on stderr, before any scenario started.
fn usage_error(args: &[&str]) -> String {
    let out = faultline(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}");
    err
}

#[test]
fn unusable_runtimes_exit_2_before_anything_runs() {
    let err = usage_error(&["run", "--runtime", "bogus", "hostpath-rename"]);
    assert!(
        err.starts_with(
            "faultline: --runtime \"bogus\": unknown item \"bogus\"; use system, debian"
        ),
        "{err}"
    );
    // The second spec is parsed before the first is resolved.
    let err = usage_error(&[
        "run",
        "--runtime",
        "system",
        "--runtime",
        "debian:containerd=",
        "hostpath-rename",
    ]);
    assert!(err.contains("debian:containerd= needs a version"), "{err}");
    let err = usage_error(&[
        "run",
        "--runtime",
        "oci=/nonexistent/crun",
        "hostpath-rename",
    ]);
    assert_eq!(
        err,
        "faultline: /nonexistent/crun is not an executable file\n"
    );
    // A build Debian's archive does not have: what it offers, named (no download).
    let err = usage_error(&[
        "run",
        "--runtime",
        "debian:containerd=0.0.1",
        "hostpath-rename",
    ]);
    assert!(
        err.contains("Debian's archive has no containerd 0.0.1; it offers containerd 1.6.20"),
        "{err}"
    );
}

#[test]
fn the_result_names_the_runtime_that_ran() {
    common::require(&[Requirement::Root]);
    let out = faultline(&["run", "--runtime", "system", "--json", "hostpath-rename"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let containerd = doc["runtime"]["containerd"].as_str().unwrap();
    assert!(containerd.contains("1.6.20"), "{doc}");
    let oci = doc["runtime"]["oci"].as_str().unwrap();
    assert!(oci.starts_with("runc version 1.1.5"), "{doc}");
}

#[test]
fn several_runtimes_give_the_matrix() {
    common::require(&[Requirement::Root]);
    let out = faultline(&[
        "run",
        "--runtime",
        "system",
        "--runtime",
        "system,oci=crun",
        "--json",
        "hostpath-rename",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{doc}");
    assert!(runs[1]["runtime"]["oci"]
        .as_str()
        .unwrap()
        .starts_with("crun version"));
    let labels: Vec<&str> = doc["comparison"]["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        labels[0].ends_with(" / containerd 1.6.20 + runc 1.1.5"),
        "{labels:?}"
    );
    assert!(
        labels[1].ends_with(" / containerd 1.6.20 + crun 1.8.1"),
        "{labels:?}"
    );
    assert!(
        stderr.contains("faultline: runtime system,oci=crun (containerd 1.6.20 + crun 1.8.1)"),
        "{stderr}"
    );
}

fn report(oci: &str, reproduced: bool) -> String {
    serde_json::json!({
        "kernel": "6.1.0-56-cloud-amd64", "backend": "vm",
        "runtime": {"containerd": "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
                    "oci": oci},
        "scenarios": [
            {"name": "fuse-daemon-restart", "status": if reproduced { "pass" } else { "fail" },
             "reason": "", "duration_ms": 1,
             "variants": [{"variant": "killed", "reproduced": reproduced, "detected": reproduced,
                           "expected": "reproduced", "observed": {}}],
             "findings": []},
            {"name": "hostpath-rename", "status": "pass", "reason": "", "duration_ms": 1,
             "variants": [{"variant": "rename", "reproduced": true, "detected": true,
                           "expected": "reproduced", "observed": {}}],
             "findings": []}
        ]
    })
    .to_string()
}

#[test]
fn compare_markdown_prints_the_matrix_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("runc.json");
    let b = dir.path().join("crun.json");
    std::fs::write(&a, report("runc version 1.1.5+ds1", true)).unwrap();
    std::fs::write(&b, report("crun version 1.8.1", false)).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = faultline(&["compare", "--markdown", a, b]);
    assert_eq!(out.status.code(), Some(1), "rows differ");
    let md = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = md.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "| | scenario / variant | 6.1.0-56-cloud-amd64<br>containerd 1.6.20 + runc 1.1.5 | 6.1.0-56-cloud-amd64<br>containerd 1.6.20 + crun 1.8.1 |",
            "|---|---|---|---|",
            "| ✗ | **fuse-daemon-restart / killed** | reproduced+detected | clean [fail] |",
            "| | hostpath-rename / rename | reproduced+detected | reproduced+detected |",
        ],
        "{md}"
    );
    assert_eq!(
        lines.last(),
        Some(&"1 of 2 rows differ between the runs (marked ✗)")
    );

    let out = faultline(&["compare", "--markdown", a, a]);
    assert_eq!(out.status.code(), Some(0));
    // One format at a time.
    let out = faultline(&["compare", "--markdown", "--json", a, b]);
    assert_eq!(out.status.code(), Some(2));
}

/// One boot, with the runtime that is not the default (crun runs only in the guest here):
/// the guest's own report names the runtime it was handed. Several runtimes in the guest (a
/// boot and a directory each, `runtime_dir`) are ci/test's kernel x runtime run; each such
/// boot takes one to two minutes under TCG, so this test does not repeat it.
#[test]
fn the_vm_guest_runs_on_the_runtime_under_test() {
    common::require(&[
        Requirement::Root,
        Requirement::binary("qemu-system-x86_64", "qemu-system-x86"),
    ]);
    let artifacts = tempfile::tempdir().unwrap();
    let out = faultline(&[
        "run",
        "--vm",
        "--kernel",
        "debian:6.1",
        "--runtime",
        "system,oci=crun",
        "--artifacts",
        artifacts.path().to_str().unwrap(),
        "--json",
        "hostpath-rename",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["backend"], "vm", "{run}");
    assert!(run["kernel"].as_str().unwrap().starts_with("6.1."), "{run}");
    assert!(
        run["runtime"]["oci"]
            .as_str()
            .unwrap()
            .starts_with("crun version"),
        "{run}"
    );
    let scenario = &run["scenarios"][0];
    assert_eq!(scenario["status"], "pass", "{run}");
    // The pod's containers ran on crun: the scenario's own record of who started them.
    let starter = &scenario["variants"][1]["observed"]["starter"]["cri"];
    assert_eq!(starter["oci"]["name"], "crun", "{scenario}");
    let log = artifacts.path().join("vm/debian-6.1/console.log");
    assert!(log.is_file(), "{}: {stderr}", log.display());
}
