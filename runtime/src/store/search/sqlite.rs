//! Search on SQLite: an FTS5 table keyed by the events' rowid, in a file of its own
//! (`<name>-search.db`, opened in `store::sqlite`) with its own writer, so tokenising and
//! merging segments runs beside the appends instead of queueing behind their lock. Its
//! watermarks live in that file too; readers attach it as `search`.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{Hit, SearchQuery, body, text};
use crate::store::StoreError;
use crate::store::column::Id;
use crate::store::events::{INSERT_CHUNK, event_columns};
use crate::store::sqlite::SqliteStore;

/// Reads the next events from the event store, then writes their FTS rows and the
/// watermark to the search file in one transaction, checking that the watermark did not
/// move meanwhile (a restarted indexer's predecessor may still be finishing).
pub(super) async fn index(
    store: &SqliteStore,
    project: Uuid,
    limit: i64,
) -> Result<usize, StoreError> {
    let pid = Id(project);
    let rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(
        "SELECT rowid, seq, payload, coalesce((SELECT indexed_seq FROM search.search_progress WHERE project_id = $1), 0) AS done
         FROM events WHERE project_id = $1
           AND seq > coalesce((SELECT indexed_seq FROM search.search_progress WHERE project_id = $1), 0)
         ORDER BY seq LIMIT $2",
    )
    .bind(pid)
    .bind(limit)
    .fetch_all(&store.read)
    .await?;
    let (Some(&(_, _, _, done)), Some(&(_, last_seq, _, _))) = (rows.first(), rows.last()) else {
        return Ok(0);
    };
    let texts: Vec<(i64, String)> = rows
        .iter()
        .map(|(rowid, _, payload, _)| (*rowid, body(payload)))
        .filter(|(_, body)| !body.is_empty())
        .collect();
    let mut conn = store.search.acquire().await?;
    let result = write_index(&mut conn, pid, done, last_seq, &texts).await;
    if result.is_err() {
        // As in the append: leave the connection clean.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result.map(|wrote| if wrote { rows.len() } else { 0 })
}

/// Writes index rows and moves the watermark from `done` to `last_seq`; `Ok(false)` when
/// the watermark was no longer `done` (someone else indexed these events).
async fn write_index(
    conn: &mut SqliteConnection,
    pid: Id,
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
            b.push_bind(*rowid).push_bind(body.as_str());
        });
        q.push("; ");
    }
    q.push("INSERT INTO search_progress (project_id, indexed_seq) VALUES (")
        .push_bind(pid)
        .push(", ")
        .push_bind(last_seq)
        .push(
            ") ON CONFLICT (project_id) DO UPDATE SET indexed_seq = excluded.indexed_seq; COMMIT",
        );
    q.build().execute(&mut *conn).await?;
    Ok(true)
}

/// Built per call with only the filters asked for; the web-search syntax becomes FTS5's
/// ([`text::fts5_query`]).
pub(super) async fn search(
    read: &SqlitePool,
    org: &str,
    sq: &SearchQuery,
) -> Result<Vec<Hit>, StoreError> {
    let Some(fts) = text::fts5_query(&sq.q) else {
        return Ok(Vec::new());
    };
    if sq.projects.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new(concat!(
        "SELECT ",
        event_columns!("e."),
        ", p.name AS project_name
         FROM search.events_fts f JOIN events e ON e.rowid = f.rowid JOIN projects p ON p.id = e.project_id
         WHERE f.events_fts MATCH "
    ));
    q.push_bind(fts).push(" AND e.org_id = ").push_bind(org);
    q.push(" AND e.project_id IN (");
    let mut sep = q.separated(", ");
    for p in &sq.projects {
        sep.push_bind(Id(*p));
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
    Ok(q.build_query_as().fetch_all(read).await?)
}
