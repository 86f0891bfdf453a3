//! The runtime handle: the world every API handler, stream and agent is handed. It owns
//! the store, the supervisor and the lookup tables (project → floor, (project, session) →
//! session, project → hub), and is the one way to post to a session or subscribe to a
//! floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::Stream;
use ractor::rpc::CallResult;
use ractor::{Actor, MessagingErr};
use uuid::Uuid;

use crate::auth::Caller;
use crate::directory::Directory;
use crate::floor::{FloorError, FloorMsg, FloorRef, Posted};
use crate::hub::{Committed, FloorHub};
use crate::indexer::{IndexerMsg, IndexerSlot};
use crate::protocol::Project;
use crate::session::{Reply, SessionMsg, SessionRef};
use crate::store::{ProjectKey, Store, StoreError};
use crate::subscription::{SubscriptionSpec, subscribe};
use crate::supervisor::{Supervisor, SupervisorMsg, SupervisorRef};
use crate::validate::Incoming;

/// Attempts at reaching a session whose actor is stopping or restarting.
const SESSION_ATTEMPTS: usize = 3;

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

/// A live session actor and when a request last asked for it.
pub(crate) struct SessionEntry {
    pub(crate) actor: SessionRef,
    born: Instant,
    last_used_ms: AtomicU64,
}

