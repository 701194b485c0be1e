//! The config.toml of a private containerd (config version 2, as containerd 1.6 and 1.7
//! read it; see containerd's docs/cri/config.md and `containerd config default`). Every path
//! it writes to is under one directory, so that nothing reaches the host's
//! /var/lib/containerd, /run/containerd or /opt/containerd. (containerd 1.6 still puts shim
//! sockets under /run/containerd/s: [`crate::containerd`] gives it a /run of its own.)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The CRI runtime handlers the config declares (RunPodSandbox's `runtime_handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// `io.containerd.runc.v2`: `containerd-shim-runc-v2`, one shim per pod.
    RuncV2,
    /// `io.containerd.runtime.v1.linux`: `containerd-shim`, one per container (deprecated
    /// since containerd 1.4, removed in 2.0; still what the 1.6 nodes of the Cốc Cốc
    /// report ran).
    ShimV1,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::RuncV2 => "runc",
            Handler::ShimV1 => "shimv1",
        }
    }
}

/// What a private containerd is configured with.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// Holds the config, sockets, state, runc roots, logs; and `root` unless set apart.
    pub dir: PathBuf,
    /// containerd's root (content store, metadata, the overlayfs snapshotter's layers and
    /// upper dirs). `dir/root` unless it must sit elsewhere (on slow storage).
    pub root: PathBuf,
    /// containerd's state (task bundles, shim addresses). `dir/state` unless a test wants
    /// a node's default, `/run/containerd`: containerd runs with a `/run` of its own, so
    /// that path is private to it and its shims.
    pub state: PathBuf,
    /// The OCI runtime the shims run (`runc` or another binary).
    pub oci_runtime: PathBuf,
    /// CRI's image for the pod sandbox container (imported before any pod runs).
    pub sandbox_image: String,
    /// CRI's `restrict_oom_score_adj`: keep a container's oom_score_adj at or above
    /// containerd's own. Needed where root lacks CAP_SYS_RESOURCE (unprivileged containers,
    /// some CI sandboxes such as this one): lowering oom_score_adj below the current value
    /// needs it, and runc then fails with `failed to update /proc/self/oom_score_adj:
    /// Permission denied`. Off on a node whose containerd may set any score.
    pub restrict_oom_score_adj: bool,
    /// The overlayfs snapshotter's `mount_options` (`["volatile"]`); containerd has the
    /// option from 1.6.24 and 1.7.4 on (containerd PRs #8961 and #9005, backports of
    /// #8676). Left out of the file when empty.
    pub overlay_mount_options: Vec<String>,
}

impl ContainerdConfig {
    pub fn new(dir: &Path, oci_runtime: &Path, sandbox_image: &str) -> ContainerdConfig {
        ContainerdConfig {
            dir: dir.to_path_buf(),
            root: dir.join("root"),
            state: dir.join("state"),
            oci_runtime: oci_runtime.to_path_buf(),
            sandbox_image: sandbox_image.to_string(),
            restrict_oom_score_adj: true,
            overlay_mount_options: Vec::new(),
        }
    }

