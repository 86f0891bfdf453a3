//! The PostgreSQL backend: the production store and the way to run several nodes.
//!
//! Appends lock the project's row (`SELECT … FOR UPDATE`) before reading `last_seq`, so
//! writers on any number of nodes commit a project's events in `seq` order; rows go in
//! with one `INSERT … SELECT FROM UNNEST(…)` per batch whatever its size, which keeps the
//! statement prepared once and the round trips per batch constant.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use super::{
    Append, Appended, Effect, JoinReason, LeaveReason, ProjectKey, Rejected, SearchQuery,
    StoreError, parse_sender, parse_source, raw_payload, refusal, search_text, snippet,
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

    #[tracing::instrument(name = "store.append", skip_all, fields(project = %project.name, n = batch.len()))]
    pub(super) async fn append(
        &self,
        project: &ProjectKey,
        batch: Vec<Append>,
    ) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // One round trip for what the batch depends on. The row lock orders every writer
        // of this project, on every node.
        let ids: Vec<Uuid> = batch.iter().map(|a| a.event.id).collect();
        let names: Vec<&str> = batch
            .iter()
            .filter_map(|a| a.event.session.as_deref())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let head = sqlx::query(
            "SELECT p.last_seq,
                    ARRAY(SELECT name FROM sessions WHERE project_id = $1 AND name = ANY($2)) AS known,
                    ARRAY(SELECT id FROM events WHERE id = ANY($3)) AS stored
             FROM projects p WHERE p.id = $1 FOR UPDATE",
        )
        .bind(project.id)
        .bind(&names)
        .bind(&ids)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("project"))?;
        let mut seq: i64 = head.try_get("last_seq")?;
        let start_seq = seq;
        let known: HashSet<String> = head
            .try_get::<Vec<String>, _>("known")?
            .into_iter()
            .collect();
        let stored_ids: Vec<Uuid> = head.try_get("stored")?;

        // Retries are rare: only then read the stored events back.
        let mut stored: HashMap<Uuid, Result<Event, Rejected>> = HashMap::new();
        if !stored_ids.is_empty() {
            for row in sqlx::query(
                "SELECT project_id, id, seq, session, timestamp, received_at, source, kind, sender, payload::text AS payload
                 FROM events WHERE id = ANY($1)",
            )
            .bind(&stored_ids)
            .fetch_all(&mut *tx)
            .await?
            {
                let id: Uuid = row.try_get("id")?;
                let same = row.try_get::<Uuid, _>("project_id")? == project.id;
                stored.insert(
                    id,
                    if same { Ok(event_from_row(&row, &project.name)?) } else { Err(Rejected::IdTaken(id)) },
                );
            }
        }

        let mut results: Vec<Result<Appended, Rejected>> = Vec::with_capacity(batch.len());
        let mut first_in_batch: HashMap<Uuid, usize> = HashMap::new();
        let mut activity: HashMap<String, (i64, i64, DateTime<Utc>)> = HashMap::new();
        let mut cols = Columns::default();

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
                    apply_effect(&mut tx, project.id, item.event.session.as_deref(), effect).await?
            {
                results.push(Err(rejected));
                continue;
            }
            seq += 1;
            if let Some(s) = &item.event.session {
                let a = activity
                    .entry(s.clone())
                    .or_insert((0, 0, item.event.received_at));
                a.0 += 1;
                a.1 += i64::from(item.event.counts_as_prompt());
                a.2 = a.2.max(item.event.received_at);
            }
            let event = item.event.into_event(project, seq);
            cols.push(&event);
            first_in_batch.insert(id, results.len());
            results.push(Ok(Appended {
                event,
                created: true,
            }));
        }

        // One round trip for every write of the batch.
        if !cols.id.is_empty() {
            let mut names = Vec::with_capacity(activity.len());
            let mut events = Vec::with_capacity(activity.len());
            let mut prompts = Vec::with_capacity(activity.len());
            let mut last = Vec::with_capacity(activity.len());
            for (name, (e, p, t)) in activity {
                names.push(name);
                events.push(e);
                prompts.push(p);
                last.push(t);
            }
            sqlx::query(
                "WITH ins AS (
                    INSERT INTO events (id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload)
                    SELECT u.id, $1, $2, u.seq, u.session, u.ts, u.ra, u.source, u.kind, u.sender, u.payload::json
                    FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                                $8::text[], $9::text[], $10::text[], $11::text[])
                         AS u(id, seq, session, ts, ra, source, kind, sender, payload)
                    RETURNING 1),
                 counters AS (
                    UPDATE sessions s SET event_count = s.event_count + a.n, prompt_count = s.prompt_count + a.p,
                           last_activity_at = GREATEST(s.last_activity_at, a.t)
                    FROM UNNEST($12::text[], $13::bigint[], $14::bigint[], $15::timestamptz[]) AS a(name, n, p, t)
                    WHERE s.project_id = $2 AND s.name = a.name
                    RETURNING 1),
                 head AS (UPDATE projects SET last_seq = $16 WHERE id = $2 RETURNING 1)
                 SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM counters) + (SELECT count(*) FROM head)",
            )
            .bind(&*project.org)
            .bind(project.id)
            .bind(&cols.id)
            .bind(&cols.seq)
            .bind(&cols.session)
            .bind(&cols.ts)
            .bind(&cols.received)
            .bind(&cols.source)
            .bind(&cols.kind)
            .bind(&cols.sender)
            .bind(&cols.payload)
            .bind(&names)
            .bind(&events)
            .bind(&prompts)
            .bind(&last)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        }
        debug_assert!(cols.id.is_empty() == (seq == start_seq));
        tx.commit().await?;
        Ok(results)
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

