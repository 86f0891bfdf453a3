//! The runtime handle: the one way into the floors. It is handed a store, starts the
//! supervisor, and offers the narrow facade everything above it uses: post an event to a
//! session, subscribe to a floor from a cursor, and (through [`Runtime::directory`]) the
//! agent directory. Requests for a session travel to its floor, which owns the session
//! actors; the runtime itself keeps no map of sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use futures::Stream;
use ractor::rpc::CallResult;
use ractor::{Actor, MessagingErr};
use uuid::Uuid;

use crate::auth::Caller;
use crate::cluster::{Cluster, Hear, Notice};
use crate::commit::{FloorError, Posted, Reply};
use crate::floor::{FloorEnv, FloorMsg, FloorRef};
use crate::hub::Committed;
use crate::indexer::{IndexerMsg, IndexerSlot};
use crate::leases::{LeaseBoard, Leases};
use crate::live::{Floors, LiveFloor};
use crate::protocol::Project;
use crate::roster::Roster;
use crate::screen::Screen;
use crate::session::SessionMsg;
use crate::store::{ProjectKey, Store, StoreError};
use crate::subscription::{SubscriptionSpec, subscribe};
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg, SupervisorRef};
use crate::validate::Incoming;

/// Runtime tuning, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Session actors idle this long stop (they start again on demand).
    pub session_idle: Duration,
    /// Events buffered per floor for live subscribers.
    pub subscriber_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_idle: Duration::from_secs(300),
            subscriber_buffer: 1024,
        }
    }
}

struct Inner {
    store: Store,
    floors: Arc<Floors>,
    indexer: Arc<IndexerSlot>,
    roster: Arc<Roster>,
    supervisor: SupervisorRef,
    projects: DashMap<(Arc<str>, String), Project>,
    /// Bumped whenever a cached project is forgotten: a row read before a change is not
    /// cached after it.
    projects_changed: std::sync::atomic::AtomicU64,
    /// Releases and waiting contenders of leases.
    leases: Arc<LeaseBoard>,
    /// What this node tells the others, and hears from them.
    cluster: Arc<Cluster>,
    /// The ingest screen's cached policies.
    screen: Arc<Screen>,
}

/// The runtime: cheap to clone, shared by everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (floors, sessions) = self.live_actors();
        f.debug_struct("Runtime")
            .field("floors", &floors)
            .field("sessions", &sessions)
            .finish()
    }
}

