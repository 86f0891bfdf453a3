//! What the Slack bridge keeps: channel and thread links, and how far it has posted each
//! floor. Every write a bridge makes under a lease is fenced by the lease's term, so a
//! bridge that lost its lease (and does not know yet) cannot move a cursor back or link a
//! second thread.

use chrono::Utc;
use uuid::Uuid;

use super::column::{Id, Time};
use super::{Store, StoreError};
use crate::protocol::to_ms;

/// The lease a bridge writes under: its name and term.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    /// The lease (`slack:T0123`).
    pub name: &'a str,
    /// The term the bridge holds it under.
    pub term: i64,
}

/// A floor in a workspace: what every per-floor row is keyed by.
#[derive(Debug, Clone, Copy)]
pub struct SlackFloor<'a> {
    /// The project's org.
    pub org: &'a str,
    /// The workspace (`T…`).
    pub team: &'a str,
    /// The project.
    pub project: Uuid,
}

/// A floor's place in a workspace: the bridge's cursor and the post that may be in doubt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackCursor {
    /// Every event through this `seq` is posted (or needs no post).
    pub seq: i64,
    /// The post under way when the bridge last stopped (JSON, the bridge's own format).
    pub pending: Option<String>,
}

/// Where a Slack channel or thread leads on the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackTarget {
    /// The org of the linked project.
    pub org: String,
    /// The project.
    pub project: Uuid,
    /// The session whose thread it is (`None`: the project's channel).
    pub session: Option<String>,
}

/// The Slack bridge's tables (`Runtime::slack_links`).
#[derive(Debug, Clone)]
pub struct SlackLinks {
    store: Store,
}

/// `$n` and `$m` hold the fence's lease name and term; the statement writes nothing unless
/// that lease is still under that term.
macro_rules! fenced {
    ($n:literal, $m:literal) => {
        concat!(
            " WHERE EXISTS (SELECT 1 FROM leases WHERE org_id = $1 AND name = ",
            $n,
            " AND term = ",
            $m,
            ")"
        )
    };
}

impl SlackLinks {
    pub(crate) fn new(store: Store) -> SlackLinks {
        SlackLinks { store }
    }

    /// The channel linked to `project` in `team`.
    pub async fn channel(&self, at: SlackFloor<'_>) -> Result<Option<String>, StoreError> {
        Ok(fetch!(
            &self.store,
            read,
            scalar fetch_optional,
            "SELECT channel_id FROM slack_links
             WHERE org_id = $1 AND team_id = $2 AND project_id = $3 AND session = ''",
            at.org,
            at.team,
            Id(at.project),
        )?)
    }

