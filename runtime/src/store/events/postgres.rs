//! The append on PostgreSQL. Whoever writes a project's events takes the project's row
//! lock first, so writers on any number of nodes commit a project's events in `seq`
//! order. Rows go in with one `INSERT … SELECT FROM UNNEST(…)` per batch whatever its
//! size, which keeps the statement prepared once and the round trips per batch constant.
//!
//! A plain batch (no session effect, no lease fence, no id twice: nearly all of them) is
//! one statement in autocommit (the function `polaris_append_plain`, whose plan is made
//! once per connection), so one round trip and one commit: it bumps `last_seq` by
//! the batch's length (taking the row lock) only if every session it names exists and
//! none of its ids is stored, and writes the rows and counters from the `seq` that
//! returns. If a condition fails, or a concurrent writer stored one of the ids first (the
//! unique key refuses the statement, which then writes nothing), the batch goes the full
//! way: a transaction that reads what the batch depends on, decides item by item and
//! writes — four round trips.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::append::{Activity, Append, Appended, Plan, Rejected, StoredRow, is_plain};
use super::{event_columns, redactions_json};
use crate::store::{ProjectKey, StoreError, Tx};

/// Adds an event's columns (but `seq`) to a [`Columns`]: an `Event` and a `NewEvent` have
/// the same fields.
macro_rules! push_event {
    ($cols:expr, $e:expr) => {{
        let e = $e;
        $cols.push(
            e.id,
            e.session.as_deref(),
            e.timestamp,
            e.received_at,
            e.source.as_str(),
            &e.kind,
            e.sender.as_str(),
            e.payload.get(),
            redactions_json(&e.redactions),
            e.traceparent.as_ref().map(|t| t.as_str()),
        )
    }};
}

pub(super) async fn append(
    pool: &PgPool,
    project: &ProjectKey,
    batch: Vec<Append>,
) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
    if is_plain(&batch)
        && let Some(base) = append_plain(pool, project, &batch).await?
    {
        return Ok(batch
            .into_iter()
            .zip(base + 1..)
            .map(|(a, seq)| {
                Ok(Appended {
                    event: a.event.into_event(project, seq),
                    created: true,
                })
            })
            .collect());
    }
    append_in_transaction(pool, project, batch).await
}

/// A plain batch in one statement (see the module docs): the `seq` before its first
/// event, or `None` when the batch must go the full way (nothing was written).
#[tracing::instrument(name = "store.append_plain", skip_all, fields(n = batch.len()))]
async fn append_plain(
    pool: &PgPool,
    project: &ProjectKey,
    batch: &[Append],
) -> Result<Option<i64>, StoreError> {
    let mut cols = Columns::default();
    let mut activity: HashMap<String, Activity> = HashMap::new();
    for a in batch {
        push_event!(cols, &a.event);
        Activity::count(&mut activity, &a.event);
    }
    let counters = Counters::of(&activity);
    // The statement is a function (migration 0010) so that its plan is made once per
    // connection: planned at every append, as `force_custom_plan` would, it cost more
    // than it took to run.
    let written = bind_batch(
        sqlx::query(
            "SELECT polaris_append_plain($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        ),
        project,
        &cols,
        &counters,
    )
    .fetch_one(pool)
    .await
    .and_then(|row| row.try_get::<Option<i64>, _>(0));
    match written {
        Ok(base) => Ok(base),
        // Stored meanwhile by a concurrent writer: the full way answers it as a repeat.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Any batch, in a transaction that decides item by item (see the module docs).
async fn append_in_transaction(
    pool: &PgPool,
    project: &ProjectKey,
    batch: Vec<Append>,
) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
    let mut tx = pool.begin().await?;
    // One round trip for what the batch depends on. The row lock orders every writer of
    // this project, on every node.
    let ids: Vec<Uuid> = batch.iter().map(|a| a.event.id).collect();
    let names: Vec<&str> = batch
        .iter()
        .filter_map(|a| a.event.session.as_deref())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let (last_seq, known, stored_ids): (i64, Vec<String>, Vec<Uuid>) = sqlx::query_as(
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

    // Retries are rare: only then read the stored events back.
    let stored: Vec<StoredRow> = if stored_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            ", project_id FROM events WHERE id = ANY($1)"
        ))
        .bind(&stored_ids)
        .fetch_all(&mut *tx)
        .await?
    };
    let known: HashSet<String> = known.into_iter().collect();
    let mut plan = Plan::new(project, last_seq, known, stored, batch.len());
    plan.run(batch, &mut Tx::Postgres(&mut tx)).await?;

    // One round trip for every write of the batch.
    if plan.writes() {
        let mut cols = Columns::default();
        let mut seqs = Vec::new();
        for e in plan.fresh() {
            seqs.push(e.seq);
            push_event!(cols, e);
        }
        let counters = Counters::of(&plan.activity);
        // $1–$16 as in `append_plain` (`bind_batch`), then the seqs and the new head.
        bind_batch(
            sqlx::query(
                "WITH ins AS (
                INSERT INTO events (id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload, redactions, traceparent)
                SELECT u.id, $1, $2, u.seq, u.session, u.ts, u.ra, u.source, u.kind, u.sender, u.payload::json,
                       u.redactions::json, u.traceparent
                FROM UNNEST($3::uuid[], $17::bigint[], $4::text[], $5::timestamptz[], $6::timestamptz[],
                            $7::text[], $8::text[], $9::text[], $10::text[], $15::text[], $16::text[])
                     AS u(id, seq, session, ts, ra, source, kind, sender, payload, redactions, traceparent)
                RETURNING 1),
             counters AS (
                UPDATE sessions s SET event_count = s.event_count + a.n, prompt_count = s.prompt_count + a.p,
                       last_activity_at = GREATEST(s.last_activity_at, a.t)
                FROM UNNEST($11::text[], $12::bigint[], $13::bigint[], $14::timestamptz[]) AS a(name, n, p, t)
                WHERE s.project_id = $2 AND s.name = a.name
                RETURNING 1),
             head AS (UPDATE projects SET last_seq = $18 WHERE id = $2 RETURNING 1)
             SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM counters) + (SELECT count(*) FROM head)",
            ),
            project,
            &cols,
            &counters,
        )
        .bind(&seqs)
        .bind(plan.seq)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(plan.into_results())
}

