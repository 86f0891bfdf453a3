//! The agent directory: which named agents exist in each org — `agents.yaml` (GitOps,
//! every org) merged with the `agents` table (API edits, one org) — and which floors each
//! has joined, by tag or by invitation.
//!
//! Every membership change is a `join` or `leave` event on the floor, committed in the
//! same transaction as the membership row (an effect, as for driver changes), so the
//! floor is the record of who was there, and two nodes syncing at once record a change
//! once. An id defined in both sources with different content is reported as a
//! conflict, never merged silently: the file's definition is the one that runs (GitOps
//! is the source of truth) and listings show both.
//!
//! Watchers (the agent host) learn of any change through [`Directory::subscribe`].

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use chrono::Utc;
use polaris_registry::{AgentFile, AgentSpec, ParticipantId, check_one};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::floor::{FloorError, FloorMsg, Posted};
use crate::protocol::{Project, Source, to_ms};
use crate::runtime::Runtime;
use crate::store::{
    Append, Effect, JoinReason, LeaveReason, NewEvent, ProjectKey, Rejected, StoreError,
};

/// Where an agent's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentSource {
    /// `agents.yaml`.
    Yaml,
    /// The `agents` table.
    Table,
    /// Both, with different content: the file's definition runs.
    Conflict,
}

/// An agent as the directory lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The definition that runs.
    pub spec: AgentSpec,
    /// Where it comes from.
    pub source: AgentSource,
    /// For a conflict: the table's definition, which does not run.
    pub shadowed: Option<AgentSpec>,
}

/// The agents of the file (shared by every org).
#[derive(Debug, Clone, Default)]
pub struct FileAgents {
    /// The file, if one was given.
    pub path: Option<PathBuf>,
    /// The directory its relative paths (knowledge) start from.
    pub base_dir: PathBuf,
    /// Its agents.
    pub agents: Vec<AgentSpec>,
}

/// Why an agent edit was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A field is invalid (`field: message`).
    #[error("{0}")]
    Invalid(String),
    /// No such agent.
    #[error("{0}")]
    NotFound(String),
    /// The agent exists, or is defined in the file.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A floor could not record the change.
    #[error(transparent)]
    Floor(#[from] FloorError),
}

/// The directory's shared state.
pub struct Directory {
    file: RwLock<Arc<FileAgents>>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("file_agents", &self.file().agents.len())
            .finish()
    }
}

impl Directory {
    pub(crate) fn new() -> Directory {
        Directory {
            file: RwLock::new(Arc::new(FileAgents::default())),
            changed: watch::channel(0).0,
        }
    }

    /// The file's agents.
    pub fn file(&self) -> Arc<FileAgents> {
        match self.file.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn set_file(&self, f: FileAgents) {
        match self.file.write() {
            Ok(mut g) => *g = Arc::new(f),
            Err(p) => *p.into_inner() = Arc::new(f),
        }
    }

    /// A receiver that changes whenever agents or memberships change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// An agent's place on a floor, as `GET /projects/:p/agents` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FloorAgent {
    /// The agent.
    pub agent: String,
    /// Its persona.
    pub display_name: String,
    /// Its icon.
    pub icon: String,
    /// `tag`, `invite`, or `parent` (a subagent reachable through its parent).
    pub reason: String,
    /// The tag, the inviter, or the parent.
    pub detail: Option<String>,
}

impl Runtime {
    /// The directory (file agents and change notifications).
    pub fn directory(&self) -> &Directory {
        &self.shared().directory
    }

    /// Replaces the file's agents (start-up or hot reload) and syncs every floor.
    pub async fn load_agent_file(&self, file: Option<AgentFile>) -> Result<(), DirectoryError> {
        let agents = match file {
            Some(f) => FileAgents {
                path: Some(f.path),
                base_dir: f.base_dir,
                agents: f.agents,
            },
            None => FileAgents {
                base_dir: PathBuf::from("."),
                ..FileAgents::default()
            },
        };
        self.directory().set_file(agents);
        self.sync_all().await
    }

    /// The agents of an org: the file's merged with the table's.
    pub async fn agents(&self, org: &str) -> Result<Vec<Listed>, StoreError> {
        let table = self.store().table_agents(org).await?;
        Ok(merge(&self.directory().file().agents, table, org))
    }

    /// One agent of an org.
    pub async fn agent(&self, org: &str, id: &ParticipantId) -> Result<Option<Listed>, StoreError> {
        Ok(self
            .agents(org)
            .await?
            .into_iter()
            .find(|l| &l.spec.id == id))
    }

