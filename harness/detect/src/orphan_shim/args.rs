//! A shim's command line, as containerd writes it.
//!
//! - v1 (`io.containerd.runtime.v1.linux`, one shim per container):
//!   `containerd-shim -namespace NS -workdir ROOT/io.containerd.runtime.v1.linux/NS/ID
//!   -address SOCK -containerd-binary BIN [-runtime-root DIR] [-systemd-cgroup]`; the task id
//!   is the workdir's base name (containerd's runtime/v1/linux/bundle.go puts it there).
//! - v2 (`containerd-shim-runc-v2`, `-runc-v1`): `... -namespace NS -id ID -address SOCK`.
//!   runc.v2 serves all containers of a pod from the sandbox's shim, so its `-id` is the
//!   sandbox's id (runtime/v2/runc/manager/manager_linux.go `groupLabels`: the
//!   `io.kubernetes.cri.sandbox-id` annotation picks the shim), and the sandbox task is what
//!   its life hangs on.
//!
//! Go's flag package accepts `-flag value`, `-flag=value` and two dashes alike.

use std::path::Path;

/// Which shim protocol the command line is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimKind {
    /// `-workdir`: containerd's v1 shim.
    V1,
    /// `-id`: a v2 shim.
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShimArgs {
    pub binary: String,
    pub namespace: Option<String>,
    pub workdir: Option<String>,
    pub id: Option<String>,
    pub address: Option<String>,
}

impl ShimArgs {
    /// `None` when argv[0]'s base name is not one of `names`.
    pub fn parse(argv: &[String], names: &[String]) -> Option<ShimArgs> {
        let binary = Path::new(argv.first()?).file_name()?.to_str()?.to_string();
        if !names.contains(&binary) {
            return None;
        }
        let mut out = ShimArgs {
            binary,
            ..ShimArgs::default()
        };
        let mut it = argv[1..].iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                continue;
            };
            let (key, inline) = match flag.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (flag, None),
            };
            let slot = match key {
                "namespace" => &mut out.namespace,
                "workdir" => &mut out.workdir,
                "id" => &mut out.id,
                "address" => &mut out.address,
                _ => continue,
            };
            *slot = inline.or_else(|| it.next().cloned());
        }
        Some(out)
    }

    /// v1 when it has a workdir, else v2.
    pub fn kind(&self) -> ShimKind {
        if self.workdir.is_some() {
            ShimKind::V1
        } else {
            ShimKind::V2
        }
    }

    /// The task id: v2's `-id`, or v1's workdir base name.
    pub fn container_id(&self) -> Option<String> {
        self.id.clone().or_else(|| {
            self.workdir
                .as_deref()
                .and_then(|w| Path::new(w).file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orphan_shim::SHIM_NAMES;

    fn names() -> Vec<String> {
        SHIM_NAMES.iter().map(|s| s.to_string()).collect()
    }

    /// A `/proc/PID/cmdline` capture: arguments separated (and ended) by NUL.
    fn cmdline(raw: &[u8]) -> Vec<String> {
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn parses_the_v1_command_line_from_the_field_report() {
        // The orphan from the field report that started this detector, verbatim (ps output).
        let a: Vec<String> = "containerd-shim -namespace k8s.io -workdir /var/lib/containerd/io.containerd.runtime.v1.linux/k8s.io/513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f -address /run/containerd/containerd.sock -containerd-binary /usr/bin/containerd -systemd-cgroup"
            .split(' ')
            .map(String::from)
            .collect();
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.binary, "containerd-shim");
        assert_eq!(s.kind(), ShimKind::V1);
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(
            s.container_id().as_deref(),
            Some("513f9b55e96a531360dc266d6c13124c5b7a2e027552245912203ab96b60e98f")
        );
        assert_eq!(
            s.address.as_deref(),
            Some("/run/containerd/containerd.sock")
        );
    }

    #[test]
    fn parses_a_captured_v1_cmdline_of_containerd_1_6_20() {
        let a = cmdline(include_bytes!("testdata/shim_v1_1.6.20.cmdline"));
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.binary, "containerd-shim");
        assert_eq!(s.kind(), ShimKind::V1);
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        let workdir = s.workdir.as_deref().unwrap();
        assert!(
            workdir.ends_with("/root/io.containerd.runtime.v1.linux/k8s.io/faultline-v1-cap"),
            "{workdir}"
        );
        assert_eq!(s.container_id().as_deref(), Some("faultline-v1-cap"));
        assert!(s.address.as_deref().unwrap().ends_with("/containerd.sock"));
        assert!(s.id.is_none());
    }

    #[test]
    fn parses_a_captured_v2_cmdline_of_containerd_1_6_20() {
        let a = cmdline(include_bytes!("testdata/shim_runc_v2_1.6.20.cmdline"));
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.binary, "containerd-shim-runc-v2");
        assert_eq!(s.kind(), ShimKind::V2);
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(s.id.as_deref(), Some("faultline-v2-capture"));
        assert_eq!(s.container_id().as_deref(), Some("faultline-v2-capture"));
        assert!(s.address.as_deref().unwrap().ends_with("/containerd.sock"));
        assert!(s.workdir.is_none());
    }

    #[test]
    fn accepts_go_flag_forms_and_ignores_other_programs() {
        let argv = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        let a = argv("/usr/bin/containerd-shim-runc-v2 -namespace=k8s.io --id abc -address /run/containerd/containerd.sock");
        let s = ShimArgs::parse(&a, &names()).unwrap();
        assert_eq!(s.id.as_deref(), Some("abc"));
        assert_eq!(s.namespace.as_deref(), Some("k8s.io"));
        assert!(ShimArgs::parse(&argv("containerd --config x"), &names()).is_none());
        assert!(ShimArgs::parse(&argv("my-shim -id x"), &names()).is_none());
        let mut more = names();
        more.push("my-shim".into());
        assert!(ShimArgs::parse(&argv("my-shim -id x"), &more).is_some());
    }
}
