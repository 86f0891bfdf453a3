//! The agent host: keeps one agent actor per named agent — per agent and floor for
//! `context: isolated` — and one concierge per org, in step with the directory (the
//! agents file, the agents table and floor memberships). It is told of every change by
//! the directory's watch channel and reconciles: new agents start, changed ones are
//! updated in place (they keep their cursors), removed ones stop after saving theirs.
//!
//! Each top-level agent (with its subagents) runs only while this host holds the agent's
//! lease in its org: a keeper task per agent takes it (waiting while another instance, a
//! `polaris agent run` or another node, holds it), renews it every third of its time, and
//! tells the host when it is taken or lost. The agent's posts carry the lease's term, so
//! after a takeover the floor refuses anything this instance still had in flight; a lost
//! lease stops the agent at once. A clean stop releases the leases, so a standby takes
//! over without waiting for them to expire.
//!
//! Error policy: an agent that fails is restarted on the next reconcile, which the
//! failure itself triggers; a reconcile that cannot read the store is retried.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use polaris_registry::{AgentSpec, ContextMode, Hosting, ParticipantId};
use polaris_runtime::ProjectKey;
use polaris_runtime::Runtime;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use crate::agent::{Agent, AgentArgs, AgentMsg, AgentRef};
use crate::concierge::{Concierge, ConciergeArgs, ConciergeMsg, ConciergeRef};
use crate::health::{Health, HealthReport};
use crate::link::{FloorLink, LinkError, Local, Roster};
use crate::outbox::{InProcess, Outbox};
use crate::passive::Passive;
use crate::route::Router;

/// How long an in-process agent's lease lasts unless renewed (it is renewed every third of
/// it): the longest a standby waits after this process dies without releasing it.
pub const LEASE_TTL: Duration = Duration::from_millis(1500);

/// Messages of the host.
pub enum HostMsg {
    /// Reconcile the running agents with the directory.
    Sync,
    /// The keeper of an agent's lease took it (`Some(term)`) or lost it (`None`).
    Lease(LeaseKey, Option<i64>),
    /// Stop every agent (they save their cursors) and start none again; keep the leases.
    Quiesce(ractor::RpcReplyPort<()>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Instance {
    org: String,
    agent: ParticipantId,
    floor: Option<Uuid>,
}

/// Whose lease: a top-level agent in an org.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    org: String,
    agent: ParticipantId,
}

/// A running lease keeper and the term it holds, if any.
struct Keeper {
    term: Option<i64>,
    task: tokio::task::JoinHandle<()>,
}

/// Which agents a host runs.
pub enum Scope {
    /// `polaris serve`: in every org, each agent with `hosting: server`, and a concierge
    /// per org answering mentions of agents that are not on a floor.
    Server(Runtime),
    /// `polaris agent run`: one top-level agent (whatever its hosting) with its subagents.
    One {
        /// Its org.
        org: Arc<str>,
        /// The agent.
        agent: ParticipantId,
        /// Definitions read from a local agents file (with the directory its knowledge
        /// paths start from), used instead of the floor's.
        file: Option<(Vec<AgentSpec>, PathBuf)>,
    },
}

/// What a host is started with.
pub struct HostArgs {
    /// The floor, for reading and leases.
    pub link: Arc<dyn FloorLink>,
    /// Where agents' posts go.
    pub outbox: Arc<dyn Outbox>,
    /// Which agents run.
    pub scope: Scope,
    /// Who this host is, as a lease holder: unique to this process and start.
    pub holder: String,
    /// How long its leases last unless renewed.
    pub lease_ttl: Duration,
    /// Passive monitoring for its top-level agents, if it runs.
    pub passive: Option<Passive>,
}

/// State of the host.
pub struct HostState {
    link: Arc<dyn FloorLink>,
    scope: Scope,
    health: Arc<Health>,
    lease_ttl: Duration,
    outbox: Arc<dyn Outbox>,
    passive: Option<Passive>,
    /// Running agent instances and the lease term each runs under.
    agents: HashMap<Instance, (AgentRef, i64)>,
    concierges: HashMap<String, ConciergeRef>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Who this host is, as a lease holder: unique to this process and start.
    holder: String,
    keepers: HashMap<LeaseKey, Keeper>,
    /// Stopping: no agent starts again.
    quiet: bool,
}

/// The agent host actor.
pub struct AgentHost;

/// A running host.
#[derive(Clone)]
pub struct HostHandle {
    host: ActorRef<HostMsg>,
    health: Arc<Health>,
}

impl AgentHost {
    /// Starts the host over `runtime`: every agent the directory defines starts reading
    /// the floors it is on, and posts straight into the runtime's sessions.
    pub async fn start(runtime: Runtime) -> Result<HostHandle, ractor::SpawnErr> {
        let outbox = InProcess::shared(runtime.clone());
        AgentHost::start_with(runtime, outbox).await
    }

