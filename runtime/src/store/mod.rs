//! The store: every durable fact of the floor service, on SQLite or PostgreSQL.
//!
//! [`Store`] is one type with two engines behind it. The schemas differ (types, locking,
//! full-text search) but the contract does not, and the integration tests run every case
//! on both. What callers may rely on:
//!
//! - [`Store::append`] gives each new event the next `seq` of its project inside the
//!   transaction that inserts it, so commit order is `seq` order and `seq` has no gaps,
//!   whatever the number of writers or nodes.
//! - An event id that is already stored is never written twice: the stored event comes back
//!   with `created: false`.
//! - A batch is all or nothing at the transaction level; a single item that cannot be
//!   written (an id used by another project, a driver changed under us) is rejected
//!   alone, without taking the batch down.
//! - Every query is scoped by org or by a project id that was resolved within an org.
//! - Search lags the commit: [`Store::index_search`] indexes committed events in batches,
//!   and the indexer actor runs it (searches ask it to catch up first).
//!
//! # Layout
//!
//! One module per concern, each written once for both engines: `orgs` (orgs, users,
//! projects, members), `sessions`, `events` (reads and the append), `agents` (the
//! agents table, floor memberships, cursors), `leases`, `annotations`, `memory` and `search`. A query is
//! one SQL text with `$n` placeholders (sqlx's SQLite driver numbers them as PostgreSQL
//! does), run through `run!`, `execute!` or `fetch!`, which expand it for whichever
//! engine the store holds; rows decode through one `FromRow` struct per table. Values the
//! engines store differently (ids, times, tags, lists) are the `column` types; times are
//! bound from Rust, never `now()`. Code stays per engine only where the engines differ:
//! opening connections (`sqlite`, `postgres`), how the append allocates and locks
//! `seq` (`events::sqlite`, `events::postgres`), full-text search (`search::sqlite`,
//! `search::postgres`), and a statement fragment here and there (`dialects!`), each
//! saying why.
//!
//! Adding a column: a migration per engine (`migrations/sqlite`, `migrations/postgres`,
//! additive only), the field in the table's row struct, and the statements that write it.

/// Runs `$body` on whichever engine the store holds, with `$db` that engine's pool: the
/// source has the query once, the compiler expands it for both (each arm is concrete, so
/// there are no generic bounds to spell out and no dynamic dispatch). `read` is SQLite's
/// reader pool, `write` its single writer connection; PostgreSQL has one pool for both.
/// With `tx` on a [`Tx`], `$db` is the transaction's connection.
macro_rules! run {
    ($tx:expr, tx, |$db:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(c) => {
                let $db = &mut **c;
                $body
            }
            $crate::store::Tx::Postgres(c) => {
                let $db = &mut **c;
                $body
            }
        }
    };
    ($store:expr, $pool:ident, |$db:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(s) => {
                let $db = &s.$pool;
                $body
            }
            $crate::store::Store::Postgres(s) => {
                let $db = &s.pool;
                $body
            }
        }
    };
}

/// One statement with its binds, on `read`, `write` or `tx` as in `run!`: the number of
/// rows it changed.
macro_rules! execute {
    ($on:expr, $pool:ident, $sql:expr $(, $arg:expr)* $(,)?) => {
        run!($on, $pool, |db| {
            sqlx::query($sql)
                $(.bind($arg))*
                .execute(db)
                .await
                .map(|r| r.rows_affected())
        })
    };
}

/// One query with its binds, fetched with `$method` (`fetch_all`, `fetch_optional`,
/// `fetch_one`) into whatever row type the caller expects (a `FromRow` struct, a tuple);
/// with `scalar`, into the first column's type.
macro_rules! fetch {
    ($on:expr, $pool:ident, scalar $method:ident, $sql:expr $(, $arg:expr)* $(,)?) => {
        run!($on, $pool, |db| {
            sqlx::query_scalar($sql)$(.bind($arg))*.$method(db).await
        })
    };
    ($on:expr, $pool:ident, $method:ident, $sql:expr $(, $arg:expr)* $(,)?) => {
        run!($on, $pool, |db| {
            sqlx::query_as($sql)$(.bind($arg))*.$method(db).await
        })
    };
}

/// A statement whose text differs between the engines in a few fragments, written once
/// with the fragments inline: `dialects!("… " { sqlite: "…", postgres: "…" } " …")`. The
/// two texts are built at compile time.
macro_rules! dialects {
    (@sqlite { sqlite: $s:literal, postgres: $p:literal }) => {
        $s
    };
    (@postgres { sqlite: $s:literal, postgres: $p:literal }) => {
        $p
    };
    (@$engine:ident $text:literal) => {
        $text
    };
    ($($part:tt)+) => {
        $crate::store::Sql {
            sqlite: concat!($(dialects!(@sqlite $part)),+),
            postgres: concat!($(dialects!(@postgres $part)),+),
        }
    };
}

mod agents;
mod annotations;
mod column;
mod events;
mod leases;
mod memory;
mod notify;
mod orgs;
mod postgres;
mod search;
mod sessions;
mod slack;
mod sqlite;
#[cfg(test)]
mod tests;
mod web;

use std::sync::Arc;

use polaris_config::DatabaseUrl;
use uuid::Uuid;

pub(crate) use agents::{JoinReason, LeaveReason};
pub(crate) use events::{Append, Effect, Fence, NewEvent, Rejected};
pub use leases::Lease;
pub use memory::{AgentMemory, MAX_FACT_CHARS, MemoryFact, NewFact};
pub(crate) use orgs::Policies;
pub(crate) use search::SearchQuery;
pub use slack::{Fence as SlackFence, SlackCursor, SlackFloor, SlackLinks, SlackTarget};
pub(crate) use web::SignIn;

/// A store failure the caller cannot fix by changing its request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (connection lost, disk full, …).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A migration failed at start.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique name is taken (project or session name).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The row to change does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A stored value does not parse (written by something other than this service).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Could not create the data directory.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // A column type refused a stored value (see `column`): the row is at fault, not
            // the database, so callers answer it as an internal error rather than a
            // passing unavailability.
            sqlx::Error::ColumnDecode { index, source } => {
                StoreError::Corrupt(format!("{index}: {source}"))
            }
            e => StoreError::Database(e),
        }
    }
}

/// The project an event belongs to, as the append and read paths need it.
#[derive(Debug, Clone)]
pub struct ProjectKey {
    /// Project id.
    pub id: Uuid,
    /// Owning org.
    pub org: Arc<str>,
    /// Current name (shown in every Event JSON).
    pub name: Arc<str>,
}

/// Which database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The store handle: cheap to clone, shared by every actor and request.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite (one writer connection, several readers).
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        match url {
            DatabaseUrl::Sqlite(path) => Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?)),
            DatabaseUrl::Postgres(url) => Ok(Store::Postgres(
                postgres::PgStore::open(url.expose()).await?,
            )),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        execute!(self, read, "SELECT 1")?;
        Ok(())
    }

    /// Closes every connection (after the floors have committed).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// A connection inside a transaction, on either engine (see `run!`).
enum Tx<'c> {
    /// SQLite's writer connection.
    Sqlite(&'c mut sqlx::SqliteConnection),
    /// A PostgreSQL transaction's connection.
    Postgres(&'c mut sqlx::PgConnection),
}

impl Tx<'_> {
    fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The two texts of a statement written with `dialects!`.
struct Sql {
    sqlite: &'static str,
    postgres: &'static str,
}

impl Sql {
    fn on(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}
