//! rtnetlink connections bound to a network namespace.
//!
//! A netlink socket talks to the namespace it was created in, for its whole life. So a
//! connection to another namespace is opened by a short-lived std thread that enters the
//! namespace (`setns`), creates the socket there and hands the connection future to the tokio
//! runtime; the thread then ends and the socket stays bound. A tokio worker is never moved into
//! another namespace: everything else the process does keeps running in its own.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use rtnetlink::Handle;

use super::DataplaneError;

/// Identity of a network namespace: the nsfs inode its files point at. Two paths with the same
/// identity are the same namespace (a bind mount in another directory, `/proc/self/ns/net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    pub(crate) fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(NsId { dev: m.dev(), ino: m.ino() })
    }
}

/// An open rtnetlink connection to one network namespace.
pub(crate) struct Netns {
    pub(crate) handle: Handle,
    /// The namespace file; `None` is the agent's own namespace.
    pub(crate) path: Option<PathBuf>,
    pub(crate) id: NsId,
    /// How messages name this namespace.
    pub(crate) label: String,
}

impl Netns {
    /// Connects to the namespace at `path`, or to the agent's own namespace.
    pub(crate) async fn open(path: Option<&Path>) -> Result<Self, DataplaneError> {
        let label = label(path);
        let fail = |e: io::Error| DataplaneError::open_namespace(label.clone(), e);
        let Some(path) = path else {
            let id = NsId::of(Path::new("/proc/self/ns/net")).map_err(fail)?;
            let (conn, handle, _) = rtnetlink::new_connection().map_err(fail)?;
            tokio::spawn(conn);
            return Ok(Netns { handle, path: None, id, label });
        };
        let file = File::open(path).map_err(fail)?;
        let id = NsId::of(path).map_err(fail)?;
        let runtime = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("evpn-netns".into())
            .spawn(move || {
                let connect = || -> io::Result<Handle> {
                    setns(&file, CloneFlags::CLONE_NEWNET)?;
                    // The socket registers with the runtime's reactor, so it is made inside it.
                    let _entered = runtime.enter();
                    let (conn, handle, _) = rtnetlink::new_connection()?;
                    runtime.spawn(conn);
                    Ok(handle)
                };
                // The receiver only goes away if apply() was cancelled; nothing to tell then.
                let _ = tx.send(connect());
            })
            .map_err(fail)?;
        let handle = rx.await.map_err(|_| fail(io::Error::other("namespace thread ended without an answer")))?;
        let handle = handle.map_err(fail)?;
        Ok(Netns { handle, path: Some(path.to_owned()), id, label })
    }

    /// A fresh descriptor of the namespace, to move a device into it. Opened per move rather
    /// than kept, so a node with many VRFs holds one descriptor (the socket) per namespace.
    pub(crate) fn open_file(&self) -> Result<File, DataplaneError> {
        let path = self.path.as_deref().unwrap_or(Path::new("/proc/self/ns/net"));
        File::open(path).map_err(|e| DataplaneError::open_namespace(self.label.clone(), e))
    }
}

fn label(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("netns {}", p.display()),
        None => "the agent's netns".to_owned(),
    }
}