    /// [`AgentHost::start`], with passive monitoring: top-level agents score the events
    /// nobody addressed and offer advice.
    pub async fn start_watching(
        runtime: Runtime,
        passive: Passive,
    ) -> Result<HostHandle, ractor::SpawnErr> {
        let outbox = InProcess::shared(runtime.clone());
        AgentHost::spawn(HostArgs {
            passive: Some(passive),
            ..AgentHost::server_args(runtime, outbox)
        })
        .await
    }

    fn server_args(runtime: Runtime, outbox: Arc<dyn Outbox>) -> HostArgs {
        HostArgs {
            link: Local::shared(runtime.clone()),
            outbox,
            scope: Scope::Server(runtime),
            holder: format!(
                "polaris-serve/{}/{}",
                std::process::id(),
                Uuid::new_v4().simple()
            ),
            lease_ttl: LEASE_TTL,
            passive: None,
        }
    }

    /// Starts the host with agents posting through `outbox` (an embedded sidecar, say).
    pub async fn start_with(
        runtime: Runtime,
        outbox: Arc<dyn Outbox>,
    ) -> Result<HostHandle, ractor::SpawnErr> {
        AgentHost::spawn(AgentHost::server_args(runtime, outbox)).await
    }

    /// Starts a host as `args` say.
    pub async fn spawn(args: HostArgs) -> Result<HostHandle, ractor::SpawnErr> {
        let health = Arc::new(Health::default());
        let (host, _) = Actor::spawn(None, AgentHost, (args, health.clone())).await?;
        Ok(HostHandle { host, health })
    }
}

impl HostHandle {
    /// Stops every agent after it saves its cursors, keeping the leases: whoever started
    /// the host may still have to deliver what the agents posted (an embedded sidecar)
    /// before [`HostHandle::shutdown`] lets another instance take over.
    pub async fn stop_agents(&self) {
        // A host that is gone has no agents.
        let _ = self
            .host
            .call(HostMsg::Quiesce, Some(Duration::from_secs(30)))
            .await;
    }

