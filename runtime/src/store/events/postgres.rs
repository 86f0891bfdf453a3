//! The append on PostgreSQL. The transaction locks the project's row (`SELECT … FOR
//! UPDATE`) before reading `last_seq`, so writers on any number of nodes commit a
//! project's events in `seq` order. Rows go in with one `INSERT … SELECT FROM UNNEST(…)`
//! per batch whatever its size, inside one statement that also bumps the counters, which
//! keeps it prepared once and the round trips per batch constant.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::append::{Append, Appended, Plan, Rejected, StoredRow};
use super::{event_columns, redactions_json};
use crate::store::{ProjectKey, StoreError, Tx};

pub(super) async fn append(
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
        for e in plan.fresh() {
            cols.id.push(e.id);
            cols.seq.push(e.seq);
            cols.session.push(e.session.as_deref());
            cols.ts.push(e.timestamp);
            cols.received.push(e.received_at);
            cols.source.push(e.source.as_str());
            cols.kind.push(&e.kind);
            cols.sender.push(e.sender.as_str());
            cols.payload.push(e.payload.get());
            cols.redactions.push(redactions_json(&e.redactions));
            cols.traceparent
                .push(e.traceparent.as_ref().map(|t| t.as_str()));
        }
        let n = plan.activity.len();
        let (mut names, mut events, mut prompts, mut last) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (name, a) in &plan.activity {
            names.push(name.as_str());
            events.push(a.events);
            prompts.push(a.prompts);
            last.push(a.last);
        }
        sqlx::query(
            "WITH ins AS (
                INSERT INTO events (id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload, redactions, traceparent)
                SELECT u.id, $1, $2, u.seq, u.session, u.ts, u.ra, u.source, u.kind, u.sender, u.payload::json,
                       u.redactions::json, u.traceparent
                FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                            $8::text[], $9::text[], $10::text[], $11::text[], $17::text[], $18::text[])
                     AS u(id, seq, session, ts, ra, source, kind, sender, payload, redactions, traceparent)
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
        .bind(plan.seq)
        .bind(&cols.redactions)
        .bind(&cols.traceparent)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(plan.into_results())
}

/// Column vectors for the UNNEST insert, borrowing from the plan's events.
#[derive(Default)]
struct Columns<'e> {
    id: Vec<Uuid>,
    seq: Vec<i64>,
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
