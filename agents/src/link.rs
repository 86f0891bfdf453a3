//! How agents reach the floor for everything but posting (which goes through an
//! [`Outbox`](crate::outbox::Outbox)): its streams from a cursor, their saved read
//! positions, their roster (the org's agents and the floors each is on) and their leases.
//!
//! Inside `polaris serve` that is [`Local`], the runtime's own facade. `polaris agent run`
//! has no database: it hands in a link over the floor's HTTP API and WebSocket streams.
//! The agents' code is the same either way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use polaris_registry::{AgentSpec, ParticipantId};
use polaris_runtime::{
    Committed, MemoryFact, NewFact, ProjectKey, Runtime, Start, SubscriptionSpec,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Why the floor could not be reached or did not answer; the caller retries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

impl LinkError {
    /// Wraps any error's message.
    pub fn of(e: impl std::fmt::Display) -> LinkError {
        LinkError(e.to_string())
    }
}

/// A floor's events from a cursor on: every event once, in `seq` order. It ends, or yields
/// an error, when the connection is lost; the reader opens it again from its cursor.
pub type Events = BoxStream<'static, Result<Arc<Committed>, LinkError>>;

/// What an agent host needs to know of an org to plan its agents.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Every agent of the org (the router needs them all).
    pub agents: Vec<AgentSpec>,
    /// The floors agents are on: `(floor, agent id)`.
    pub seats: Vec<(ProjectKey, String)>,
    /// The directory knowledge paths start from.
    pub base_dir: PathBuf,
}

/// How far a task has got, as the floor has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProgress {
    /// Its `Stop` is on the floor.
    pub finished: bool,
    /// A `task_stop` is on the floor: why it should stop.
    pub stop: Option<String>,
}

/// A fact an agent keeps (see [`FloorLink::remember`]).
#[derive(Debug, Clone)]
pub struct Remember {
    /// The agent (`agent:dean`).
    pub agent: String,
    /// The floor it is kept for (an isolated agent), or `None` (shared).
    pub project_id: Option<Uuid>,
    /// The fact.
    pub fact: String,
    /// The events it came from.
    pub source_events: Vec<Uuid>,
    /// `remember` or `tool`.
    pub origin: &'static str,
    /// Who asked for it to be kept.
    pub author: Option<String>,
}