impl Runtime {
    /// Starts the supervisor over `store`.
    pub async fn start(store: Store, settings: Settings) -> Result<Runtime, ractor::SpawnErr> {
        let floors = Arc::new(Floors::new(settings.subscriber_buffer));
        let indexer = Arc::new(IndexerSlot::default());
        let cluster = Arc::new(Cluster::new(&store));
        let screen = Arc::new(Screen::new(store.clone()));
        let env = FloorEnv {
            store: store.clone(),
            indexer: indexer.clone(),
            session_idle: settings.session_idle,
            live_sessions: floors.live_sessions.clone(),
            cluster: cluster.clone(),
            screen: screen.clone(),
        };
        let args = SupervisorArgs {
            floors: floors.clone(),
            env,
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args).await?;
        let inner = Arc::new(Inner {
            store,
            floors,
            indexer,
            roster: Arc::new(Roster::new()),
            supervisor,
            projects: DashMap::new(),
            projects_changed: std::sync::atomic::AtomicU64::new(0),
            leases: Arc::new(LeaseBoard::new()),
            cluster: cluster.clone(),
            screen,
        });
        cluster.start(Arc::downgrade(&inner));
        Ok(Runtime { inner })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn roster(&self) -> &Arc<Roster> {
        &self.inner.roster
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.inner.cluster
    }

    /// Leases: who does the work that must run once.
    pub fn leases(&self) -> Leases {
        Leases::new(
            self.inner.store.clone(),
            self.inner.leases.clone(),
            self.inner.cluster.clone(),
        )
    }

    /// Whether agents offer advice unasked on a floor's events: the project's
    /// `passive_advice` switch, cached with its other policies and forgotten, here and on
    /// every node, when an admin changes it.
    pub async fn passive_advice(&self, project: Uuid) -> Result<bool, StoreError> {
        self.inner.screen.passive_advice(project).await
    }

    /// What agents remember.
    pub fn agent_memory(&self) -> crate::store::AgentMemory {
        crate::store::AgentMemory::new(self.inner.store.clone())
    }

    /// The Slack bridge's tables.
    pub fn slack_links(&self) -> crate::store::SlackLinks {
        crate::store::SlackLinks::new(self.inner.store.clone())
    }

    /// One event of a floor, by id.
    pub async fn event(
        &self,
        project: &ProjectKey,
        id: Uuid,
    ) -> Result<Option<crate::protocol::Event>, StoreError> {
        let Some((seq, _)) = self.inner.store.locate_event(project.id, id).await? else {
            return Ok(None);
        };
        let mut page = self
            .inner
            .store
            .events_after(project, None, seq - 1, 1)
            .await?;
        Ok(page.pop().filter(|e| e.id == id))
    }

    /// The `seq` of a floor's newest event (0 for an empty floor).
    pub async fn head(&self, project: &ProjectKey) -> Result<i64, StoreError> {
        self.inner.store.last_seq(project.id).await
    }

    /// Drops the cached copy of a project whose row changed outside the API (the Slack
    /// bridge recording its channel), here and on every node.
    pub async fn refresh_project(&self, project: &ProjectKey) {
        self.project_changed(&project.org, &project.name, project.id, false)
            .await;
    }

    /// Whether a session exists on a floor.
    pub async fn session_exists(
        &self,
        project: &ProjectKey,
        name: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.inner.store.get_session(project, name).await?.is_some())
    }

