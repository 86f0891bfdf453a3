//! The floor actor: one per project. It orders, commits and fans out every event of the
//! project, and owns the project's session actors: it is the only one that starts, finds
//! and stops them, so a request for a session is routed through the floor and can never
//! reach an actor that is being stopped.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, SupervisionEvent};
use tracing::Instrument;

use crate::commit::{Commit, FloorError, Posted, Reply, answer};
use crate::hub::{Committed, FloorHub};
use crate::indexer::IndexerSlot;
use crate::live_sessions::{LiveSession, LiveSessions};
use crate::session::{Session, SessionArgs, SessionMsg, SessionRef};
use crate::store::{ProjectKey, Store};

/// Largest batch per transaction: bounds the transaction's duration and memory.
const MAX_BATCH: usize = 2048;

/// Messages of the floor actor.
pub(crate) enum FloorMsg {
    /// Commit an event (already stamped by its session); the reply comes after the commit.
    Commit(Commit),
    /// The batch in flight is done (sent by the flush task).
    Flushed,
    /// A request for one of the project's sessions, started if needed; refused with
    /// [`FloorError::NoSession`] if the session does not exist.
    Session(String, SessionMsg),
    /// Stop sessions that have been idle for the configured time.
    Sweep,
    /// The actor id of a live session (tests of supervision only).
    #[cfg(feature = "fault-injection")]
    SessionId(String, ractor::RpcReplyPort<Option<ractor::ActorId>>),
    /// Panic inside the floor (tests of supervision only).
    #[cfg(feature = "fault-injection")]
    Crash,
}

impl From<Commit> for FloorMsg {
    fn from(c: Commit) -> FloorMsg {
        FloorMsg::Commit(c)
    }
}

impl TryFrom<FloorMsg> for Commit {
    type Error = FloorMsg;

    fn try_from(m: FloorMsg) -> Result<Commit, FloorMsg> {
        match m {
            FloorMsg::Commit(c) => Ok(c),
            other => Err(other),
        }
    }
}

/// What every floor is handed: the store, the search indexer, and the session settings.
#[derive(Clone)]
pub(crate) struct FloorEnv {
    /// The store.
    pub(crate) store: Store,
    /// Told of every commit, so search catches up.
    pub(crate) indexer: Arc<IndexerSlot>,
    /// Session actors idle this long stop.
    pub(crate) session_idle: Duration,
    /// Live session actors of all floors (for `/metrics`).
    pub(crate) live_sessions: Arc<AtomicUsize>,
    /// Tells the other nodes what this one committed.
    pub(crate) cluster: Arc<crate::cluster::Cluster>,
    /// What participants' events pass before the commit.
    pub(crate) screen: Arc<crate::screen::Screen>,
}

/// Start-up arguments.
pub(crate) struct FloorArgs {
    /// The project.
    pub(crate) project: ProjectKey,
    /// The hub, shared with earlier incarnations of this floor.
    pub(crate) hub: Arc<FloorHub>,
    /// Where this floor publishes its live session actors (new for each incarnation).
    pub(crate) sessions: Arc<LiveSessions>,
    /// Runtime services.
    pub(crate) env: FloorEnv,
}

