//! OCI images faultline builds itself (no registry exists where it runs): one uncompressed
//! layer made from a list of files, directories and symlinks, an image config with the
//! entrypoint and environment, and the manifest, as the OCI image specification lays them out
//! (image-spec `manifest.md`, `config.md`, `layer.md`). [`Image::write_layout`] writes the
//! image-layout tarball (`image-layout.md`) that `ctr images import` also reads;
//! [`crate::import`] puts the same blobs into containerd through its API.
//!
//! The layer is left uncompressed (`application/vnd.oci.image.layer.v1.tar`): its digest is
//! then its diff id, and the import spends no time on gzip for an image that never leaves
//! the machine.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder, ANNOTATION_REF_NAME,
};
use sha2::{Digest as _, Sha256};

/// The busybox applets the scenario images link to `/bin/busybox`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "cat", "stat", "sleep", "sync", "dd", "true", "false", "echo", "ls", "mkdir", "rm",
    "kill", "grep", "ps", "id", "env", "head", "mount",
];

/// The annotation containerd's importer reads the image name from (besides the OCI
/// `org.opencontainers.image.ref.name`).
const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

/// Every entry gets this modification time, so an image built twice has the same digests.
const MTIME: u64 = 1_700_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("failed to read {path} for the image")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the image's layer entry {path}")]
    Layer {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the image's {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("failed to write the image layout {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a file in the image holds: a file on this machine, or bytes.
#[derive(Debug, Clone)]
pub enum Content {
    File(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Entry {
    Dir { mode: u32 },
    File { content: Content, mode: u32 },
    Symlink { target: String },
}

/// An image to build: entries by their path in the image (relative, no leading `/`), and
/// the config's entrypoint and environment.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    name: String,
    entries: Vec<(String, Entry)>,
    entrypoint: Vec<String>,
    env: Vec<String>,
}

impl ImageBuilder {
    /// An empty image named `name` (`faultline.local/busybox:latest`).
    pub fn new(name: &str) -> ImageBuilder {
        ImageBuilder {
            name: name.to_string(),
            entries: Vec::new(),
            entrypoint: Vec::new(),
            env: vec!["PATH=/bin".to_string()],
        }
    }

    /// A static busybox as `/bin/busybox`, its applets as symlinks in `/bin`, the
    /// directories a container expects (`/tmp` sticky), and a root user in `/etc/passwd`.
    pub fn busybox(name: &str, busybox: &Path) -> ImageBuilder {
        let mut b = ImageBuilder::new(name);
        for (dir, mode) in [
            ("bin", 0o755),
            ("etc", 0o755),
            ("tmp", 0o1777),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("data", 0o755),
        ] {
            b = b.dir(dir, mode);
        }
        b = b.file("bin/busybox", Content::File(busybox.to_path_buf()), 0o755);
        for applet in BUSYBOX_APPLETS {
            b = b.symlink(&format!("bin/{applet}"), "busybox");
        }
        b.file(
            "etc/passwd",
            Content::Bytes(b"root:x:0:0:root:/:/bin/sh\n".to_vec()),
            0o644,
        )
    }

    pub fn dir(mut self, path: &str, mode: u32) -> ImageBuilder {
        self.entries.push((clean(path), Entry::Dir { mode }));
        self
    }

    pub fn file(mut self, path: &str, content: Content, mode: u32) -> ImageBuilder {
        self.entries
            .push((clean(path), Entry::File { content, mode }));
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> ImageBuilder {
        let target = target.to_string();
        self.entries.push((clean(path), Entry::Symlink { target }));
        self
    }

    /// The config's `Entrypoint`: what a container runs when CRI gives no command (the pod
    /// sandbox's container).
    pub fn entrypoint(mut self, argv: &[&str]) -> ImageBuilder {
        self.entrypoint = argv.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds `KEY=VALUE` to the config's `Env` (`PATH=/bin` is there from the start).
    pub fn env(mut self, key_value: &str) -> ImageBuilder {
        self.env.push(key_value.to_string());
        self
    }

    /// The layer tar: parent directories first (made 0755 where not given), then the
    /// entries in the order given.
    fn layer(&self) -> Result<Vec<u8>, ImageError> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        for (path, entry) in &self.entries {
            for parent in parents(path) {
                if dirs.insert(parent.clone()) && !self.is_dir_entry(&parent) {
                    append(&mut tar, &parent, &Entry::Dir { mode: 0o755 })?;
                }
            }
            if matches!(entry, Entry::Dir { .. }) {
                dirs.insert(path.clone());
            }
            append(&mut tar, path, entry)?;
        }
        tar.into_inner().map_err(|source| ImageError::Layer {
            path: "(end of archive)".into(),
            source,
        })
    }

    fn is_dir_entry(&self, path: &str) -> bool {
        self.entries
            .iter()
            .any(|(p, e)| p == path && matches!(e, Entry::Dir { .. }))
    }

    pub fn build(&self) -> Result<Image, ImageError> {
        let spec = |what| move |source| ImageError::Spec { what, source };
        let layer = self.layer()?;
        let diff_id = sha256(&layer);
        let config = ConfigBuilder::default()
            .entrypoint(self.entrypoint.clone())
            .env(self.env.clone())
            .working_dir("/")
            .build()
            .map_err(spec("config"))?;
        let rootfs = RootFsBuilder::default()
            .typ("layers")
            .diff_ids(vec![diff_id.clone()])
            .build()
            .map_err(spec("rootfs"))?;
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(config)
            .rootfs(rootfs)
            .build()
            .map_err(spec("image configuration"))?
            .to_string()
            .map_err(spec("image configuration"))?
            .into_bytes();
        let config = Blob::new(MediaType::ImageConfig, config);
        let layer = Blob::new(MediaType::ImageLayer, layer);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor()?)
            .layers(vec![layer.descriptor()?])
            .build()
            .map_err(spec("manifest"))?
            .to_string()
            .map_err(spec("manifest"))?
            .into_bytes();
        Ok(Image {
            name: self.name.clone(),
            config,
            layer,
            manifest: Blob::new(MediaType::ImageManifest, manifest),
            diff_id,
        })
    }
}

/// `/bin/sh` and `bin/sh/` both become `bin/sh`.
fn clean(path: &str) -> String {
    path.trim_matches('/').to_string()
}

/// `a`, `a/b` for `a/b/c`.
fn parents(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, entry: &Entry) -> Result<(), ImageError> {
    let err = |source| ImageError::Layer {
        path: path.to_string(),
        source,
    };
    let mut h = tar::Header::new_gnu();
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    match entry {
        Entry::Dir { mode } => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(*mode);
            h.set_size(0);
            tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                .map_err(err)
        }
        Entry::File { content, mode } => {
            let data = match content {
                Content::Bytes(b) => b.clone(),
                Content::File(p) => std::fs::read(p).map_err(|source| ImageError::Read {
                    path: p.clone(),
                    source,
                })?,
            };
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, path, data.as_slice()).map_err(err)
        }
        Entry::Symlink { target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, path, target).map_err(err)
        }
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// One content-addressed blob of the image.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: MediaType,
    /// `sha256:<hex>`.
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: MediaType, data: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> Result<Descriptor, ImageError> {
        let digest = Digest::from_str(&self.digest).map_err(|source| ImageError::Spec {
            what: "digest",
            source,
        })?;
        Ok(Descriptor::new(
            self.media_type.clone(),
            self.data.len() as u64,
            digest,
        ))
    }
}