    /// Creates a session with no driver unless it exists.
    pub async fn ensure_session(&self, project: &ProjectKey, name: &str) -> Result<(), StoreError> {
        match self
            .inner
            .store
            .create_session(project, name, None, None)
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Live floor and session actors (for `/metrics` and tests).
    pub fn live_actors(&self) -> (usize, usize) {
        self.inner.floors.counts()
    }

    /// Posts a client's (or an agent's) event into a session, as `caller`; the answer
    /// comes once the floor has committed it. [`FloorError::NoSession`]: the session does
    /// not exist. Posting the same event id again answers with the stored event.
    pub async fn post(
        &self,
        project: &ProjectKey,
        session: &str,
        incoming: Incoming,
        caller: &Caller,
    ) -> Result<Posted, FloorError> {
        let caller = caller.clone();
        self.ask(project, session, |reply| {
            SessionMsg::Post(Box::new(incoming), caller, reply)
        })
        .await
    }

    /// A project by name within an org, from a cache kept in step with renames and
    /// visibility changes made through this runtime.
    pub(crate) async fn project(
        &self,
        org: &Arc<str>,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        let key = (org.clone(), name.to_owned());
        if let Some(p) = self.inner.projects.get(&key) {
            return Ok(Some(p.clone()));
        }
        let generation = self.inner.projects_changed.load(Ordering::Acquire);
        let found = self.inner.store.project_by_name(org, name).await?;
        if let Some(p) = &found {
            self.inner.projects.insert(key.clone(), p.clone());
            // Changed while we read: what we read may be the old row.
            if self.inner.projects_changed.load(Ordering::Acquire) != generation {
                self.inner.projects.remove(&key);
            }
        }
        Ok(found)
    }

    /// Forgets a cached project after its name or settings changed, here and on every
    /// other node. A rename also drains the floor, which starts again under the new name on
    /// next use.
    pub(crate) async fn project_changed(
        &self,
        org: &Arc<str>,
        old_name: &str,
        id: Uuid,
        renamed: bool,
    ) {
        self.forget_project(org, old_name, id, renamed).await;
        let notice = Notice::Project {
            org: org.to_string(),
            name: old_name.to_owned(),
            id,
            renamed,
        };
        self.inner.cluster.announce(notice).await;
    }

    /// [`Runtime::project_changed`], on this node only.
    async fn forget_project(&self, org: &Arc<str>, old_name: &str, id: Uuid, renamed: bool) {
        // The policies first: whoever sees the changed project has no stale policy left.
        self.inner.screen.forget(id);
        self.inner.projects_changed.fetch_add(1, Ordering::AcqRel);
        self.inner
            .projects
            .remove(&(org.clone(), old_name.to_owned()));
        // Watchers of the directory (the Slack bridge) follow projects too.
        self.inner.roster.bump();
        if renamed {
            // Waits until no new request can reach the old floor. A supervisor that is
            // stopping (shutdown) has nothing left to close.
            let _ = self
                .inner
                .supervisor
                .call(|r| SupervisorMsg::CloseFloor(id, r), None)
                .await;
        }
    }

    /// The floor of a project, started if needed.
    pub(crate) async fn floor(&self, project: &ProjectKey) -> Result<FloorRef, FloorError> {
        Ok(self.live_floor(project).await?.floor)
    }

    async fn live_floor(&self, project: &ProjectKey) -> Result<LiveFloor, FloorError> {
        if let Some(f) = self.inner.floors.get(project.id) {
            return Ok(f);
        }
        self.open_floor(project).await
    }

    async fn open_floor(&self, project: &ProjectKey) -> Result<LiveFloor, FloorError> {
        match self
            .inner
            .supervisor
            .call(|r| SupervisorMsg::OpenFloor(project.clone(), r), None)
            .await
        {
            Ok(CallResult::Success(Ok(f))) => Ok(f),
            Ok(CallResult::Success(Err(e))) => {
                Err(FloorError::Store(Arc::new(StoreError::Corrupt(e))))
            }
            _ => Err(FloorError::Unavailable),
        }
    }

    /// Sends a request to a session through its floor and waits for the answer.
    pub(crate) async fn ask(
        &self,
        project: &ProjectKey,
        session: &str,
        msg: impl FnOnce(Reply) -> SessionMsg,
    ) -> Result<Posted, FloorError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.route(project, session, msg(tx.into())).await;
        // A dropped port: the actor holding the request stopped (a crash or a shutdown)
        // before it answered; the request may be retried with the same ids.
        rx.await.unwrap_or(Err(FloorError::Unavailable))
    }

    /// Hands a request to a session: straight to its actor when it is live, else through
    /// its floor, which starts it. A floor that stopped after it was looked up (drained by
    /// a rename, or crashed) gives the request back, and it goes to the floor the
    /// supervisor has now.
    async fn route(&self, project: &ProjectKey, session: &str, msg: SessionMsg) {
        self.route_on(project, session, msg, true).await;
    }

    /// [`Runtime::route`], straight to a live session only when `direct` allows it. True
    /// when it went straight to the session (so a request that follows may too).
    async fn route_on(
        &self,
        project: &ProjectKey,
        session: &str,
        msg: SessionMsg,
        direct: bool,
    ) -> bool {
        let live = match self.live_floor(project).await {
            Ok(f) => f,
            Err(e) => {
                msg.refuse(e);
                return false;
            }
        };
        let msg = if direct {
            match live.sessions.send(session, msg) {
                Ok(()) => return true,
                Err(msg) => msg,
            }
        } else {
            msg
        };
        let Err(MessagingErr::SendErr(FloorMsg::Session(name, msg))) =
            live.floor.cast(FloorMsg::Session(session.to_owned(), msg))
        else {
            return false;
        };
        let floor = match self.open_floor(project).await {
            Ok(f) => f.floor,
            Err(e) => {
                msg.refuse(e);
                return false;
            }
        };
        if let Err(MessagingErr::SendErr(FloorMsg::Session(_, msg))) =
            floor.cast(FloorMsg::Session(name, msg))
        {
            msg.refuse(FloorError::Unavailable);
        }
        false
    }

