//! The append on SQLite. Every write goes through the one writer connection, so the
//! transaction (`BEGIN IMMEDIATE`) reads `last_seq` and `max(rowid)` without racing anyone
//! and gives each event its `seq` and its `rowid` (the key the search file indexes by).
//!
//! Every statement sqlx sends to SQLite is a hand-off to the connection's worker thread
//! and back, and under load those hand-offs, not SQLite, bound the commit rate. So the
//! transaction is two round trips: one opens it and reads what the batch depends on (the
//! counters, the sessions named, the ids already stored), one writes everything and
//! commits. Session effects, rare, add one round trip each.

use std::collections::HashSet;

use sqlx::{FromRow, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::append::{Append, Appended, Plan, Rejected, StoredRow};
use super::{event_columns, redactions_json};
use crate::protocol::TraceParent;
use crate::store::column::{Id, Time};
use crate::store::{ProjectKey, StoreError, Tx};

/// Rows per multi-row INSERT: large enough to amortise statement overhead, small enough
/// to stay far below SQLite's bound-parameter limit.
pub(crate) const INSERT_CHUNK: usize = 64;

pub(super) async fn append(
    write: &SqlitePool,
    project: &ProjectKey,
    batch: Vec<Append>,
) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
    let mut conn = write.acquire().await?;
    let result = in_transaction(&mut conn, project, batch).await;
    if result.is_err() {
        // The transaction may be open; leave the connection clean for the next batch.
        // A failing ROLLBACK means there was nothing to roll back.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// The body of [`append`]. On `Err` the caller rolls back.
async fn in_transaction(
    conn: &mut SqliteConnection,
    project: &ProjectKey,
    batch: Vec<Append>,
) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
    let pid = Id(project.id);
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
    q.push(concat!(
        "; SELECT ",
        event_columns!(),
        ", project_id, 'event' AS what FROM events WHERE id IN ("
    ));
    let mut sep = q.separated(", ");
    for a in &batch {
        sep.push_bind(Id(a.event.id));
    }
    q.push(")");
    let mut head: Option<(i64, i64)> = None;
    let mut known: HashSet<String> = HashSet::new();
    let mut stored: Vec<StoredRow> = Vec::new();
    for row in q.build().fetch_all(&mut *conn).await? {
        match row.try_get::<&str, _>("what")? {
            "head" => head = Some((row.try_get("last_seq")?, row.try_get("max_rowid")?)),
            "session" => {
                known.insert(row.try_get("name")?);
            }
            _ => stored.push(StoredRow::from_row(&row)?),
        }
    }
    let (last_seq, mut rowid) = head.ok_or(StoreError::NotFound("project"))?;
    let mut plan = Plan::new(project, last_seq, known, stored, batch.len());
    plan.run(batch, &mut Tx::Sqlite(conn)).await?;

    // Round trip 2: write everything and commit.
    let mut q = QueryBuilder::<Sqlite>::new("");
    let fresh: Vec<_> = plan.fresh().collect();
    for chunk in fresh.chunks(INSERT_CHUNK) {
        q.push(
            "INSERT INTO events (rowid, id, org_id, project_id, seq, session, timestamp, received_at, source, kind, sender, payload, redactions, traceparent) ",
        );
        q.push_values(chunk, |mut b, e| {
            rowid += 1;
            b.push_bind(rowid)
                .push_bind(Id(e.id))
                .push_bind(&*project.org)
                .push_bind(pid)
                .push_bind(e.seq)
                .push_bind(e.session.as_deref())
                .push_bind(Time(e.timestamp))
                .push_bind(Time(e.received_at))
                .push_bind(e.source.as_str())
                .push_bind(e.kind.as_str())
                .push_bind(e.sender.as_str())
                .push_bind(e.payload.get())
                .push_bind(redactions_json(&e.redactions))
                .push_bind(e.traceparent.as_ref().map(TraceParent::as_str));
        });
        q.push("; ");
    }
    for (name, a) in &plan.activity {
        q.push("UPDATE sessions SET event_count = event_count + ")
            .push_bind(a.events);
        q.push(", prompt_count = prompt_count + ")
            .push_bind(a.prompts);
        q.push(", last_activity_at = max(coalesce(last_activity_at, 0), ")
            .push_bind(Time(a.last));
        q.push(") WHERE project_id = ").push_bind(pid);
        q.push(" AND name = ").push_bind(name.as_str()).push("; ");
    }
    if plan.writes() {
        q.push("UPDATE projects SET last_seq = ")
            .push_bind(plan.seq);
        q.push(" WHERE id = ").push_bind(pid).push("; ");
    }
    q.push("COMMIT");
    q.build().execute(&mut *conn).await?;
    Ok(plan.into_results())
}