    /// Adds (`replace == false`) or replaces an agent of the table, after the same
    /// checks as the file's, then syncs the org's floors.
    pub async fn put_agent(
        &self,
        org: &str,
        spec: AgentSpec,
        replace: bool,
    ) -> Result<Listed, DirectoryError> {
        if let Some((field, message)) = check_one(&spec).into_iter().next() {
            return Err(DirectoryError::Invalid(format!("{field}: {message}")));
        }
        let current = self.agents(org).await?;
        if let Some(p) = &spec.parent
            && !current.iter().any(|l| &l.spec.id == p)
        {
            return Err(DirectoryError::Invalid(format!(
                "parent: {p} is not a defined agent"
            )));
        }
        let value =
            serde_json::to_value(&spec).map_err(|e| DirectoryError::Invalid(e.to_string()))?;
        match self
            .store()
            .put_agent(org, spec.id.as_str(), &value, replace)
            .await
        {
            Err(StoreError::Conflict(_)) => {
                return Err(DirectoryError::Conflict(format!(
                    "{} already exists",
                    spec.id
                )));
            }
            other => other?,
        }
        self.sync_org(org).await?;
        self.agent(org, &spec.id)
            .await?
            .ok_or_else(|| DirectoryError::NotFound(format!("{} vanished", spec.id)))
    }

    /// Deletes an agent of the table (a file agent is changed in the file).
    pub async fn delete_agent(&self, org: &str, id: &ParticipantId) -> Result<(), DirectoryError> {
        let in_file = self.directory().file().agents.iter().any(|a| &a.id == id);
        if !self.store().delete_agent(org, id.as_str()).await? {
            return Err(if in_file {
                DirectoryError::Conflict(format!("{id} is defined in agents.yaml; remove it there"))
            } else {
                DirectoryError::NotFound(format!("{id} not found"))
            });
        }
        self.sync_org(org).await?;
        Ok(())
    }

    /// Replaces a project's tags and syncs its floor.
    pub async fn set_project_tags(
        &self,
        org: &Arc<str>,
        project: &Project,
        tags: &[String],
    ) -> Result<Project, DirectoryError> {
        self.store().set_tags(project.id, tags).await?;
        self.project_changed(org, &project.name, project.id, false)
            .await;
        let updated = Project {
            tags: tags.to_vec(),
            ..project.clone()
        };
        self.sync_floor(org, &updated).await?;
        Ok(updated)
    }

    /// Brings every floor of every org in line with the agents and tags.
    pub async fn sync_all(&self) -> Result<(), DirectoryError> {
        for org in self.store().list_orgs().await? {
            self.sync_org(&org).await?;
        }
        Ok(())
    }

    /// Brings every floor of an org in line with its agents and tags.
    pub async fn sync_org(&self, org: &str) -> Result<(), DirectoryError> {
        for p in self.store().list_projects(org).await? {
            self.sync_floor(org, &p).await?;
        }
        self.directory().bump();
        Ok(())
    }

    /// Joins agents whose tags match the project's, and takes off the floor those that
    /// joined by a tag the project (or agent) no longer has, and those that no longer
    /// exist. Invitations and removals by hand stand.
    pub async fn sync_floor(&self, org: &str, project: &Project) -> Result<(), DirectoryError> {
        let key = ProjectKey {
            id: project.id,
            org: org.into(),
            name: project.name.as_str().into(),
        };
        let agents = self.agents(org).await?;
        let rows = self.store().floor_memberships(project.id).await?;
        let mut changed = false;
        for a in &agents {
            let tag = a.spec.tags.iter().find(|t| project.tags.contains(t));
            let row = rows.iter().find(|r| r.agent == a.spec.id.as_str());
            let effect = match (tag, row) {
                (Some(t), None) => Effect::Join {
                    agent: a.spec.id.clone(),
                    reason: JoinReason::Tag,
                    detail: Some(t.clone()),
                },
                (None, Some(r)) if !r.removed && r.reason == JoinReason::Tag.as_str() => {
                    Effect::Leave {
                        agent: a.spec.id.clone(),
                        why: LeaveReason::TagLost,
                    }
                }
                _ => continue,
            };
            changed |= self.record_membership(&key, effect).await?;
        }
        for r in rows.iter().filter(|r| !r.removed) {
            if agents.iter().any(|a| a.spec.id.as_str() == r.agent) {
                continue;
            }
            let Ok(agent) = ParticipantId::parse(&r.agent) else {
                continue;
            };
            changed |= self
                .record_membership(
                    &key,
                    Effect::Leave {
                        agent,
                        why: LeaveReason::Gone,
                    },
                )
                .await?;
        }
        if changed {
            self.directory().bump();
        }
        Ok(())
    }

    /// Invites an agent onto a floor (also after it was removed by hand).
    pub async fn invite_agent(
        &self,
        key: &ProjectKey,
        agent: &ParticipantId,
        by: Option<&ParticipantId>,
    ) -> Result<(), DirectoryError> {
        if self.agent(&key.org, agent).await?.is_none() {
            return Err(DirectoryError::NotFound(format!(
                "{agent} is not a defined agent"
            )));
        }
        let effect = Effect::Join {
            agent: agent.clone(),
            reason: JoinReason::Invite,
            detail: by.map(ToString::to_string),
        };
        if !self.record_membership(key, effect).await? {
            return Err(DirectoryError::Conflict(format!(
                "{agent} is already on this floor"
            )));
        }
        self.directory().bump();
        Ok(())
    }

