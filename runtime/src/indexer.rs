//! The search indexer: one per process. It keeps the full-text index behind the floors'
//! commits, in large batches, so that an append never pays for tokenising text or
//! updating an inverted index.
//!
//! Floors tell it which projects committed (`Committed`); it indexes them in a task of its
//! own, one transaction per batch of up to [`BATCH`] events, with each project's
//! watermark (`search_progress`) moving in the same transaction, so a crash loses no
//! work and repeats none. At start it picks up every project whose watermark lags its
//! `last_seq`. A search first sends `Sync`, answered once everything committed before it
//! is indexed, so results never miss an event the searcher has seen acknowledged.
//!
//! Error policy: a failed batch is logged, the project stays dirty and is retried after
//! [`RETRY`]; waiting searches are answered anyway (they see a slightly older index).

use std::collections::HashSet;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::Instrument;
use uuid::Uuid;

use crate::store::Store;

/// Events indexed per transaction.
pub(crate) const BATCH: i64 = 1000;
/// How long commits gather before a run: larger runs cost far less per event (one
/// transaction, fewer FTS segments or GIN pending-list flushes), and a search never
/// waits for it (`Sync` starts a run at once).
pub(crate) const GATHER: Duration = Duration::from_millis(50);
/// Delay before retrying after a store failure.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// Handle to the indexer.
pub(crate) type IndexerRef = ActorRef<IndexerMsg>;

/// Messages of the indexer.
pub(crate) enum IndexerMsg {
    /// A floor committed events of this project.
    Committed(Uuid),
    /// Answer once every event committed before this message is indexed.
    Sync(RpcReplyPort<()>),
    /// The indexing task finished; the set holds projects that failed.
    Flushed(HashSet<Uuid>),
    /// Start a run now (after [`GATHER`], or [`RETRY`] after a failure).
    Run,
}

/// State of the indexer.
pub(crate) struct IndexerState {
    store: Store,
    dirty: HashSet<Uuid>,
    in_flight: bool,
    /// A `Run` is scheduled.
    scheduled: bool,
    /// Answered when the running task ends.
    waiting_now: Vec<RpcReplyPort<()>>,
    /// Arrived during the running task: answered when the next one ends.
    waiting_next: Vec<RpcReplyPort<()>>,
}

/// The indexer actor.
pub(crate) struct Indexer;

impl Actor for Indexer {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = Store;

    async fn pre_start(
        &self,
        myself: IndexerRef,
        store: Store,
    ) -> Result<IndexerState, ActorProcessingErr> {
        // Work left by a crash between a commit and its indexing.
        let backlog = match store.search_backlog().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the search backlog; it will be indexed on the next commit");
                Vec::new()
            }
        };
        let mut state = IndexerState {
            store,
            dirty: backlog.into_iter().collect(),
            in_flight: false,
            scheduled: false,
            waiting_now: Vec::new(),
            waiting_next: Vec::new(),
        };
        if !state.dirty.is_empty() {
            start(&myself, &mut state);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: IndexerRef,
        msg: IndexerMsg,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IndexerMsg::Committed(project) => {
                state.dirty.insert(project);
                if !state.in_flight && !state.scheduled {
                    state.scheduled = true;
                    myself.send_after(GATHER, || IndexerMsg::Run);
                }
            }
            IndexerMsg::Sync(reply) => {
                if state.in_flight {
                    state.waiting_next.push(reply);
                } else if state.dirty.is_empty() {
                    let _ = reply.send(());
                } else {
                    state.waiting_next.push(reply);
                    start(&myself, state);
                }
            }
            IndexerMsg::Flushed(failed) => {
                state.in_flight = false;
                // A searcher may have timed out and gone; nothing to answer then.
                for w in state.waiting_now.drain(..) {
                    let _ = w.send(());
                }
                if failed.is_empty() {
                    if !state.waiting_next.is_empty() {
                        start(&myself, state);
                    } else if !state.dirty.is_empty() && !state.scheduled {
                        state.scheduled = true;
                        myself.send_after(GATHER, || IndexerMsg::Run);
                    }
                } else {
                    // The store is failing: searches go ahead on the index as it is.
                    for w in state.waiting_next.drain(..) {
                        let _ = w.send(());
                    }
                    state.dirty.extend(failed);
                    if !state.scheduled {
                        state.scheduled = true;
                        myself.send_after(RETRY, || IndexerMsg::Run);
                    }
                }
            }
            IndexerMsg::Run => {
                state.scheduled = false;
                if !state.in_flight && (!state.dirty.is_empty() || !state.waiting_next.is_empty()) {
                    start(&myself, state);
                }
            }
        }
        Ok(())
    }
}

fn start(myself: &IndexerRef, state: &mut IndexerState) {
    let projects: Vec<Uuid> = state.dirty.drain().collect();
    state.in_flight = true;
    state.waiting_now.append(&mut state.waiting_next);
    let store = state.store.clone();
    let me = myself.clone();
    let span = tracing::debug_span!("search.index", projects = projects.len());
    tokio::spawn(
        async move {
            let mut failed = HashSet::new();
            for p in projects {
                loop {
                    match store.index_search(p, BATCH).await {
                        Ok(n) => {
                            metrics::counter!("polaris_search_indexed_total").increment(n as u64);
                            if (n as i64) < BATCH {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(project = %p, error = %e, "search indexing failed; retrying");
                            failed.insert(p);
                            break;
                        }
                    }
                }
            }
            // The indexer is gone only at shutdown, when nothing waits for it.
            let _ = me.cast(IndexerMsg::Flushed(failed));
        }
        .instrument(span),
    );
}

/// Spawns the indexer.
pub(crate) async fn spawn(
    store: Store,
    supervisor: ractor::ActorCell,
) -> Result<IndexerRef, ractor::SpawnErr> {
    let (r, _) = Actor::spawn_linked(None, Indexer, store, supervisor).await?;
    Ok(r)
}

/// The indexer handle shared with floors; replaced when the supervisor restarts it.
#[derive(Default)]
pub(crate) struct IndexerSlot(std::sync::RwLock<Option<IndexerRef>>);

impl IndexerSlot {
    pub(crate) fn set(&self, r: Option<IndexerRef>) {
        if let Ok(mut g) = self.0.write() {
            *g = r;
        }
    }

    pub(crate) fn get(&self) -> Option<IndexerRef> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    /// Tells the indexer a project committed. Losing this (no indexer right now) loses no
    /// index entry: the indexer's start-up backlog scan finds the project.
    pub(crate) fn committed(&self, project: Uuid) {
        if let Some(r) = self.get() {
            let _ = r.cast(IndexerMsg::Committed(project));
        }
    }
}
