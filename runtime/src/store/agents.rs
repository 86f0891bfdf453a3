//! Named agents: the agents table, who is on which floor (and the join/leave effects that
//! change it), and each agent's read position on each floor.

use chrono::Utc;
use polaris_registry::ParticipantId;
use uuid::Uuid;

use super::column::{Id, List, Time};
use super::orgs::ProjectRow;
use super::{Sql, Store, StoreError, Tx};
use crate::protocol::Project;

/// Why an agent is on a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinReason {
    /// One of its tags is one of the project's.
    Tag,
    /// Someone invited it.
    Invite,
}

impl JoinReason {
    /// Stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JoinReason::Tag => "tag",
            JoinReason::Invite => "invite",
        }
    }
}

/// Why an agent leaves a floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaveReason {
    /// The tag it joined by is gone (from the project or the agent).
    TagLost,
    /// Someone removed it; it stays off even while its tags match.
    Removed(Option<String>),
    /// The agent no longer exists.
    Gone,
}

/// One agent's place on a floor.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Membership {
    /// The agent.
    #[sqlx(rename = "agent_id")]
    pub agent: String,
    /// `tag` or `invite`.
    pub reason: String,
    /// The tag, or who invited or removed it.
    pub detail: Option<String>,
    /// Removed by hand: off the floor.
    pub removed: bool,
}

/// A floor an agent is on, as [`Store::org_memberships`] reads it.
#[derive(sqlx::FromRow)]
struct FloorRow {
    #[sqlx(flatten)]
    project: ProjectRow,
    agent_id: String,
}

const SAVE_CURSORS: Sql = dialects!(
    "INSERT INTO agent_cursors (org_id, agent_id, project_id, seq) SELECT $1, $2, "
    // The pairs come as two lists (see `List`): zipped by UNNEST on PostgreSQL, by the
    // array index on SQLite (whose parser needs a WHERE before an upsert's ON CONFLICT).
    {
        sqlite: "p.value, $4 ->> p.key FROM json_each($3) p WHERE true",
        postgres: "u.p, u.s FROM UNNEST($3::uuid[], $4::bigint[]) AS u(p, s)"
    }
    // Fenced: only while the lease named by $5 (the agent's root) is under term $6. A
    // term of 0 is never a lease's, so an unleased save passes NULLs and skips the check.
    {
        sqlite: " AND ($5 IS NULL OR ",
        postgres: " WHERE ($5::text IS NULL OR "
    }
    "EXISTS (SELECT 1 FROM leases WHERE org_id = $1 AND name = $5 AND term = $6))"
    " ON CONFLICT (org_id, agent_id, project_id) DO UPDATE SET seq = "
    // Same function, two names.
    {
        sqlite: "max(agent_cursors.seq, excluded.seq)",
        postgres: "GREATEST(agent_cursors.seq, excluded.seq)"
    }
);

impl Store {
    /// Agents defined through the API in an org (JSON specs, as stored).
    pub async fn table_agents(&self, org: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let specs: Vec<sqlx::types::Json<serde_json::Value>> = fetch!(
            self,
            read,
            scalar fetch_all,
            "SELECT spec FROM agents WHERE org_id = $1 ORDER BY id",
            org,
        )?;
        Ok(specs.into_iter().map(|j| j.0).collect())
    }

    /// Creates (`replace == false`: `Conflict` if it exists) or replaces an agent of the
    /// table.
    pub(crate) async fn put_agent(
        &self,
        org: &str,
        id: &str,
        spec: &serde_json::Value,
        replace: bool,
    ) -> Result<(), StoreError> {
        self.ensure_org(org).await?;
        let sql = if replace {
            "INSERT INTO agents (org_id, id, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (org_id, id) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at"
        } else {
            "INSERT INTO agents (org_id, id, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (org_id, id) DO NOTHING"
        };
        let written = execute!(
            self,
            write,
            sql,
            org,
            id,
            sqlx::types::Json(spec),
            Time(Utc::now()),
        )?;
        if written == 0 {
            return Err(StoreError::Conflict("agent"));
        }
        Ok(())
    }

    /// Deletes an agent of the table; false if there was none.
    pub(crate) async fn delete_agent(&self, org: &str, id: &str) -> Result<bool, StoreError> {
        let deleted = execute!(
            self,
            write,
            "DELETE FROM agents WHERE org_id = $1 AND id = $2",
            org,
            id,
        )?;
        Ok(deleted > 0)
    }

    /// The membership rows of a floor (removed ones included).
    pub(crate) async fn floor_memberships(
        &self,
        project: Uuid,
    ) -> Result<Vec<Membership>, StoreError> {
        Ok(fetch!(
            self,
            read,
            fetch_all,
            "SELECT agent_id, reason, detail, removed FROM agent_floors WHERE project_id = $1 ORDER BY since, agent_id",
            Id(project),
        )?)
    }

