//! The inode table: FUSE node ids mapped to `O_PATH` descriptors of the backing files, with
//! the kernel's lookup counts.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use fuser::{Errno, FileAttr, Generation, INodeNo, ReplyEntry};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use super::convert::{attr_of, errno, stat_of};
use super::Passthrough;

struct Node {
    /// `O_PATH` descriptor of the backing file.
    fd: Arc<OwnedFd>,
    key: (u64, u64),
    nlookup: u64,
}

#[derive(Default)]
pub(super) struct Nodes {
    by_id: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next_id: u64,
}

impl Nodes {
    /// The table with only the root (node 1), which the kernel never forgets.
    pub(super) fn with_root(fd: OwnedFd, key: (u64, u64)) -> Nodes {
        let mut nodes = Nodes {
            next_id: 2,
            ..Default::default()
        };
        nodes.by_key.insert(key, 1);
        nodes.by_id.insert(
            1,
            Node {
                fd: Arc::new(fd),
                key,
                nlookup: 1,
            },
        );
        nodes
    }
}

impl Passthrough {
    pub(super) fn node_fd(&self, id: INodeNo) -> Result<Arc<OwnedFd>, Errno> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .by_id
            .get(&id.0)
            .map(|n| n.fd.clone())
            .ok_or(Errno::ESTALE)
    }

    /// Looks `name` up in `parent` and counts one kernel reference on the node.
    pub(super) fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let pfd = self.node_fd(parent)?;
        let fd = openat(
            &*pfd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = stat_of(&fd)?;
        let key = (st.st_dev, st.st_ino);
        let mut nodes = self.nodes.lock().unwrap();
        if let Some(&id) = nodes.by_key.get(&key) {
            let node = nodes.by_id.get_mut(&id).expect("key map and id map agree");
            // An inode number the backing fs reused for a new file must not resurrect the
            // node of the deleted one.
            let alive = stat_of(&node.fd).map(|s| s.st_nlink > 0).unwrap_or(false);
            if alive {
                node.nlookup += 1;
                return Ok(attr_of(id, &st));
            }
            nodes.by_key.remove(&key);
        }
        let id = nodes.next_id;
        nodes.next_id += 1;
        nodes.by_key.insert(key, id);
        nodes.by_id.insert(
            id,
            Node {
                fd: Arc::new(fd),
                key,
                nlookup: 1,
            },
        );
        Ok(attr_of(id, &st))
    }

    pub(super) fn reply_entry(&self, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent, name) {
            Ok(attr) => reply.entry(&self.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

pub(super) fn forget(fs: &Passthrough, ino: INodeNo, nlookup: u64) {
    if ino.0 == 1 {
        return;
    }
    let mut nodes = fs.nodes.lock().unwrap();
    let gone = match nodes.by_id.get_mut(&ino.0) {
        Some(n) => {
            n.nlookup = n.nlookup.saturating_sub(nlookup);
            (n.nlookup == 0).then_some(n.key)
        }
        None => None,
    };
    if let Some(key) = gone {
        nodes.by_id.remove(&ino.0);
        if nodes.by_key.get(&key) == Some(&ino.0) {
            nodes.by_key.remove(&key);
        }
    }
}
