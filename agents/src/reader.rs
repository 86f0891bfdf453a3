//! Reading floors from a stored cursor, for an actor: one subscription task per floor
//! feeding the actor's mailbox, and the cursor bookkeeping that lets the actor save "done
//! up to here" while some events are still being answered.
//!
//! The cursor saved for a floor is the newest seq received, or — when answers are still
//! being written — one below the oldest such event. A restart resumes there: nothing is
//! skipped, and what is read again is answered under the same ids. With no cursor yet, an
//! agent starts at its `join` event on the floor (or its parent's, for a subagent): it
//! answers what was asked since it joined, even if its actor started a moment later, and
//! never the floor's older history.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use polaris_runtime::{Committed, ProjectKey};
use ractor::{ActorRef, Message};
use uuid::Uuid;

use crate::health::Health;
use crate::link::{FloorLink, LinkError};

/// Events handed to the actor in one message at most: whatever of a floor is ready when
/// its subscription wakes goes together, rather than one message (and one wake of the
/// actor) per event per reader.
const EVENTS_PER_MESSAGE: usize = 64;

/// How an actor's messages are made from what the reader sees.
pub(crate) struct Wiring<M> {
    /// Events arrived, in `seq` order.
    pub(crate) events: fn(ProjectKey, Vec<Arc<Committed>>) -> M,
    /// A subscription failed; the actor calls [`Reader::reopen`].
    pub(crate) failed: fn(ProjectKey) -> M,
    /// Open this floor now (a retry).
    pub(crate) open: fn(ProjectKey) -> M,
}

struct Floor {
    key: ProjectKey,
    seen: i64,
    pending: BTreeSet<i64>,
    saved: i64,
    task: tokio::task::JoinHandle<()>,
}

impl Floor {
    fn cursor(&self) -> i64 {
        self.pending.first().map_or(self.seen, |p| p - 1)
    }
}

/// The floors one actor reads, under one cursor owner (an agent id).
pub(crate) struct Reader {
    link: Arc<dyn FloorLink>,
    org: Arc<str>,
    owner: String,
    /// The lease term the owner runs under: saves are refused once it is not current.
    term: Option<i64>,
    health: Arc<Health>,
    /// Whose `join` event marks where reading starts when there is no cursor: the owner,
    /// then its parent.
    joined_as: Vec<String>,
    floors: HashMap<Uuid, Floor>,
}