    /// Every floor each agent of an org is on: `(project, agent id)`.
    pub(crate) async fn org_memberships(
        &self,
        org: &str,
    ) -> Result<Vec<(Project, String)>, StoreError> {
        let rows: Vec<FloorRow> = fetch!(
            self,
            read,
            fetch_all,
            "SELECT p.*, f.agent_id FROM agent_floors f JOIN projects p ON p.id = f.project_id
             WHERE p.org_id = $1 AND NOT f.removed ORDER BY p.created_at, f.agent_id",
            org,
        )?;
        Ok(rows
            .into_iter()
            .map(|r| (r.project.into(), r.agent_id))
            .collect())
    }

    /// The seq of the newest `join` event of `agent` on a floor (where an agent that has
    /// no cursor yet starts reading).
    pub(crate) async fn join_seq(
        &self,
        project: Uuid,
        agent: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(fetch!(
            self,
            read,
            scalar fetch_one,
            "SELECT max(seq) FROM events WHERE project_id = $1 AND session IS NULL AND kind = 'join' AND sender = $2",
            Id(project),
            agent,
        )?)
    }

    /// An agent's read position on a floor.
    pub(crate) async fn agent_cursor(
        &self,
        org: &str,
        agent: &str,
        project: Uuid,
    ) -> Result<Option<i64>, StoreError> {
        Ok(fetch!(
            self,
            read,
            scalar fetch_optional,
            "SELECT seq FROM agent_cursors WHERE org_id = $1 AND agent_id = $2 AND project_id = $3",
            org,
            agent,
            Id(project),
        )?)
    }

    /// Saves read positions (never moving one backwards). With `fence` (the lease's name
    /// and the term the reader runs under), only while that lease is still under that term:
    /// false when it was not (another instance took the agent over, and its cursors win).
    pub(crate) async fn save_agent_cursors(
        &self,
        org: &str,
        agent: &str,
        cursors: &[(Uuid, i64)],
        fence: Option<(&str, i64)>,
    ) -> Result<bool, StoreError> {
        if cursors.is_empty() {
            return Ok(true);
        }
        let (projects, seqs): (Vec<Uuid>, Vec<i64>) = cursors.iter().copied().unzip();
        let n = execute!(
            self,
            write,
            SAVE_CURSORS.on(self.backend()),
            org,
            agent,
            List(projects),
            List(seqs),
            fence.map(|f| f.0),
            fence.map(|f| f.1),
        )?;
        Ok(n > 0)
    }
}

/// A join or leave, inside the append transaction that records it: the rows it changed
/// (none: the precondition failed).
pub(super) async fn change_floor(
    tx: &mut Tx<'_>,
    project: Uuid,
    agent: &ParticipantId,
    change: FloorChange<'_>,
) -> Result<u64, sqlx::Error> {
    let now = Time(Utc::now());
    match change {
        FloorChange::Join(reason, detail) => {
            let sql = match reason {
                JoinReason::Tag => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail, removed, since)
                     VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT (project_id, agent_id) DO NOTHING"
                }
                // An invitation also brings back an agent that was removed by hand.
                JoinReason::Invite => {
                    "INSERT INTO agent_floors (project_id, agent_id, reason, detail, removed, since)
                     VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT (project_id, agent_id) DO UPDATE
                     SET reason = excluded.reason, detail = excluded.detail, removed = FALSE, since = excluded.since
                     WHERE agent_floors.removed"
                }
            };
            execute!(
                tx,
                tx,
                sql,
                Id(project),
                agent.as_str(),
                reason.as_str(),
                detail,
                now
            )
        }
        FloorChange::Leave(LeaveReason::TagLost) => execute!(
            tx,
            tx,
            "DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed AND reason = 'tag'",
            Id(project),
            agent.as_str(),
        ),
        FloorChange::Leave(LeaveReason::Removed(by)) => execute!(
            tx,
            tx,
            "UPDATE agent_floors SET removed = TRUE, detail = $3, since = $4
             WHERE project_id = $1 AND agent_id = $2 AND NOT removed",
            Id(project),
            agent.as_str(),
            by.as_deref(),
            now,
        ),
        FloorChange::Leave(LeaveReason::Gone) => execute!(
            tx,
            tx,
            "DELETE FROM agent_floors WHERE project_id = $1 AND agent_id = $2 AND NOT removed",
            Id(project),
            agent.as_str(),
        ),
    }
}

/// What a join or leave effect asks of the floor's membership.
pub(super) enum FloorChange<'a> {
    /// Joins, with the matching tag or who invited.
    Join(JoinReason, Option<&'a str>),
    /// Leaves.
    Leave(&'a LeaveReason),
}
