//! The agent directory: which named agents exist in each org — `agents.yaml` (GitOps,
//! every org) merged with the `agents` table (API edits, one org) — and which floors each
//! has joined, by tag or by invitation.
//!
//! The rules are polaris-registry's ([`merge`], [`plan_floor`]); this module persists
//! their outcome and publishes it. Every membership change is a `join` or `leave` event on
//! the floor, committed in the same transaction as the membership row (an effect, as for
//! driver changes), so the floor is the record of who was there, and two nodes syncing at
//! once record a change once. Watchers (the agent host) learn of any change through
//! [`Directory::subscribe`].

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use polaris_registry::{
    AgentFile, AgentSpec, Change, FileAgents, Listed, ParticipantId, Seat, check_one, merge,
    plan_floor,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::cluster::Notice;
use crate::commit::{FloorError, Posted};
use crate::floor::FloorMsg;
use crate::protocol::{Project, Source, to_ms};
use crate::runtime::Runtime;
use crate::store::{
    Append, Effect, JoinReason, LeaveReason, NewEvent, ProjectKey, Rejected, StoreError,
};

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

/// The directory of a runtime: cheap to make, cheap to clone.
#[derive(Debug, Clone)]
pub struct Directory {
    rt: Runtime,
}

impl Runtime {
    /// The agent directory.
    pub fn directory(&self) -> Directory {
        Directory { rt: self.clone() }
    }
}

impl Directory {
    /// The file's agents.
    pub fn file(&self) -> Arc<FileAgents> {
        self.rt.roster().file()
    }

    /// A receiver that changes whenever agents or memberships change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rt.roster().subscribe()
    }

    /// Agents or memberships of `org` changed: this node's watchers, and every other
    /// node's, look again.
    async fn changed(&self, org: &str) {
        self.rt.roster().bump();
        let notice = Notice::Directory {
            org: org.to_owned(),
        };
        self.rt.cluster().announce(notice).await;
    }

    /// Every org id.
    pub async fn orgs(&self) -> Result<Vec<String>, StoreError> {
        self.rt.store().list_orgs().await
    }

    /// Every floor of an org, oldest first.
    pub async fn floors(&self, org: &str) -> Result<Vec<ProjectKey>, StoreError> {
        let org_arc: Arc<str> = org.into();
        Ok(self
            .rt
            .store()
            .list_projects(org)
            .await?
            .iter()
            .map(|p| key(&org_arc, p))
            .collect())
    }

    /// The users seen in an org (for the team listing).
    pub async fn users(
        &self,
        org: &str,
    ) -> Result<Vec<polaris_protocol::team::TeamUser>, StoreError> {
        Ok(self
            .rt
            .store()
            .list_users(org)
            .await?
            .into_iter()
            .map(|u| polaris_protocol::team::TeamUser {
                participant_id: u.participant_id,
                name: u.name,
                email: u.email,
            })
            .collect())
    }

    /// The members of a floor (participant ids).
    pub async fn members(&self, project: &ProjectKey) -> Result<Vec<String>, StoreError> {
        Ok(self
            .rt
            .store()
            .list_members(project.id)
            .await?
            .into_iter()
            .map(|m| m.participant_id)
            .collect())
    }

    /// Whether any of `who` may use a floor: every floor of `org` visibility, and a
    /// `members` floor for its members.
    pub async fn may_use(&self, project: &ProjectKey, who: &[&str]) -> Result<bool, StoreError> {
        let Some(p) = self.rt.project(&project.org, &project.name).await? else {
            return Ok(false);
        };
        if p.visibility == crate::protocol::Visibility::Org {
            return Ok(true);
        }
        let members = self.rt.store().list_members(project.id).await?;
        Ok(members
            .iter()
            .any(|m| who.contains(&m.participant_id.as_str())))
    }

    /// Every floor each agent of an org is on: `(floor, agent id)`.
    pub async fn seats(&self, org: &str) -> Result<Vec<(ProjectKey, String)>, StoreError> {
        let org_arc: Arc<str> = org.into();
        Ok(self
            .rt
            .store()
            .org_memberships(org)
            .await?
            .into_iter()
            .map(|(p, a)| (key(&org_arc, &p), a))
            .collect())
    }

    /// Where an agent reading a floor starts: its stored cursor; else just before the
    /// newest join of any of `joined_as` (so the join itself is read again, harmlessly, and
    /// nothing after it is missed); else the floor's head.
    pub async fn read_position(
        &self,
        org: &str,
        reader: &str,
        joined_as: &[String],
        project: Uuid,
    ) -> Result<i64, StoreError> {
        let store = self.rt.store();
        if let Some(c) = store.agent_cursor(org, reader, project).await? {
            return Ok(c);
        }
        for who in joined_as {
            if let Some(j) = store.join_seq(project, who).await? {
                return Ok(j - 1);
            }
        }
        store.last_seq(project).await
    }

    /// The read position `reader` saved on a floor, if any (everything up to it was
    /// handled).
    pub async fn saved_position(
        &self,
        org: &str,
        reader: &str,
        project: Uuid,
    ) -> Result<Option<i64>, StoreError> {
        self.rt.store().agent_cursor(org, reader, project).await
    }

    /// Saves read positions (never moving one backwards). With a `term`, only while the
    /// lease of the reader's top-level agent is still under it: false when another instance
    /// has taken the agent over since (its own cursors win).
    pub async fn save_read_positions(
        &self,
        org: &str,
        reader: &str,
        positions: &[(Uuid, i64)],
        term: Option<i64>,
    ) -> Result<bool, StoreError> {
        let root = reader.split_once('.').map_or(reader, |(r, _)| r);
        self.rt
            .store()
            .save_agent_cursors(org, reader, positions, term.map(|t| (root, t)))
            .await
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
        self.rt.roster().set_file(agents);
        self.sync_all().await
    }

    /// The agents of an org: the file's merged with the table's.
    pub async fn agents(&self, org: &str) -> Result<Vec<Listed>, StoreError> {
        let table = self.rt.store().table_agents(org).await?;
        let (listed, unreadable) = merge(&self.file().agents, table);
        for u in unreadable {
            // Written through the API's checks; a row that no longer parses (an older
            // format) is skipped loudly rather than taking the org's agents down.
            tracing::error!(org, agent = ?u.id, error = %u.error, "unreadable agent in the agents table; skipped");
        }
        Ok(listed)
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
        if spec.tools.files.is_some() {
            return Err(DirectoryError::Invalid(
                "tools.files: only agents defined in the agents file may read a local directory"
                    .into(),
            ));
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
            .rt
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
        let in_file = self.file().agents.iter().any(|a| &a.id == id);
        if !self.rt.store().delete_agent(org, id.as_str()).await? {
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
        self.rt.store().set_tags(project.id, tags).await?;
        self.rt
            .project_changed(org, &project.name, project.id, false)
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
        for org in self.rt.store().list_orgs().await? {
            self.sync_org(&org).await?;
        }
        Ok(())
    }

    /// Brings every floor of an org in line with its agents and tags.
    pub async fn sync_org(&self, org: &str) -> Result<(), DirectoryError> {
        for p in self.rt.store().list_projects(org).await? {
            self.sync_floor(org, &p).await?;
        }
        self.changed(org).await;
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
        let rows = self.rt.store().floor_memberships(project.id).await?;
        let seats: Vec<Seat<'_>> = rows
            .iter()
            .map(|r| Seat {
                agent: &r.agent,
                by_tag: r.reason == JoinReason::Tag.as_str(),
                removed: r.removed,
            })
            .collect();
        let mut changed = false;
        for change in plan_floor(&agents, &project.tags, &seats) {
            let effect = match change {
                Change::Join { agent, tag } => Effect::Join {
                    agent,
                    reason: JoinReason::Tag,
                    detail: Some(tag),
                },
                Change::TagLost(agent) => Effect::Leave {
                    agent,
                    why: LeaveReason::TagLost,
                },
                Change::Gone(agent) => Effect::Leave {
                    agent,
                    why: LeaveReason::Gone,
                },
            };
            changed |= self.record_membership(&key, effect).await?;
        }
        if changed {
            self.changed(org).await;
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
        self.changed(&key.org).await;
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
        self.changed(&key.org).await;
        Ok(())
    }

    /// The agents on a floor, with subagents reachable through a parent that is.
    pub async fn floor_agents(&self, key: &ProjectKey) -> Result<Vec<FloorAgent>, StoreError> {
        let agents = self.agents(&key.org).await?;
        let rows = self.rt.store().floor_memberships(key.id).await?;
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
            redactions: Vec::new(),
            traceparent: None,
        };
        match self.post_floor_event(key, event, Some(effect)).await {
            Ok(_) => Ok(true),
            Err(FloorError::Rejected(Rejected::Conflict(_))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Commits a floor-wide event (no session) through the project's floor.
    pub(crate) async fn post_floor_event(
        &self,
        key: &ProjectKey,
        event: NewEvent,
        effect: Option<Effect>,
    ) -> Result<Posted, FloorError> {
        let floor = self.rt.floor(key).await?;
        let item = Append {
            event,
            effect,
            fence: None,
        };
        let commit = |reply| FloorMsg::Commit(crate::commit::Commit { item, reply });
        match floor.call(commit, None).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(FloorError::Unavailable),
        }
    }
}

fn key(org: &Arc<str>, p: &Project) -> ProjectKey {
    ProjectKey {
        id: p.id,
        org: org.clone(),
        name: p.name.as_str().into(),
    }
}
