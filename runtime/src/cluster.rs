//! What the nodes of one deployment tell each other. On PostgreSQL every node announces
//! what other nodes must not learn late with a NOTIFY on one channel, and listens to it on
//! one connection of its own:
//!
//! - a lease was released: contenders waiting on any node try again at once;
//! - agents or memberships changed in an org: every node's agent host reconciles and its
//!   roster long-polls answer (they would otherwise wait for their own timeout);
//! - a project was renamed or changed its settings: every node forgets its cached row, and
//!   after a rename closes its floor, which opens again under the new name.
//!
//! A notice is a hint, never the data: a lost one (a dropped connection, a node starting)
//! only delays what the store already holds, until an expiry, a timeout or the next
//! change. A node skips its own notices; it has acted on them already. SQLite is one node:
//! nothing is sent and nothing listened to.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::Store;

/// The channel every node listens on.
const CHANNEL: &str = "polaris_cluster";

/// A notice, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Notice {
    /// A lease was released.
    Released {
        /// Its org.
        org: String,
        /// Its name.
        name: String,
    },
    /// Agents or memberships of an org changed.
    Directory {
        /// The org.
        org: String,
    },
    /// A project changed (renamed when `renamed`); `name` is the name it had.
    Project {
        /// Its org.
        org: String,
        /// The name before the change.
        name: String,
        /// Its id.
        id: Uuid,
        /// Whether it was renamed.
        renamed: bool,
    },
}

#[derive(Serialize, Deserialize)]
struct Wire {
    node: Uuid,
    #[serde(flatten)]
    notice: Notice,
}

/// This node, as the others know it.
pub(crate) struct Cluster {
    node: Uuid,
    store: Store,
    relay: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What a node does with the notices of the others.
pub(crate) trait Hear: Send + Sync + 'static {
    /// Acts on `notice`.
    fn hear(self: Arc<Self>, notice: Notice) -> impl std::future::Future<Output = ()> + Send;
}

impl Cluster {
    pub(crate) fn new(store: &Store) -> Cluster {
        Cluster {
            node: Uuid::new_v4(),
            store: store.clone(),
            relay: std::sync::Mutex::new(None),
        }
    }

    /// Tells the other nodes. Best effort: see the module docs.
    pub(crate) async fn announce(&self, notice: Notice) {
        let wire = Wire {
            node: self.node,
            notice,
        };
        let Ok(payload) = serde_json::to_string(&wire) else {
            return;
        };
        if let Err(e) = self.store.notify(CHANNEL, &payload).await {
            tracing::warn!(error = %e, ?wire.notice, "not announced to the other nodes");
        }
    }

    /// Starts handing the other nodes' notices to `ear` (held weakly: the relay ends
    /// when it is gone), listening again after a failure. PostgreSQL only.
    pub(crate) fn start<H: Hear>(&self, ear: Weak<H>) {
        if !matches!(self.store.backend(), crate::store::Backend::Postgres) {
            return;
        }
        let task = tokio::spawn(relay(self.store.clone(), self.node, ear));
        let mut slot = match self.relay.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *slot = Some(task);
    }

    /// Stops listening (the runtime is shutting down).
    pub(crate) fn close(&self) {
        let task = match self.relay.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = task {
            t.abort();
        }
    }
}

async fn relay<H: Hear>(store: Store, me: Uuid, ear: Weak<H>) {
    loop {
        match store.listen(CHANNEL).await {
            Ok(Some(mut listener)) => loop {
                let payload = match listener.recv().await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "notices from other nodes: listening again");
                        break;
                    }
                };
                // Only this module writes to the channel; anything else is skipped.
                let Ok(wire) = serde_json::from_str::<Wire>(&payload) else {
                    continue;
                };
                if wire.node == me {
                    continue;
                }
                let Some(ear) = ear.upgrade() else { return };
                ear.hear(wire.notice).await;
            },
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "notices from other nodes: cannot listen; retrying")
            }
        }
        if ear.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_travel_as_tagged_json() {
        let w = Wire {
            node: Uuid::nil(),
            notice: Notice::Project {
                org: "acme".into(),
                name: "warehouse".into(),
                id: Uuid::nil(),
                renamed: true,
            },
        };
        let s = serde_json::to_string(&w).unwrap();
        assert!(s.contains(r#""kind":"project""#), "{s}");
        let back: Wire = serde_json::from_str(&s).unwrap();
        assert_eq!(back.notice, w.notice);
        assert!(serde_json::from_str::<Wire>(r#"["acme","agent:dean"]"#).is_err());
    }
}