    /// Links `project` to `channel` (replacing an older link) and records the channel's
    /// name on the project.
    pub async fn link_channel(
        &self,
        at: SlackFloor<'_>,
        channel: &str,
        channel_name: &str,
        fence: Fence<'_>,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            &self.store,
            write,
            concat!(
                "INSERT INTO slack_links (org_id, team_id, project_id, session, channel_id, created_at)
                 SELECT $1, $2, $3, '', $4, $5",
                fenced!("$6", "$7"),
                " ON CONFLICT (org_id, team_id, project_id, session)
                 DO UPDATE SET channel_id = excluded.channel_id"
            ),
            at.org,
            at.team,
            Id(at.project),
            channel,
            Time(to_ms(Utc::now())),
            fence.name,
            fence.term,
        )?;
        if n > 0 {
            self.channel_renamed(at.team, channel, channel_name).await?;
        }
        Ok(n > 0)
    }

    /// Records a linked channel's new name (a rename in Slack or by the bridge).
    pub async fn channel_renamed(
        &self,
        team: &str,
        channel: &str,
        name: &str,
    ) -> Result<(), StoreError> {
        execute!(
            &self.store,
            write,
            "UPDATE projects SET slack_channel_id = $2, slack_channel_name = $3
             WHERE id IN (SELECT project_id FROM slack_links
                          WHERE team_id = $1 AND channel_id = $2 AND session = '')",
            team,
            channel,
            name,
        )?;
        Ok(())
    }

    /// The thread of `session`, if its first message was posted.
    pub async fn thread(
        &self,
        at: SlackFloor<'_>,
        session: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(fetch!(
            &self.store,
            read,
            scalar fetch_optional,
            "SELECT thread_ts FROM slack_links
             WHERE org_id = $1 AND team_id = $2 AND project_id = $3 AND session = $4",
            at.org,
            at.team,
            Id(at.project),
            session,
        )?
        .flatten())
    }

    /// Links `session` to the thread started by message `ts` of `channel`. The first link
    /// stays: a session has one thread.
    pub async fn link_thread(
        &self,
        at: SlackFloor<'_>,
        session: &str,
        channel: &str,
        ts: &str,
        fence: Fence<'_>,
    ) -> Result<bool, StoreError> {
        let n = execute!(
            &self.store,
            write,
            concat!(
                "INSERT INTO slack_links (org_id, team_id, project_id, session, channel_id, thread_ts, created_at)
                 SELECT $1, $2, $3, $8, $4, $9, $5",
                fenced!("$6", "$7"),
                " ON CONFLICT (org_id, team_id, project_id, session) DO NOTHING"
            ),
            at.org,
            at.team,
            Id(at.project),
            channel,
            Time(to_ms(Utc::now())),
            fence.name,
            fence.term,
            session,
            ts,
        )?;
        Ok(n > 0)
    }

    /// Where a channel (with `thread_ts`: a thread in it) leads, if anywhere.
    pub async fn target(
        &self,
        team: &str,
        channel: &str,
        thread_ts: Option<&str>,
    ) -> Result<Option<SlackTarget>, StoreError> {
        let row: Option<(String, Id, String)> = match thread_ts {
            Some(ts) => fetch!(
                &self.store,
                read,
                fetch_optional,
                "SELECT org_id, project_id, session FROM slack_links
                 WHERE team_id = $1 AND channel_id = $2 AND thread_ts = $3",
                team,
                channel,
                ts,
            )?,
            None => fetch!(
                &self.store,
                read,
                fetch_optional,
                "SELECT org_id, project_id, session FROM slack_links
                 WHERE team_id = $1 AND channel_id = $2 AND session = ''",
                team,
                channel,
            )?,
        };
        Ok(row.map(|(org, project, session)| SlackTarget {
            org,
            project: project.0,
            session: (!session.is_empty()).then_some(session),
        }))
    }

    /// The bridge's cursor on a floor.
    pub async fn cursor(&self, at: SlackFloor<'_>) -> Result<Option<SlackCursor>, StoreError> {
        let row: Option<(i64, Option<String>)> = fetch!(
            &self.store,
            write,
            fetch_optional,
            "SELECT seq, pending FROM slack_cursors
             WHERE org_id = $1 AND team_id = $2 AND project_id = $3",
            at.org,
            at.team,
            Id(at.project),
        )?;
        Ok(row.map(|(seq, pending)| SlackCursor { seq, pending }))
    }

    /// Saves the cursor: `seq` (never moved back) and the post now under way (`None`: no
    /// post is). False when the fence no longer holds.
    pub async fn save_cursor(
        &self,
        at: SlackFloor<'_>,
        seq: i64,
        pending: Option<&str>,
        fence: Fence<'_>,
    ) -> Result<bool, StoreError> {
        const SAVE: super::Sql = dialects!(
            "INSERT INTO slack_cursors (org_id, team_id, project_id, seq, pending)
             SELECT $1, $2, $3, $4, $5"
            " WHERE EXISTS (SELECT 1 FROM leases WHERE org_id = $1 AND name = $6 AND term = $7)"
            " ON CONFLICT (org_id, team_id, project_id) DO UPDATE SET pending = excluded.pending, seq = "
            {
                sqlite: "max(slack_cursors.seq, excluded.seq)",
                postgres: "GREATEST(slack_cursors.seq, excluded.seq)"
            }
        );
        let n = execute!(
            &self.store,
            write,
            SAVE.on(self.store.backend()),
            at.org,
            at.team,
            Id(at.project),
            seq,
            pending,
            fence.name,
            fence.term,
        )?;
        Ok(n > 0)
    }
}
