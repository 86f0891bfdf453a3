//! Handing a task to an agent: the agent is seated as the driver of a session (a new
//! `task-…` one unless named) and a `task` event is written there, which the agent reads
//! from its stream and drives (see the agents crate's driver). The API's
//! `POST /projects/:p/agents/:agent/tasks` and a `@dean take: …` on the floor both come here.
//!
//! A task is its events: the state is read back from the session (`api/tasks.rs`), so
//! nothing else is stored and a task survives restarts of the floor and of the agent.

use polaris_registry::ParticipantId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::directory::DirectoryError;
use crate::protocol::validate::{self, Incoming};
use crate::protocol::{Event, Source};
use crate::runtime::Runtime;
use crate::session::{SYSTEM_SENDER, SessionMsg};
use crate::store::{ProjectKey, StoreError};

/// The most steps a task may be given.
const MAX_STEPS: u32 = 200;
/// The longest a task may run.
const MAX_WALL_MS: u64 = 24 * 3_600_000;
/// The longest task text.
const MAX_TASK: usize = 8_000;

/// What a task may spend before the agent stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Tool steps.
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// Wall time from the task's start, in milliseconds.
    #[serde(default = "default_wall_ms")]
    pub wall_ms: u64,
}

fn default_steps() -> u32 {
    20
}

fn default_wall_ms() -> u64 {
    600_000
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            steps: default_steps(),
            wall_ms: default_wall_ms(),
        }
    }
}

/// A task to hand over.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Its id; derive it from what asked for the task (a `take:` event) so that asking
    /// again hands over nothing new. `None`: a fresh one.
    pub id: Option<Uuid>,
    /// The agent (top-level, on the floor).
    pub agent: ParticipantId,
    /// What to do.
    pub task: String,
    /// The session to drive; `None`: a new `task-…` session.
    pub session: Option<String>,
    /// Its budget.
    pub budget: Budget,
    /// Who handed it over.
    pub by: Option<ParticipantId>,
    /// The agent was seated as the session's driver already (a human handed the seat to
    /// it): the task continues that session's work instead of claiming the seat.
    pub seated: bool,
}

/// A task handed over.
#[derive(Debug, Clone)]
pub struct HandedTask {
    /// Its id (the `task` event's).
    pub id: Uuid,
    /// The session the agent drives.
    pub session: String,
    /// False when this id had been handed over already (nothing new was written).
    pub created: bool,
}

fn system() -> ParticipantId {
    ParticipantId::parse(SYSTEM_SENDER).unwrap_or_else(|_| unreachable!("SYSTEM_SENDER is valid"))
}

impl Runtime {
    /// Hands `t` to its agent on the floor `key` (checked, seated, then the `task` event);
    /// a bad field is `Invalid` naming it, an unknown agent `NotFound`, a session that has
    /// a driver (or an agent not on the floor) `Conflict`. Nothing is left behind when it
    /// fails: the seat is given back if the `task` event cannot be written.
    pub async fn hand_task(
        &self,
        key: &ProjectKey,
        t: NewTask,
    ) -> Result<HandedTask, DirectoryError> {
        let agent = t.agent;
        self.directory()
            .agent(&key.org, &agent)
            .await?
            .ok_or_else(|| DirectoryError::NotFound(format!("agent: {agent} not found")))?;
        if agent.root() != agent.as_str() {
            return Err(DirectoryError::Invalid(format!(
                "agent: {agent} is a subagent; hand the task to {}",
                agent.root()
            )));
        }
        let on_floor = self
            .directory()
            .floor_agents(key)
            .await?
            .iter()
            .any(|a| a.agent == agent.as_str());
        if !on_floor {
            return Err(DirectoryError::Conflict(format!(
                "agent: {agent} is not on {}; invite it first (POST /projects/{}/agents)",
                key.name, key.name
            )));
        }
        if !(1..=MAX_STEPS).contains(&t.budget.steps) {
            return Err(DirectoryError::Invalid(format!(
                "budget.steps: must be between 1 and {MAX_STEPS}"
            )));
        }
        if !(1_000..=MAX_WALL_MS).contains(&t.budget.wall_ms) {
            return Err(DirectoryError::Invalid(format!(
                "budget.wall_ms: must be between 1000 and {MAX_WALL_MS}"
            )));
        }
        let id = t.id.unwrap_or_else(Uuid::now_v7);
        let session = match t.session {
            Some(s) => {
                validate::name("session", &s)
                    .map_err(|e| DirectoryError::Invalid(e.to_string()))?;
                s
            }
            None => format!("task-{}", &id.simple().to_string()[24..]),
        };
        let store = self.store();
        let continued;
        let task = if t.seated && t.task.trim().is_empty() {
            continued = continue_text(
                &store.events_since(key, Some(&session), None).await?,
                &agent,
            );
            continued.as_str()
        } else {
            t.task.trim()
        };
        if task.is_empty() || task.len() > MAX_TASK {
            return Err(DirectoryError::Invalid(format!(
                "task: must be 1 to {MAX_TASK} characters"
            )));
        }
        if let Some((_, Some(s))) = store.locate_event(key.id, id).await? {
            return Ok(HandedTask {
                id,
                session: s,
                created: false,
            });
        }
        if store.get_session(key, &session).await?.is_none() {
            // "Already exists" (a race with another request) is fine: the claim decides.
            match store.create_session(key, &session, None, None).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if t.seated {
            // Someone seated the agent already: it continues that session's work.
            let driver = store
                .get_session(key, &session)
                .await?
                .and_then(|s| s.driver);
            if driver.as_ref() != Some(&agent) {
                return Err(DirectoryError::Conflict(format!(
                    "session: {agent} is not its driver"
                )));
            }
        } else {
            // The seat is the lock: a session that has a driver gets no task.
            self.ask(key, &session, |reply| SessionMsg::ClaimDriver {
                driver: agent.clone(),
                by: Some(system()),
                reply,
            })
            .await?;
        }
        let payload = json!({
            "type": "task",
            "task_id": id,
            "task": task,
            "agent": agent,
            "budget": t.budget,
            "by": t.by,
        });
        let incoming = Incoming {
            traceparent: None,
            term: None,
            id,
            timestamp: None,
            source: Source::System,
            kind: "task".into(),
            sender: system(),
            payload: serde_json::value::to_raw_value(&payload)
                .unwrap_or_else(|_| unreachable!("a Value serializes")),
        };
        let floor = Caller::participant(&key.org, system(), Role::Service);
        if let Err(e) = self.post(key, &session, incoming, &floor).await {
            if t.seated {
                return Err(e.into());
            }
            // Give the seat back, so a failed hand-over leaves the session as it was.
            let _ = self
                .ask(key, &session, |reply| SessionMsg::Handoff {
                    by: Some(system()),
                    reply,
                })
                .await;
            return Err(e.into());
        }
        Ok(HandedTask {
            id,
            session,
            created: true,
        })
    }
}

/// The task of an agent handed a session's seat: carry on with what the session's last
/// prompt (by someone else) asked.
fn continue_text(events: &[crate::protocol::Event], agent: &ParticipantId) -> String {
    let last = events
        .iter()
        .rev()
        .filter(|e| e.kind == "UserPromptSubmit" && e.sender != *agent)
        .find_map(|e| e.payload_value()["prompt"].as_str().map(str::to_owned));
    match last {
        Some(p) => {
            let p: String = p.chars().take(MAX_TASK - 100).collect();
            format!("Continue this session's work. Its last prompt was: {p}")
        }
        None => "Continue this session's work.".into(),
    }
}

/// A task as its events tell it.
pub struct TaskView {
    /// See `json`.
    pub id: Uuid,
    /// See `json`.
    pub session: String,
    /// See `json`.
    pub agent: String,
    /// See `json`.
    pub task: String,
    /// See `json`.
    pub budget: Value,
    /// See `json`.
    pub status: &'static str,
    /// See `json`.
    pub steps: u64,
    /// See `json`.
    pub summary: Option<String>,
    /// See `json`.
    pub stop_reason: Option<String>,
    /// See `json`.
    pub created_at: Option<String>,
    /// See `json`.
    pub finished_at: Option<String>,
}

impl TaskView {
    pub(crate) fn new(
        id: Uuid,
        session: &str,
        agent: &ParticipantId,
        task: &str,
        budget: Budget,
    ) -> Self {
        TaskView {
            id,
            session: session.to_owned(),
            agent: agent.to_string(),
            task: task.to_owned(),
            budget: json!(budget),
            status: "queued",
            steps: 0,
            summary: None,
            stop_reason: None,
            created_at: None,
            finished_at: None,
        }
    }