impl SessionEntry {
    pub(crate) fn new(actor: SessionRef) -> SessionEntry {
        SessionEntry {
            actor,
            born: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_used_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        let last = self.born + Duration::from_millis(self.last_used_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// What actors share.
pub struct Shared {
    pub(crate) store: Store,
    pub(crate) settings: Settings,
    pub(crate) floors: DashMap<Uuid, FloorRef>,
    pub(crate) hubs: DashMap<Uuid, Arc<FloorHub>>,
    pub(crate) sessions: DashMap<(Uuid, String), SessionEntry>,
    pub(crate) indexer: IndexerSlot,
    pub(crate) directory: Directory,
}

impl Shared {
    /// The hub of a project, created on first use from the store's newest `seq`.
    pub(crate) async fn hub(&self, project: &ProjectKey) -> Result<Arc<FloorHub>, StoreError> {
        if let Some(h) = self.hubs.get(&project.id) {
            return Ok(h.clone());
        }
        let last = self.store.last_seq(project.id).await?;
        Ok(self
            .hubs
            .entry(project.id)
            .or_insert_with(|| Arc::new(FloorHub::new(last, self.settings.subscriber_buffer)))
            .clone())
    }
}

/// The runtime: cheap to clone, shared by everything.
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    supervisor: SupervisorRef,
    projects: Arc<DashMap<(Arc<str>, String), Project>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("floors", &self.shared.floors.len())
            .field("sessions", &self.shared.sessions.len())
            .finish()
    }
}

impl Runtime {
    /// Starts the supervisor over `store`.
    pub async fn start(store: Store, settings: Settings) -> Result<Runtime, ractor::SpawnErr> {
        let shared = Arc::new(Shared {
            store,
            settings,
            floors: DashMap::new(),
            hubs: DashMap::new(),
            sessions: DashMap::new(),
            indexer: IndexerSlot::default(),
            directory: Directory::new(),
        });
        let (supervisor, _) = Actor::spawn(None, Supervisor, shared.clone()).await?;
        Ok(Runtime {
            shared,
            supervisor,
            projects: Arc::new(DashMap::new()),
        })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Live floor and session actors (for `/metrics` and tests).
    pub fn live_actors(&self) -> (usize, usize) {
        (self.shared.floors.len(), self.shared.sessions.len())
    }

    /// A project by name within an org, from a cache kept in step with renames and
    /// visibility changes made through this runtime.
    pub async fn project(&self, org: &Arc<str>, name: &str) -> Result<Option<Project>, StoreError> {
        let key = (org.clone(), name.to_owned());
        if let Some(p) = self.projects.get(&key) {
            return Ok(Some(p.clone()));
        }
        let found = self.shared.store.project_by_name(org, name).await?;
        if let Some(p) = &found {
            self.projects.insert(key, p.clone());
        }
        Ok(found)
    }

    /// Forgets a cached project after its name or settings changed. A rename also drains
    /// the floor, which starts again under the new name on next use.
    pub async fn project_changed(&self, org: &Arc<str>, old_name: &str, id: Uuid, renamed: bool) {
        self.projects.remove(&(org.clone(), old_name.to_owned()));
        if renamed {
            // Waits until no new request can reach the old floor. A supervisor that is
            // stopping (shutdown) has nothing left to close.
            let _ = self
                .supervisor
                .call(|r| SupervisorMsg::CloseFloor(id, r), None)
                .await;
        }
    }

    /// The floor of a project, started if needed.
    pub async fn floor(&self, project: &ProjectKey) -> Result<FloorRef, FloorError> {
        if let Some(f) = self.shared.floors.get(&project.id) {
            return Ok(f.clone());
        }
        match self
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

    /// The live hub of a project.
    pub async fn hub(&self, project: &ProjectKey) -> Result<Arc<FloorHub>, StoreError> {
        self.shared.hub(project).await
    }

    /// The actor of a session, started if needed; `None` if the session does not exist.
    pub async fn session(
        &self,
        project: &ProjectKey,
        name: &str,
    ) -> Result<Option<SessionRef>, FloorError> {
        let key = (project.id, name.to_owned());
        if let Some(e) = self.shared.sessions.get(&key) {
            e.touch();
            return Ok(Some(e.actor.clone()));
        }
        let floor = self.floor(project).await?;
        match floor
            .call(|r| FloorMsg::OpenSession(name.to_owned(), r), None)
            .await
        {
            Ok(CallResult::Success(Ok(s))) => {
                if let Some(e) = self.shared.sessions.get(&key) {
                    e.touch();
                }
                Ok(s)
            }
            Ok(CallResult::Success(Err(e))) => Err(FloorError::Store(e)),
            _ => Err(FloorError::Unavailable),
        }
    }

    /// Sends a request to a session and waits for the floor's answer. A session (or
    /// floor) that stops or restarts under the request is reopened and the request sent
    /// again: every request is idempotent (events by id, driver changes by
    /// compare-and-set). `Ok(None)`: the session does not exist.
    pub async fn ask_session(
        &self,
        project: &ProjectKey,
        name: &str,
        msg: impl Fn(Reply) -> SessionMsg,
    ) -> Result<Option<Posted>, FloorError> {
        for _ in 0..SESSION_ATTEMPTS {
            let Some(session) = self.session(project, name).await? else {
                return Ok(None);
            };
            match session.call(&msg, None).await {
                Ok(CallResult::Success(Ok(posted))) => return Ok(Some(posted)),
                Ok(CallResult::Success(Err(FloorError::Unavailable))) => {}
                Ok(CallResult::Success(Err(e))) => return Err(e),
                // The actor stopped before answering, or was gone when we sent.
                Ok(_) | Err(MessagingErr::SendErr(_)) | Err(_) => {}
            }
            self.shared
                .sessions
                .remove_if(&(project.id, name.to_owned()), |_, e| {
                    e.actor.get_id() == session.get_id()
                });
        }
        Err(FloorError::Unavailable)
    }

    /// Posts several events to one session, in order, as one group-committed stream: all
    /// are handed to the session before any answer is awaited. Each gets its own outcome.
    /// If the session or floor stops mid-way, the events it did not take answer
    /// `Unavailable` and the caller resends them, in order, with the same ids.
    /// `Ok(None)`: the session does not exist.
    pub async fn post_many(
        &self,
        project: &ProjectKey,
        name: &str,
        caller: &Caller,
        items: Vec<Incoming>,
    ) -> Result<Option<Vec<Result<Posted, FloorError>>>, FloorError> {
        let Some(session) = self.session(project, name).await? else {
            return Ok(None);
        };
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            let (tx, rx) = ractor::concurrency::oneshot();
            let sent = session.cast(SessionMsg::Post(Box::new(item), caller.clone(), tx.into()));
            pending.push(sent.ok().map(|()| rx));
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(match rx {
                Some(rx) => rx.await.unwrap_or(Err(FloorError::Unavailable)),
                None => Err(FloorError::Unavailable),
            });
        }
        Ok(Some(out))
    }

    /// The events of a floor (or a session) from a cursor, then live.
    pub async fn subscribe(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<impl Stream<Item = Result<Arc<Committed>, StoreError>> + Send + 'static, StoreError>
    {
        let hub = self.hub(&spec.project).await?;
        Ok(subscribe(hub, self.shared.store.clone(), spec))
    }

    /// Waits (at most `timeout`) until every event committed so far is indexed for search.
    /// Returns false on timeout; the search then runs on the index as it is.
    pub async fn sync_search(&self, timeout: Duration) -> bool {
        let Some(indexer) = self.shared.indexer.get() else {
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
        let cell = self.supervisor.get_cell();
        cell.drain_children_and_wait(Some(Duration::from_secs(30)))
            .await;
        // Already stopping is fine.
        let _ = self
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
        let session = self
            .session(project, name)
            .await?
            .ok_or(FloorError::Unavailable)?;
        session
            .cast(SessionMsg::Crash)
            .map_err(|_| FloorError::Unavailable)
    }

    /// The actor ids of a project's floor and of one of its sessions, if running (so a
    /// test can tell that a restart happened).
    #[cfg(feature = "fault-injection")]
    pub fn actor_ids(
        &self,
        project: Uuid,
        session: &str,
    ) -> (Option<ractor::ActorId>, Option<ractor::ActorId>) {
        (
            self.shared.floors.get(&project).map(|f| f.get_id()),
            self.shared
                .sessions
                .get(&(project, session.to_owned()))
                .map(|e| e.actor.get_id()),
        )
    }
}
