//! Leases: who does a piece of work that must run once in a deployment (a named agent, a
//! Slack bridge), until when, and under which term.
//!
//! Every change is one statement, so two contenders on any number of nodes cannot both
//! win: the database decides. The term grows whenever the lease passes to a holder that
//! did not hold it a moment ago (a takeover after expiry, a take after a release), and is
//! the fencing token writes carry ([`Store::fence_term`], checked inside the append's
//! transaction). Times are the caller's clock, bound from Rust like every other time here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::column::Time;
use super::{Store, StoreError, Tx};
use crate::protocol::to_ms;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What is leased (`agent:dean`).
    pub name: String,
    /// Who holds it (or held it last, if it has expired).
    pub holder: String,
    /// The fencing token: grows with every new holder.
    pub term: i64,
    /// Until when the holder has it, unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// Whether the holder still has it at `now`.
    pub fn is_held(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

#[derive(sqlx::FromRow)]
struct LeaseRow {
    name: String,
    holder: String,
    term: i64,
    expires_at: Time,
}

impl From<LeaseRow> for Lease {
    fn from(r: LeaseRow) -> Lease {
        Lease {
            name: r.name,
            holder: r.holder,
            term: r.term,
            expires_at: r.expires_at.0,
        }
    }
}

/// Takes a free or expired lease (term + 1), or extends one the same holder still has
/// (same term); does nothing while someone else holds it. `$4` is the new expiry, `$5`
/// now. In `SET`, `leases.*` is the row before the change on both engines.
const ACQUIRE: &str = "INSERT INTO leases (org_id, name, holder, term, expires_at)
     VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (org_id, name) DO UPDATE SET
         term = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $5
                     THEN leases.term ELSE leases.term + 1 END,
         holder = excluded.holder,
         expires_at = excluded.expires_at
     WHERE leases.expires_at <= $5 OR leases.holder = excluded.holder
     RETURNING name, holder, term, expires_at";

const SELECT: &str =
    "SELECT name, holder, term, expires_at FROM leases WHERE org_id = $1 AND name = $2";

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    // A ttl too large for chrono is "for as long as can be written down".
    now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(365 * 100))
}

impl Store {
    /// Takes the lease `name` for `holder` for `ttl` from `now`: `Ok` with the lease when
    /// `holder` has it (a new term if it did not hold it a moment ago), `Err` with the
    /// current holder's lease otherwise.
    pub(crate) async fn acquire_lease(
        &self,
        org: &str,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<Lease, Lease>, StoreError> {
        let now = to_ms(now);
        let taken: Option<LeaseRow> = fetch!(
            self,
            write,
            fetch_optional,
            ACQUIRE,
            org,
            name,
            holder,
            Time(expiry(now, ttl)),
            Time(now),
        )?;
        if let Some(row) = taken {
            return Ok(Ok(row.into()));
        }
        // Held by someone else. Read on the writer too: a reader could lag behind the
        // statement that just refused us.
        let held: Option<LeaseRow> = fetch!(self, write, fetch_optional, SELECT, org, name)?;
        held.map(|r| Err(r.into()))
            .ok_or(StoreError::Corrupt(format!(
                "lease {name} vanished while held"
            )))
    }

    /// Extends a lease `holder` holds under `term`; `None` if it does not (any more): it
    /// expired, was released, or another holder took it. An expired lease is not renewed,
    /// even if nobody took it: its holder takes it again, under a new term.
    pub(crate) async fn renew_lease(
        &self,
        org: &str,
        name: &str,
        holder: &str,
        term: i64,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, StoreError> {
        let now = to_ms(now);
        let row: Option<LeaseRow> = fetch!(
            self,
            write,
            fetch_optional,
            "UPDATE leases SET expires_at = $5
             WHERE org_id = $1 AND name = $2 AND holder = $3 AND term = $4 AND expires_at > $6
             RETURNING name, holder, term, expires_at",
            org,
            name,
            holder,
            term,
            Time(expiry(now, ttl)),
            Time(now),
        )?;
        Ok(row.map(Lease::from))
    }

    /// Gives up a lease `holder` holds under `term`, so the next contender takes it at once
    /// (under term + 1). False if it was not held so.
    pub(crate) async fn release_lease(
        &self,
        org: &str,
        name: &str,
        holder: &str,
        term: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let now = to_ms(now);
        let n = execute!(
            self,
            write,
            "UPDATE leases SET expires_at = $5
             WHERE org_id = $1 AND name = $2 AND holder = $3 AND term = $4 AND expires_at > $5",
            org,
            name,
            holder,
            term,
            Time(now),
        )?;
        Ok(n == 1)
    }

    /// A lease as stored (held or not).
    pub(crate) async fn lease(&self, org: &str, name: &str) -> Result<Option<Lease>, StoreError> {
        let row: Option<LeaseRow> = fetch!(self, read, fetch_optional, SELECT, org, name)?;
        Ok(row.map(Lease::from))
    }
}

/// The current term of a lease, inside an append's transaction. On PostgreSQL the row is
/// locked for share until the transaction ends, so a takeover (an update of the row) waits
/// for the write it would fence to commit, and the new holder, which starts after it,
/// sees that write. SQLite's single writer serialises the two anyway.
pub(super) async fn fence_term(
    tx: &mut Tx<'_>,
    org: &str,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    let sql = dialects!(
        "SELECT term FROM leases WHERE org_id = $1 AND name = $2"
        { sqlite: "", postgres: " FOR SHARE" }
    )
    .on(tx.backend());
    Ok(fetch!(tx, tx, scalar fetch_optional, sql, org, name)?)
}
