//! PostgreSQL NOTIFY and LISTEN, for what the nodes of one deployment tell each other
//! (`crate::cluster`). SQLite is one node: announcing is a no-op and there is nothing to
//! listen to.

use sqlx::postgres::PgListener;

use super::{Store, StoreError};

/// A LISTEN on a connection of its own.
pub(crate) struct Listener(PgListener);

impl Listener {
    /// The next payload; `None` when the connection was lost (what was announced
    /// meanwhile is missed: the caller listens again and catches up), `Err` when it failed
    /// otherwise.
    pub(crate) async fn recv(&mut self) -> Result<Option<String>, StoreError> {
        // Not `PgListener::recv`, which reconnects by itself and so hides the gap.
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_owned()))
    }
}

impl Store {
    /// Announces `payload` on `channel` to every node (and this one). Best effort.
    pub(crate) async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&pg.pool)
            .await?;
        Ok(())
    }

    /// Listens on `channel`; `None` on SQLite.
    pub(crate) async fn listen(&self, channel: &str) -> Result<Option<Listener>, StoreError> {
        let Store::Postgres(pg) = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(&pg.pool).await?;
        listener.listen(channel).await?;
        Ok(Some(Listener(listener)))
    }
}
