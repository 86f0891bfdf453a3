//! Events: how a row becomes an [`Event`], and the reads (by id, pages after or before a
//! `seq`, everything since a time). The append is in [`append`].

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::column::{Id, Participant, Src, Time};
use super::{ProjectKey, Store, StoreError};
use crate::protocol::{Event, Redaction, TraceParent};

mod append;
mod postgres;
mod sqlite;

pub(crate) use append::{Append, Effect, Fence, NewEvent, Rejected};
use append::{Appended, StoredRow};
pub(super) use sqlite::INSERT_CHUNK;

/// The columns [`EventRow`] reads, in the order of its fields; `event_columns!("e.")`
/// qualifies each with a table alias.
macro_rules! event_columns {
    ($($alias:literal)?) => {
        concat!(
            $($alias,)? "id, ", $($alias,)? "seq, ", $($alias,)? "session, ",
            $($alias,)? "timestamp, ", $($alias,)? "received_at, ", $($alias,)? "source, ",
            $($alias,)? "kind, ", $($alias,)? "sender, ", $($alias,)? "payload, ",
            $($alias,)? "redactions, ", $($alias,)? "traceparent"
        )
    };
}
pub(super) use event_columns;

/// How many columns [`event_columns!`] names.
pub(super) const EVENT_COLUMNS: usize = 11;

/// An `events` row: everything of an [`Event`] but the project's name.
pub(super) struct EventRow {
    id: Id,
    seq: i64,
    session: Option<String>,
    timestamp: Time,
    received_at: Time,
    source: Src,
    kind: String,
    sender: Participant,
    // JSON on PostgreSQL, text on SQLite: kept exactly as accepted either way.
    payload: Json<Box<RawValue>>,
    /// JSON; NULL when nothing was redacted.
    redactions: Option<Json<Vec<Redaction>>>,
    /// A W3C `traceparent`; NULL when the event came without one.
    traceparent: Option<String>,
}

/// Decodes rows by column position, not by name: a page decodes up to a thousand rows,
/// and the lookup of each column by name was most of a page's time on SQLite. Every
/// query that reads events therefore selects [`event_columns!`] first, in that order, and
/// whatever else it needs after them.
macro_rules! decode_event_rows {
    ($($row:ty),+) => {$(
        /// The event columns of `row`, from column 0.
        impl FromRow<'_, $row> for EventRow {
            fn from_row(row: &$row) -> Result<EventRow, sqlx::Error> {
                Ok(EventRow {
                    id: row.try_get(0)?,
                    seq: row.try_get(1)?,
                    session: row.try_get(2)?,
                    timestamp: row.try_get(3)?,
                    received_at: row.try_get(4)?,
                    source: row.try_get(5)?,
                    kind: row.try_get(6)?,
                    sender: row.try_get(7)?,
                    payload: row.try_get(8)?,
                    redactions: row.try_get(9)?,
                    traceparent: row.try_get(10)?,
                })
            }
        }

        impl FromRow<'_, $row> for NamedEventRow {
            fn from_row(row: &$row) -> Result<NamedEventRow, sqlx::Error> {
                Ok(NamedEventRow {
                    event: EventRow::from_row(row)?,
                    project_name: row.try_get(EVENT_COLUMNS)?,
                })
            }
        }

        impl FromRow<'_, $row> for StoredRow {
            fn from_row(row: &$row) -> Result<StoredRow, sqlx::Error> {
                Ok(StoredRow {
                    event: EventRow::from_row(row)?,
                    project_id: row.try_get(EVENT_COLUMNS)?,
                })
            }
        }
    )+};
}

decode_event_rows!(SqliteRow, PgRow);

impl EventRow {
    pub(super) fn into_event(self, project: String) -> Event {
        Event {
            id: self.id.0,
            project,
            session: self.session,
            seq: self.seq,
            timestamp: self.timestamp.0,
            received_at: self.received_at.0,
            source: self.source.0,
            kind: self.kind,
            sender: self.sender.0,
            payload: self.payload.0,
            redactions: self.redactions.map(|r| r.0).unwrap_or_default(),
            // Written only from a parsed context, so it parses again.
            traceparent: self.traceparent.as_deref().and_then(TraceParent::parse),
        }
    }
}

/// The stored form of a redaction list: JSON, or NULL for none (most events).
pub(super) fn redactions_json(r: &[Redaction]) -> Option<String> {
    if r.is_empty() {
        None
    } else {
        serde_json::to_string(r).ok()
    }
}

/// An event row read with its project's name (`p.name AS project_name`, after the event
/// columns).
pub(super) struct NamedEventRow {
    event: EventRow,
    project_name: String,
}

impl From<NamedEventRow> for Event {
    fn from(r: NamedEventRow) -> Event {
        r.event.into_event(r.project_name)
    }
}