    /// Stops every agent after it saves its cursors, then the host, which gives its
    /// leases up.
    pub async fn shutdown(self) {
        self.stop_agents().await;
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

    /// How its agents are doing.
    pub fn health(&self) -> HealthReport {
        self.health.report()
    }
}

impl Actor for AgentHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = (HostArgs, Arc<Health>);

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        (args, health): (HostArgs, Arc<Health>),
    ) -> Result<HostState, ActorProcessingErr> {
        let mut changes = args.link.changes();
        let me = myself.clone();
        let watcher = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if me.cast(HostMsg::Sync).is_err() {
                    return;
                }
            }
        });
        let mut state = HostState {
            link: args.link,
            scope: args.scope,
            health,
            lease_ttl: args.lease_ttl,
            passive: args.passive,
            outbox: args.outbox,
            agents: HashMap::new(),
            concierges: HashMap::new(),
            watcher: Some(watcher),
            holder: args.holder,
            keepers: HashMap::new(),
            quiet: false,
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
        // The agents stopped before the host (see `HostHandle::shutdown`): give their
        // leases up so a standby takes over now, not when they expire.
        let keys: Vec<LeaseKey> = state.keepers.keys().cloned().collect();
        for key in keys {
            release(state, &key).await;
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
            HostMsg::Quiesce(reply) => {
                state.quiet = true;
                if let Some(w) = state.watcher.take() {
                    w.abort();
                }
                for child in myself.get_cell().get_children() {
                    // An agent saves its cursors in post_stop; one already gone is fine.
                    let _ = child
                        .stop_and_wait(None, Some(Duration::from_secs(10)))
                        .await;
                }
                state.agents.clear();
                state.concierges.clear();
                let _ = reply.send(());
            }
            HostMsg::Lease(key, term) => {
                let Some(keeper) = state.keepers.get_mut(&key) else {
                    return Ok(());
                };
                keeper.term = term;
                match term {
                    Some(t) => {
                        tracing::info!(agent = %key.agent, org = %key.org, term = t, "agent lease taken; the agent runs here")
                    }
                    None => {
                        tracing::warn!(agent = %key.agent, org = %key.org, "agent lease lost; the agent stops here")
                    }
                }
                // Instances under another term stop now; the reconcile starts them again
                // under the new one, from their saved cursors.
                stop_instances(state, &key, term);
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
                state.agents.retain(|k, (r, _)| {
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
                state.agents.retain(|_, (r, _)| r.get_id() != id);
                state.concierges.retain(|_, r| r.get_id() != id);
            }
            _ => {}
        }
        Ok(())
    }
}

/// What should run for one org, computed from its roster.
struct Plan {
    agents: HashMap<Instance, AgentArgs>,
    /// Agents whose lease is held even while they are on no floor: `polaris agent run`'s
    /// one agent, so exactly one process of it is the active one, floors or not.
    always_leased: Vec<ParticipantId>,
    /// Only in `polaris serve`.
    concierge: Option<ConciergeArgs>,
}

/// What to plan with: the host's link and outbox, its scope, and its health counters.
struct Planning<'a> {
    link: &'a Arc<dyn FloorLink>,
    outbox: &'a Arc<dyn Outbox>,
    passive: &'a Option<Passive>,
    scope: &'a Scope,
    health: &'a Arc<Health>,
}

