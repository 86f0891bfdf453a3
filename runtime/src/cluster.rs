//! What the nodes of one deployment tell each other. On PostgreSQL every node announces
//! what other nodes must not learn late with a NOTIFY on one channel, and listens to it on
//! one connection of its own:
//!
//! - a lease was released: contenders waiting on any node try again at once;
//! - agents or memberships changed in an org: every node's agent host reconciles and its
//!   roster long-polls answer (they would otherwise wait for their own timeout);
//! - a project was renamed or changed its settings: every node forgets its cached row, and
//!   after a rename closes its floor, which opens again under the new name;
//! - events were committed on a floor (its newest `seq`): the subscribers of that floor on
//!   every other node read them from the store. Commits are coalesced, one notice per
//!   burst (the newest `seq` of each floor), off the commit path; after listening again
//!   (the connection is watched: a lost one is made again, not silently resumed) and every
//!   few seconds regardless, a node reads every watched floor's head from the store, so a
//!   notice lost while it was not listening costs a delay, never an event.
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
    /// Events were committed: each floor with its newest `seq`.
    Appended {
        /// `(project, seq)`.
        heads: Vec<(Uuid, i64)>,
        /// When the oldest of these commits was made (ms since the epoch, the sender's
        /// clock): how late the relay is, for `/metrics`. 0 from a node that does not say.
        #[serde(default)]
        at: i64,
    },
    /// This node listens (again), or its periodic check is due: never sent, told to this
    /// node's ear by its relay, which then reads every watched floor's head from the store.
    CatchUp,
}

/// How often a node reads the heads of the floors it watches even if it heard nothing: a
/// notice lost without the connection failing (none known, but cheap to bound) costs at
/// most this much delay.
const CATCH_UP_EVERY: Duration = Duration::from_secs(5);

/// Least time between two `appended` rounds.
const ANNOUNCE_PAUSE: Duration = Duration::from_millis(3);

/// Floors per `appended` notice: a NOTIFY payload must stay under 8,000 bytes.
const HEADS_PER_NOTICE: usize = 100;

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
    /// Commits to announce (PostgreSQL only), coalesced by the announcer task.
    appended: Option<tokio::sync::mpsc::UnboundedSender<(Uuid, i64, i64)>>,
    announcer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What a node does with the notices of the others.
pub(crate) trait Hear: Send + Sync + 'static {
    /// Acts on `notice`.
    fn hear(self: Arc<Self>, notice: Notice) -> impl std::future::Future<Output = ()> + Send;
}

impl Cluster {
    pub(crate) fn new(store: &Store) -> Cluster {
        let node = Uuid::new_v4();
        let (appended, announcer) = match store.backend() {
            crate::store::Backend::Postgres => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let task = tokio::spawn(announce_commits(store.clone(), node, rx));
                (Some(tx), Some(task))
            }
            crate::store::Backend::Sqlite => (None, None),
        };
        Cluster {
            node,
            store: store.clone(),
            relay: std::sync::Mutex::new(None),
            appended,
            announcer: std::sync::Mutex::new(announcer),
        }
    }

    /// This node's id, as the others know it.
    pub(crate) fn node(&self) -> Uuid {
        self.node
    }

    /// Events of `project` through `seq` are committed: the other nodes hear it shortly
    /// (never waits).
    pub(crate) fn appended(&self, project: Uuid, seq: i64) {
        if let Some(tx) = &self.appended {
            let _ = tx.send((project, seq, chrono::Utc::now().timestamp_millis()));
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
        let announcer = match self.announcer.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(t) = announcer {
            t.abort();
        }
    }
}

/// Announces commits: what arrived while the previous NOTIFY was on its way goes out in
/// the next one, each floor once with its newest `seq`.
async fn announce_commits(
    store: Store,
    node: Uuid,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(Uuid, i64, i64)>,
) {
    let mut heads: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
    while let Some((project, seq, first)) = rx.recv().await {
        heads.insert(project, seq);
        let mut at = first;
        while let Ok((project, seq, t)) = rx.try_recv() {
            let e = heads.entry(project).or_insert(seq);
            *e = (*e).max(seq);
            at = at.min(t);
        }
        let all: Vec<(Uuid, i64)> = heads.drain().collect();
        for chunk in all.chunks(HEADS_PER_NOTICE) {
            let wire = Wire {
                node,
                notice: Notice::Appended {
                    heads: chunk.to_vec(),
                    at,
                },
            };
            let Ok(payload) = serde_json::to_string(&wire) else {
                continue;
            };
            if let Err(e) = store.notify(CHANNEL, &payload).await {
                // The other nodes read these events when they next hear of this floor,
                // or when they listen again.
                tracing::warn!(error = %e, "commits not announced to the other nodes");
            }
        }
        // A NOTIFY costs the database a global lock at commit: under load, let commits
        // gather for a moment (an isolated commit still goes out at once).
        tokio::time::sleep(ANNOUNCE_PAUSE).await;
    }
}

async fn relay<H: Hear>(store: Store, me: Uuid, ear: Weak<H>) {
    let mut listened = false;
    loop {
        match store.listen(CHANNEL).await {
            Ok(Some(mut listener)) => {
                if listened {
                    metrics::counter!("polaris_cluster_listen_reconnects_total").increment(1);
                }
                listened = true;
                metrics::gauge!("polaris_cluster_listening").set(1.0);
                match ear.upgrade() {
                    Some(e) => e.hear(Notice::CatchUp).await,
                    None => return,
                }
                let mut check = tokio::time::interval_at(
                    tokio::time::Instant::now() + CATCH_UP_EVERY,
                    CATCH_UP_EVERY,
                );
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let received = tokio::select! {
                        r = listener.recv() => r,
                        _ = check.tick() => {
                            let Some(ear) = ear.upgrade() else { return };
                            ear.hear(Notice::CatchUp).await;
                            continue;
                        }
                    };
                    let payload = match received {
                        Ok(Some(p)) => p,
                        Ok(None) => {
                            metrics::gauge!("polaris_cluster_listening").set(0.0);
                            tracing::warn!(
                                "notices from other nodes: connection lost; listening again"
                            );
                            break;
                        }
                        Err(e) => {
                            metrics::gauge!("polaris_cluster_listening").set(0.0);
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
                }
            }
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
