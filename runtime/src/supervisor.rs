//! The root supervisor: starts one floor per project on demand and restarts a floor
//! that fails, from the store, with the same hub so live subscribers stay connected. It
//! also keeps the search indexer running. It is the only writer of the floor lookup
//! ([`Floors`]).
//!
//! A floor that fails [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] is not restarted
//! eagerly any more: the failure is logged as an error and counted, and the floor starts
//! again only when a request needs it, so a floor that crashes on every message cannot
//! spin the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use uuid::Uuid;

use crate::floor::{Floor, FloorArgs, FloorEnv};
use crate::live::{Floors, LiveFloor};
use crate::live_sessions::LiveSessions;
use crate::store::ProjectKey;

/// Restarts allowed per floor within [`RESTART_WINDOW`].
pub(crate) const MAX_RESTARTS: usize = 5;
/// See [`MAX_RESTARTS`].
pub(crate) const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Handle to the supervisor.
pub(crate) type SupervisorRef = ActorRef<SupervisorMsg>;

/// What the supervisor is handed.
pub(crate) struct SupervisorArgs {
    /// The floor lookup it keeps.
    pub(crate) floors: Arc<Floors>,
    /// What every floor is handed.
    pub(crate) env: FloorEnv,
}

/// Messages of the supervisor.
pub(crate) enum SupervisorMsg {
    /// Start (or find) the floor of a project.
    OpenFloor(ProjectKey, RpcReplyPort<Result<LiveFloor, String>>),
    /// Stop a project's floor after it drains (its name changed); it starts again, with
    /// the new name, on next use. The reply comes once no new request can reach it.
    CloseFloor(Uuid, RpcReplyPort<()>),
}

/// Supervisor state.
pub(crate) struct SupervisorState {
    floors_live: Arc<Floors>,
    env: FloorEnv,
    indexer: Option<ActorId>,
    floors: HashMap<ActorId, ProjectKey>,
    restarts: HashMap<Uuid, Vec<Instant>>,
}

/// The root supervisor.
pub(crate) struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: SupervisorRef,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut state = SupervisorState {
            floors_live: args.floors,
            env: args.env,
            indexer: None,
            floors: HashMap::new(),
            restarts: HashMap::new(),
        };
        start_indexer(&myself, &mut state).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: SupervisorRef,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::OpenFloor(project, reply) => {
                let running = state.floors_live.get(project.id);
                let result = match running {
                    Some(f) => Ok(f),
                    None => start_floor(&myself, state, project).await,
                };
                // The requester may have timed out; the floor stays up for the next one.
                let _ = reply.send(result);
            }
            SupervisorMsg::CloseFloor(id, reply) => {
                if let Some(floor) = state.floors_live.take(id) {
                    // Drain: appends already queued commit before it stops. An error
                    // means it is stopping already.
                    let _ = floor.drain();
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: SupervisorRef,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(project) = state.floors.remove(&cell.get_id()) else {
                    return Ok(());
                };
                forget(state, &project, cell.get_id());
                metrics::counter!("polaris_actor_restarts_total", "actor" => "floor").increment(1);
                let now = Instant::now();
                let recent = state.restarts.entry(project.id).or_default();
                recent.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
                recent.push(now);
                if recent.len() > MAX_RESTARTS {
                    tracing::error!(project = %project.name, error = %err, restarts = recent.len(),
                        "floor keeps failing; not restarting it until a request needs it");
                    return Ok(());
                }
                tracing::error!(project = %project.name, error = %err, "floor failed; restarting it from the store");
                if let Err(e) = start_floor(&myself, state, project.clone()).await {
                    tracing::error!(project = %project.name, error = %e, "floor restart failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(project) = state.floors.remove(&cell.get_id()) {
                    forget(state, &project, cell.get_id());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Drops a stopped floor from the lookup (its sessions stopped with it).
fn forget(state: &SupervisorState, project: &ProjectKey, floor: ActorId) {
    state.floors_live.remove(project.id, &floor);
}

async fn start_indexer(
    myself: &SupervisorRef,
    state: &mut SupervisorState,
) -> Result<(), ractor::SpawnErr> {
    let indexer = crate::indexer::spawn(state.env.store.clone(), myself.get_cell()).await?;
    state.indexer = Some(indexer.get_id());
    state.env.indexer.set(Some(indexer));
    Ok(())
}

async fn start_floor(
    myself: &SupervisorRef,
    state: &mut SupervisorState,
    project: ProjectKey,
) -> Result<LiveFloor, String> {
    let hub = state
        .floors_live
        .hub(&state.env.store, &project)
        .await
        .map_err(|e| e.to_string())?;
    let sessions = Arc::new(LiveSessions::default());
    let args = FloorArgs {
        project: project.clone(),
        hub,
        sessions: sessions.clone(),
        env: state.env.clone(),
    };
    let floor = Floor::spawn_linked(args, myself.get_cell())
        .await
        .map_err(|e| format!("floor did not start: {e}"))?;
    state.floors.insert(floor.get_id(), project.clone());
    let live = LiveFloor { floor, sessions };
    state.floors_live.insert(project.id, live.clone());
    Ok(live)
}