/// Column vectors for the UNNEST insert (all but `seq`), borrowing from the events.
#[derive(Default)]
struct Columns<'e> {
    id: Vec<Uuid>,
    session: Vec<Option<&'e str>>,
    ts: Vec<DateTime<Utc>>,
    received: Vec<DateTime<Utc>>,
    source: Vec<&'static str>,
    kind: Vec<&'e str>,
    sender: Vec<&'e str>,
    payload: Vec<&'e str>,
    redactions: Vec<Option<String>>,
    traceparent: Vec<Option<&'e str>>,
}

impl<'e> Columns<'e> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: Uuid,
        session: Option<&'e str>,
        ts: DateTime<Utc>,
        received: DateTime<Utc>,
        source: &'static str,
        kind: &'e str,
        sender: &'e str,
        payload: &'e str,
        redactions: Option<String>,
        traceparent: Option<&'e str>,
    ) {
        self.id.push(id);
        self.session.push(session);
        self.ts.push(ts);
        self.received.push(received);
        self.source.push(source);
        self.kind.push(kind);
        self.sender.push(sender);
        self.payload.push(payload);
        self.redactions.push(redactions);
        self.traceparent.push(traceparent);
    }
}

/// Binds what both ways of writing a batch send first, as `$1`–`$16`: the org, the
/// project, the event columns but `seq` (ids, sessions, timestamps, arrivals, sources,
/// kinds, senders, payloads), the session counters (names, events, prompts, last
/// arrivals), then redactions and trace contexts.
fn bind_batch<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    project: &'q ProjectKey,
    cols: &'q Columns<'q>,
    counters: &'q Counters<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&*project.org)
        .bind(project.id)
        .bind(&cols.id)
        .bind(&cols.session)
        .bind(&cols.ts)
        .bind(&cols.received)
        .bind(&cols.source)
        .bind(&cols.kind)
        .bind(&cols.sender)
        .bind(&cols.payload)
        .bind(&counters.names)
        .bind(&counters.events)
        .bind(&counters.prompts)
        .bind(&counters.last)
        .bind(&cols.redactions)
        .bind(&cols.traceparent)
}

/// The per-session counters' UNNEST arrays.
struct Counters<'a> {
    names: Vec<&'a str>,
    events: Vec<i64>,
    prompts: Vec<i64>,
    last: Vec<DateTime<Utc>>,
}

impl<'a> Counters<'a> {
    fn of(activity: &'a HashMap<String, Activity>) -> Counters<'a> {
        let n = activity.len();
        let mut c = Counters {
            names: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            prompts: Vec::with_capacity(n),
            last: Vec::with_capacity(n),
        };
        for (name, a) in activity {
            c.names.push(name.as_str());
            c.events.push(a.events);
            c.prompts.push(a.prompts);
            c.last.push(a.last);
        }
        c
    }
}
