//! The slow storage of `cri-real-stall` and `cri-volatile`: ext4 on a loop device whose
//! backing file lives on faultline's FUSE file system, whose writes can be made slow. An
//! overlay unmount's `sync_fs` flushes the whole upper file system, so it then blocks in the
//! kernel for as long as the dirty data takes to reach the FUSE daemon.
//!
//! The node's own I/O load ([`NodeLoad`]) keeps that file system dirty: in the Cốc Cốc
//! report the node was busy deleting a large overlay for hours. Without it, the first
//! unmount (the container's) would flush everything and the sandbox's, whose deadline is
//! the one that orphans the runc v2 shim, would find nothing left to wait for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use faultline_core::guard::ext4_image::{Ext4Image, MountedExt4};
use faultline_fuse::{FuseConfig, FuseDaemon};
use faultline_sys::wait_until;

/// The ext4 image: room for containerd's root (content, the unpacked busybox layer, the
/// snapshots' upper dirs with the container's dirty data) and the node's load file.
pub(super) const IMAGE_MIB: u64 = 256;
/// The node load's file: rewritten in place, so it dirties at most this much.
const LOAD_FILE_MIB: u64 = 24;

/// ext4 on a loop device on FUSE. Field order is drop order: the ext4 mount (and its loop
/// device) before the daemon under it.
pub(super) struct SlowStorage {
    ext4: MountedExt4,
    fuse: FuseDaemon,
}

impl SlowStorage {
    pub(super) fn build(dir: &Path) -> anyhow::Result<SlowStorage> {
        let backing = dir.join("fuse-backing");
        let mp = dir.join("fuse");
        let fs_dir = dir.join("slow-disk");
        for d in [&backing, &mp, &fs_dir] {
            std::fs::create_dir_all(d)?;
        }
        let fuse = FuseDaemon::start(&FuseConfig::new(&backing, &mp).fsname("slow-disk"))
            .context("failed to start the FUSE daemon")?;
        let image = mp.join("disk.img");
        Ext4Image::new(IMAGE_MIB << 20)
            .create(&image)
            .context("failed to make the ext4 image on FUSE")?;
        let ext4 =
            MountedExt4::mount(&image, &fs_dir, None).context("failed to mount the ext4 image")?;
        Ok(SlowStorage { ext4, fuse })
    }

    /// Where the ext4 file system is mounted.
    pub(super) fn path(&self) -> &Path {
        self.ext4.target()
    }

    /// Each write reaching the FUSE daemon takes `latency` (zero: full speed).
    pub(super) fn set_write_latency(&mut self, latency: Duration) -> anyhow::Result<()> {
        self.fuse.set_latency(Duration::ZERO, latency)?;
        Ok(())
    }
}

/// How long the flush before the ext4 unmount may take at full speed (tens of MiB through
/// the FUSE daemon: seconds).
const FLUSH_LIMIT: Duration = Duration::from_secs(60);

impl Drop for SlowStorage {
    /// Fast again, and flushed, before the fields go: unmounting ext4 writes what is dirty,
    /// which at the slow latency could take minutes (a variant that failed midway leaves it
    /// slow), and past the unmount's own bound it would be detached lazily, its loop device
    /// left to go later.
    fn drop(&mut self) {
        if let Err(e) = self.fuse.set_latency(Duration::ZERO, Duration::ZERO) {
            tracing::debug!("failed to reset the slow storage's latency: {e}");
        }
        let dir = self.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let synced = File::open(&dir).and_then(|f| nix::unistd::syncfs(&f).map_err(Into::into));
            let _ = tx.send(synced);
        });
        match rx.recv_timeout(FLUSH_LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("failed to flush the slow storage: {e}"),
            Err(_) => tracing::warn!("the slow storage did not flush within {FLUSH_LIMIT:?}"),
        }
    }
}

/// A thread of the node rewriting a file on the slow storage without fsync, keeping dirty
/// data there for every unmount's `sync_fs` to wait on.
pub(super) struct NodeLoad {
    stop: Arc<AtomicBool>,
    /// MiB written so far.
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<std::io::Result<u64>>>,
    path: PathBuf,
}

impl NodeLoad {
    pub(super) fn start(storage: &SlowStorage) -> anyhow::Result<NodeLoad> {
        let path = storage.path().join("node-load");
        let file =
            File::create(&path).with_context(|| format!("failed to create {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop2, written2) = (stop.clone(), written.clone());
        let thread = std::thread::Builder::new()
            .name("node-load".into())
            .spawn(move || rewrite(&file, &stop2, &written2))
            .context("failed to start the node load thread")?;
        Ok(NodeLoad {
            stop,
            written,
            thread: Some(thread),
            path,
        })
    }

    /// Waits (up to `limit`) until the whole file has been written once: that much is dirty.
    pub(super) fn wait_dirty(&self, limit: Duration) -> anyhow::Result<()> {
        wait_until("the node load to dirty its file", limit, || {
            let mib = self.written.load(Ordering::SeqCst);
            (mib >= LOAD_FILE_MIB)
                .then_some(())
                .ok_or_else(|| format!("{mib} MiB written"))
        })?;
        Ok(())
    }

    /// Stops writing; waits up to `limit` for a write stuck in the kernel to return (it
    /// returns once the storage is fast again). Returns the MiB written.
    pub(super) fn stop(mut self, limit: Duration) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        if wait_until("the node load to stop", limit, || {
            thread
                .is_finished()
                .then_some(())
                .ok_or_else(|| "writing".to_string())
        })
        .is_err()
        {
            tracing::warn!("the node load writer is still blocked in the kernel; leaving it");
            return 0;
        }
        match thread.join() {
            Ok(Ok(mib)) => mib,
            Ok(Err(e)) => {
                tracing::warn!("node load on {}: {e}", self.path.display());
                0
            }
            Err(_) => 0,
        }
    }
}

impl Drop for NodeLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// 1 MiB at a time over [`LOAD_FILE_MIB`], a write every 100 ms, until told to stop.
fn rewrite(file: &File, stop: &AtomicBool, written: &AtomicU64) -> std::io::Result<u64> {
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        file.write_all_at(&chunk, (n % LOAD_FILE_MIB) << 20)?;
        n += 1;
        written.store(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(n)
}
