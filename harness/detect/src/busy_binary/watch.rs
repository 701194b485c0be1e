//! An inotify watch on one directory for the events that tell replacement strategies apart.
//! The inotify fd is owned, so dropping the watch releases it.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::classify::DirEvent;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("failed to create an inotify instance")]
    Init(#[source] Errno),
    #[error("failed to watch {}", .dir.display())]
    AddWatch {
        dir: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("failed to read inotify events for {}", .dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Watches a directory; [`DirWatch::drain`] returns what happened since the last drain.
#[derive(Debug)]
pub struct DirWatch {
    inotify: Inotify,
    dir: PathBuf,
}

/// IN_OPEN is kept so that readers (rsync opens the target to compare) show up in evidence;
/// the classifier only treats IN_MODIFY/IN_CLOSE_WRITE as writes.
pub const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_OPEN)
    .union(AddWatchFlags::IN_ATTRIB);

impl DirWatch {
    pub fn new(dir: &Path) -> Result<DirWatch, WatchError> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(WatchError::Init)?;
        inotify
            .add_watch(dir, WATCH_MASK)
            .map_err(|source| WatchError::AddWatch {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(DirWatch {
            inotify,
            dir: dir.to_path_buf(),
        })
    }

    /// Every event queued so far, in order. Events are queued synchronously by the syscall
    /// that causes them, so after the copier has exited its events are all here.
    pub fn drain(&self) -> Result<Vec<DirEvent>, WatchError> {
        let mut out = Vec::new();
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => break,
                Ok(events) => out.extend(events.into_iter().map(|e| {
                    DirEvent {
                        mask: e.mask,
                        name: e
                            .name
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    }
                })),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(WatchError::Read {
                        dir: self.dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_rename_over_a_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cdc"), b"old").unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("cdc.tmp"), b"new").unwrap();
        std::fs::rename(dir.path().join("cdc.tmp"), dir.path().join("cdc")).unwrap();
        let events: Vec<String> = watch
            .drain()
            .unwrap()
            .iter()
            .filter(|e| e.name == "cdc")
            .map(|e| e.to_string())
            .collect();
        assert_eq!(events, vec!["IN_MOVED_TO cdc"]);
        assert!(watch.drain().unwrap().is_empty());
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let err = DirWatch::new(Path::new("/nonexistent/faultline")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/faultline"), "{err}");
    }
}
