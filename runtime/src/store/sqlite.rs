//! Opening the embedded SQLite store: one writer connection and a small pool of readers
//! over a WAL-mode file. Every write goes through the single writer, so transactions never
//! fight over SQLite's one write lock (no `SQLITE_BUSY` under load) and the append can
//! read `max(rowid)` and the project's `last_seq` without racing anyone (`events::sqlite`).
//! `synchronous = FULL`: an acknowledged event survives a power cut, at one fsync per group
//! commit.
//!
//! The full-text index is a second file (`<name>-search.db`) with its own writer, so
//! tokenising and merging FTS segments — as costly as the append itself — runs beside
//! the appends instead of queueing behind the same lock (`search::sqlite`). It is derived
//! data: its watermark lives in it, and a missing or stale file is rebuilt from the
//! events. Readers attach it as `search`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

/// The pools of an open SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one writer of the event store.
    pub(super) write: SqlitePool,
    /// Readers, with the search file attached.
    pub(super) read: SqlitePool,
    /// The one writer of the search file.
    pub(super) search: SqlitePool,
}

/// The search index's schema; it is derived data, so it is created rather than migrated.
const SEARCH_SCHEMA: &str = "
    CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5 (body, content = '', tokenize = 'porter unicode61');
    CREATE TABLE IF NOT EXISTS search_progress (project_id TEXT PRIMARY KEY, indexed_seq INTEGER NOT NULL);";

/// How long a connection may sit unused before it is closed. Each connection keeps its
/// own page cache, schema and prepared statements (36 MiB in all after a burst of ingest,
/// measured with `sqlite3_memory_used`), which only closing it gives back.
const IDLE: Duration = Duration::from_secs(10);

/// Options shared by the three pools. Connections close after [`IDLE`] (ADR 0027), and are
/// not pinged before use: an in-process connection cannot drop the way a socket can, and
/// sqlx's ping is a hand-off to the connection's thread and back ahead of every use.
fn pool(size: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .idle_timeout(IDLE)
        .test_before_acquire(false)
}

fn search_path(db: &Path) -> PathBuf {
    let stem = db.file_stem().and_then(|s| s.to_str()).unwrap_or("polaris");
    db.with_file_name(format!("{stem}-search.db"))
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
        let write = pool(1).connect_with(opts.clone()).await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let search_file = search_path(path);
        let search = pool(1)
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
        let read = pool(4)
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

    pub(super) async fn close(&self) {
        self.read.close().await;
        self.search.close().await;
        self.write.close().await;
    }
}