    /// Takes an agent off a floor; it stays off even while its tags match, until invited.
    pub async fn remove_agent_from_floor(
        &self,
        key: &ProjectKey,
        agent: &ParticipantId,
        by: Option<&ParticipantId>,
    ) -> Result<(), DirectoryError> {
        let effect = Effect::Leave {
            agent: agent.clone(),
            why: LeaveReason::Removed(by.map(ToString::to_string)),
        };
        if !self.record_membership(key, effect).await? {
            return Err(DirectoryError::NotFound(format!(
                "{agent} is not on this floor"
            )));
        }
        self.directory().bump();
        Ok(())
    }

    /// The agents on a floor, with subagents reachable through a parent that is.
    pub async fn floor_agents(&self, key: &ProjectKey) -> Result<Vec<FloorAgent>, StoreError> {
        let agents = self.agents(&key.org).await?;
        let rows = self.store().floor_memberships(key.id).await?;
        let mut out: Vec<FloorAgent> = Vec::new();
        for r in rows.iter().filter(|r| !r.removed) {
            let Some(a) = agents.iter().find(|a| a.spec.id.as_str() == r.agent) else {
                continue;
            };
            out.push(FloorAgent {
                agent: r.agent.clone(),
                display_name: a.spec.shown_name().to_owned(),
                icon: a.spec.shown_icon().to_owned(),
                reason: r.reason.clone(),
                detail: r.detail.clone(),
            });
        }
        for a in &agents {
            let Some(parent) = &a.spec.parent else {
                continue;
            };
            let removed = rows
                .iter()
                .any(|r| r.removed && r.agent == a.spec.id.as_str());
            let on = out.iter().any(|f| f.agent == a.spec.id.as_str());
            if !removed && !on && out.iter().any(|f| f.agent == parent.as_str()) {
                out.push(FloorAgent {
                    agent: a.spec.id.to_string(),
                    display_name: a.spec.shown_name().to_owned(),
                    icon: a.spec.shown_icon().to_owned(),
                    reason: "parent".into(),
                    detail: Some(parent.to_string()),
                });
            }
        }
        Ok(out)
    }

    /// Commits a join or leave event with its membership change. `Ok(false)`: the change
    /// was already made (by a concurrent sync, or the agent is not there).
    async fn record_membership(
        &self,
        key: &ProjectKey,
        effect: Effect,
    ) -> Result<bool, DirectoryError> {
        let (agent, kind, payload) = match &effect {
            Effect::Join {
                agent,
                reason,
                detail,
            } => (
                agent.clone(),
                "join",
                json!({"type": "join", "agent": agent, "reason": reason.as_str(), "detail": detail}),
            ),
            Effect::Leave { agent, why } => {
                let (reason, by) = match why {
                    LeaveReason::TagLost => ("tag", None),
                    LeaveReason::Removed(by) => ("removed", by.clone()),
                    LeaveReason::Gone => ("agent removed", None),
                };
                (
                    agent.clone(),
                    "leave",
                    json!({"type": "leave", "agent": agent, "reason": reason, "by": by}),
                )
            }
            _ => return Ok(false),
        };
        let now = to_ms(Utc::now());
        let event = NewEvent {
            id: Uuid::now_v7(),
            session: None,
            timestamp: now,
            received_at: now,
            source: Source::System,
            kind: kind.to_owned(),
            sender: agent,
            payload: serde_json::value::to_raw_value(&payload)
                .map_err(|e| DirectoryError::Invalid(e.to_string()))?,
        };
        match self.post_floor_event(key, event, Some(effect)).await {
            Ok(_) => Ok(true),
            Err(FloorError::Rejected(Rejected::Conflict(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits a floor-wide event (no session) through the project's floor.
    pub async fn post_floor_event(
        &self,
        key: &ProjectKey,
        event: NewEvent,
        effect: Option<Effect>,
    ) -> Result<Posted, FloorError> {
        let floor = self.floor(key).await?;
        let item = Box::new(Append { event, effect });
        match floor.call(|r| FloorMsg::Append(item, r), None).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(FloorError::Unavailable),
        }
    }
}

/// Merges the file's agents with an org's table rows (as stored): same id and content is
/// the file's; same id, other content is a conflict (the file's runs, the table's is kept
/// beside it); table-only ids are the table's.
pub fn merge(file: &[AgentSpec], table: Vec<serde_json::Value>, org: &str) -> Vec<Listed> {
    let mut out: Vec<Listed> = file
        .iter()
        .map(|spec| Listed {
            spec: spec.clone(),
            source: AgentSource::Yaml,
            shadowed: None,
        })
        .collect();
    for value in table {
        let spec: AgentSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => {
                // Written through the API's checks; a row that no longer parses (an older
                // format) is skipped loudly rather than taking the org's agents down.
                tracing::error!(org, error = %e, "unreadable agent in the agents table; skipped");
                continue;
            }
        };
        match out.iter_mut().find(|l| l.spec.id == spec.id) {
            Some(l) if l.spec == spec => {}
            Some(l) => {
                l.source = AgentSource::Conflict;
                l.shadowed = Some(spec);
            }
            None => out.push(Listed {
                spec,
                source: AgentSource::Table,
                shadowed: None,
            }),
        }
    }
    out
}
