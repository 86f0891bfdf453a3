//! Annotations on sessions and events (tags, decisions, notes) and the decisions feed.

use chrono::Utc;
use uuid::Uuid;

use super::column::{Id, List, Time};
use super::{ProjectKey, Sql, Store, StoreError};
use crate::protocol::{Annotation, to_ms};

/// An `annotations` row with its project's name (`a.*, p.name AS project_name`).
#[derive(sqlx::FromRow)]
struct AnnotationRow {
    id: Id,
    event_id: Option<Id>,
    project_name: String,
    session: String,
    participant_id: Option<String>,
    kind: String,
    value: Option<String>,
    created_at: Time,
}

impl From<AnnotationRow> for Annotation {
    fn from(r: AnnotationRow) -> Annotation {
        Annotation {
            id: r.id.0,
            event_id: r.event_id.map(|e| e.0),
            project: r.project_name,
            session: r.session,
            participant_id: r.participant_id,
            kind: r.kind,
            value: r.value,
            created_at: r.created_at.0,
        }
    }
}

// Annotations made in the same millisecond come in insertion order on SQLite (its rowid);
// PostgreSQL has no such column and orders them by id, which is time-ordered (v7).
const LIST: Sql = dialects!(
    "SELECT a.*, p.name AS project_name FROM annotations a JOIN projects p ON p.id = a.project_id
     WHERE a.project_id = $1 AND a.session = $2 ORDER BY a.created_at, "
    { sqlite: "a.rowid", postgres: "a.id" }
);

const DECISIONS: Sql = dialects!(
    "SELECT a.*, p.name AS project_name FROM annotations a JOIN projects p ON p.id = a.project_id
     WHERE a.kind = 'decision' AND a.org_id = $1 AND a.project_id "
    // One list parameter (see `List`), so the statement stays prepared whatever the count.
    { sqlite: "IN (SELECT value FROM json_each($2))", postgres: "= ANY($2)" }
    " ORDER BY a.created_at DESC, "
    { sqlite: "a.rowid", postgres: "a.id" }
    " DESC LIMIT $3"
);

impl Store {
    /// Adds an annotation.
    pub(crate) async fn add_annotation(
        &self,
        project: &ProjectKey,
        session: &str,
        event_id: Option<Uuid>,
        who: Option<&str>,
        kind: &str,
        value: Option<&str>,
    ) -> Result<Uuid, StoreError> {
        // Time-ordered, so annotations made in one millisecond list in the order they were made
        // on PostgreSQL too (it breaks `created_at` ties by id).
        let id = Uuid::now_v7();
        execute!(
            self,
            write,
            "INSERT INTO annotations (id, org_id, project_id, session, event_id, participant_id, kind, value, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            Id(id),
            &*project.org,
            Id(project.id),
            session,
            event_id.map(Id),
            who,
            kind,
            value,
            Time(to_ms(Utc::now())),
        )?;
        Ok(id)
    }

    /// Annotations of a session, oldest first.
    pub(crate) async fn list_annotations(
        &self,
        project: &ProjectKey,
        session: &str,
    ) -> Result<Vec<Annotation>, StoreError> {
        let rows: Vec<AnnotationRow> = fetch!(
            self,
            read,
            fetch_all,
            LIST.on(self.backend()),
            Id(project.id),
            session,
        )?;
        Ok(rows.into_iter().map(Annotation::from).collect())
    }

    /// The project an annotation belongs to, within an org.
    pub(crate) async fn annotation_project(
        &self,
        org: &str,
        id: Uuid,
    ) -> Result<Option<Uuid>, StoreError> {
        let project: Option<Id> = fetch!(
            self,
            read,
            scalar fetch_optional,
            "SELECT project_id FROM annotations WHERE id = $1 AND org_id = $2",
            Id(id),
            org,
        )?;
        Ok(project.map(|p| p.0))
    }

    /// Deletes an annotation within an org.
    pub(crate) async fn delete_annotation(&self, org: &str, id: Uuid) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "DELETE FROM annotations WHERE id = $1 AND org_id = $2",
            Id(id),
            org,
        )?;
        Ok(())
    }

    /// Decisions in the given projects, newest first.
    pub(crate) async fn decisions(
        &self,
        org: &str,
        projects: &[Uuid],
        limit: i64,
    ) -> Result<Vec<Annotation>, StoreError> {
        if projects.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<AnnotationRow> = fetch!(
            self,
            read,
            fetch_all,
            DECISIONS.on(self.backend()),
            org,
            List(projects.to_vec()),
            limit,
        )?;
        Ok(rows.into_iter().map(Annotation::from).collect())
    }
}
