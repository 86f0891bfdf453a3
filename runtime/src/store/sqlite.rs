//! The embedded SQLite backend.
//!
//! One writer connection and a small pool of readers over a WAL-mode file. Every write
//! goes through the single writer, so transactions never fight over SQLite's one write
//! lock (no `SQLITE_BUSY` under load) and the append path can read `max(rowid)` and the
//! project's `last_seq` without racing anyone. `synchronous = FULL`: an acknowledged event
//! survives a power cut, at one fsync per group commit.
//!
//! The full-text index is a second file (`<name>-search.db`) with its own writer, so
//! tokenising and merging FTS segments — as costly as the append itself — runs beside
//! the appends instead of queueing behind the same lock. It is derived data: its
//! watermark lives in it, and a missing or stale file is rebuilt from the events.
//! Readers attach it as `search`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{
    SearchQuery, StoreError, parse_sender, parse_source, raw_payload, search_text, snippet, text,
};
use crate::protocol::Event;

use super::events::INSERT_CHUNK;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) write: SqlitePool,
    pub(super) read: SqlitePool,
    pub(super) search: SqlitePool,
}

/// The search index's schema; it is derived data, so it is created rather than migrated.
const SEARCH_SCHEMA: &str = "
    CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5 (body, content = '', tokenize = 'porter unicode61');
    CREATE TABLE IF NOT EXISTS search_progress (project_id TEXT PRIMARY KEY, indexed_seq INTEGER NOT NULL);";

fn search_path(db: &Path) -> std::path::PathBuf {
    let stem = db.file_stem().and_then(|s| s.to_str()).unwrap_or("polaris");
    db.with_file_name(format!("{stem}-search.db"))
}

fn from_ms(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v).ok_or_else(|| StoreError::Corrupt(format!("time {v}")))
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::from_str(s).map_err(|e| StoreError::Corrupt(format!("uuid {s:?}: {e}")))
}

fn event_from_row(row: &SqliteRow, project: &str) -> Result<Event, StoreError> {
    Ok(Event {
        id: uuid(row.try_get("id")?)?,
        project: project.to_owned(),
        session: row.try_get("session")?,
        seq: row.try_get("seq")?,
        timestamp: from_ms(row.try_get("timestamp")?)?,
        received_at: from_ms(row.try_get("received_at")?)?,
        source: parse_source(row.try_get("source")?)?,
        kind: row.try_get("kind")?,
        sender: parse_sender(row.try_get("sender")?)?,
        payload: raw_payload(row.try_get("payload")?)?,
    })
}

