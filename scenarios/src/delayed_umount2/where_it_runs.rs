//! What a variant needs from the node and the runtime under test, and why it is skipped
//! where that is missing.

use faultline_core::Context;

use super::versions::{self, Release};
use super::Kind;

/// Why `kind` cannot run here, if it cannot: no runtime under test (`None`), or what the
/// containerd release `r` or the kernel lacks.
pub(super) fn lacking(ctx: &Context, kind: Kind, r: Option<Release>) -> Option<String> {
    // overlayfs `volatile`: Linux 5.10 (commit c86243b090bc, "ovl: provide a mount option
    // "volatile"").
    let no_volatile = || {
        (!ctx.kernel.at_least("5.10")).then(|| {
            format!(
                "kernel {} has no overlayfs volatile (5.10)",
                ctx.kernel.release
            )
        })
    };
    if kind == Kind::Volatile {
        return no_volatile();
    }
    let Some(r) = r else {
        return Some(
            "needs a container runtime: run with `--runtime system` and containerd and runc installed (apt-get install containerd runc, or run ci/setup)".into(),
        );
    };
    match kind {
        Kind::CriShimV1 => no_cgroup_v1().or_else(|| versions::has_shim_v1(r).err()),
        Kind::CriVolatile => versions::has_overlay_mount_options(r)
            .err()
            .or_else(no_volatile),
        Kind::CriShimV2 | Kind::CriRealStall | Kind::CriNoStall | Kind::Volatile => None,
    }
}

/// containerd's v1 runtime (io.containerd.runtime.v1.linux) manages the task's cgroup with
/// containerd/cgroups' v1 API only: on a node with nothing but the unified hierarchy its
/// task create fails ("cgroups: cgroup mountpoint does not exist"), as in the VM guest,
/// which mounts cgroup2 alone.
fn no_cgroup_v1() -> Option<String> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let unified_only = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    unified_only.then(|| {
        "the v1 shim runtime (io.containerd.runtime.v1.linux) needs cgroup v1 hierarchies; this node mounts only cgroup2 at /sys/fs/cgroup".to_string()
    })
}
