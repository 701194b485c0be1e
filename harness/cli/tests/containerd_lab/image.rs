//! The image the private containerd runs: an OCI image layout (image-spec image-layout.md)
//! built with tar and sha256sum.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::IMAGE;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    let hex = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", hex.split_whitespace().next().unwrap())
}

/// Writes `data` as a blob of the layout under `dir` and returns its descriptor.
fn blob(dir: &Path, media_type: &str, file: &Path) -> serde_json::Value {
    let digest = sha256(file);
    let size = std::fs::metadata(file).unwrap().len();
    let blobs = dir.join("layout/blobs/sha256");
    std::fs::copy(file, blobs.join(digest.trim_start_matches("sha256:"))).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An OCI image layout tarball (image-spec image-layout.md) of one uncompressed layer holding
/// a static busybox: the sandbox image and nothing else, entrypoint `sleep`.
pub fn build_image(dir: &Path) -> PathBuf {
    let img = dir.join("image");
    let rootfs = img.join("rootfs");
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::create_dir_all(img.join("layout/blobs/sha256")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("a static busybox at /bin/busybox (Debian: busybox-static)");
    for a in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let layer = img.join("layer.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the rootfs");
    let layer_desc = blob(&img, "application/vnd.oci.image.layer.v1.tar", &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    });
    let write = |name: &str, v: &serde_json::Value| {
        let p = img.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let config_desc = blob(
        &img,
        "application/vnd.oci.image.config.v1+json",
        &write("config.json", &config),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc = blob(
        &img,
        "application/vnd.oci.image.manifest.v1+json",
        &write("manifest.json", &manifest),
    );
    manifest_desc["annotations"] = serde_json::json!({
        "io.containerd.image.name": IMAGE,
        "org.opencontainers.image.ref.name": "latest",
    });
    manifest_desc["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_desc]});
    std::fs::write(img.join("layout/index.json"), index.to_string()).unwrap();
    std::fs::write(
        img.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let tar = img.join("image.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(img.join("layout"))
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success(), "tar of the image layout");
    tar
}
