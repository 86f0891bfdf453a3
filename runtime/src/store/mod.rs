//! The store: every durable fact of the floor service, on SQLite or PostgreSQL.
//!
//! [`Store`] is one type with two backends behind it. The SQL differs (types, locking,
//! full-text search) but the contract does not, and the integration tests run every case
//! on both. What callers may rely on:
//!
//! - [`Store::append`] gives each new event the next `seq` of its project inside the
//!   transaction that inserts it, so commit order is `seq` order and `seq` has no gaps,
//!   whatever the number of writers or nodes.
//! - An event id that is already stored is never written twice: the stored event comes back
//!   with `created: false`.
//! - A batch is all or nothing at the transaction level; a single item that cannot be
//!   written (an id used by another project, a driver changed under us) is rejected
//!   alone, without taking the batch down.
//! - Every query is scoped by org or by a project id that was resolved within an org.
//! - Search lags the commit: [`Store::index_search`] indexes committed events in batches,
//!   and the indexer actor runs it (searches ask it to catch up first).

mod postgres;
mod sqlite;
mod text;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use polaris_config::DatabaseUrl;
use polaris_registry::ParticipantId;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::protocol::{Annotation, Event, Member, Project, Session, Source, Visibility};

pub use text::{search_text, snippet};

/// A store failure the caller cannot fix by changing its request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (connection lost, disk full, …).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique name is taken (project or session name).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The row to change does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A stored value does not parse (written by something other than this service).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Could not create the data directory.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The project an event belongs to, as the append and read paths need it.
#[derive(Debug, Clone)]
pub struct ProjectKey {
    /// Project id.
    pub id: Uuid,
    /// Owning org.
    pub org: Arc<str>,
    /// Current name (shown in every Event JSON).
    pub name: Arc<str>,
}

/// An event ready to be committed: stamped, validated, with its search text.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Idempotency key.
    pub id: Uuid,
    /// Session name, `None` for floor-wide events.
    pub session: Option<String>,
    /// Writer's clock (milliseconds).
    pub timestamp: DateTime<Utc>,
    /// Arrival (milliseconds).
    pub received_at: DateTime<Utc>,
    /// Source.
    pub source: Source,
    /// Kind.
    pub kind: String,
    /// Sender.
    pub sender: ParticipantId,
    /// Payload JSON.
    pub payload: Box<RawValue>,
}

impl NewEvent {
    fn counts_as_prompt(&self) -> bool {
        self.source == Source::Hook && self.kind == "UserPromptSubmit"
    }

    fn into_event(self, project: &ProjectKey, seq: i64) -> Event {
        Event {
            id: self.id,
            project: project.name.to_string(),
            session: self.session,
            seq,
            timestamp: self.timestamp,
            received_at: self.received_at,
            source: self.source,
            kind: self.kind,
            sender: self.sender,
            payload: self.payload,
        }
    }
}

/// A change to the session applied in the same transaction as its event, so the state
/// and the record of the change can never disagree.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Compare-and-set of the driver seat: applies only if the driver is `expected`.
    Driver {
        /// What the caller saw.
        expected: Option<ParticipantId>,
        /// What it becomes.
        new: Option<ParticipantId>,
    },
    /// Sets the label.
    Label(Option<String>),
    /// Sets the agent identity.
    Agent(Option<ParticipantId>),
    /// A named agent joins the floor; refused if it is on it already (so two nodes
    /// syncing at once record one join).
    Join {
        /// The agent.
        agent: ParticipantId,
        /// Why.
        reason: JoinReason,
        /// The matching tag, or who invited it.
        detail: Option<String>,
    },
    /// A named agent leaves the floor; refused if it is not on it.
    Leave {
        /// The agent.
        agent: ParticipantId,
        /// Why.
        why: LeaveReason,
    },
}

/// Why an agent is on a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinReason {
    /// One of its tags is one of the project's.
    Tag,
    /// Someone invited it.
    Invite,
}

