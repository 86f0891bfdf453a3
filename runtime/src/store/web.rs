//! Dashboard sign-in rows: one-time login links and cookie sessions (migration 0007).
//!
//! Callers pass hashes, never the secrets themselves. Redeeming a link is one statement
//! that marks it used only if it is unused and unexpired, so on any number of nodes a link
//! signs in once. Times are the caller's clock, bound from Rust.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::column::{Id, Participant, Time};
use super::events::{EventRow, event_columns};
use super::{Store, StoreError};
use crate::protocol::to_ms;

/// Who a link or a cookie session signs in as. `role` is the name `Role` serializes to.
#[derive(Debug, Clone)]
pub(crate) struct SignIn {
    /// The org.
    pub(crate) org: String,
    /// The participant.
    pub(crate) participant: polaris_registry::ParticipantId,
    /// `member`, `admin` or `service`.
    pub(crate) role: String,
}

#[derive(sqlx::FromRow)]
struct SignInRow {
    org_id: String,
    participant_id: Participant,
    role: String,
}

impl From<SignInRow> for SignIn {
    fn from(r: SignInRow) -> SignIn {
        SignIn {
            org: r.org_id,
            participant: r.participant_id.0,
            role: r.role,
        }
    }
}

impl Store {
    /// Records a login link (by its token's hash) valid until `expires_at`.
    pub(crate) async fn create_login_link(
        &self,
        token_hash: &str,
        who: &SignIn,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.ensure_org(&who.org).await?;
        execute!(
            self,
            write,
            "INSERT INTO login_links
                 (token_hash, org_id, participant_id, role, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            token_hash,
            who.org.as_str(),
            who.participant.as_str(),
            who.role.as_str(),
            Time(to_ms(now)),
            Time(to_ms(expires_at)),
        )?;
        Ok(())
    }

    /// Marks the link used and returns who it signs in, or `None` when it is unknown,
    /// expired or used already. One statement: of two concurrent redeemers, one wins.
    pub(crate) async fn redeem_login_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SignIn>, StoreError> {
        let row: Option<SignInRow> = fetch!(
            self,
            write,
            fetch_optional,
            "UPDATE login_links SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
             RETURNING org_id, participant_id, role",
            token_hash,
            Time(to_ms(now)),
        )?;
        Ok(row.map(SignIn::from))
    }

    /// Records a cookie session (by its id's hash) valid until `expires_at`, and forgets
    /// expired sessions and links while at it (sign-ins are rare; no sweeper needed).
    pub(crate) async fn create_web_session(
        &self,
        id_hash: &str,
        who: &SignIn,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let now = to_ms(now);
        execute!(
            self,
            write,
            "DELETE FROM web_sessions WHERE expires_at <= $1",
            Time(now)
        )?;
        execute!(
            self,
            write,
            "DELETE FROM login_links WHERE expires_at <= $1",
            Time(now)
        )?;
        execute!(
            self,
            write,
            "INSERT INTO web_sessions
                 (id_hash, org_id, participant_id, role, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            id_hash,
            who.org.as_str(),
            who.participant.as_str(),
            who.role.as_str(),
            Time(now),
            Time(to_ms(expires_at)),
        )?;
        Ok(())
    }

    /// The signed-in participant of a live cookie session.
    pub(crate) async fn web_session(
        &self,
        id_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<SignIn>, StoreError> {
        let row: Option<SignInRow> = fetch!(
            self,
            read,
            fetch_optional,
            "SELECT org_id, participant_id, role FROM web_sessions
             WHERE id_hash = $1 AND expires_at > $2",
            id_hash,
            Time(to_ms(now)),
        )?;
        Ok(row.map(SignIn::from))
    }

    /// Ends a cookie session (sign-out).
    pub(crate) async fn delete_web_session(&self, id_hash: &str) -> Result<(), StoreError> {
        execute!(
            self,
            write,
            "DELETE FROM web_sessions WHERE id_hash = $1",
            id_hash
        )?;
        Ok(())
    }

    /// The first `seq` of `project`, at most `upto + 1`, whose event arrived at or after
    /// `t`: a bisection over the `(project_id, seq)` index, so finding where a time window
    /// starts costs ~log2(events) point reads instead of a scan. Arrival times grow with
    /// `seq` (stamped just before the commit, in the order the floor commits) up to the
    /// reordering within one group commit; callers that need an exact count filter by
    /// `received_at` as well and start a little early.
    pub(crate) async fn first_seq_since(
        &self,
        project: Uuid,
        upto: i64,
        t: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let (mut lo, mut hi) = (1_i64, upto.max(0) + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at_or_after: Option<bool> = fetch!(
                self,
                read,
                scalar fetch_optional,
                "SELECT received_at >= $3 FROM events WHERE project_id = $1 AND seq >= $2
                 ORDER BY seq LIMIT 1",
                Id(project),
                mid,
                Time(t),
            )?;
            match at_or_after {
                Some(false) => lo = mid + 1,
                // At or after `t`, or nothing at or above `mid` (deleted rows).
                Some(true) | None => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Events of `project` with `after < seq <= upto` that arrived at or after `since`,
    /// counted per UTC day (days since the epoch), for the floors page's activity chart.
    /// The range keeps it on the `(project_id, seq)` index.
    pub(crate) async fn events_per_day(
        &self,
        project: Uuid,
        after: i64,
        upto: i64,
        since: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(fetch!(
            self,
            read,
            fetch_all,
            dialects!(
                "SELECT "
                {
                    sqlite: "received_at / 86400000",
                    postgres: "FLOOR(EXTRACT(EPOCH FROM received_at) / 86400)::BIGINT"
                }
                " AS day, COUNT(*) AS n FROM events
                 WHERE project_id = $1 AND seq > $2 AND seq <= $3 AND received_at >= $4
                 GROUP BY day ORDER BY day"
            )
            .on(self.backend()),
            Id(project),
            after,
            upto,
            Time(since),
        )?)
    }
}

impl Store {
    /// The newest posts (`agent`, `reply`, `inject`) of `sender` and its subagents on
    /// these projects, newest first: an agent's recent answers and advice.
    pub(crate) async fn recent_posts(
        &self,
        projects: &[(Uuid, String)],
        sender: &str,
        limit: i64,
    ) -> Result<Vec<crate::protocol::Event>, StoreError> {
        let mut out = Vec::new();
        let sub = format!("{sender}.%");
        for (id, name) in projects {
            let rows: Vec<EventRow> = fetch!(
                self,
                read,
                fetch_all,
                concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE project_id = $1 AND (sender = $2 OR sender LIKE $3)
                      AND source IN ('agent', 'reply', 'inject') ORDER BY seq DESC LIMIT $4"
                ),
                Id(*id),
                sender,
                sub.as_str(),
                limit,
            )?;
            out.extend(rows.into_iter().map(|r| r.into_event(name.clone())));
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.received_at));
        out.truncate(limit.max(0) as usize);
        Ok(out)
    }
}