impl Reader {
    pub(crate) fn new(
        link: Arc<dyn FloorLink>,
        org: Arc<str>,
        owner: String,
        joined_as: Vec<String>,
        term: Option<i64>,
        health: Arc<Health>,
    ) -> Reader {
        Reader {
            link,
            org,
            owner,
            term,
            health,
            joined_as,
            floors: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.floors.len()
    }

    /// Subscribes to a floor from the stored cursor, or from the join (see the module
    /// docs), or — for a reader that never joins — from now.
    pub(crate) async fn open<M: Message>(
        &mut self,
        me: &ActorRef<M>,
        key: ProjectKey,
        w: &Wiring<M>,
    ) {
        if self.floors.contains_key(&key.id) {
            return;
        }
        let cursor = match self.start_at(key.id).await {
            Ok(c) => c,
            Err(e) => return self.retry_later(me, key, w, &e.to_string()),
        };
        let (me2, key2, link) = (me.clone(), key.clone(), self.link.clone());
        let (events, failed) = (w.events, w.failed);
        let health = self.health.clone();
        let task = tokio::spawn(async move {
            let stream = match link.subscribe(key2.clone(), cursor).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "subscription failed; reopening");
                    let _ = me2.cast(failed(key2));
                    return;
                }
            };
            let _open = health.stream_opened();
            let mut ready = stream.ready_chunks(EVENTS_PER_MESSAGE);
            while let Some(items) = ready.next().await {
                let mut batch = Vec::with_capacity(items.len());
                let mut broken = false;
                for item in items {
                    match item {
                        Ok(c) => batch.push(c),
                        // The stream ends after an error; the actor reopens from its cursor.
                        Err(_) => {
                            broken = true;
                            break;
                        }
                    }
                }
                if !batch.is_empty() && me2.cast(events(key2.clone(), batch)).is_err() {
                    return; // the actor stopped
                }
                if broken {
                    let _ = me2.cast(failed(key2.clone()));
                    return;
                }
            }
            // The floor closed the stream (a restart, say): open it again from the cursor.
            let _ = me2.cast(failed(key2));
        });
        self.floors.insert(
            key.id,
            Floor {
                key,
                seen: cursor,
                pending: BTreeSet::new(),
                saved: cursor,
                task,
            },
        );
    }

    async fn start_at(&self, project: Uuid) -> Result<i64, LinkError> {
        self.link
            .read_position(
                self.org.clone(),
                self.owner.clone(),
                self.joined_as.clone(),
                project,
            )
            .await
    }

    fn retry_later<M: Message>(
        &self,
        me: &ActorRef<M>,
        key: ProjectKey,
        w: &Wiring<M>,
        error: &str,
    ) {
        tracing::error!(owner = %self.owner, project = %key.name, error, "cannot read the cursor; retrying");
        let open = w.open;
        me.send_after(Duration::from_secs(1), move || open(key));
    }

    /// After a failed subscription: save, close, and open again shortly.
    pub(crate) async fn reopen<M: Message>(
        &mut self,
        me: &ActorRef<M>,
        key: ProjectKey,
        w: &Wiring<M>,
    ) {
        self.flush().await;
        if let Some(f) = self.floors.remove(&key.id) {
            f.task.abort();
        }
        let open = w.open;
        // Not at once: the store that just failed gets a moment.
        me.send_after(Duration::from_millis(500), move || open(key));
    }

    /// Records that `seq` arrived; false if it was seen already (or the floor is closed).
    pub(crate) fn arrived(&mut self, project: &Uuid, seq: i64) -> bool {
        match self.floors.get_mut(project) {
            Some(f) if seq > f.seen => {
                f.seen = seq;
                true
            }
            _ => false,
        }
    }

    /// `seq` is being answered: the saved cursor stays below it until [`Reader::done`].
    pub(crate) fn begin(&mut self, project: &Uuid, seq: i64) {
        if let Some(f) = self.floors.get_mut(project) {
            f.pending.insert(seq);
        }
    }

    /// `seq` is answered.
    pub(crate) fn done(&mut self, project: &Uuid, seq: i64) {
        if let Some(f) = self.floors.get_mut(project) {
            f.pending.remove(&seq);
        }
    }

    /// Closes the floors `keep` rejects (after saving where they stopped).
    pub(crate) async fn retain(&mut self, keep: impl Fn(&Uuid) -> bool) {
        self.flush().await;
        self.floors.retain(|p, f| {
            let k = keep(p);
            if !k {
                f.task.abort();
            }
            k
        });
    }

    /// Saves cursors that moved.
    pub(crate) async fn flush(&mut self) {
        let changed: Vec<(Uuid, i64)> = self
            .floors
            .iter()
            .filter(|(_, f)| f.cursor() > f.saved)
            .map(|(p, f)| (*p, f.cursor()))
            .collect();
        if changed.is_empty() {
            return;
        }
        match self
            .link
            .save_read_positions(
                self.org.clone(),
                self.owner.clone(),
                changed.clone(),
                self.term,
            )
            .await
        {
            // Another instance took the agent over: its cursors win, and this one is
            // about to be stopped by its host.
            Ok(false) => {
                tracing::info!(owner = %self.owner, term = ?self.term, "cursors not saved: the lease has passed on")
            }
            Ok(true) => {
                for (p, c) in changed {
                    if let Some(f) = self.floors.get_mut(&p) {
                        f.saved = c;
                    }
                }
            }
            // Kept in memory; the next flush tries again. A crash meanwhile re-reads a few
            // events, answered under the same ids.
            Err(e) => tracing::warn!(owner = %self.owner, error = %e, "cursors not saved"),
        }
    }

    /// Stops every subscription and saves the cursors.
    pub(crate) async fn close_all(&mut self) {
        for f in self.floors.values() {
            f.task.abort();
        }
        self.flush().await;
        self.floors.clear();
    }

    /// The keys of the open floors.
    pub(crate) fn keys(&self) -> Vec<ProjectKey> {
        self.floors.values().map(|f| f.key.clone()).collect()
    }
}
