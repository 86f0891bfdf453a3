//! Named-agent routes: the org's agents (file ∪ table), project tags, and who is on a
//! floor.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use polaris_registry::{AgentSpec, ParticipantId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, PathParams};
use super::projects::check_tags;
use super::{Access, ApiError, AppState};
use crate::auth::Caller;
use polaris_registry::Listed;

use crate::directory::DirectoryError;

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Invalid(m) => ApiError::BadRequest(m),
            DirectoryError::NotFound(m) => ApiError::NotFound(m),
            DirectoryError::Conflict(m) => ApiError::Conflict(m),
            DirectoryError::Store(e) => e.into(),
            DirectoryError::Floor(e) => e.into(),
        }
    }
}

/// An agent's JSON: its definition, where it comes from, and (for a conflict) the table's
/// definition that does not run. Secrets appear only as the references they are.
pub(super) fn listed_json(l: &Listed) -> Value {
    let mut v = serde_json::to_value(&l.spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("source".into(), json!(l.source));
        if let Some(s) = &l.shadowed {
            m.insert(
                "table_definition".into(),
                serde_json::to_value(s).unwrap_or(Value::Null),
            );
        }
    }
    v
}

/// `agent:dean` or just `dean`.
pub(super) fn agent_id(raw: &str) -> Result<ParticipantId, ApiError> {
    ParticipantId::agent_named(raw).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "agent: {raw:?} is not an agent id such as agent:dean"
        ))
    })
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Forbidden: changing agents needs the admin role".into(),
        ))
    }
}

pub(super) async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let agents = st.runtime.directory().agents(&caller.org).await?;
    Ok(Json(Value::Array(agents.iter().map(listed_json).collect())))
}

pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    let l = st
        .runtime
        .directory()
        .agent(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{id} not found")))?;
    Ok(Json(listed_json(&l)))
}

pub(super) async fn create(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(spec): JsonBody<AgentSpec>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&caller)?;
    let l = st
        .runtime
        .directory()
        .put_agent(&caller.org, spec, false)
        .await?;
    Ok((StatusCode::CREATED, Json(listed_json(&l))))
}

pub(super) async fn replace(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(spec): JsonBody<AgentSpec>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let id = agent_id(&id)?;
    if spec.id != id {
        return Err(ApiError::BadRequest(format!(
            "id: {} does not match the path ({id})",
            spec.id
        )));
    }
    let l = st
        .runtime
        .directory()
        .put_agent(&caller.org, spec, true)
        .await?;
    Ok(Json(listed_json(&l)))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&caller)?;
    let id = agent_id(&id)?;
    st.runtime
        .directory()
        .delete_agent(&caller.org, &id)
        .await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
pub(super) struct Tags {
    tags: Vec<String>,
}

pub(super) async fn set_tags(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<Tags>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let tags = check_tags("tags", &body.tags)?;
    let p = st
        .runtime
        .directory()
        .set_project_tags(&caller.org, &opened.project, &tags)
        .await?;
    Ok(Json(serde_json::to_value(p).unwrap_or(Value::Null)))
}

pub(super) async fn floor_agents(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let agents = st.runtime.directory().floor_agents(&opened.key).await?;
    Ok(Json(json!({"agents": agents})))
}

#[derive(Deserialize)]
pub(super) struct Invite {
    agent: String,
}

pub(super) async fn invite(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<Invite>,
) -> Result<impl IntoResponse, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let agent = agent_id(&body.agent)?;
    st.runtime
        .directory()
        .invite_agent(&opened.key, &agent, caller.participant.as_ref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"agent": agent, "reason": "invite", "detail": caller.participant})),
    ))
}

pub(super) async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, agent)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let agent = agent_id(&agent)?;
    st.runtime
        .directory()
        .remove_agent_from_floor(&opened.key, &agent, caller.participant.as_ref())
        .await?;
    Ok(Json(json!({"ok": true})))
}
