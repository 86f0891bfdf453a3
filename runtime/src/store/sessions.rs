//! Sessions of a project: their rows, the counters the append keeps on them, and the
//! session effects (driver, label, agent) that commit with their events.

use chrono::Utc;
use polaris_registry::ParticipantId;
use uuid::Uuid;

use super::column::{Id, Participant, Time};
use super::{ProjectKey, Store, StoreError, Tx};
use crate::protocol::{Session, to_ms};

/// A `sessions` row (`SELECT *`).
#[derive(sqlx::FromRow)]
struct SessionRow {
    name: String,
    driver: Option<Participant>,
    agent: Option<Participant>,
    label: Option<String>,
    created_at: Time,
    prompt_count: i64,
    event_count: i64,
    last_activity_at: Option<Time>,
}

impl SessionRow {
    fn into_session(self, project: &str) -> Session {
        Session {
            name: self.name,
            project: project.to_owned(),
            driver: self.driver.map(|p| p.0),
            agent: self.agent.map(|p| p.0),
            label: self.label,
            created_at: self.created_at.0,
            prompt_count: self.prompt_count,
            event_count: self.event_count,
            last_activity: self.last_activity_at.map(|t| t.0),
        }
    }
}

impl Store {
    /// Creates a session; `Conflict` if the name is taken in the project.
    pub(crate) async fn create_session(
        &self,
        project: &ProjectKey,
        name: &str,
        driver: Option<&ParticipantId>,
        agent: Option<&ParticipantId>,
    ) -> Result<Session, StoreError> {
        let now = to_ms(Utc::now());
        let created = execute!(
            self,
            write,
            "INSERT INTO sessions (project_id, name, org_id, driver, agent, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id, name) DO NOTHING",
            Id(project.id),
            name,
            &*project.org,
            driver.map(ParticipantId::as_str),
            agent.map(ParticipantId::as_str),
            Time(now),
        )?;
        if created == 0 {
            return Err(StoreError::Conflict("session"));
        }
        Ok(Session {
            name: name.to_owned(),
            project: project.name.to_string(),
            driver: driver.cloned(),
            agent: agent.cloned(),
            label: None,
            created_at: now,
            prompt_count: 0,
            event_count: 0,
            last_activity: None,
        })
    }

    /// A session of a project.
    pub(crate) async fn get_session(
        &self,
        project: &ProjectKey,
        name: &str,
    ) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionRow> = fetch!(
            self,
            read,
            fetch_optional,
            "SELECT * FROM sessions WHERE project_id = $1 AND name = $2",
            Id(project.id),
            name,
        )?;
        Ok(row.map(|r| r.into_session(&project.name)))
    }

    /// Every session of a project, oldest first.
    pub(crate) async fn list_sessions(
        &self,
        project: &ProjectKey,
    ) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> = fetch!(
            self,
            read,
            fetch_all,
            "SELECT * FROM sessions WHERE project_id = $1 ORDER BY created_at, name",
            Id(project.id),
        )?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_session(&project.name))
            .collect())
    }
}

/// What a session effect sets: participant ids as text.
pub(super) enum SessionChange<'a> {
    /// The driver seat, only if it is still `expected`.
    Driver {
        expected: Option<&'a str>,
        new: Option<&'a str>,
    },
    Label(Option<&'a str>),
}

/// A session effect, inside the append transaction that records it: the rows it changed
/// (none: no such session, or the driver moved since the caller read it).
pub(super) async fn change_session(
    tx: &mut Tx<'_>,
    project: Uuid,
    session: &str,
    change: SessionChange<'_>,
) -> Result<u64, sqlx::Error> {
    match change {
        SessionChange::Driver { expected, new } => execute!(
            tx,
            tx,
            "UPDATE sessions SET driver = $1 WHERE project_id = $2 AND name = $3
               AND driver IS NOT DISTINCT FROM $4",
            new,
            Id(project),
            session,
            expected,
        ),
        SessionChange::Label(label) => execute!(
            tx,
            tx,
            "UPDATE sessions SET label = $1 WHERE project_id = $2 AND name = $3",
            label,
            Id(project),
            session,
        ),
    }
}