/// The floor, as agents see it. Every method may fail with a [`LinkError`]; none blocks
/// longer than its own `wait` (for leases) or the link's request timeout.
pub trait FloorLink: Send + Sync + 'static {
    /// A floor's events after `after`.
    fn subscribe(
        &self,
        project: ProjectKey,
        after: i64,
    ) -> BoxFuture<'static, Result<Events, LinkError>>;

    /// Where `reader` starts on a floor: its saved position, else just before the newest
    /// join of any of `joined_as`, else the floor's head.
    fn read_position(
        &self,
        org: Arc<str>,
        reader: String,
        joined_as: Vec<String>,
        project: Uuid,
    ) -> BoxFuture<'static, Result<i64, LinkError>>;

    /// Saves read positions (never moving one back). Under a `term`, only while the
    /// reader's top-level agent's lease is still under it: `Ok(false)` when it is not.
    fn save_read_positions(
        &self,
        org: Arc<str>,
        reader: String,
        positions: Vec<(Uuid, i64)>,
        term: Option<i64>,
    ) -> BoxFuture<'static, Result<bool, LinkError>>;

    /// The org's agents and who is on which floor.
    fn roster(&self, org: Arc<str>) -> BoxFuture<'static, Result<Roster, LinkError>>;

    /// Changes whenever the roster may have changed.
    fn changes(&self) -> watch::Receiver<u64>;

    /// Takes the lease `name`, waiting up to `wait` while another holder has it: its term,
    /// or `None` if it is still held by someone else.
    fn acquire(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Option<i64>, LinkError>>;

    /// Extends the lease; `Ok(false)` when `holder` no longer holds it under `term`.
    fn renew(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, LinkError>>;

    /// How far the task `task` of `agent` on the floor `project` has got (`None`: no such
    /// task): a task read again after a restart is not driven again once it has ended.
    fn task_progress(
        &self,
        project: ProjectKey,
        agent: String,
        task: Uuid,
    ) -> BoxFuture<'static, Result<Option<TaskProgress>, LinkError>>;

    /// Gives the lease up, so a waiting instance takes it at once.
    fn release(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
    ) -> BoxFuture<'static, Result<bool, LinkError>>;

    /// Keeps a fact in an agent's memory (the same text in the same scope is kept once).
    fn remember(
        &self,
        org: Arc<str>,
        fact: Remember,
    ) -> BoxFuture<'static, Result<MemoryFact, LinkError>>;

    /// An agent's facts of one scope (`Some(floor)`: an isolated agent's on that floor;
    /// `None`: a shared agent's), newest first, at most `limit`.
    fn recall(
        &self,
        org: Arc<str>,
        agent: String,
        scope: Option<ProjectKey>,
        limit: i64,
    ) -> BoxFuture<'static, Result<Vec<MemoryFact>, LinkError>>;

    /// Forgets one fact of an agent; false when it had no such fact.
    fn forget(
        &self,
        org: Arc<str>,
        agent: String,
        id: Uuid,
    ) -> BoxFuture<'static, Result<bool, LinkError>>;

    /// Whether agents offer advice unasked on a floor's events (the project's
    /// `passive_advice` switch). Asked for each event an agent would score, so it answers
    /// from a cache the floor's change notices keep current: usually ready at once.
    fn passive_advice(&self, project: ProjectKey) -> BoxFuture<'static, Result<bool, LinkError>>;
}

/// The floor of this process: the runtime's facade.
pub struct Local {
    runtime: Runtime,
}

impl Local {
    /// A link over `runtime`.
    pub fn shared(runtime: Runtime) -> Arc<dyn FloorLink> {
        Arc::new(Local { runtime })
    }
}

impl FloorLink for Local {
    fn subscribe(
        &self,
        project: ProjectKey,
        after: i64,
    ) -> BoxFuture<'static, Result<Events, LinkError>> {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let spec = SubscriptionSpec {
                project,
                session: None,
                start: Start::After(after),
            };
            let stream = runtime.subscribe(spec).await.map_err(LinkError::of)?;
            Ok(stream.map(|r| r.map_err(LinkError::of)).boxed())
        })
    }

    fn read_position(
        &self,
        org: Arc<str>,
        reader: String,
        joined_as: Vec<String>,
        project: Uuid,
    ) -> BoxFuture<'static, Result<i64, LinkError>> {
        let directory = self.runtime.directory();
        Box::pin(async move {
            directory
                .read_position(&org, &reader, &joined_as, project)
                .await
                .map_err(LinkError::of)
        })
    }

    fn save_read_positions(
        &self,
        org: Arc<str>,
        reader: String,
        positions: Vec<(Uuid, i64)>,
        term: Option<i64>,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let directory = self.runtime.directory();
        Box::pin(async move {
            directory
                .save_read_positions(&org, &reader, &positions, term)
                .await
                .map_err(LinkError::of)
        })
    }

    fn roster(&self, org: Arc<str>) -> BoxFuture<'static, Result<Roster, LinkError>> {
        let directory = self.runtime.directory();
        Box::pin(async move {
            let agents = directory.agents(&org).await.map_err(LinkError::of)?;
            let seats = directory.seats(&org).await.map_err(LinkError::of)?;
            Ok(Roster {
                agents: agents.into_iter().map(|l| l.spec).collect(),
                seats,
                base_dir: directory.file().base_dir.clone(),
            })
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.runtime.directory().subscribe()
    }

    fn acquire(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Option<i64>, LinkError>> {
        let leases = self.runtime.leases();
        Box::pin(async move {
            let got = leases
                .acquire(&org, &name, &holder, ttl, wait)
                .await
                .map_err(LinkError::of)?;
            Ok(got.ok().map(|l| l.term))
        })
    }

    fn renew(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let leases = self.runtime.leases();
        Box::pin(async move {
            let renewed = leases
                .renew(&org, &name, &holder, term, ttl)
                .await
                .map_err(LinkError::of)?;
            Ok(renewed.is_some())
        })
    }

    fn task_progress(
        &self,
        project: ProjectKey,
        agent: String,
        task: Uuid,
    ) -> BoxFuture<'static, Result<Option<TaskProgress>, LinkError>> {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let agent = ParticipantId::parse(&agent).map_err(LinkError::of)?;
            let tasks = runtime
                .tasks_of(&project, &agent)
                .await
                .map_err(LinkError::of)?;
            Ok(tasks.iter().find(|t| t.id == task).map(|t| TaskProgress {
                finished: !matches!(t.status, "queued" | "running"),
                stop: t.stop_reason.clone(),
            }))
        })
    }

    fn release(
        &self,
        org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let leases = self.runtime.leases();
        Box::pin(async move {
            leases
                .release(&org, &name, &holder, term)
                .await
                .map_err(LinkError::of)
        })
    }

    fn remember(
        &self,
        org: Arc<str>,
        f: Remember,
    ) -> BoxFuture<'static, Result<MemoryFact, LinkError>> {
        let memory = self.runtime.agent_memory();
        Box::pin(async move {
            memory
                .add(
                    &org,
                    NewFact {
                        agent: &f.agent,
                        project_id: f.project_id,
                        fact: &f.fact,
                        source_events: &f.source_events,
                        origin: f.origin,
                        author: f.author.as_deref(),
                    },
                )
                .await
                .map_err(LinkError::of)
        })
    }

    fn recall(
        &self,
        org: Arc<str>,
        agent: String,
        scope: Option<ProjectKey>,
        limit: i64,
    ) -> BoxFuture<'static, Result<Vec<MemoryFact>, LinkError>> {
        let memory = self.runtime.agent_memory();
        Box::pin(async move {
            memory
                .in_scope(&org, &agent, scope.map(|k| k.id), limit)
                .await
                .map_err(LinkError::of)
        })
    }

    fn forget(
        &self,
        org: Arc<str>,
        agent: String,
        id: Uuid,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let memory = self.runtime.agent_memory();
        Box::pin(async move { memory.delete(&org, &agent, id).await.map_err(LinkError::of) })
    }

    fn passive_advice(&self, project: ProjectKey) -> BoxFuture<'static, Result<bool, LinkError>> {
        let runtime = self.runtime.clone();
        Box::pin(async move {
            runtime
                .passive_advice(project.id)
                .await
                .map_err(LinkError::of)
        })
    }
}