    /// Posts several events to one session, in order, as one group-committed stream: all
    /// are handed to the session before any answer is awaited. Each gets its own outcome;
    /// those the session did not take answer `Unavailable`, and the caller resends them, in
    /// order, with the same ids. [`FloorError::NoSession`]: the session does not exist.
    pub(crate) async fn post_many(
        &self,
        project: &ProjectKey,
        name: &str,
        caller: &Caller,
        items: Vec<Incoming>,
    ) -> Result<Vec<Result<Posted, FloorError>>, FloorError> {
        if items.is_empty() {
            // Nothing to hand over, but the answer still says whether the session exists.
            return match self.inner.store.get_session(project, name).await {
                Ok(Some(_)) => Ok(Vec::new()),
                Ok(None) => Err(FloorError::NoSession),
                Err(e) => Err(FloorError::Store(Arc::new(e))),
            };
        }
        let mut pending = Vec::with_capacity(items.len());
        // The items are handed over without waiting for each other's answers, so they must
        // take one path: once one goes through the floor (the session was not live, and the
        // floor starts it), the rest follow it there. Sent straight to the session as soon
        // as it is live, they would overtake the ones still queued at the floor.
        let mut direct = true;
        for item in items {
            let (tx, rx) = ractor::concurrency::oneshot();
            let msg = SessionMsg::Post(Box::new(item), caller.clone(), tx.into());
            direct = self.route_on(project, name, msg, direct).await;
            pending.push(rx);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.unwrap_or(Err(FloorError::Unavailable)));
        }
        if matches!(out.first(), Some(Err(FloorError::NoSession))) {
            return Err(FloorError::NoSession);
        }
        Ok(out)
    }

    /// The events of a floor (or a session) from a cursor, then live: every event once,
    /// in `seq` order, whatever was committed before the call.
    pub async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<impl Stream<Item = Result<Arc<Committed>, StoreError>> + Send + 'static, StoreError>
    {
        let hub = self
            .inner
            .floors
            .hub(&self.inner.store, &spec.project)
            .await?;
        Ok(subscribe(hub, self.inner.store.clone(), spec))
    }

    /// Waits (at most `timeout`) until every event committed so far is indexed for search.
    /// Returns false on timeout; the search then runs on the index as it is.
    pub(crate) async fn sync_search(&self, timeout: Duration) -> bool {
        let Some(indexer) = self.inner.indexer.get() else {
            return false;
        };
        matches!(
            indexer.call(IndexerMsg::Sync, Some(timeout)).await,
            Ok(CallResult::Success(()))
        )
    }

    /// Stops every floor after it has committed what it accepted. Call it once the HTTP
    /// server has finished its in-flight requests.
    pub async fn shutdown(&self) {
        self.inner.cluster.close();
        let cell = self.inner.supervisor.get_cell();
        cell.drain_children_and_wait(Some(Duration::from_secs(30)))
            .await;
        // Already stopping is fine.
        let _ = self
            .inner
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }

    /// Makes a project's floor panic (supervision tests).
    #[cfg(feature = "fault-injection")]
    pub async fn crash_floor(&self, project: &ProjectKey) -> Result<(), FloorError> {
        let floor = self.floor(project).await?;
        floor
            .cast(FloorMsg::Crash)
            .map_err(|_| FloorError::Unavailable)
    }

    /// Makes a session actor panic (supervision tests).
    #[cfg(feature = "fault-injection")]
    pub async fn crash_session(&self, project: &ProjectKey, name: &str) -> Result<(), FloorError> {
        self.route(project, name, SessionMsg::Crash).await;
        Ok(())
    }

    /// What a session's actor holds (started if needed), so a test can compare it with
    /// the store.
    #[cfg(feature = "fault-injection")]
    pub async fn session_seat(
        &self,
        project: &ProjectKey,
        name: &str,
    ) -> Option<crate::session::Seat> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.route(project, name, SessionMsg::Seat(tx.into())).await;
        rx.await.ok()
    }

    /// The actor ids of a project's floor and of one of its sessions, if running (so a
    /// test can tell that a restart happened).
    #[cfg(feature = "fault-injection")]
    pub async fn actor_ids(
        &self,
        project: Uuid,
        session: &str,
    ) -> (Option<ractor::ActorId>, Option<ractor::ActorId>) {
        let Some(LiveFloor { floor, .. }) = self.inner.floors.get(project) else {
            return (None, None);
        };
        let session = floor
            .call(|r| FloorMsg::SessionId(session.to_owned(), r), None)
            .await
            .ok()
            .and_then(|r| match r {
                CallResult::Success(id) => id,
                _ => None,
            });
        (Some(floor.get_id()), session)
    }
}