async fn plan(p: &Planning<'_>, org: &str) -> Result<Option<Plan>, LinkError> {
    let org_arc: Arc<str> = org.into();
    let Roster {
        agents: mut specs,
        seats,
        mut base_dir,
    } = p.link.roster(org_arc.clone()).await?;
    if let Scope::One {
        file: Some((file, dir)),
        ..
    } = p.scope
    {
        specs = file.clone();
        base_dir = dir.clone();
    }
    if specs.is_empty() {
        return Ok(None);
    }
    let router = Arc::new(Router::new(&specs));
    // With a model, the heads are fitted in the background from now on, not when the
    // first event needs them.
    if let Some(passive) = p.passive {
        passive.prepare(org_arc.clone(), &router, &base_dir);
    }
    let mut floors_of: HashMap<String, Vec<ProjectKey>> = HashMap::new();
    for (f, agent) in seats {
        floors_of.entry(agent).or_default().push(f);
    }

    let mut agents = HashMap::new();
    // In `polaris serve`, an agent hosted elsewhere (`polaris agent run`) is still known to
    // the floor (its joins, its persona, the concierge's notices), but never runs here.
    // `polaris agent run` runs its one agent, whatever its hosting: both take the lease.
    let here = |s: &&AgentSpec| {
        s.parent.is_none()
            && match p.scope {
                Scope::Server(_) => s.hosting == Hosting::Server,
                Scope::One { agent, .. } => s.id == *agent,
            }
    };
    for top in specs.iter().filter(here) {
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
                link: p.link.clone(),
                health: p.health.clone(),
                outbox: p.outbox.clone(),
                org: org_arc.clone(),
                spec: top.clone(),
                base_dir: base_dir.clone(),
                router: router.clone(),
                floors,
                children,
                term: None,
                passive: p.passive.clone(),
                intents: p.passive.as_ref().and_then(Passive::intents),
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
    let concierge = match p.scope {
        Scope::Server(runtime) => {
            let mut present: HashMap<Uuid, HashSet<ParticipantId>> = HashMap::new();
            for s in &specs {
                for f in floors_of.get(s.id.as_str()).into_iter().flatten() {
                    present.entry(f.id).or_default().insert(s.id.clone());
                }
            }
            Some(ConciergeArgs {
                runtime: runtime.clone(),
                link: p.link.clone(),
                org: org_arc,
                router: router.clone(),
                floors: runtime
                    .directory()
                    .floors(org)
                    .await
                    .map_err(LinkError::of)?,
                present,
            })
        }
        Scope::One { .. } => None,
    };
    let always_leased = match p.scope {
        Scope::One { agent, .. } if specs.iter().any(|s| s.id == *agent) => vec![agent.clone()],
        _ => Vec::new(),
    };
    Ok(Some(Plan {
        agents,
        always_leased,
        concierge,
    }))
}

/// The orgs a host plans for.
async fn orgs(scope: &Scope) -> Result<Vec<String>, LinkError> {
    match scope {
        Scope::Server(runtime) => runtime.directory().orgs().await.map_err(LinkError::of),
        Scope::One { org, .. } => Ok(vec![org.to_string()]),
    }
}

/// Floor streams an agent's instance reads, its subagents' included.
fn streams_of(args: &AgentArgs) -> usize {
    args.floors.len() + args.children.iter().map(|(_, f)| f.len()).sum::<usize>()
}

async fn reconcile(myself: &ActorRef<HostMsg>, state: &mut HostState) -> Result<(), LinkError> {
    if state.quiet {
        return Ok(());
    }
    let mut wanted: HashSet<Instance> = HashSet::new();
    let mut orgs_wanted: HashSet<String> = HashSet::new();
    let mut leases_wanted: HashSet<LeaseKey> = HashSet::new();
    let mut streams = 0;
    for org in orgs(&state.scope).await? {
        let planning = Planning {
            link: &state.link,
            outbox: &state.outbox,
            passive: &state.passive,
            scope: &state.scope,
            health: &state.health,
        };
        let Some(plan) = plan(&planning, &org).await? else {
            continue;
        };
        if let Some(concierge) = plan.concierge {
            orgs_wanted.insert(org.clone());
            match state.concierges.get(&org) {
                Some(c) => {
                    // A concierge that is stopping is replaced on the next reconcile.
                    let _ = c.cast(ConciergeMsg::Update(Box::new(concierge)));
                }
                None => match Concierge::spawn_linked(concierge, myself.get_cell()).await {
                    Ok(c) => {
                        state.concierges.insert(org.clone(), c);
                    }
                    Err(e) => tracing::error!(org, error = %e, "concierge did not start"),
                },
            }
        }
        for agent in plan.always_leased {
            let key = LeaseKey {
                org: org.clone(),
                agent,
            };
            leases_wanted.insert(key.clone());
            keeper(myself, state, key);
        }
        for (inst, mut args) in plan.agents {
            let key = LeaseKey {
                org: inst.org.clone(),
                agent: inst.agent.clone(),
            };
            leases_wanted.insert(key.clone());
            // Runs only under the lease; the keeper's news brings it here again.
            let Some(term) = keeper(myself, state, key).term else {
                continue;
            };
            args.term = Some(term);
            streams += streams_of(&args);
            wanted.insert(inst.clone());
            match state.agents.get(&inst) {
                Some((r, _)) => {
                    let _ = r.cast(AgentMsg::Update(Box::new(args)));
                }
                None => match Agent::spawn_linked(args, myself.get_cell()).await {
                    Ok(r) => {
                        state.agents.insert(inst, (r, term));
                    }
                    Err(e) => {
                        tracing::error!(agent = %inst.agent, error = %e, "agent did not start")
                    }
                },
            }
        }
    }
    let gone: Vec<LeaseKey> = state
        .keepers
        .keys()
        .filter(|k| !leases_wanted.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        release(state, &key).await;
    }
    let stale: Vec<Instance> = state
        .agents
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for inst in stale {
        if let Some((r, _)) = state.agents.remove(&inst) {
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
    let h = &state.health;
    h.leases_wanted
        .store(state.keepers.len(), Ordering::Relaxed);
    h.leases_held.store(
        state.keepers.values().filter(|k| k.term.is_some()).count(),
        Ordering::Relaxed,
    );
    h.streams_wanted.store(streams, Ordering::Relaxed);
    Ok(())
}

/// The keeper of an agent's lease, started if there is none.
fn keeper<'s>(myself: &ActorRef<HostMsg>, state: &'s mut HostState, key: LeaseKey) -> &'s Keeper {
    let (link, holder, ttl) = (&state.link, &state.holder, state.lease_ttl);
    state.keepers.entry(key.clone()).or_insert_with(|| Keeper {
        term: None,
        task: tokio::spawn(keep_lease(
            myself.clone(),
            link.clone(),
            key,
            holder.clone(),
            ttl,
        )),
    })
}

/// Stops the running instances of the agent `key` names, except those under `keep_term`.
fn stop_instances(state: &mut HostState, key: &LeaseKey, keep_term: Option<i64>) {
    state.agents.retain(|inst, (r, t)| {
        let keep = inst.org != key.org || inst.agent != key.agent || keep_term == Some(*t);
        if !keep {
            r.stop(Some("lease".into()));
        }
        keep
    });
}

/// Stops an agent's keeper and gives its lease up (its instances stop with it).
async fn release(state: &mut HostState, key: &LeaseKey) {
    let Some(keeper) = state.keepers.remove(key) else {
        return;
    };
    keeper.task.abort();
    stop_instances(state, key, None);
    if let Some(term) = keeper.term {
        let released = state.link.release(
            key.org.as_str().into(),
            key.agent.to_string(),
            state.holder.clone(),
            term,
        );
        if let Err(e) = released.await {
            // It expires by itself within its ttl.
            tracing::warn!(agent = %key.agent, error = %e, "lease not released");
        }
    }
}

/// Takes an agent's lease (waiting while another instance holds it), keeps it renewed, and
/// tells the host each time it is taken or lost, until the host aborts it.
async fn keep_lease(
    host: ActorRef<HostMsg>,
    link: Arc<dyn FloorLink>,
    key: LeaseKey,
    holder: String,
    ttl: Duration,
) {
    let org: Arc<str> = key.org.as_str().into();
    let name = key.agent.to_string();
    loop {
        // Wait as long as a lease lasts, then ask again: a dead holder's lease expires
        // within that, and a release wakes the wait at once.
        let acquired = link.acquire(org.clone(), name.clone(), holder.clone(), ttl, ttl);
        let term = match acquired.await {
            Ok(Some(term)) => term,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(agent = %name, error = %e, "lease not taken; retrying");
                tokio::time::sleep(ttl / 3).await;
                continue;
            }
        };
        if host.cast(HostMsg::Lease(key.clone(), Some(term))).is_err() {
            return;
        }
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            let renewal = link.renew(org.clone(), name.clone(), holder.clone(), term, ttl);
            match renewal.await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => break,
                // The floor may be out of reach for a moment; the lease is ours until it
                // expires.
                Err(e) if renewed.elapsed() < ttl => {
                    tracing::warn!(agent = %name, error = %e, "lease not renewed; retrying")
                }
                Err(_) => break,
            }
        }
        if host.cast(HostMsg::Lease(key.clone(), None)).is_err() {
            return;
        }
    }
}
