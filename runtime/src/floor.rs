//! The floor actor: one per project. It orders, commits and fans out every event of the
//! project, and supervises the project's session actors.
//!
//! Appends are group-committed: while one batch is in its transaction, new appends wait
//! in `pending` and go together in the next one, so throughput grows with concurrency
//! instead of being capped at one commit per request. The transaction runs in a task of
//! its own so the mailbox keeps draining into `pending` meanwhile.
//!
//! Error policy: a failed commit is answered with `Err` to each caller of that batch and
//! the floor stays up; the callers may retry with the same event ids. Only a panic (a
//! bug) stops the floor; the supervisor then starts a new one from the store, and the
//! hub, shared across restarts, keeps live subscribers connected.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::Instrument;

use crate::hub::{Committed, FloorHub};
use crate::runtime::Shared;
use crate::session::{Session, SessionArgs, SessionRef};
use crate::store::{Append, ProjectKey, Rejected, StoreError};

/// Largest batch per transaction: bounds the transaction's duration and memory.
const MAX_BATCH: usize = 2048;

/// Handle to a floor actor.
pub type FloorRef = ActorRef<FloorMsg>;

/// The outcome of an append that reached the store.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The committed (or previously stored) event.
    pub committed: Arc<Committed>,
    /// False when the id was already stored and nothing was written.
    pub created: bool,
}

/// Why a post (an event, a driver change, a label) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FloorError {
    /// The store refused this event (the others of its batch were not affected).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The store failed; nothing of the batch was written.
    #[error("the store is unavailable: {0}")]
    Store(Arc<StoreError>),
    /// The caller may not post this (e.g. as another participant).
    #[error("{0}")]
    Forbidden(String),
    /// The session's state does not allow it (e.g. the driver seat is taken).
    #[error("{0}")]
    Conflict(String),
    /// The request makes no sense in this state (e.g. a handoff with no driver).
    #[error("{0}")]
    Invalid(String),
    /// The floor or session actor stopped before it took the request (a restart or a
    /// shutdown); the request had no effect and may be retried.
    #[error("the floor is restarting; retry")]
    Unavailable,
}

/// Messages of the floor actor.
pub enum FloorMsg {
    /// Commit an event (already stamped by its session); the reply comes after the commit.
    Append(Box<Append>, RpcReplyPort<Result<Posted, FloorError>>),
    /// The batch in flight is done (sent by the flush task).
    Flushed,
    /// Start (or find) the actor of a session; `None` if the session does not exist.
    OpenSession(
        String,
        RpcReplyPort<Result<Option<SessionRef>, Arc<StoreError>>>,
    ),
    /// Stop sessions that have been idle for the configured time.
    Sweep,
    /// Panic inside the floor (tests of supervision only).
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// Start-up arguments.
pub struct FloorArgs {
    /// The project.
    pub project: ProjectKey,
    /// The hub, shared with earlier incarnations of this floor.
    pub hub: Arc<FloorHub>,
    /// Runtime services.
    pub shared: Arc<Shared>,
}

/// State of a running floor.
pub struct FloorState {
    project: ProjectKey,
    hub: Arc<FloorHub>,
    shared: Arc<Shared>,
    pending: Batch,
    in_flight: bool,
    /// Session actors by name, with the time each was last asked for.
    sessions: HashMap<String, SessionRef>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

/// The floor actor.
pub struct Floor;

impl Floor {
    /// Starts a floor under `supervisor`.
    pub async fn spawn_linked(
        args: FloorArgs,
        supervisor: ractor::ActorCell,
    ) -> Result<FloorRef, ractor::SpawnErr> {
        let (floor, _) = Actor::spawn_linked(None, Floor, args, supervisor).await?;
        Ok(floor)
    }
}

impl Actor for Floor {
    type Msg = FloorMsg;
    type State = FloorState;
    type Arguments = FloorArgs;

    async fn pre_start(
        &self,
        myself: FloorRef,
        args: FloorArgs,
    ) -> Result<FloorState, ActorProcessingErr> {
        let idle = args.shared.settings.session_idle;
        // One timer per floor, not per session: memory follows active sessions.
        let sweeper =
            myself.send_interval(idle.max(Duration::from_millis(50)) / 2, || FloorMsg::Sweep);
        Ok(FloorState {
            project: args.project,
            hub: args.hub,
            shared: args.shared,
            pending: Vec::new(),
            in_flight: false,
            sessions: HashMap::new(),
            sweeper: Some(sweeper),
        })
    }

