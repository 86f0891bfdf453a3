//! Full-text search. Search lags the commit: [`Store::index_search`] indexes committed
//! events in batches (the indexer actor runs it; searches ask it to catch up first). What
//! is indexed, how a query reads and how snippets are cut is shared ([`text`]), so results
//! read the same on both engines; the index itself is where the engines differ most: FTS5
//! in a separate file on SQLite ([`sqlite`]), a tsvector column with a GIN index on
//! PostgreSQL ([`postgres`]).

use uuid::Uuid;

use super::column::Id;
use super::events::NamedEventRow;
use super::{Sql, Store, StoreError};
use crate::protocol::Event;

mod postgres;
mod sqlite;
mod text;

pub(crate) use text::{search_text, snippet};

/// A full-text query with the original's filters (reference 3.9).
#[derive(Debug, Clone, Default)]
pub(crate) struct SearchQuery {
    /// Web-search syntax: words, "quoted phrases", `or`, `-word`.
    pub q: String,
    /// Restrict to these projects (already ACL-filtered by the caller).
    pub projects: Vec<Uuid>,
    /// Session name.
    pub session: Option<String>,
    /// Exact sender.
    pub sender: Option<String>,
    /// Exact source.
    pub source: Option<String>,
    /// The event carries a `tag` annotation with this value.
    pub tag: Option<String>,
    /// 1..=100.
    pub limit: i64,
}

const BACKLOG: Sql = dialects!(
    "SELECT p.id FROM projects p LEFT JOIN "
    // SQLite keeps the watermarks in the search file, which every reader attaches as
    // `search`.
    { sqlite: "search.search_progress", postgres: "search_progress" }
    " s ON s.project_id = p.id WHERE p.last_seq > coalesce(s.indexed_seq, 0)"
);

impl Store {
    /// Indexes up to `limit` not-yet-indexed events of a project for search, in one
    /// transaction with the project's index watermark. Returns how many it indexed (fewer
    /// than `limit`: the project is caught up).
    pub(crate) async fn index_search(
        &self,
        project: Uuid,
        limit: i64,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => sqlite::index(s, project, limit).await,
            Store::Postgres(s) => postgres::index(&s.pool, project, limit).await,
        }
    }

    /// Projects with committed events not yet indexed for search (after a crash).
    pub(crate) async fn search_backlog(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<Id> = fetch!(self, read, scalar fetch_all, BACKLOG.on(self.backend()))?;
        Ok(ids.into_iter().map(|id| id.0).collect())
    }

    /// Full-text search, best match first, with a snippet per event.
    pub(crate) async fn search(
        &self,
        org: &str,
        q: &SearchQuery,
    ) -> Result<Vec<(Event, String)>, StoreError> {
        let hits = match self {
            Store::Sqlite(s) => sqlite::search(&s.read, org, q).await?,
            Store::Postgres(s) => postgres::search(&s.pool, org, q).await?,
        };
        Ok(hits
            .into_iter()
            .map(|hit| {
                let event = Event::from(hit);
                let snip = snippet(&search_text(&event.payload_value()), &q.q);
                (event, snip)
            })
            .collect())
    }
}

/// The text to index of a stored payload. A payload that does not parse has none; it
/// still counts as indexed.
fn body(payload: &str) -> String {
    search_text(&serde_json::from_str(payload).unwrap_or_default())
}

/// A search hit as both engines read it.
type Hit = NamedEventRow;
