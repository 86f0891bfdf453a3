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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{
    Append, Appended, Effect, JoinReason, LeaveReason, ProjectKey, Rejected, SearchQuery,
    StoreError, parse_sender, parse_source, raw_payload, refusal, search_text, snippet, text,
};
use crate::protocol::Event;

/// Rows per multi-row INSERT: large enough to amortise statement overhead, small enough
/// to stay far below SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 64;

const EVENT_COLUMNS: &str =
    "id, seq, session, timestamp, received_at, source, kind, sender, payload";

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

fn ms(t: &DateTime<Utc>) -> i64 {
    t.timestamp_millis()
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

    /// See [`super::Store::append`]. Every statement sqlx sends to SQLite is a hand-off to
    /// the connection's worker thread and back, and under load those hand-offs, not
    /// SQLite, bound the commit rate. So the transaction is two round trips: one opens it
    /// and reads what the batch depends on (the counters, the sessions named, the ids
    /// already stored), one writes everything and commits. Session effects, rare, add
    /// one round trip each.
    #[tracing::instrument(name = "store.append", skip_all, fields(project = %project.name, n = batch.len()))]
    pub(super) async fn append(
        &self,
        project: &ProjectKey,
        batch: Vec<Append>,
    ) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
        let pid = project.id.to_string();
        let mut conn = self.write.acquire().await?;
        let result = append_in_transaction(&mut conn, project, &pid, batch).await;
        if result.is_err() {
            // The transaction may be open; leave the connection clean for the next batch.
            // A failing ROLLBACK means there was nothing to roll back.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        result
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

/// The body of [`SqliteStore::append`], on the writer connection. On `Err` the caller
/// rolls back.
async fn append_in_transaction(
    conn: &mut sqlx::SqliteConnection,
    project: &ProjectKey,
    pid: &str,
    batch: Vec<Append>,
) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
    // Round trip 1: open the transaction, read the counters, the sessions and the ids.
    let names: HashSet<&str> = batch
        .iter()
        .filter_map(|a| a.event.session.as_deref())
        .collect();
    let mut q = QueryBuilder::<Sqlite>::new(
        "BEGIN IMMEDIATE; SELECT 'head' AS what, last_seq, (SELECT coalesce(max(rowid), 0) FROM events) AS max_rowid \
         FROM projects WHERE id = ",
    );
    q.push_bind(pid);
    if !names.is_empty() {
        q.push("; SELECT 'session' AS what, name FROM sessions WHERE project_id = ")
            .push_bind(pid);
        q.push(" AND name IN (");
        let mut sep = q.separated(", ");
        for n in &names {
            sep.push_bind(*n);
        }
        q.push(")");
    }
    q.push(format!(
        "; SELECT 'event' AS what, project_id, {EVENT_COLUMNS} FROM events WHERE id IN ("
    ));
    let mut sep = q.separated(", ");
    for a in &batch {
        sep.push_bind(a.event.id.to_string());
    }
    q.push(")");
    let mut head: Option<(i64, i64)> = None;
    let mut known: HashSet<String> = HashSet::new();
    let mut stored: HashMap<Uuid, Result<Event, Rejected>> = HashMap::new();
    for row in q.build().fetch_all(&mut *conn).await? {
        match row.try_get::<&str, _>("what")? {
            "head" => head = Some((row.try_get("last_seq")?, row.try_get("max_rowid")?)),
            "session" => {
                known.insert(row.try_get("name")?);
            }
            _ => {
                let id = uuid(row.try_get("id")?)?;
                let same = row.try_get::<&str, _>("project_id")? == pid;
                stored.insert(
                    id,
                    if same {
                        Ok(event_from_row(&row, &project.name)?)
                    } else {
                        Err(Rejected::IdTaken(id))
                    },
                );
            }
        }
    }
    let (mut seq, mut rowid) = head.ok_or(StoreError::NotFound("project"))?;
    let start_seq = seq;

    let mut results: Vec<Result<Appended, Rejected>> = Vec::with_capacity(batch.len());
    let mut fresh: Vec<(i64, Event)> = Vec::new(); // (rowid, event)
    let mut first_in_batch: HashMap<Uuid, usize> = HashMap::new();
    let mut activity: HashMap<String, (i64, i64, i64)> = HashMap::new(); // events, prompts, last
    for item in batch {
        let id = item.event.id;
        if let Some(prior) = stored.get(&id) {
            results.push(prior.clone().map(|event| Appended {
                event,
                created: false,
            }));
            continue;
        }
        if let Some(&i) = first_in_batch.get(&id) {
            let again = results[i].clone().map(|mut a| {
                a.created = false;
                a
            });
            results.push(again);
            continue;
        }
        if let Some(s) = &item.event.session
            && !known.contains(s)
        {
            results.push(Err(Rejected::NoSession(s.clone())));
            continue;
        }
        if let Some(effect) = &item.effect
            && let Err(rejected) =
                apply_effect(conn, pid, item.event.session.as_deref(), effect).await?
        {
            results.push(Err(rejected));
            continue;
        }
        seq += 1;
        rowid += 1;
        if let Some(s) = &item.event.session {
            let a = activity.entry(s.clone()).or_default();
            a.0 += 1;
            a.1 += i64::from(item.event.counts_as_prompt());
            a.2 = a.2.max(ms(&item.event.received_at));
        }
        let event = item.event.into_event(project, seq);
        first_in_batch.insert(id, results.len());
        results.push(Ok(Appended {
            event: event.clone(),
            created: true,
        }));
        fresh.push((rowid, event));
    }

    // Round trip 2: write everything and commit.
    let mut q = QueryBuilder::<Sqlite>::new("");
    for chunk in fresh.chunks(INSERT_CHUNK) {
        q.push(
            "INSERT INTO events (rowid, id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload) ",
        );
        q.push_values(chunk, |mut b, (rowid, e)| {
            b.push_bind(*rowid)
                .push_bind(e.id.to_string())
                .push_bind(project.org.to_string())
                .push_bind(pid.to_owned())
                .push_bind(e.seq)
                .push_bind(e.session.clone())
                .push_bind(ms(&e.timestamp))
                .push_bind(ms(&e.received_at))
                .push_bind(e.source.as_str())
                .push_bind(e.kind.clone())
                .push_bind(e.sender.as_str().to_owned())
                .push_bind(e.payload.get().to_owned());
        });
        q.push("; ");
    }
    for (name, (events, prompts, last)) in activity {
        q.push("UPDATE sessions SET event_count = event_count + ")
            .push_bind(events);
        q.push(", prompt_count = prompt_count + ")
            .push_bind(prompts);
        q.push(", last_activity_at = max(coalesce(last_activity_at, 0), ")
            .push_bind(last);
        q.push(") WHERE project_id = ").push_bind(pid.to_owned());
        q.push(" AND name = ").push_bind(name).push("; ");
    }
    if seq != start_seq {
        q.push("UPDATE projects SET last_seq = ").push_bind(seq);
        q.push(" WHERE id = ").push_bind(pid.to_owned()).push("; ");
    }
    q.push("COMMIT");
    q.build().execute(&mut *conn).await?;
    Ok(results)
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

/// Applies a session effect inside the append transaction. `Ok(Err(_))` rejects this
/// item only; `Err(_)` is a database failure that aborts the batch.
async fn apply_effect(
    conn: &mut sqlx::SqliteConnection,
    project: &str,
    session: Option<&str>,
    effect: &Effect,
) -> Result<Result<(), Rejected>, StoreError> {
    let now = ms(&Utc::now());
    let r = match (effect, session) {
        (Effect::Driver { .. } | Effect::Label(_) | Effect::Agent(_), None) => {
            return Ok(Err(Rejected::Conflict("a session change needs a session".into())));
        }
        (Effect::Driver { expected, new }, Some(session)) => {
            sqlx::query("UPDATE sessions SET driver = $1 WHERE project_id = $2 AND name = $3 AND driver IS $4")
                .bind(new.as_ref().map(ParticipantId::as_str))
                .bind(project)
                .bind(session)
                .bind(expected.as_ref().map(ParticipantId::as_str))
                .execute(&mut *conn)
                .await?
        }
        (Effect::Label(label), Some(session)) => {
            sqlx::query("UPDATE sessions SET label = $1 WHERE project_id = $2 AND name = $3")
                .bind(label.as_deref())
                .bind(project)
                .bind(session)
                .execute(&mut *conn)
                .await?
        }
        (Effect::Agent(agent), Some(session)) => {
            sqlx::query("UPDATE sessions SET agent = $1 WHERE project_id = $2 AND name = $3")
                .bind(agent.as_ref().map(ParticipantId::as_str))
                .bind(project)
                .bind(session)
                .execute(&mut *conn)
                .await?
        }
        (Effect::Join { agent, reason, detail }, _) => {
            let sql = match reason {
                JoinReason::Tag => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail, removed, since)
                     VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT (project_id, agent_id) DO NOTHING"
                }
                // An invitation also brings back an agent that was removed by hand.
                JoinReason::Invite => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail, removed, since)
                     VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT (project_id, agent_id) DO UPDATE
                     SET reason = excluded.reason, detail = excluded.detail, removed = FALSE, since = excluded.since
                     WHERE agent_floors.removed"
                }
            };
            sqlx::query(sql)
                .bind(project)
                .bind(agent.as_str())
                .bind(reason.as_str())
                .bind(detail.as_deref())
                .bind(now)
                .execute(&mut *conn)
                .await?
        }
        (Effect::Leave { agent, why }, _) => match why {
            LeaveReason::TagLost => {
                sqlx::query(
                    "DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed AND reason = 'tag'",
                )
                .bind(project)
                .bind(agent.as_str())
                .execute(&mut *conn)
                .await?
            }
            LeaveReason::Removed(by) => {
                sqlx::query(
                    "UPDATE agent_floors SET removed = TRUE, detail = $3, since = $4
                     WHERE project_id = $1 AND agent_id = $2 AND NOT removed",
                )
                .bind(project)
                .bind(agent.as_str())
                .bind(by.as_deref())
                .bind(now)
                .execute(&mut *conn)
                .await?
            }
            LeaveReason::Gone => {
                sqlx::query("DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed")
                    .bind(project)
                    .bind(agent.as_str())
                    .execute(&mut *conn)
                    .await?
            }
        },
    };
    Ok(if r.rows_affected() == 0 {
        Err(refusal(effect))
    } else {
        Ok(())
    })
}
