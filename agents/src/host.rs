//! The agent host: keeps one agent actor per named agent — per agent and floor for
//! `context: isolated` — and one concierge per org, in step with the directory (the
//! agents file, the agents table and floor memberships). It is told of every change by
//! the directory's watch channel and reconciles: new agents start, changed ones are
//! updated in place (they keep their cursors), removed ones stop after saving theirs.
//!
//! Error policy: an agent that fails is restarted on the next reconcile, which the
//! failure itself triggers; a reconcile that cannot read the store is retried.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use polaris_registry::{AgentSpec, ContextMode, ParticipantId};
use polaris_runtime::Runtime;
use polaris_runtime::{ProjectKey, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use crate::agent::{Agent, AgentArgs, AgentMsg, AgentRef};
use crate::concierge::{Concierge, ConciergeArgs, ConciergeMsg, ConciergeRef};
use crate::outbox::{InProcess, Outbox};
use crate::route::Router;

/// Messages of the host.
pub enum HostMsg {
    /// Reconcile the running agents with the directory.
    Sync,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Instance {
    org: String,
    agent: ParticipantId,
    floor: Option<Uuid>,
}

/// State of the host.
pub struct HostState {
    runtime: Runtime,
    outbox: Arc<dyn Outbox>,
    agents: HashMap<Instance, AgentRef>,
    concierges: HashMap<String, ConciergeRef>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// The agent host actor.
pub struct AgentHost;

/// A running host.
pub struct HostHandle {
    host: ActorRef<HostMsg>,
}

impl AgentHost {
    /// Starts the host over `runtime`: every agent the directory defines starts reading
    /// the floors it is on, and posts straight into the runtime's sessions.
    pub async fn start(runtime: Runtime) -> Result<HostHandle, ractor::SpawnErr> {
        let outbox = InProcess::shared(runtime.clone());
        AgentHost::start_with(runtime, outbox).await
    }

    /// Starts the host with agents posting through `outbox` (an embedded sidecar, say).
    pub async fn start_with(
        runtime: Runtime,
        outbox: Arc<dyn Outbox>,
    ) -> Result<HostHandle, ractor::SpawnErr> {
        let (host, _) = Actor::spawn(None, AgentHost, (runtime, outbox)).await?;
        Ok(HostHandle { host })
    }
}

impl HostHandle {
    /// Stops every agent after it saves its cursors, then the host.
    pub async fn shutdown(self) {
        for child in self.host.get_cell().get_children() {
            // An agent saves its cursors in post_stop; one that is already gone is fine.
            let _ = child
                .stop_and_wait(None, Some(Duration::from_secs(10)))
                .await;
        }
        let _ = self
            .host
            .stop_and_wait(None, Some(Duration::from_secs(10)))
            .await;
    }

    /// Asks for a reconcile now (tests, and `SIGHUP`-style reloads).
    pub fn sync(&self) {
        // A stopped host has nothing to reconcile.
        let _ = self.host.cast(HostMsg::Sync);
    }
}

impl Actor for AgentHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = (Runtime, Arc<dyn Outbox>);

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        (runtime, outbox): (Runtime, Arc<dyn Outbox>),
    ) -> Result<HostState, ActorProcessingErr> {
        let mut changes = runtime.directory().subscribe();
        let me = myself.clone();
        let watcher = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if me.cast(HostMsg::Sync).is_err() {
                    return;
                }
            }
        });
        let mut state = HostState {
            runtime,
            outbox,
            agents: HashMap::new(),
            concierges: HashMap::new(),
            watcher: Some(watcher),
        };
        if let Err(e) = reconcile(&myself, &mut state).await {
            tracing::error!(error = %e, "agents not started; retrying");
            myself.send_after(Duration::from_secs(1), || HostMsg::Sync);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<HostMsg>,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(w) = state.watcher.take() {
            w.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMsg>,
        msg: HostMsg,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Sync => {
                if let Err(e) = reconcile(&myself, state).await {
                    tracing::error!(error = %e, "agent reconcile failed; retrying");
                    myself.send_after(Duration::from_secs(1), || HostMsg::Sync);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<HostMsg>,
        evt: SupervisionEvent,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let id = cell.get_id();
                state.agents.retain(|k, r| {
                    if r.get_id() == id {
                        tracing::error!(agent = %k.agent, org = %k.org, error = %err, "agent failed; restarting it");
                        metrics::counter!("polaris_actor_restarts_total", "actor" => "agent").increment(1);
                        false
                    } else {
                        true
                    }
                });
                state.concierges.retain(|_, r| r.get_id() != id);
                // A reconcile starts whatever is missing again, from its saved cursors.
                myself.send_after(Duration::from_millis(200), || HostMsg::Sync);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let id = cell.get_id();
                state.agents.retain(|_, r| r.get_id() != id);
                state.concierges.retain(|_, r| r.get_id() != id);
            }
            _ => {}
        }
        Ok(())
    }
}

/// What should run for one org, computed from the directory.
struct Plan {
    agents: HashMap<Instance, AgentArgs>,
    concierge: ConciergeArgs,
}