/// Most events of one notice whose relay is traced: a node that was far behind reads the
/// rest, untraced.
const RELAY_TRACED: i64 = 1000;

impl Inner {
    /// When this node exports traces: a `floor.relay` span for each event another node
    /// committed on `project` after `after` through `through`, which this node's
    /// subscribers read now. The contexts are read in a task of their own, so hearing the
    /// next notice never waits for them.
    fn trace_relay(&self, project: Uuid, after: i64, through: i64, subscribers: usize) {
        if !polaris_telemetry::enabled() {
            return;
        }
        let (store, node) = (self.store.clone(), self.cluster.node());
        tokio::spawn(async move {
            match store
                .trace_contexts(project, after, through, RELAY_TRACED)
                .await
            {
                Ok(rows) => {
                    for (seq, tp) in rows {
                        let _relay = crate::hub::relay_span(
                            project,
                            seq,
                            Some(&tp),
                            node,
                            subscribers,
                            "notice",
                        );
                    }
                }
                Err(e) => tracing::debug!(error = %e, %project, "relayed events' traces not read"),
            }
        });
    }
}

impl Hear for Inner {
    async fn hear(self: Arc<Self>, notice: Notice) {
        match notice {
            Notice::Released { org, name } => self.leases.wake(org.into(), name),
            Notice::Directory { .. } => self.roster.bump(),
            Notice::Appended { heads, at } => {
                if at > 0 {
                    let late = chrono::Utc::now().timestamp_millis() - at;
                    metrics::histogram!("polaris_relay_lag_seconds")
                        .record(late.max(0) as f64 / 1000.0);
                }
                for (project, seq) in heads {
                    if let Some(hub) = self.floors.live_hub(project) {
                        // How many events this node learns of at once: how far behind
                        // its subscribers were.
                        let behind = hub.heard(seq);
                        if behind > 0 {
                            metrics::histogram!("polaris_relay_lag_events").record(behind as f64);
                            self.trace_relay(project, seq - behind, seq, hub.subscribers());
                        }
                    }
                }
            }
            Notice::CatchUp => {
                // Listening (again), or the periodic check: what was committed elsewhere
                // meanwhile may not have been heard.
                for project in self.floors.hub_ids() {
                    match self.store.last_seq(project).await {
                        Ok(seq) => {
                            if let Some(hub) = self.floors.live_hub(project) {
                                let behind = hub.heard(seq);
                                if behind > 0 {
                                    self.trace_relay(project, seq - behind, seq, hub.subscribers());
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, %project, "floor head not read"),
                    }
                }
            }
            Notice::Project {
                org,
                name,
                id,
                renamed,
            } => {
                let runtime = Runtime { inner: self };
                runtime
                    .forget_project(&org.into(), &name, id, renamed)
                    .await;
            }
        }
    }
}
