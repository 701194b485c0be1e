//! `volatile`, on the kernel alone: the fix containerd#4785 proposes, shown also where the
//! containerd under test cannot mount its snapshots with it (`cri-volatile` skipped) or no
//! runtime was chosen. An overlay like a container's rootfs, its upper layer on the slow
//! storage under the node's I/O load and with the container's dirty data in it, mounted
//! `volatile`: its unmount skips the sync (`ovl_sync_fs` returns at once for a volatile
//! mount; Documentation/filesystems/overlayfs.rst, "Volatile mount") and ends well within
//! CRI's 10 s. Reproduced would be an unmount that outlasts them.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use faultline_core::guard::Mount;
use faultline_core::VariantOutcome;
use nix::mount::{umount2, MntFlags, MsFlags};
use serde_json::json;

use super::batch::Env;
use super::storage::{NodeLoad, SlowStorage};
use super::{Kind, CRI_EVENT_TIMEOUT_MS};

/// How long the unmount may take before the storage is made fast again to let it end.
const UNMOUNT_LIMIT: Duration = Duration::from_secs(30);

pub(super) fn run(env: &Env) -> anyhow::Result<VariantOutcome> {
    let kind = Kind::Volatile;
    let opts = &env.opts;
    let dir = env.variant_dir(kind)?;
    let mut storage = SlowStorage::build(&dir)?;
    let lower = dir.join("lower");
    std::fs::create_dir_all(lower.join("etc"))?;
    std::fs::write(lower.join("etc/os-release"), "ID=faultline\n")?;
    let (upper, work) = (storage.path().join("upper"), storage.path().join("work"));
    let rootfs = dir.join("rootfs");
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={},volatile",
        lower.display(),
        upper.display(),
        work.display()
    );
    let overlay = Mount::new(
        Some(Path::new("overlay")),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )?;
    // The container's writes, left to writeback.
    std::fs::write(rootfs.join("dirty"), vec![0x5a; opts.dirty_bytes as usize])?;
    storage.set_write_latency(opts.write_latency)?;
    let load = NodeLoad::start(&storage)?;
    load.wait_dirty(Duration::from_secs(30))?;
    env.progress(
        kind,
        "slow storage under load; unmounting the volatile overlay",
    );

    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let target = rootfs.clone();
    std::thread::spawn(move || {
        let _ = tx.send(umount2(&target, MntFlags::empty()));
    });
    let answer = rx.recv_timeout(UNMOUNT_LIMIT);
    let umount_ms = start.elapsed().as_millis() as u64;
    storage.set_write_latency(Duration::ZERO)?;
    let node_load_mib = load.stop(Duration::from_secs(60));
    let result = match answer {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("still blocked after the storage was made fast".to_string()),
        },
    };
    if let Err(e) = result {
        drop(overlay); // detaches it if still there
                       // A quick failure is not "no stall": it says nothing about the fix.
        anyhow::bail!("unmounting the volatile overlay failed after {umount_ms} ms: {e}");
    }
    overlay.forget();
    env.progress(kind, format!("unmounted in {umount_ms} ms"));
    Ok(VariantOutcome {
        reproduced: umount_ms > CRI_EVENT_TIMEOUT_MS,
        observed: json!({
            "overlay_options": options,
            "dirty_bytes": opts.dirty_bytes,
            "write_latency_ms": opts.write_latency.as_millis() as u64,
            "node_load_mib_written": node_load_mib,
            "umount_ms": umount_ms,
                        "deadline_ms": CRI_EVENT_TIMEOUT_MS,
        }),
        findings: Vec::new(),
    })
}