async fn plan(
    runtime: &Runtime,
    outbox: &Arc<dyn Outbox>,
    org: &str,
    base_dir: &std::path::Path,
) -> Result<Option<Plan>, StoreError> {
    let directory = runtime.directory();
    let listed = directory.agents(org).await?;
    if listed.is_empty() {
        return Ok(None);
    }
    let specs: Vec<AgentSpec> = listed.into_iter().map(|l| l.spec).collect();
    let router = Arc::new(Router::new(&specs));
    let org_arc: Arc<str> = org.into();
    let mut floors_of: HashMap<String, Vec<ProjectKey>> = HashMap::new();
    for (p, agent) in directory.seats(org).await? {
        floors_of.entry(agent).or_default().push(p);
    }
    let projects: Vec<ProjectKey> = directory.floors(org).await?;

    let mut present: HashMap<Uuid, HashSet<ParticipantId>> = HashMap::new();
    for s in &specs {
        for f in floors_of.get(s.id.as_str()).into_iter().flatten() {
            present.entry(f.id).or_default().insert(s.id.clone());
        }
    }

    let mut agents = HashMap::new();
    for top in specs.iter().filter(|s| s.parent.is_none()) {
        let own = floors_of.get(top.id.as_str()).cloned().unwrap_or_default();
        let children: Vec<&AgentSpec> = specs
            .iter()
            .filter(|s| s.parent.as_ref() == Some(&top.id))
            .collect();
        let child_floors = |c: &AgentSpec, parent_floors: &[ProjectKey]| {
            let mut fs: Vec<ProjectKey> = parent_floors.to_vec();
            for f in floors_of.get(c.id.as_str()).into_iter().flatten() {
                if !fs.iter().any(|x| x.id == f.id) {
                    fs.push(f.clone());
                }
            }
            fs
        };
        let args =
            |floors: Vec<ProjectKey>, children: Vec<(AgentSpec, Vec<ProjectKey>)>| AgentArgs {
                runtime: runtime.clone(),
                outbox: outbox.clone(),
                org: org_arc.clone(),
                spec: top.clone(),
                base_dir: base_dir.to_path_buf(),
                router: router.clone(),
                floors,
                children,
            };
        match top.context {
            ContextMode::Shared => {
                let kids: Vec<(AgentSpec, Vec<ProjectKey>)> = children
                    .iter()
                    .map(|c| ((*c).clone(), child_floors(c, &own)))
                    .collect();
                if own.is_empty() && kids.iter().all(|(_, f)| f.is_empty()) {
                    continue;
                }
                let inst = Instance {
                    org: org.to_owned(),
                    agent: top.id.clone(),
                    floor: None,
                };
                agents.insert(inst, args(own, kids));
            }
            ContextMode::Isolated => {
                for f in &own {
                    let kids = children
                        .iter()
                        .map(|c| ((*c).clone(), vec![f.clone()]))
                        .collect();
                    let inst = Instance {
                        org: org.to_owned(),
                        agent: top.id.clone(),
                        floor: Some(f.id),
                    };
                    agents.insert(inst, args(vec![f.clone()], kids));
                }
            }
        }
    }
    let concierge = ConciergeArgs {
        runtime: runtime.clone(),
        org: org_arc,
        router: router.clone(),
        floors: projects,
        present,
    };
    Ok(Some(Plan { agents, concierge }))
}

async fn reconcile(myself: &ActorRef<HostMsg>, state: &mut HostState) -> Result<(), StoreError> {
    let base_dir = state.runtime.directory().file().base_dir.clone();
    let mut wanted: HashSet<Instance> = HashSet::new();
    let mut orgs_wanted: HashSet<String> = HashSet::new();
    for org in state.runtime.directory().orgs().await? {
        let Some(plan) = plan(&state.runtime, &state.outbox, &org, &base_dir).await? else {
            continue;
        };
        orgs_wanted.insert(org.clone());
        match state.concierges.get(&org) {
            Some(c) => {
                // A concierge that is stopping is replaced on the next reconcile.
                let _ = c.cast(ConciergeMsg::Update(Box::new(plan.concierge)));
            }
            None => match Concierge::spawn_linked(plan.concierge, myself.get_cell()).await {
                Ok(c) => {
                    state.concierges.insert(org.clone(), c);
                }
                Err(e) => tracing::error!(org, error = %e, "concierge did not start"),
            },
        }
        for (inst, args) in plan.agents {
            wanted.insert(inst.clone());
            match state.agents.get(&inst) {
                Some(r) => {
                    let _ = r.cast(AgentMsg::Update(Box::new(args)));
                }
                None => match Agent::spawn_linked(args, myself.get_cell()).await {
                    Ok(r) => {
                        state.agents.insert(inst, r);
                    }
                    Err(e) => {
                        tracing::error!(agent = %inst.agent, error = %e, "agent did not start")
                    }
                },
            }
        }
    }
    let stale: Vec<Instance> = state
        .agents
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for inst in stale {
        if let Some(r) = state.agents.remove(&inst) {
            tracing::info!(agent = %inst.agent, org = %inst.org, "agent stopped: no longer defined or on no floor");
            r.stop(Some("removed".into()));
        }
    }
    state.concierges.retain(|org, c| {
        let keep = orgs_wanted.contains(org);
        if !keep {
            c.stop(None);
        }
        keep
    });
    Ok(())
}