    /// The gRPC socket: containerd's API and CRI.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn state(&self) -> PathBuf {
        self.state.clone()
    }

    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        let d = |p: &str| toml_string(&self.dir.join(p));
        let mut t = String::new();
        let _ = writeln!(t, "version = 2");
        let _ = writeln!(t, "root = {}", toml_string(&self.root));
        let _ = writeln!(t, "state = {}", toml_string(&self.state));
        // Snapshotters that cannot work here and tracing that would dial out.
        t.push_str(concat!(
            "disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", ",
            "\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", ",
            "\"io.containerd.snapshotter.v1.devmapper\", ",
            "\"io.containerd.tracing.processor.v1.otlp\", \"io.containerd.internal.v1.tracing\"]\n",
        ));
        let _ = writeln!(t, "[grpc]\n  address = {}", d("containerd.sock"));
        let _ = writeln!(t, "[ttrpc]\n  address = {}", d("containerd.sock.ttrpc"));
        // The default would create /opt/containerd.
        let _ = writeln!(
            t,
            "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}",
            d("opt")
        );
        // The v1 runtime's runc root defaults to /run/containerd/runc.
        let _ = writeln!(
            t,
            "[plugins.\"io.containerd.runtime.v1.linux\"]\n  runtime_root = {}",
            d("runc-v1")
        );
        if !self.overlay_mount_options.is_empty() {
            let opts: Vec<String> = self
                .overlay_mount_options
                .iter()
                .map(|o| toml_string(Path::new(o)))
                .collect();
            let _ = writeln!(
                t,
                "[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\n  mount_options = [{}]",
                opts.join(", ")
            );
        }
        self.cri(&mut t);
        t
    }

    /// The CRI plugin: no TCP stream server, CNI dirs that stay empty (pods use the node's
    /// network), overlayfs, and the two runtime handlers.
    fn cri(&self, t: &mut String) {
        let d = |p: &str| toml_string(&self.dir.join(p));
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let _ = writeln!(t, "[{cri}]");
        let _ = writeln!(
            t,
            "  sandbox_image = {}",
            toml_string(Path::new(&self.sandbox_image))
        );
        let _ = writeln!(
            t,
            "  restrict_oom_score_adj = {}",
            self.restrict_oom_score_adj
        );
        let _ = writeln!(t, "  disable_tcp_service = true");
        let _ = writeln!(t, "  stream_server_address = \"127.0.0.1\"");
        let _ = writeln!(t, "  stream_server_port = \"0\"");
        let _ = writeln!(
            t,
            "[{cri}.cni]\n  bin_dir = {}\n  conf_dir = {}",
            d("cni/bin"),
            d("cni/conf")
        );
        let _ = writeln!(t, "[{cri}.containerd]");
        let _ = writeln!(t, "  snapshotter = \"overlayfs\"");
        let _ = writeln!(t, "  default_runtime_name = \"{}\"", Handler::RuncV2.name());
        let runtimes = format!("{cri}.containerd.runtimes");
        let oci = toml_string(&self.oci_runtime);
        let _ = writeln!(t, "[{runtimes}.{}]", Handler::RuncV2.name());
        let _ = writeln!(t, "  runtime_type = \"io.containerd.runc.v2\"");
        // The runc.v2 shim's own options: where runc keeps its state (default
        // /run/containerd/runc) and which binary it runs.
        let _ = writeln!(t, "[{runtimes}.{}.options]", Handler::RuncV2.name());
        let _ = writeln!(t, "  Root = {}", d("runc"));
        let _ = writeln!(t, "  BinaryName = {oci}");
        // v1 takes its OCI runtime from `runtime_engine` and `runtime_root` (containerd
        // logs both as deprecated, and they still work in 1.6).
        let _ = writeln!(t, "[{runtimes}.{}]", Handler::ShimV1.name());
        let _ = writeln!(t, "  runtime_type = \"io.containerd.runtime.v1.linux\"");
        let _ = writeln!(t, "  runtime_engine = {oci}");
        let _ = writeln!(t, "  runtime_root = {}", d("runc-v1"));
    }
}

/// A TOML basic string: quotes and backslashes escaped, control characters as \uXXXX.
fn toml_string(p: &Path) -> String {
    let mut out = String::from("\"");
    for c in p.to_string_lossy().chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerdConfig {
        ContainerdConfig::new(
            Path::new("/tmp/s/ctd"),
            Path::new("/usr/sbin/runc"),
            "faultline.local/busybox:latest",
        )
    }

    #[test]
    fn every_path_is_under_the_private_directory() {
        let t = config().toml();
        for line in t.lines().filter(|l| l.contains("= \"/")) {
            let value = line.split_once("= ").unwrap().1;
            assert!(
                value.starts_with("\"/tmp/s/ctd/") || value == "\"/usr/sbin/runc\"",
                "{line}"
            );
        }
        for key in [
            "root = ",
            "state = ",
            "address = ",
            "Root = ",
            "runtime_root = ",
            "path = ",
        ] {
            assert!(t.contains(key), "{key} missing:\n{t}");
        }
    }

    #[test]
    fn handlers_oom_option_and_mount_options() {
        let mut c = config();
        let t = c.toml();
        assert!(
            t.contains("runtime_type = \"io.containerd.runc.v2\""),
            "{t}"
        );
        assert!(t.contains("runtimes.shimv1]\n  runtime_type = \"io.containerd.runtime.v1.linux\"\n  runtime_engine = \"/usr/sbin/runc\""), "{t}");
        assert!(t.contains("BinaryName = \"/usr/sbin/runc\""), "{t}");
        assert!(t.contains("restrict_oom_score_adj = true"), "{t}");
        assert!(!t.contains("mount_options"), "{t}");
        c.restrict_oom_score_adj = false;
        c.overlay_mount_options = vec!["volatile".into()];
        let t = c.toml();
        assert!(t.contains("restrict_oom_score_adj = false"), "{t}");
        assert!(t.contains("[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\n  mount_options = [\"volatile\"]"), "{t}");
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(toml_string(Path::new("/a\"b\\c")), "\"/a\\\"b\\\\c\"");
        assert_eq!(toml_string(Path::new("/a\nb")), "\"/a\\u000Ab\"");
    }
}