    /// Reads a task's state from its session's events (the `task` event first).
    fn from_events(task: &Event, session_events: &[Event]) -> TaskView {
        let p = task.payload_value();
        let id = task.id;
        let mut state = TaskView {
            id,
            session: task.session.clone().unwrap_or_default(),
            agent: p["agent"].as_str().unwrap_or_default().to_owned(),
            task: p["task"].as_str().unwrap_or_default().to_owned(),
            budget: p["budget"].clone(),
            status: "queued",
            steps: 0,
            summary: None,
            stop_reason: None,
            created_at: Some(crate::protocol::format_ms(&task.timestamp)),
            finished_at: None,
        };
        let mine = id.to_string();
        for e in session_events.iter().filter(|e| e.seq > task.seq) {
            let v = e.payload_value();
            if v["task_id"].as_str() != Some(mine.as_str()) {
                continue;
            }
            match (e.kind.as_str(), v["status"].as_str()) {
                ("Stop", Some(status)) => {
                    state.status = match status {
                        "done" => "done",
                        "stopped" => "stopped",
                        _ => "failed",
                    };
                    state.summary = v["last_assistant_message"].as_str().map(str::to_owned);
                    state.stop_reason = v["reason"].as_str().map(str::to_owned);
                    state.finished_at = Some(crate::protocol::format_ms(&e.timestamp));
                }
                ("task_stop", _) if matches!(state.status, "queued" | "running") => {
                    state.stop_reason = Some(match v["by"].as_str() {
                        Some(by) => format!("stop requested by {by}"),
                        None => "stop requested".into(),
                    });
                }
                ("PostToolUse", _) => {
                    state.steps += 1;
                    if state.status == "queued" {
                        state.status = "running";
                    }
                }
                ("UserPromptSubmit", _) if state.status == "queued" => state.status = "running",
                _ => {}
            }
        }
        state
    }

    /// The task as the API shows it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "session": self.session,
            "agent": self.agent,
            "task": self.task,
            "status": self.status,
            "budget": self.budget,
            "used": {"steps": self.steps},
            "summary": self.summary,
            "stop_reason": self.stop_reason,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        })
    }
}

impl Runtime {
    /// The tasks of `agent` on a floor, oldest first, as their events tell them.
    pub async fn tasks_of(
        &self,
        key: &ProjectKey,
        agent: &ParticipantId,
    ) -> Result<Vec<TaskView>, StoreError> {
        let store = self.store();
        let mut out = Vec::new();
        for t in store.events_of_kind(key, "task").await? {
            if t.payload_value()["agent"].as_str() != Some(agent.as_str()) {
                continue;
            }
            let events = store.events_since(key, t.session.as_deref(), None).await?;
            out.push(TaskView::from_events(&t, &events));
        }
        Ok(out)
    }
}