impl SqliteStore {
    pub(super) async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .statement_cache_capacity(256)
            .pragma("temp_store", "memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let search_file = search_path(path);
        let search = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                opts.clone()
                    .filename(&search_file)
                    .foreign_keys(false)
                    // Derived data: a lost last batch is re-indexed from the events.
                    .synchronous(SqliteSynchronous::Normal),
            )
            .await?;
        sqlx::raw_sql(SEARCH_SCHEMA).execute(&search).await?;
        let attach = search_file.to_string_lossy().into_owned();
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .after_connect(move |conn, _| {
                let attach = attach.clone();
                Box::pin(async move {
                    sqlx::query("ATTACH DATABASE $1 AS search")
                        .bind(attach)
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        Ok(SqliteStore {
            write,
            read,
            search,
        })
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.read.close().await;
        self.search.close().await;
        self.write.close().await;
    }

    /// Reads the next events from the event store, then writes their FTS rows and the
    /// watermark to the search file in one transaction, checking that the watermark did
    /// not move meanwhile (a restarted indexer's predecessor may still be finishing).
    pub(super) async fn index_search(
        &self,
        project: Uuid,
        limit: i64,
    ) -> Result<usize, StoreError> {
        let pid = project.to_string();
        let rows = sqlx::query(
            "SELECT rowid, seq, payload, coalesce((SELECT indexed_seq FROM search.search_progress WHERE project_id = $1), 0) AS done
             FROM events WHERE project_id = $1
               AND seq > coalesce((SELECT indexed_seq FROM search.search_progress WHERE project_id = $1), 0)
             ORDER BY seq LIMIT $2",
        )
        .bind(&pid)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(0);
        };
        let done: i64 = first.try_get("done")?;
        let last_seq: i64 = last.try_get("seq")?;
        let mut texts: Vec<(i64, String)> = Vec::with_capacity(rows.len());
        for r in &rows {
            // A payload that does not parse has nothing to index; it still counts as done.
            let payload: serde_json::Value =
                serde_json::from_str(r.try_get("payload")?).unwrap_or_default();
            let body = search_text(&payload);
            if !body.is_empty() {
                texts.push((r.try_get("rowid")?, body));
            }
        }
        let mut conn = self.search.acquire().await?;
        let result = write_index(&mut conn, &pid, done, last_seq, &texts).await;
        if result.is_err() {
            // See `append`: leave the connection clean.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        result.map(|wrote| if wrote { rows.len() } else { 0 })
    }

    pub(super) async fn search_backlog(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT p.id FROM projects p LEFT JOIN search.search_progress s ON s.project_id = p.id
             WHERE p.last_seq > coalesce(s.indexed_seq, 0)",
        )
        .fetch_all(&self.read)
        .await?;
        ids.iter().map(|s| uuid(s)).collect()
    }

    pub(super) async fn search(
        &self,
        org: &str,
        sq: &SearchQuery,
    ) -> Result<Vec<(Event, String)>, StoreError> {
        let Some(fts) = text::fts5_query(&sq.q) else {
            return Ok(Vec::new());
        };
        if sq.projects.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT e.id, e.seq, e.session, e.timestamp, e.received_at, e.source, e.kind, e.sender, e.payload,
                    p.name AS project_name
             FROM search.events_fts f JOIN events e ON e.rowid = f.rowid JOIN projects p ON p.id = e.project_id
             WHERE f.events_fts MATCH ",
        );
        q.push_bind(fts).push(" AND e.org_id = ").push_bind(org);
        q.push(" AND e.project_id IN (");
        let mut sep = q.separated(", ");
        for p in &sq.projects {
            sep.push_bind(p.to_string());
        }
        q.push(")");
        if let Some(s) = &sq.session {
            q.push(" AND e.session = ").push_bind(s.as_str());
        }
        if let Some(s) = &sq.sender {
            q.push(" AND e.sender = ").push_bind(s.as_str());
        }
        if let Some(s) = &sq.source {
            q.push(" AND e.source = ").push_bind(s.as_str());
        }
        if let Some(tag) = &sq.tag {
            q.push(
                " AND EXISTS (SELECT 1 FROM annotations a WHERE a.org_id = e.org_id AND a.event_id = e.id
                   AND a.kind = 'tag' AND a.value = ",
            )
            .push_bind(tag.as_str())
            .push(")");
        }
        q.push(" ORDER BY bm25(events_fts), e.timestamp DESC LIMIT ")
            .push_bind(sq.limit);
        let rows = q.build().fetch_all(&self.read).await?;
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

/// Writes index rows and moves the watermark from `done` to `last_seq`; `Ok(false)` when
/// the watermark was no longer `done` (someone else indexed these events).
async fn write_index(
    conn: &mut sqlx::SqliteConnection,
    pid: &str,
    done: i64,
    last_seq: i64,
    texts: &[(i64, String)],
) -> Result<bool, StoreError> {
    let now: i64 = sqlx::query_scalar(
        "BEGIN IMMEDIATE; SELECT coalesce((SELECT indexed_seq FROM search_progress WHERE project_id = $1), 0)",
    )
    .bind(pid)
    .fetch_one(&mut *conn)
    .await?;
    if now != done {
        sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        return Ok(false);
    }
    let mut q = QueryBuilder::<Sqlite>::new("");
    for chunk in texts.chunks(INSERT_CHUNK * 4) {
        q.push("INSERT INTO events_fts (rowid, body) ");
        q.push_values(chunk, |mut b, (rowid, body)| {
            b.push_bind(*rowid).push_bind(body.clone());
        });
        q.push("; ");
    }
    q.push("INSERT INTO search_progress (project_id, indexed_seq) VALUES (")
        .push_bind(pid.to_owned())
        .push(", ")
        .push_bind(last_seq)
        .push(
            ") ON CONFLICT (project_id) DO UPDATE SET indexed_seq = excluded.indexed_seq; COMMIT",
        );
    q.build().execute(&mut *conn).await?;
    Ok(true)
}
