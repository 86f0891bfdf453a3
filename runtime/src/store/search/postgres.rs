//! Search on PostgreSQL: `event_search` holds a tsvector per event (the `english`
//! configuration) under a GIN index, filled by the indexer after the commit — computing
//! tsvectors inside every append cost more than the append itself.

use sqlx::PgPool;
use uuid::Uuid;

use super::{Hit, SearchQuery, body};
use crate::store::StoreError;
use crate::store::events::event_columns;

/// Locks the project's watermark row (not the project row, which appends lock), so
/// indexing never holds back the floor; tsvectors are computed here, in bulk.
pub(super) async fn index(pool: &PgPool, project: Uuid, limit: i64) -> Result<usize, StoreError> {
    let mut tx = pool.begin().await?;
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
    // As text: a payload that does not parse is indexed as empty, not an error.
    let rows: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT id, seq, payload::text AS payload FROM events WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(project)
    .bind(done)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let Some(&(_, last_seq, _)) = rows.last() else {
        tx.commit().await?;
        return Ok(0);
    };
    let (ids, bodies): (Vec<Uuid>, Vec<String>) = rows
        .iter()
        .map(|(id, _, payload)| (*id, body(payload)))
        .filter(|(_, body)| !body.is_empty())
        .unzip();
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

/// One statement for every combination of filters: a filter left out is a NULL
/// parameter, which the custom plan (see `store::postgres`) folds away.
pub(super) async fn search(
    pool: &PgPool,
    org: &str,
    sq: &SearchQuery,
) -> Result<Vec<Hit>, StoreError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        event_columns!("e."),
        ", p.name AS project_name
         FROM event_search s JOIN events e ON e.id = s.event_id JOIN projects p ON p.id = e.project_id,
              websearch_to_tsquery('english', $1) AS q
         WHERE s.search @@ q AND e.org_id = $2 AND s.project_id = ANY($3)
           AND ($4::text IS NULL OR e.session = $4)
           AND ($5::text IS NULL OR e.sender = $5)
           AND ($6::text IS NULL OR e.source = $6)
           AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM annotations a WHERE a.org_id = e.org_id
                 AND a.event_id = e.id AND a.kind = 'tag' AND a.value = $7))
         ORDER BY ts_rank(s.search, q) DESC, e.timestamp DESC LIMIT $8"
    ))
    .bind(&sq.q)
    .bind(org)
    .bind(&sq.projects)
    .bind(sq.session.as_deref())
    .bind(sq.sender.as_deref())
    .bind(sq.source.as_deref())
    .bind(sq.tag.as_deref())
    .bind(sq.limit)
    .fetch_all(pool)
    .await?)
}