/// Column vectors for the UNNEST insert.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    seq: Vec<i64>,
    session: Vec<Option<String>>,
    ts: Vec<DateTime<Utc>>,
    received: Vec<DateTime<Utc>>,
    source: Vec<&'static str>,
    kind: Vec<String>,
    sender: Vec<String>,
    payload: Vec<String>,
}

impl Columns {
    fn push(&mut self, e: &Event) {
        self.id.push(e.id);
        self.seq.push(e.seq);
        self.session.push(e.session.clone());
        self.ts.push(e.timestamp);
        self.received.push(e.received_at);
        self.source.push(e.source.as_str());
        self.kind.push(e.kind.clone());
        self.sender.push(e.sender.as_str().to_owned());
        self.payload.push(e.payload.get().to_owned());
    }
}

/// Applies a session effect inside the append transaction. `Ok(Err(_))` rejects this
/// item only; `Err(_)` aborts the batch.
async fn apply_effect(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    project: Uuid,
    session: Option<&str>,
    effect: &Effect,
) -> Result<Result<(), Rejected>, StoreError> {
    let r = match (effect, session) {
        (Effect::Driver { .. } | Effect::Label(_) | Effect::Agent(_), None) => {
            return Ok(Err(Rejected::Conflict("a session change needs a session".into())));
        }
        (Effect::Driver { expected, new }, Some(session)) => {
            sqlx::query(
                "UPDATE sessions SET driver = $1 WHERE project_id = $2 AND name = $3
                   AND driver IS NOT DISTINCT FROM $4",
            )
            .bind(new.as_ref().map(ParticipantId::as_str))
            .bind(project)
            .bind(session)
            .bind(expected.as_ref().map(ParticipantId::as_str))
            .execute(&mut **tx)
            .await?
        }
        (Effect::Label(label), Some(session)) => {
            sqlx::query("UPDATE sessions SET label = $1 WHERE project_id = $2 AND name = $3")
                .bind(label.as_deref())
                .bind(project)
                .bind(session)
                .execute(&mut **tx)
                .await?
        }
        (Effect::Agent(agent), Some(session)) => {
            sqlx::query("UPDATE sessions SET agent = $1 WHERE project_id = $2 AND name = $3")
                .bind(agent.as_ref().map(ParticipantId::as_str))
                .bind(project)
                .bind(session)
                .execute(&mut **tx)
                .await?
        }
        (Effect::Join { agent, reason, detail }, _) => {
            let sql = match reason {
                JoinReason::Tag => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (project_id, agent_id) DO NOTHING"
                }
                // An invitation also brings back an agent that was removed by hand.
                JoinReason::Invite => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (project_id, agent_id) DO UPDATE
                     SET reason = excluded.reason, detail = excluded.detail, removed = FALSE, since = now()
                     WHERE agent_floors.removed"
                }
            };
            sqlx::query(sql)
                .bind(project)
                .bind(agent.as_str())
                .bind(reason.as_str())
                .bind(detail.as_deref())
                .execute(&mut **tx)
                .await?
        }
        (Effect::Leave { agent, why }, _) => match why {
            LeaveReason::TagLost => {
                sqlx::query(
                    "DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed AND reason = 'tag'",
                )
                .bind(project)
                .bind(agent.as_str())
                .execute(&mut **tx)
                .await?
            }
            LeaveReason::Removed(by) => {
                sqlx::query(
                    "UPDATE agent_floors SET removed = TRUE, detail = $3, since = now()
                     WHERE project_id = $1 AND agent_id = $2 AND NOT removed",
                )
                .bind(project)
                .bind(agent.as_str())
                .bind(by.as_deref())
                .execute(&mut **tx)
                .await?
            }
            LeaveReason::Gone => {
                sqlx::query("DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed")
                    .bind(project)
                    .bind(agent.as_str())
                    .execute(&mut **tx)
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
