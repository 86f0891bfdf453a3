//! Tasks an agent drives in a session of its own: `POST /projects/:p/agents/:agent/tasks`
//! hands one over, `GET …/tasks[/:id]` shows how it goes, `POST …/tasks/:id/stop` stops it.
//!
//! A task is events, like everything else on a floor: the floor writes a `task` event into
//! the session (its id is the task's id) after seating the agent as the driver; the agent
//! reads it from its stream and posts its steps into the session as a coding session would
//! (a prompt, then `PreToolUse`/`PostToolUse` per tool call, each carrying `task_id` and
//! `step`), and ends with a `Stop` whose payload has the task's `status` and summary. A stop
//! request is a `task_stop` event. The task's state is read back from those events, so a
//! task survives restarts of the floor and of the agent with nothing else to store.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use polaris_registry::ParticipantId;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::agents::agent_id;
use super::extract::{JsonBody, PathParams};
use super::{Access, ApiError, AppState, Opened};
use crate::auth::{Caller, Role};
use crate::protocol::Source;
use crate::protocol::validate::Incoming;
use crate::session::SYSTEM_SENDER;
use crate::tasks::{Budget, NewTask, TaskView};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTaskBody {
    task: String,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    budget: Option<Budget>,
}

fn system() -> ParticipantId {
    ParticipantId::parse(SYSTEM_SENDER).unwrap_or_else(|_| unreachable!("SYSTEM_SENDER is valid"))
}

/// `POST /projects/:p/agents/:agent/tasks {"task", "session"?, "budget"?}`: seats the agent
/// as the driver of `session` (a new `task-…` session when absent; 409 when it has a
/// driver), then writes the `task` event the agent starts from. 201 with the task.
pub(super) async fn create(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, agent)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<NewTaskBody>,
) -> Result<impl IntoResponse, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let agent = agent_id(&agent)?;
    let budget = body.budget.unwrap_or_default();
    let handed = st
        .runtime
        .hand_task(
            &opened.key,
            NewTask {
                id: None,
                agent: agent.clone(),
                task: body.task.clone(),
                session: body.session,
                budget,
                by: caller.participant.clone(),
                seated: false,
            },
        )
        .await?;
    let state = TaskView::new(handed.id, &handed.session, &agent, body.task.trim(), budget);
    Ok((StatusCode::CREATED, Json(state.json())))
}

/// `GET /projects/:p/agents/:agent/tasks`.
pub(super) async fn list(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, agent)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let agent = agent_id(&agent)?;
    let tasks = st.runtime.tasks_of(&opened.key, &agent).await?;
    Ok(Json(
        json!({"tasks": tasks.iter().map(TaskView::json).collect::<Vec<_>>()}),
    ))
}

/// The task `id` of `agent` on the floor: its `task` event and its state.
async fn one(st: &AppState, opened: &Opened, agent: &str, id: &str) -> Result<TaskView, ApiError> {
    let agent = agent_id(agent)?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("id: {id:?} is not a task id")))?;
    st.runtime
        .tasks_of(&opened.key, &agent)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound("Task not found".into()))
}

/// `GET /projects/:p/agents/:agent/tasks/:id`.
pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, agent, id)): PathParams<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    Ok(Json(one(&st, &opened, &agent, &id).await?.json()))
}

/// `POST /projects/:p/agents/:agent/tasks/:id/stop`: writes a `task_stop` event; the agent
/// stops at its next step and says where. 202 while it runs, 409 once it has finished.
pub(super) async fn stop(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, agent, id)): PathParams<(String, String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let task = one(&st, &opened, &agent, &id).await?;
    if !matches!(task.status, "queued" | "running") {
        return Err(ApiError::Conflict(format!(
            "status: the task is {} already",
            task.status
        )));
    }
    let payload = json!({"type": "task_stop", "task_id": task.id, "by": caller.participant});
    let incoming = Incoming {
        traceparent: None,
        term: None,
        id: Uuid::new_v5(&task.id, b"stop"),
        timestamp: None,
        source: Source::System,
        kind: "task_stop".into(),
        sender: system(),
        payload: serde_json::value::to_raw_value(&payload)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    let floor = Caller::participant(&caller.org, system(), Role::Service);
    st.runtime
        .post(&opened.key, &task.session, incoming, &floor)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": task.id, "status": "stopping"})),
    ))
}