/// A page of a floor, then of one session: `seq > $n`, oldest first. Two statements, not
/// one with an optional session, so each is planned on its own index.
const AFTER: [&str; 2] = [
    concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    ),
    concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE project_id = $1 AND session = $2 AND seq > $3 ORDER BY seq LIMIT $4"
    ),
];

/// As [`AFTER`], `seq < $n`, newest first.
const BEFORE: [&str; 2] = [
    concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE project_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
    ),
    concat!(
        "SELECT ",
        event_columns!(),
        " FROM events WHERE project_id = $1 AND session = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
    ),
];

impl Store {
    /// Commits a batch in one transaction (see `append` for what is the same on both
    /// engines, and the guarantees). The result has one entry per item, in order.
    #[tracing::instrument(name = "store.append", skip_all, fields(project = %project.name, n = batch.len()))]
    pub(crate) async fn append(
        &self,
        project: &ProjectKey,
        batch: Vec<Append>,
    ) -> Result<Vec<Result<Appended, Rejected>>, StoreError> {
        match self {
            Store::Sqlite(s) => sqlite::append(&s.write, project, batch).await,
            Store::Postgres(s) => postgres::append(&s.pool, project, batch).await,
        }
    }

    /// The newest `seq` of a project (0 when it has no events).
    pub(crate) async fn last_seq(&self, project: Uuid) -> Result<i64, StoreError> {
        let seq: Option<i64> = fetch!(
            self,
            read,
            scalar fetch_optional,
            "SELECT last_seq FROM projects WHERE id = $1",
            Id(project),
        )?;
        Ok(seq.unwrap_or(0))
    }

    /// Events with `seq > after`, oldest first, optionally of one session.
    pub(crate) async fn events_after(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.page(project, session, AFTER, after, limit).await
    }

    /// Events with `seq < before` (or the newest), newest first.
    pub(crate) async fn events_before(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        self.page(project, session, BEFORE, before, limit).await
    }

    /// Runs one of the page statements ([`AFTER`], [`BEFORE`]).
    async fn page(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        sql: [&'static str; 2],
        bound: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<EventRow> = match session {
            None => fetch!(self, read, fetch_all, sql[0], Id(project.id), bound, limit)?,
            Some(s) => fetch!(
                self,
                read,
                fetch_all,
                sql[1],
                Id(project.id),
                s,
                bound,
                limit
            )?,
        };
        Ok(rows
            .into_iter()
            .map(|r| r.into_event(project.name.to_string()))
            .collect())
    }

    /// Every event (optionally of one session, optionally with `timestamp > since`),
    /// oldest first. Unbounded, as the original's `/messages`.
    pub(crate) async fn events_since(
        &self,
        project: &ProjectKey,
        session: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<EventRow> = fetch!(
            self,
            read,
            fetch_all,
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE project_id = $1 AND ($2 IS NULL OR session = $2)
                   AND ($3 IS NULL OR timestamp > $3) ORDER BY seq"
            ),
            Id(project.id),
            session,
            since.map(Time),
        )?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_event(project.name.to_string()))
            .collect())
    }

    /// The events of one kind on a floor, in `seq` order (an agent's tasks, say).
    pub(crate) async fn events_of_kind(
        &self,
        project: &ProjectKey,
        kind: &str,
    ) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<EventRow> = fetch!(
            self,
            read,
            fetch_all,
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM events WHERE project_id = $1 AND kind = $2 ORDER BY seq"
            ),
            Id(project.id),
            kind,
        )?;
        Ok(rows
            .into_iter()
            .map(|r| r.into_event(project.name.to_string()))
            .collect())
    }

    /// The trace contexts of a floor's events with `after < seq <= through` that have
    /// one, oldest first, at most `limit` (what a node relays when it hears of them).
    pub(crate) async fn trace_contexts(
        &self,
        project: Uuid,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<(i64, TraceParent)>, StoreError> {
        let rows: Vec<(i64, String)> = fetch!(
            self,
            read,
            fetch_all,
            "SELECT seq, traceparent FROM events WHERE project_id = $1 AND seq > $2 AND seq <= $3
               AND traceparent IS NOT NULL ORDER BY seq LIMIT $4",
            Id(project),
            after,
            through,
            limit,
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, t)| Some((seq, TraceParent::parse(&t)?)))
            .collect())
    }

    /// The `seq` and session of an event of this project.
    pub(crate) async fn locate_event(
        &self,
        project: Uuid,
        id: Uuid,
    ) -> Result<Option<(i64, Option<String>)>, StoreError> {
        Ok(fetch!(
            self,
            read,
            fetch_optional,
            "SELECT seq, session FROM events WHERE project_id = $1 AND id = $2",
            Id(project),
            Id(id),
        )?)
    }
}
