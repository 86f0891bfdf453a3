//! The agents of `agents.yaml` as this process loaded them, and the notice that agents or
//! memberships changed. Plain state below the runtime: the directory (above it) writes
//! it, the agent host watches it.

use std::sync::{Arc, RwLock};

use polaris_registry::FileAgents;
use tokio::sync::watch;

/// The file's agents and the change notice.
pub(crate) struct Roster {
    file: RwLock<Arc<FileAgents>>,
    changed: watch::Sender<u64>,
}

impl Roster {
    pub(crate) fn new() -> Roster {
        Roster {
            file: RwLock::new(Arc::new(FileAgents::default())),
            changed: watch::channel(0).0,
        }
    }

    /// The file's agents.
    pub(crate) fn file(&self) -> Arc<FileAgents> {
        match self.file.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn set_file(&self, f: FileAgents) {
        match self.file.write() {
            Ok(mut g) => *g = Arc::new(f),
            Err(p) => *p.into_inner() = Arc::new(f),
        }
    }

    /// A receiver that changes whenever agents or memberships change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}
