//! The PostgreSQL backend: the production store and the way to run several nodes.
//!
//! Appends lock the project's row (`SELECT … FOR UPDATE`) before reading `last_seq`, so
//! writers on any number of nodes commit a project's events in `seq` order; rows go in
//! with one `INSERT … SELECT FROM UNNEST(…)` per batch whatever its size, which keeps the
//! statement prepared once and the round trips per batch constant.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{
    SearchQuery, StoreError, parse_sender, parse_source, raw_payload, search_text, snippet,
};
use crate::protocol::Event;

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

fn event_from_row(row: &PgRow, project: &str) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        project: project.to_owned(),
        session: row.try_get("session")?,
        seq: row.try_get("seq")?,
        timestamp: row.try_get("timestamp")?,
        received_at: row.try_get("received_at")?,
        source: parse_source(row.try_get("source")?)?,
        kind: row.try_get("kind")?,
        sender: parse_sender(row.try_get("sender")?)?,
        payload: raw_payload(row.try_get("payload")?)?,
    })
}

impl PgStore {
    pub(super) async fn open(url: &str) -> Result<PgStore, StoreError> {
        // Custom plans always: sqlx prepares every statement, and PostgreSQL switches a
        // prepared statement to a generic plan after five runs. A generic plan made while
        // `events` was small is a sequential scan, and it stays one as the table grows —
        // the append's id check then scanned the whole table (measured: 3x slower ingest).
        let opts = PgConnectOptions::from_str(url)?
            .application_name("polaris")
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        // sqlx serialises concurrent migrators with an advisory lock, so several nodes
        // may start at once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Locks the project's watermark row (not the project row, which appends lock), so
    /// indexing never holds back the floor; tsvectors are computed here, in bulk.
    pub(super) async fn index_search(
        &self,
        project: Uuid,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO search_progress (project_id, indexed_seq) VALUES ($1, 0) ON CONFLICT (project_id) DO NOTHING",
        )
        .bind(project)
        .execute(&mut *tx)
        .await?;
        let done: i64 = sqlx::query_scalar(
            "SELECT indexed_seq FROM search_progress WHERE project_id = $1 FOR UPDATE",
        )
        .bind(project)
        .fetch_one(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT id, seq, payload::text AS payload FROM events WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(project)
        .bind(done)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            return Ok(0);
        };
        let last_seq: i64 = last.try_get("seq")?;
        let mut ids: Vec<Uuid> = Vec::with_capacity(rows.len());
        let mut bodies: Vec<String> = Vec::with_capacity(rows.len());
        for r in &rows {
            let payload: serde_json::Value =
                serde_json::from_str(r.try_get("payload")?).unwrap_or_default();
            let body = search_text(&payload);
            if !body.is_empty() {
                ids.push(r.try_get("id")?);
                bodies.push(body);
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "INSERT INTO event_search (event_id, project_id, search)
                 SELECT u.id, $1, to_tsvector('english', u.body) FROM UNNEST($2::uuid[], $3::text[]) AS u(id, body)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(project)
            .bind(&ids)
            .bind(&bodies)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE search_progress SET indexed_seq = $2 WHERE project_id = $1")
            .bind(project)
            .bind(last_seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.len())
    }

    pub(super) async fn search_backlog(&self) -> Result<Vec<Uuid>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT p.id FROM projects p LEFT JOIN search_progress s ON s.project_id = p.id
             WHERE p.last_seq > coalesce(s.indexed_seq, 0)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub(super) async fn search(
        &self,
        org: &str,
        sq: &SearchQuery,
    ) -> Result<Vec<(Event, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.seq, e.session, e.timestamp, e.received_at, e.source, e.kind, e.sender,
                    e.payload::text AS payload, p.name AS project_name
             FROM event_search s JOIN events e ON e.id = s.event_id JOIN projects p ON p.id = e.project_id,
                  websearch_to_tsquery('english', $1) AS q
             WHERE s.search @@ q AND e.org_id = $2 AND s.project_id = ANY($3)
               AND ($4::text IS NULL OR e.session = $4)
               AND ($5::text IS NULL OR e.sender = $5)
               AND ($6::text IS NULL OR e.source = $6)
               AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM annotations a WHERE a.org_id = e.org_id
                     AND a.event_id = e.id AND a.kind = 'tag' AND a.value = $7))
             ORDER BY ts_rank(s.search, q) DESC, e.timestamp DESC LIMIT $8",
        )
        .bind(&sq.q)
        .bind(org)
        .bind(&sq.projects)
        .bind(sq.session.as_deref())
        .bind(sq.sender.as_deref())
        .bind(sq.source.as_deref())
        .bind(sq.tag.as_deref())
        .bind(sq.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.try_get("project_name")?;
                let event = event_from_row(r, &name)?;
                let snip = snippet(&search_text(&event.payload_value()), &sq.q);
                Ok((event, snip))
            })
            .collect()
    }
}