impl JoinReason {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinReason::Tag => "tag",
            JoinReason::Invite => "invite",
        }
    }
}

/// Why an agent leaves a floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// The tag it joined by is gone (from the project or the agent).
    TagLost,
    /// Someone removed it; it stays off even while its tags match.
    Removed(Option<String>),
    /// The agent no longer exists.
    Gone,
}

/// One agent's place on a floor.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The agent.
    pub agent: String,
    /// `tag` or `invite`.
    pub reason: String,
    /// The tag, or who invited or removed it.
    pub detail: Option<String>,
    /// Removed by hand: off the floor.
    pub removed: bool,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// One item of an append batch.
#[derive(Debug, Clone)]
pub struct Append {
    /// The event.
    pub event: NewEvent,
    /// A state change that must commit with it (or reject it).
    pub effect: Option<Effect>,
}

/// A committed (or already stored) event.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The stored event.
    pub event: Event,
    /// False when the id was already stored: nothing was written.
    pub created: bool,
}

/// Why one item of a batch was not written. The rest of the batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The id is stored already, in another project or org.
    #[error("event id {0} is already used by another event")]
    IdTaken(Uuid),
    /// The effect's precondition failed (the driver changed since it was read).
    #[error("{0}")]
    Conflict(String),
    /// The session does not exist.
    #[error("session {0:?} not found")]
    NoSession(String),
}

/// A user row (for `/team`).
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Participant id.
    pub participant_id: String,
    /// Display name.
    pub name: String,
    /// E-mail, when known.
    pub email: Option<String>,
}

/// A full-text query with the original's filters (reference 3.9).
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Web-search syntax: words, "quoted phrases", `or`, `-word`.
    pub q: String,
    /// Restrict to these projects (already ACL-filtered by the caller).
    pub projects: Vec<Uuid>,
    /// Session name.
    pub session: Option<String>,
    /// Exact sender.
    pub sender: Option<String>,
    /// Exact source.
    pub source: Option<String>,
    /// The event carries a `tag` annotation with this value.
    pub tag: Option<String>,
    /// 1..=100.
    pub limit: i64,
}