/// State of a running floor.
pub(crate) struct FloorState {
    project: ProjectKey,
    hub: Arc<FloorHub>,
    env: FloorEnv,
    pending: Batch,
    in_flight: bool,
    /// The project's live session actors: the floor is this map's only writer; the
    /// runtime reads it to send straight to a live session.
    sessions: Arc<LiveSessions>,
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

/// The floor actor.
pub(crate) struct Floor;

/// Handle to a floor actor.
pub(crate) type FloorRef = ActorRef<FloorMsg>;

impl Floor {
    /// Starts a floor under `supervisor`.
    pub(crate) async fn spawn_linked(
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
        let idle = args.env.session_idle;
        // One timer per floor, not per session: memory follows active sessions.
        let sweeper =
            myself.send_interval(idle.max(Duration::from_millis(50)) / 2, || FloorMsg::Sweep);
        Ok(FloorState {
            project: args.project,
            hub: args.hub,
            env: args.env,
            pending: Vec::new(),
            in_flight: false,
            sessions: args.sessions,
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
            commit(&state.env, &state.hub, &state.project, batch).await;
        }
        // The sessions stop with their floor.
        state
            .env
            .live_sessions
            .fetch_sub(state.sessions.map().len(), Ordering::Relaxed);
        state.sessions.map().clear();
        Ok(())
    }

    async fn handle(
        &self,
        myself: FloorRef,
        msg: FloorMsg,
        state: &mut FloorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FloorMsg::Commit(Commit { item, reply }) => {
                state.pending.push((item, reply));
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
            FloorMsg::Session(name, msg) => route(&myself, state, name, msg).await,
            FloorMsg::Sweep => sweep(state),
            #[cfg(feature = "fault-injection")]
            FloorMsg::SessionId(name, reply) => {
                let id = state.sessions.map().get(&name).map(|s| s.actor.get_id());
                // The test may have given up waiting.
                let _ = reply.send(id);
            }
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
                let Some(name) = forget(state, cell.get_id()) else {
                    return Ok(());
                };
                metrics::counter!("polaris_actor_restarts_total", "actor" => "session")
                    .increment(1);
                tracing::error!(project = %state.project.name, session = %name, error = %err,
                    "session actor failed; restarting it from the store");
                match start_session(&myself, state, &name).await {
                    Ok(Some(actor)) => publish(state, &name, actor),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(session = %name, error = %e, "session restart failed; it will start on next use")
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                forget(state, cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// Drops a stopped session actor from the map, if it is still the one there (a sweep
/// removes the entry before the actor stops, and a new actor may have the name since).
fn forget(state: &mut FloorState, id: ractor::ActorId) -> Option<String> {
    let name = state
        .sessions
        .map()
        .iter()
        .find(|s| s.actor.get_id() == id)
        .map(|s| s.key().clone())?;
    state.sessions.map().remove(&name);
    state.env.live_sessions.fetch_sub(1, Ordering::Relaxed);
    Some(name)
}

/// Hands a request to its session, starting the actor if needed. The floor is the only
/// one that starts or stops session actors, so the actor found here is not being stopped
/// by anyone else; one that died since (a crash whose notice has not arrived yet) hands
/// the request back and a fresh actor takes it.
async fn route(myself: &FloorRef, state: &mut FloorState, name: String, msg: SessionMsg) {
    let mut msg = msg;
    for fresh in [false, true] {
        let live = match state.sessions.map().get_mut(&name) {
            Some(mut live) if !fresh => {
                live.last_used = Instant::now();
                Some(live.actor.clone())
            }
            _ => None,
        };
        let actor = match live {
            Some(actor) => actor,
            None => {
                if fresh {
                    forget_named(state, &name);
                }
                match start_session(myself, state, &name).await {
                    Ok(Some(a)) => a,
                    Ok(None) => return msg.refuse(FloorError::NoSession),
                    Err(e) => return msg.refuse(e),
                }
            }
        };
        let sent = actor.send_message(msg);
        // Published only now, after the request that started it is in its mailbox, so
        // that the caller's next request, sent straight to the actor, comes after it.
        if !state.sessions.map().contains_key(&name) {
            publish(state, &name, actor);
        }
        match sent {
            Ok(()) => return,
            Err(MessagingErr::SendErr(back)) => msg = back,
            // Only a send can fail for a local actor; nothing else comes back.
            Err(_) => return,
        }
    }
    msg.refuse(FloorError::Unavailable);
}

/// Makes a started actor the session's live one.
fn publish(state: &FloorState, name: &str, actor: SessionRef) {
    let before = state
        .sessions
        .map()
        .insert(name.to_owned(), LiveSession::new(actor));
    if before.is_none() {
        state.env.live_sessions.fetch_add(1, Ordering::Relaxed);
    }
}

fn forget_named(state: &mut FloorState, name: &str) {
    if state.sessions.map().remove(name).is_some() {
        state.env.live_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts the actor of a session from its stored row; `None` if the session does not
/// exist. The row is read here, once: the actor keeps it from then on.
async fn start_session(
    myself: &FloorRef,
    state: &mut FloorState,
    name: &str,
) -> Result<Option<SessionRef>, FloorError> {
    let row = state
        .env
        .store
        .get_session(&state.project, name)
        .await
        .map_err(|e| FloorError::Store(Arc::new(e)))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let args = SessionArgs {
        project: state.project.clone(),
        row,
        floor: myself.get_derived(),
        store: state.env.store.clone(),
        screen: state.env.screen.clone(),
    };
    let actor = Session::spawn_linked(args, myself.get_cell())
        .await
        .map_err(|e| {
            tracing::error!(session = %name, error = %e, "session actor did not start");
            FloorError::Unavailable
        })?;
    Ok(Some(actor))
}

/// Stops session actors nobody used for the idle timeout. The entry leaves the map first,
/// then the actor drains what is already in its mailbox and stops; the next request for
/// the session starts a fresh actor from the store. A request sent straight to an actor
/// counts as a use at the next sweep, so an actor stops after between one and one and a
/// half idle timeouts (sweeps run every half timeout).
fn sweep(state: &mut FloorState) {
    let idle = state.env.session_idle;
    let now = Instant::now();
    let before = state.sessions.map().len();
    state.sessions.map().retain(|_, live| {
        if live.take_used() {
            live.last_used = now;
        }
        let keep = now.saturating_duration_since(live.last_used) < idle;
        if !keep {
            // A drain that fails means the actor is already stopping.
            let _ = live.actor.drain();
        }
        keep
    });
    let stopped = before - state.sessions.map().len();
    state
        .env
        .live_sessions
        .fetch_sub(stopped, Ordering::Relaxed);
}

fn start_flush(myself: &FloorRef, state: &mut FloorState) {
    let take = state.pending.len().min(MAX_BATCH);
    let batch: Vec<_> = state.pending.drain(..take).collect();
    state.in_flight = true;
    let hub = state.hub.clone();
    let project = state.project.clone();
    let done = FlushDone(myself.clone());
    let env = state.env.clone();
    let span = tracing::info_span!("floor.flush", project = %project.name, n = batch.len());
    tokio::spawn(
        async move {
            // Sends `Flushed` when dropped, even if this task panics, so the floor
            // can never wait forever on a flush that died.
            let _done = done;
            commit(&env, &hub, &project, batch).await;
        }
        .instrument(span),
    );
}

type Batch = Vec<(crate::store::Append, Reply)>;

/// Commits a batch, publishes what was created in `seq` order and answers every caller.
async fn commit(env: &FloorEnv, hub: &FloorHub, project: &ProjectKey, batch: Batch) {
    let _order = hub.commit_lock.lock().await;
    let (mut items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    // Open until the batch is published: each event's commit, in its own trace.
    let traced = commit_spans(project, &mut items);
    let started = Instant::now();
    let n = items.len();
    match env.store.append(project, items).await {
        Ok(results) => {
            metrics::histogram!("polaris_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("polaris_commit_batch_size").record(n as f64);
            // Before any caller hears back, so a search that follows an acknowledged post
            // finds the indexer already told.
            if results.iter().any(|r| r.as_ref().is_ok_and(|a| a.created)) {
                env.indexer.committed(project.id);
            }
            // Callers first, subscribers second: waking a thousand subscribers takes
            // the runtime a while, and the writers should not queue behind them.
            let mut fresh = Vec::new();
            for (result, reply) in results.into_iter().zip(replies) {
                let outcome = result.map_err(FloorError::from).map(|a| {
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
                answer(reply, outcome);
            }
            let newest = fresh.last().map(|c| c.event.seq);
            let node = env.cluster.node();
            for c in fresh {
                let e = &c.event;
                let _relay = crate::hub::relay_span(
                    project.id,
                    e.seq,
                    e.traceparent.as_ref(),
                    node,
                    hub.subscribers(),
                    "commit",
                );
                hub.publish(c);
            }
            if let Some(seq) = newest {
                env.cluster.appended(project.id, seq);
            }
            metrics::counter!("polaris_events_committed_total").increment(n as u64);
            drop(traced);
        }
        Err(e) => {
            tracing::error!(error = %e, n, "commit failed; the batch is answered with errors");
            let e = Arc::new(e);
            for reply in replies {
                answer(reply, Err(FloorError::Store(e.clone())));
            }
        }
    }
}

/// When this node exports traces: a `floor.commit` span per event, a child of the context
/// the event came with (or the start of its trace), and the context it is committed with,
/// so every node's relay and every agent's answer continue from the commit. Without export:
/// nothing, and the event keeps the context it came with.
fn commit_spans(project: &ProjectKey, items: &mut [crate::store::Append]) -> Vec<tracing::Span> {
    if !polaris_telemetry::enabled() {
        return Vec::new();
    }
    let n = items.len();
    items
        .iter_mut()
        .map(|a| {
            let e = &mut a.event;
            let span = tracing::info_span!(parent: None, "floor.commit", project = %project.name, event = %e.id, kind = %e.kind, batch = n);
            e.traceparent = polaris_telemetry::adopt(&span, e.traceparent.take());
            span
        })
        .collect()
}

struct FlushDone(FloorRef);

impl Drop for FlushDone {
    fn drop(&mut self) {
        // If the floor is gone (restarted), its successor never waits on this flush:
        // it starts with nothing in flight and orders itself behind us by commit_lock.
        let _ = self.0.cast(FloorMsg::Flushed);
    }
}
