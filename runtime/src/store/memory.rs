//! What agents remember (`agent_memory`): facts with the ids of the events they came from,
//! scoped to a floor for an isolated agent or to none (the agent's whole memory) for a
//! shared one. Every statement is scoped by org and agent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::column::{Id, Time};
use super::{Sql, Store, StoreError};
use crate::protocol::to_ms;

/// Longest fact kept, in characters.
pub const MAX_FACT_CHARS: usize = 2000;

/// One remembered fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryFact {
    /// Its id.
    pub id: Uuid,
    /// The agent that remembers it (`agent:dean`).
    pub agent: String,
    /// The floor it belongs to (an isolated agent's memory), or `None` (shared).
    pub project_id: Option<Uuid>,
    /// What is remembered.
    pub fact: String,
    /// The events it came from.
    pub source_events: Vec<Uuid>,
    /// How it was written: `remember`, `tool` (the LLM brain's memory tool) or `decision`.
    pub origin: String,
    /// Who asked for it to be kept, if anyone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A fact to keep.
#[derive(Debug, Clone)]
pub struct NewFact<'a> {
    /// The agent.
    pub agent: &'a str,
    /// Its scope (see [`MemoryFact::project_id`]).
    pub project_id: Option<Uuid>,
    /// The fact.
    pub fact: &'a str,
    /// The events it came from.
    pub source_events: &'a [Uuid],
    /// `remember`, `tool` or `decision`.
    pub origin: &'a str,
    /// Who asked.
    pub author: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct FactRow {
    id: Id,
    agent_id: String,
    project_id: Option<Id>,
    fact: String,
    source_events: String,
    origin: String,
    author: Option<String>,
    created_at: Time,
}

impl TryFrom<FactRow> for MemoryFact {
    type Error = StoreError;

    fn try_from(r: FactRow) -> Result<MemoryFact, StoreError> {
        let source_events = serde_json::from_str(&r.source_events)
            .map_err(|e| StoreError::Corrupt(format!("agent_memory.source_events: {e}")))?;
        Ok(MemoryFact {
            id: r.id.0,
            agent: r.agent_id,
            project_id: r.project_id.map(|p| p.0),
            fact: r.fact,
            source_events,
            origin: r.origin,
            author: r.author,
            created_at: r.created_at.0,
        })
    }
}

// The scope compares NULL with NULL as equal: a shared agent's memory is the NULL scope.
/// The columns a [`FactRow`] reads, from `agent_memory`.
macro_rules! fact_select {
    () => {
        "SELECT id, agent_id, project_id, fact, source_events, origin, author, created_at FROM agent_memory"
    };
}

const IN_SCOPE: Sql = dialects!(
    "SELECT id, agent_id, project_id, fact, source_events, origin, author, created_at
     FROM agent_memory WHERE org_id = $1 AND agent_id = $2 AND project_id "
    { sqlite: "IS $3", postgres: "IS NOT DISTINCT FROM $3" }
    " ORDER BY created_at DESC, id DESC LIMIT $4"
);

/// The agents' memory (`Runtime::agent_memory`).
#[derive(Debug, Clone)]
pub struct AgentMemory {
    store: Store,
}

impl AgentMemory {
    pub(crate) fn new(store: Store) -> AgentMemory {
        AgentMemory { store }
    }

    /// Keeps a fact. The same text already kept in the same scope is not kept twice: the
    /// stored fact comes back.
    pub async fn add(&self, org: &str, f: NewFact<'_>) -> Result<MemoryFact, StoreError> {
        let fact: String = f.fact.trim().chars().take(MAX_FACT_CHARS).collect();
        let existing = self
            .in_scope(org, f.agent, f.project_id, 1000)
            .await?
            .into_iter()
            .find(|m| m.fact == fact);
        if let Some(m) = existing {
            return Ok(m);
        }
        let m = MemoryFact {
            id: Uuid::now_v7(),
            agent: f.agent.to_owned(),
            project_id: f.project_id,
            fact,
            source_events: f.source_events.to_vec(),
            origin: f.origin.to_owned(),
            author: f.author.map(str::to_owned),
            created_at: to_ms(Utc::now()),
        };
        let sources = serde_json::to_string(&m.source_events)
            .unwrap_or_else(|_| unreachable!("ids serialize"));
        execute!(
            &self.store,
            write,
            "INSERT INTO agent_memory (id, org_id, agent_id, project_id, fact, source_events, origin, author, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            Id(m.id),
            org,
            &m.agent,
            m.project_id.map(Id),
            &m.fact,
            sources,
            &m.origin,
            m.author.as_deref(),
            Time(m.created_at),
        )?;
        Ok(m)
    }

    /// The facts of one scope, newest first, at most `limit`.
    pub async fn in_scope(
        &self,
        org: &str,
        agent: &str,
        project_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<MemoryFact>, StoreError> {
        let rows: Vec<FactRow> = fetch!(
            &self.store,
            read,
            fetch_all,
            IN_SCOPE.on(self.store.backend()),
            org,
            agent,
            project_id.map(Id),
            limit,
        )?;
        rows.into_iter().map(MemoryFact::try_from).collect()
    }

    /// Every fact of an agent, newest first, at most `limit`.
    pub async fn list(
        &self,
        org: &str,
        agent: &str,
        limit: i64,
    ) -> Result<Vec<MemoryFact>, StoreError> {
        let rows: Vec<FactRow> = fetch!(
            &self.store,
            read,
            fetch_all,
            concat!(
                fact_select!(),
                " WHERE org_id = $1 AND agent_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3"
            ),
            org,
            agent,
            limit,
        )?;
        rows.into_iter().map(MemoryFact::try_from).collect()
    }

    /// One fact of an agent.
    pub async fn get(
        &self,
        org: &str,
        agent: &str,
        id: Uuid,
    ) -> Result<Option<MemoryFact>, StoreError> {
        let row: Option<FactRow> = fetch!(
            &self.store,
            read,
            fetch_optional,
            concat!(
                fact_select!(),
                " WHERE org_id = $1 AND agent_id = $2 AND id = $3"
            ),
            org,
            agent,
            Id(id),
        )?;
        row.map(MemoryFact::try_from).transpose()
    }

    /// Forgets a fact; false when the agent has no such fact.
    pub async fn delete(&self, org: &str, agent: &str, id: Uuid) -> Result<bool, StoreError> {
        let n = execute!(
            &self.store,
            write,
            "DELETE FROM agent_memory WHERE org_id = $1 AND agent_id = $2 AND id = $3",
            org,
            agent,
            Id(id),
        )?;
        Ok(n > 0)
    }
}
