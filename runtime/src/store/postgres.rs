//! Opening the PostgreSQL store: the production store and the way to run several nodes.
//! One pool serves reads and writes; appends order themselves with a row lock
//! (`events::postgres`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use super::StoreError;

/// A connection idle this long is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool of an open PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
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
            // sqlx pings every connection on its way back to the pool; pinging it again on
            // the way out put a round trip before every statement, the append's included
            // (ADR 0028). Only a connection that sat idle a while, long enough for the
            // database to have restarted or dropped it, is pinged before use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await?;
        // sqlx serialises concurrent migrators with an advisory lock, so several nodes
        // may start at once.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}