/// A built single-layer image.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub config: Blob,
    pub layer: Blob,
    pub manifest: Blob,
    /// The digest of the uncompressed layer (the config's `rootfs.diff_ids[0]`).
    pub diff_id: String,
}

impl Image {
    /// The snapshot the unpacked layer is committed as: for the first (only) layer, the
    /// chain id is its diff id (image-spec `config.md`, "ChainID").
    pub fn chain_id(&self) -> &str {
        &self.diff_id
    }

    /// `index.json` of the layout: the manifest, named by both annotations importers read.
    pub fn index_json(&self) -> Result<String, ImageError> {
        let mut d = self.manifest.descriptor()?;
        d.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), self.name.clone()),
            (CONTAINERD_IMAGE_NAME.to_string(), self.name.clone()),
        ])));
        let spec = |source| ImageError::Spec {
            what: "index",
            source,
        };
        let platform = PlatformBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .build()
            .map_err(spec)?;
        d.set_platform(Some(platform));
        ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![d])
            .build()
            .map_err(spec)?
            .to_string()
            .map_err(spec)
    }

    /// Writes the OCI image-layout tarball (`oci-layout`, `index.json`, `blobs/sha256/*`).
    pub fn write_layout(&self, out: &Path) -> Result<(), ImageError> {
        let err = |source| ImageError::Write {
            path: out.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(out).map_err(err)?;
        let mut tar = tar::Builder::new(file);
        let index = self.index_json()?;
        let mut files: Vec<(String, &[u8])> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
            ),
            ("index.json".into(), index.as_bytes()),
        ];
        for blob in [&self.config, &self.layer, &self.manifest] {
            let hex = blob.digest.trim_start_matches("sha256:");
            files.push((format!("blobs/sha256/{hex}"), &blob.data));
        }
        for (path, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(MTIME);
            tar.append_data(&mut h, path, data).map_err(err)?;
        }
        tar.into_inner().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(layer: &[u8]) -> Vec<(String, tar::EntryType, u32, Option<String>)> {
        let mut a = tar::Archive::new(layer);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    e.link_name().unwrap().map(|l| l.display().to_string()),
                )
            })
            .collect()
    }

    #[test]
    fn the_layer_holds_parents_first_then_files_and_links() {
        let img = ImageBuilder::new("faultline.local/test:1")
            .file(
                "/usr/local/bin/tool",
                Content::Bytes(b"#!/bin/sh\n".to_vec()),
                0o755,
            )
            .symlink("bin/tool", "../usr/local/bin/tool")
            .dir("tmp", 0o1777)
            .entrypoint(&["/bin/tool"])
            .build()
            .unwrap();
        let e = entries(&img.layer.data);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/tool",
                "bin/",
                "bin/tool",
                "tmp/"
            ]
        );
        assert_eq!(e[3].1, tar::EntryType::Regular);
        assert_eq!(e[3].2, 0o755);
        assert_eq!(e[5].3.as_deref(), Some("../usr/local/bin/tool"));
        assert_eq!(e[6].2, 0o1777);
        // An uncompressed layer: its digest is its diff id and the chain id.
        assert_eq!(img.layer.digest, img.diff_id);
        assert_eq!(img.chain_id(), img.diff_id);
    }

    #[test]
    fn config_and_manifest_name_each_other_by_digest() {
        let img = ImageBuilder::new("faultline.local/test:1")
            .file("a", Content::Bytes(vec![1, 2, 3]), 0o644)
            .entrypoint(&["/bin/sleep", "1"])
            .env("A=b")
            .build()
            .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&img.config.data).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/bin/sleep", "1"])
        );
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!(["PATH=/bin", "A=b"])
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], img.diff_id);
        let manifest: serde_json::Value = serde_json::from_slice(&img.manifest.data).unwrap();
        assert_eq!(manifest["config"]["digest"], img.config.digest);
        assert_eq!(manifest["layers"][0]["digest"], img.layer.digest);
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(img.manifest.digest, sha256(&img.manifest.data));
        // Built twice: the same digests.
        let again = ImageBuilder::new("faultline.local/test:1")
            .file("a", Content::Bytes(vec![1, 2, 3]), 0o644)
            .entrypoint(&["/bin/sleep", "1"])
            .env("A=b")
            .build()
            .unwrap();
        assert_eq!(again.manifest.digest, img.manifest.digest);
    }

    #[test]
    fn the_layout_tarball_has_index_layout_and_every_blob() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageBuilder::new("faultline.local/test:1")
            .file("a", Content::Bytes(vec![7]), 0o644)
            .build()
            .unwrap();
        let out = dir.path().join("img.tar");
        img.write_layout(&out).unwrap();
        let data = std::fs::read(&out).unwrap();
        let mut a = tar::Archive::new(data.as_slice());
        let mut found = HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut body).unwrap();
            found.insert(e.path().unwrap().display().to_string(), body);
        }
        assert!(found.contains_key("oci-layout"));
        let index: serde_json::Value = serde_json::from_slice(&found["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], img.manifest.digest);
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "faultline.local/test:1"
        );
        for blob in [&img.config, &img.layer, &img.manifest] {
            let path = format!("blobs/sha256/{}", &blob.digest[7..]);
            assert_eq!(found[&path], blob.data, "{path}");
        }
    }

    #[test]
    fn a_missing_source_file_is_named() {
        let err = ImageBuilder::busybox("x", Path::new("/nonexistent/busybox"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/busybox"), "{err}");
    }
}