    async fn post_stop(
        &self,
        _: FloorRef,
        state: &mut FloorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(s) = state.sweeper.take() {
            s.abort();
        }
        // A floor stopped while appends wait (drain on shutdown or rename) commits them
        // before it goes: whatever a floor accepted is answered.
        if !state.pending.is_empty() {
            let batch = std::mem::take(&mut state.pending);
            commit(&state.shared, &state.hub, &state.project, batch).await;
        }
        for name in state.sessions.keys() {
            state
                .shared
                .sessions
                .remove(&(state.project.id, name.clone()));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: FloorRef,
        msg: FloorMsg,
        state: &mut FloorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FloorMsg::Append(item, reply) => {
                state.pending.push((*item, reply));
                if !state.in_flight {
                    start_flush(&myself, state);
                }
            }
            FloorMsg::Flushed => {
                state.in_flight = false;
                if !state.pending.is_empty() {
                    start_flush(&myself, state);
                }
            }
            FloorMsg::OpenSession(name, reply) => {
                let result = open_session(&myself, state, name).await;
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(result);
            }
            FloorMsg::Sweep => sweep(state),
            #[cfg(feature = "fault-injection")]
            FloorMsg::Crash => panic!(
                "fault injection: floor {} crashed on request",
                state.project.name
            ),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: FloorRef,
        evt: SupervisionEvent,
        state: &mut FloorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(name) = session_named(state, cell.get_id()) else {
                    return Ok(());
                };
                metrics::counter!("polaris_actor_restarts_total", "actor" => "session")
                    .increment(1);
                tracing::error!(project = %state.project.name, session = %name, error = %err,
                    "session actor failed; restarting it from the store");
                state.sessions.remove(&name);
                state
                    .shared
                    .sessions
                    .remove(&(state.project.id, name.clone()));
                if let Err(e) = open_session(&myself, state, name.clone()).await {
                    tracing::error!(session = %name, error = %e, "session restart failed; it will start on next use");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(name) = session_named(state, cell.get_id()) {
                    state.sessions.remove(&name);
                    state.shared.sessions.remove(&(state.project.id, name));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn session_named(state: &FloorState, id: ractor::ActorId) -> Option<String> {
    state
        .sessions
        .iter()
        .find(|(_, r)| r.get_id() == id)
        .map(|(n, _)| n.clone())
}

async fn open_session(
    myself: &FloorRef,
    state: &mut FloorState,
    name: String,
) -> Result<Option<SessionRef>, Arc<StoreError>> {
    if let Some(s) = state.sessions.get(&name) {
        return Ok(Some(s.clone()));
    }
    if state
        .shared
        .store
        .get_session(&state.project, &name)
        .await
        .map_err(Arc::new)?
        .is_none()
    {
        return Ok(None);
    }
    let args = SessionArgs {
        project: state.project.clone(),
        name: name.clone(),
        floor: myself.clone(),
        shared: state.shared.clone(),
    };
    let session = Session::spawn_linked(args, myself.get_cell())
        .await
        .map_err(|e| {
            Arc::new(StoreError::Corrupt(format!(
                "session actor did not start: {e}"
            )))
        })?;
    state.sessions.insert(name.clone(), session.clone());
    state.shared.sessions.insert(
        (state.project.id, name),
        crate::runtime::SessionEntry::new(session.clone()),
    );
    Ok(Some(session))
}

/// Stops session actors nobody used for the idle timeout. The entry leaves the lookup
/// table first, then the actor drains what is already in its mailbox and stops: a
/// request that still holds the old handle gets a send error and opens a fresh one.
fn sweep(state: &mut FloorState) {
    let idle = state.shared.settings.session_idle;
    let now = Instant::now();
    let mut stopped = Vec::new();
    for (name, actor) in &state.sessions {
        let key = (state.project.id, name.clone());
        let idle_for = state
            .shared
            .sessions
            .get(&key)
            .map(|e| e.idle_for(now))
            .unwrap_or(idle);
        if idle_for >= idle {
            state.shared.sessions.remove(&key);
            // A drain that fails means the actor is already stopping.
            let _ = actor.drain();
            stopped.push(name.clone());
        }
    }
    for name in stopped {
        state.sessions.remove(&name);
    }
}

fn start_flush(myself: &FloorRef, state: &mut FloorState) {
    let take = state.pending.len().min(MAX_BATCH);
    let batch: Vec<_> = state.pending.drain(..take).collect();
    state.in_flight = true;
    let hub = state.hub.clone();
    let project = state.project.clone();
    let done = FlushDone(myself.clone());
    let shared = state.shared.clone();
    let span = tracing::info_span!("floor.flush", project = %project.name, n = batch.len());
    tokio::spawn(
        async move {
            // Sends `Flushed` when dropped, even if this task panics, so the floor
            // can never wait forever on a flush that died.
            let _done = done;
            commit(&shared, &hub, &project, batch).await;
        }
        .instrument(span),
    );
}

type Batch = Vec<(Append, RpcReplyPort<Result<Posted, FloorError>>)>;

/// Commits a batch, publishes what was created in `seq` order and answers every caller.
async fn commit(shared: &Shared, hub: &FloorHub, project: &ProjectKey, batch: Batch) {
    let _order = hub.commit_lock.lock().await;
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let started = Instant::now();
    let n = items.len();
    match shared.store.append(project, items).await {
        Ok(results) => {
            metrics::histogram!("polaris_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("polaris_commit_batch_size").record(n as f64);
            // Before any caller hears back, so a search that follows an acknowledged post
            // finds the indexer already told.
            if results.iter().any(|r| r.as_ref().is_ok_and(|a| a.created)) {
                shared.indexer.committed(project.id);
            }
            // Callers first, subscribers second: waking a thousand subscribers takes
            // the runtime a while, and the writers should not queue behind them.
            let mut fresh = Vec::new();
            for (result, reply) in results.into_iter().zip(replies) {
                let answer = result.map_err(FloorError::from).map(|a| {
                    let committed = Arc::new(Committed::new(a.event));
                    if a.created {
                        fresh.push(committed.clone());
                    }
                    Posted {
                        committed,
                        created: a.created,
                    }
                });
                // A caller that gave up (timeout, dropped connection) still had its
                // event committed; a retry with the same id finds it.
                let _ = reply.send(answer);
            }
            for c in fresh {
                hub.publish(c);
            }
            metrics::counter!("polaris_events_committed_total").increment(n as u64);
        }
        Err(e) => {
            tracing::error!(error = %e, n, "commit failed; the batch is answered with errors");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(FloorError::Store(e.clone())));
            }
        }
    }
}

struct FlushDone(FloorRef);

impl Drop for FlushDone {
    fn drop(&mut self) {
        // If the floor is gone (restarted), its successor never waits on this flush:
        // it starts with nothing in flight and orders itself behind us by commit_lock.
        let _ = self.0.cast(FloorMsg::Flushed);
    }
}