/// Which database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The store handle: cheap to clone, shared by every actor and request.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite (one writer connection, several readers).
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?)),
            DatabaseUrl::Postgres(url) => Ok(Store::Postgres(
                postgres::PgStore::open(url.expose()).await?,
            )),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Closes every connection (after the floors have committed).
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// Creates the org if it does not exist.
    pub async fn ensure_org(&self, org: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.ensure_org(org).await)
    }

    /// Records that `who` acted in `org` (creates the org and the user row if needed).
    pub async fn touch_user(
        &self,
        org: &str,
        who: &ParticipantId,
        name: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.touch_user(org, who, name).await)
    }

    /// Users of an org, by name.
    pub async fn list_users(&self, org: &str) -> Result<Vec<UserRow>, StoreError> {
        dispatch!(self, s => s.list_users(org).await)
    }

    /// Creates a project; `Conflict` if the name is taken in the org.
    pub async fn create_project(
        &self,
        org: &str,
        name: &str,
        tags: &[String],
    ) -> Result<Project, StoreError> {
        dispatch!(self, s => s.create_project(org, name, tags).await)
    }

    /// A project by name within an org.
    pub async fn project_by_name(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<Project>, StoreError> {
        dispatch!(self, s => s.project_by_name(org, name).await)
    }

    /// Every project of an org, oldest first.
    pub async fn list_projects(&self, org: &str) -> Result<Vec<Project>, StoreError> {
        dispatch!(self, s => s.list_projects(org).await)
    }

    /// Renames a project; `Conflict` if the new name is taken.
    pub async fn rename_project(
        &self,
        org: &str,
        id: Uuid,
        new_name: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.rename_project(org, id, new_name).await)
    }

    /// Replaces a project's tags.
    pub async fn set_tags(&self, id: Uuid, tags: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_tags(id, tags).await)
    }

    /// Every org id.
    pub async fn list_orgs(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.list_orgs().await)
    }

    /// Agents defined through the API in an org (JSON specs, as stored).
    pub async fn table_agents(&self, org: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        dispatch!(self, s => s.table_agents(org).await)
    }

    /// Creates (`replace == false`: `Conflict` if it exists) or replaces an agent of the
    /// table.
    pub async fn put_agent(
        &self,
        org: &str,
        id: &str,
        spec: &serde_json::Value,
        replace: bool,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_agent(org, id, spec, replace).await)
    }

    /// Deletes an agent of the table; false if there was none.
    pub async fn delete_agent(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_agent(org, id).await)
    }

    /// The membership rows of a floor (removed ones included).
    pub async fn floor_memberships(&self, project: Uuid) -> Result<Vec<Membership>, StoreError> {
        dispatch!(self, s => s.floor_memberships(project).await)
    }

    /// Every floor each agent of an org is on: `(project, agent id)`.
    pub async fn org_memberships(&self, org: &str) -> Result<Vec<(Project, String)>, StoreError> {
        dispatch!(self, s => s.org_memberships(org).await)
    }

    /// The seq of the newest `join` event of `agent` on a floor (where an agent that has
    /// no cursor yet starts reading).
    pub async fn join_seq(&self, project: Uuid, agent: &str) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.join_seq(project, agent).await)
    }

    /// An agent's read position on a floor.
    pub async fn agent_cursor(
        &self,
        org: &str,
        agent: &str,
        project: Uuid,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.agent_cursor(org, agent, project).await)
    }

    /// Saves read positions (never moving one backwards).
    pub async fn save_agent_cursors(
        &self,
        org: &str,
        agent: &str,
        cursors: &[(Uuid, i64)],
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.save_agent_cursors(org, agent, cursors).await)
    }

    /// Sets who may see a project.
    pub async fn set_visibility(&self, id: Uuid, v: Visibility) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_visibility(id, v).await)
    }

    /// Adds a member or replaces its role.
    pub async fn add_member(
        &self,
        project: Uuid,
        who: &str,
        role: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.add_member(project, who, role).await)
    }

    /// Removes a member (no error if absent).
    pub async fn remove_member(&self, project: Uuid, who: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.remove_member(project, who).await)
    }

    /// Members, by participant id.
    pub async fn list_members(&self, project: Uuid) -> Result<Vec<Member>, StoreError> {
        dispatch!(self, s => s.list_members(project).await)
    }

    /// Creates a session; `Conflict` if the name is taken in the project.
    pub async fn create_session(
        &self,
        project: &ProjectKey,
        name: &str,
        driver: Option<&ParticipantId>,
        agent: Option<&ParticipantId>,
    ) -> Result<Session, StoreError> {
        dispatch!(self, s => s.create_session(project, name, driver, agent).await)
    }

    /// A session of a project.
    pub async fn get_session(
        &self,
        project: &ProjectKey,
        name: &str,
    ) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.get_session(project, name).await)
    }

    /// Every session of a project, oldest first.
    pub async fn list_sessions(&self, project: &ProjectKey) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.list_sessions(project).await)
    }

    /// Commits a batch in one transaction (see the module docs for the guarantees). The
    /// result has one entry per item, in order.
    pub async fn append(
        &self,
        project: &ProjectKey,
        batch: Vec<Append>,
    ) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
        dispatch!(self, s => s.append(project, batch).await)
    }

    /// Indexes up to `limit` not-yet-indexed events of a project for search, in one
    /// transaction with the project's index watermark. Returns how many it indexed (fewer
    /// than `limit`: the project is caught up).
    pub async fn index_search(&self, project: Uuid, limit: i64) -> Result<usize, StoreError> {
        dispatch!(self, s => s.index_search(project, limit).await)
    }

    /// Projects with committed events not yet indexed for search (after a crash).
    pub async fn search_backlog(&self) -> Result<Vec<Uuid>, StoreError> {
        dispatch!(self, s => s.search_backlog().await)
    }

    /// The newest `seq` of a project (0 when it has no events).
    pub async fn last_seq(&self, project: Uuid) -> Result<i64, StoreError> {
        dispatch!(self, s => s.last_seq(project).await)
    }

    /// One event by id, within an org.
    pub async fn event_by_id(&self, org: &str, id: Uuid) -> Result<Option<Event>, StoreError> {
        dispatch!(self, s => s.event_by_id(org, id).await)
    }

    /// Events with `seq > after`, oldest first, optionally of one session.
    pub async fn events_after(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.events_after(project, session, after, limit).await)
    }

    /// Events with `seq < before` (or the newest), newest first.
    pub async fn events_before(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.events_before(project, session, before, limit).await)
    }

    /// Every event (optionally of one session, optionally with `timestamp > since`),
    /// oldest first. Unbounded, as the original's `/messages`.
    pub async fn events_since(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>, StoreError> {
        dispatch!(self, s => s.events_since(project, session, since).await)
    }

    /// The `seq` and session of an event of this project.
    pub async fn locate_event(
        &self,
        project: Uuid,
        id: Uuid,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        dispatch!(self, s => s.locate_event(project, id).await)
    }

    /// Adds an annotation.
    pub async fn add_annotation(
        &self,
        project: &ProjectKey,
        session: &str,
        event_id: Option<Uuid>,
        who: Option<&str>,
        kind: &str,
        value: Option<&str>,
    ) -> Result<Uuid, StoreError> {
        dispatch!(self, s => s.add_annotation(project, session, event_id, who, kind, value).await)
    }

    /// Annotations of a session, oldest first.
    pub async fn list_annotations(
        &self,
        project: &ProjectKey,
        session: &str,
    ) -> Result<Vec<Annotation>, StoreError> {
        dispatch!(self, s => s.list_annotations(project, session).await)
    }

    /// The project an annotation belongs to, within an org.
    pub async fn annotation_project(
        &self,
        org: &str,
        id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        dispatch!(self, s => s.annotation_project(org, id).await)
    }

    /// Deletes an annotation within an org.
    pub async fn delete_annotation(&self, org: &str, id: Uuid) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_annotation(org, id).await)
    }

    /// Decisions in the given projects, newest first.
    pub async fn decisions(
        &self,
        org: &str,
        projects: &[Uuid],
        limit: i64,
    ) -> Result<Vec<Annotation>, StoreError> {
        dispatch!(self, s => s.decisions(org, projects, limit).await)
    }

    /// Full-text search, best match first, with a snippet per event.
    pub async fn search(
        &self,
        org: &str,
        q: &SearchQuery,
    ) -> Result<Vec<(Event, String)>, StoreError> {
        dispatch!(self, s => s.search(org, q).await)
    }
}

/// Why an effect's precondition failed, in words for the caller.
fn refusal(effect: &Effect) -> Rejected {
    Rejected::Conflict(match effect {
        Effect::Driver { .. } => {
            "the driver seat changed meanwhile; read the session and try again".into()
        }
        Effect::Label(_) | Effect::Agent(_) => "session not found".into(),
        Effect::Join { agent, .. } => format!("{agent} is already on this floor"),
        Effect::Leave { agent, .. } => format!("{agent} is not on this floor"),
    })
}

fn parse_sender(s: &str) -> Result<ParticipantId, StoreError> {
    ParticipantId::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_source(s: &str) -> Result<Source, StoreError> {
    Source::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown source {s:?}")))
}

fn parse_opt_participant(s: Option<String>) -> Result<Option<ParticipantId>, StoreError> {
    s.map(|s| parse_sender(&s)).transpose()
}

fn parse_visibility(s: &str) -> Visibility {
    if s == "members" {
        Visibility::Members
    } else {
        Visibility::Org
    }
}

fn raw_payload(s: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(s).map_err(|e| StoreError::Corrupt(format!("payload: {e}")))
}
