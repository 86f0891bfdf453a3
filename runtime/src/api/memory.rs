//! An agent's memory: `GET /agents/:id/memory`, `GET/DELETE /agents/:id/memory/:mid`, and
//! `POST /agents/:id/memory` for the agent itself when it runs outside the floor's process.
//! Everything is org-scoped, and a fact kept for one floor (an isolated agent's) is shown
//! only to callers who may see that floor.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::agents::agent_id;
use super::extract::{JsonBody, PathParams, QueryParams};
use super::leases::hosted_agent;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::store::{MAX_FACT_CHARS, MemoryFact, NewFact};

/// Most facts listed at once.
const MAX_LIST: i64 = 1000;
/// Most source events on one fact.
const MAX_SOURCES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    /// Only the facts kept for this floor.
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// The agent, which must exist in the caller's org.
async fn known_agent(st: &AppState, caller: &Caller, raw: &str) -> Result<String, ApiError> {
    let id = agent_id(raw)?;
    st.runtime
        .directory()
        .agent(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{id} not found")))?;
    Ok(id.to_string())
}

/// Whether the caller may see a fact: shared facts with the agent, a floor's facts with
/// the floor.
pub(super) fn visible(m: &MemoryFact, floors: &[Uuid]) -> bool {
    m.project_id.is_none_or(|p| floors.contains(&p))
}

pub(super) async fn list(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let agent = known_agent(&st, &caller, &agent).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_LIST}"
        )));
    }
    let memory = st.runtime.agent_memory();
    let facts = match &q.project {
        Some(name) => {
            let floors = st.projects_in_scope(&caller, Some(name)).await?;
            memory
                .in_scope(&caller.org, &agent, floors.first().copied(), limit)
                .await?
        }
        None => {
            let floors = st.projects_in_scope(&caller, None).await?;
            let mut all = memory.list(&caller.org, &agent, MAX_LIST).await?;
            all.retain(|m| visible(m, &floors));
            all.truncate(limit as usize);
            all
        }
    };
    Ok(Json(json!({"agent": agent, "memory": facts})))
}

/// The fact `mid` of the agent, if the caller may see it.
async fn visible_fact(
    st: &AppState,
    caller: &Caller,
    agent: &str,
    mid: &str,
) -> Result<MemoryFact, ApiError> {
    let agent = known_agent(st, caller, agent).await?;
    let id = Uuid::parse_str(mid)
        .map_err(|_| ApiError::BadRequest(format!("mid: {mid:?} is not a memory id")))?;
    let not_found = || ApiError::NotFound(format!("memory {id} of {agent} not found"));
    let m = st
        .runtime
        .agent_memory()
        .get(&caller.org, &agent, id)
        .await?
        .ok_or_else(not_found)?;
    if m.project_id.is_some() && !visible(&m, &st.projects_in_scope(caller, None).await?) {
        return Err(not_found());
    }
    Ok(m)
}

pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((agent, mid)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let m = visible_fact(&st, &caller, &agent, &mid).await?;
    Ok(Json(serde_json::to_value(m).unwrap_or(Value::Null)))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((agent, mid)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let m = visible_fact(&st, &caller, &agent, &mid).await?;
    st.runtime
        .agent_memory()
        .delete(&caller.org, &m.agent, m.id)
        .await?;
    tracing::info!(agent = %m.agent, memory = %m.id, by = ?caller.participant, "memory deleted");
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Keep {
    fact: String,
    #[serde(default)]
    project_id: Option<Uuid>,
    #[serde(default)]
    source_events: Vec<Uuid>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    author: Option<String>,
}

/// `POST /agents/:id/memory`: what `polaris agent run` keeps (only the agent itself, a
/// service or an admin may write an agent's memory).
pub(super) async fn add(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    JsonBody(body): JsonBody<Keep>,
) -> Result<impl IntoResponse, ApiError> {
    let id = hosted_agent(&st, &caller, agent_id(&agent)?).await?;
    let fact = body.fact.trim();
    if fact.is_empty() || fact.chars().count() > MAX_FACT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "fact: must be 1 to {MAX_FACT_CHARS} characters"
        )));
    }
    if body.source_events.len() > MAX_SOURCES {
        return Err(ApiError::BadRequest(format!(
            "source_events: at most {MAX_SOURCES}"
        )));
    }
    let origin = body.origin.as_deref().unwrap_or("remember");
    if !matches!(origin, "remember" | "tool" | "decision") {
        return Err(ApiError::BadRequest(
            "origin: must be remember, tool or decision".into(),
        ));
    }
    if let Some(p) = body.project_id {
        let projects = st.runtime.store().list_projects(&caller.org).await?;
        if !projects.iter().any(|x| x.id == p) {
            return Err(ApiError::BadRequest(format!(
                "project_id: {p} is not a project of this org"
            )));
        }
    }
    let m = st
        .runtime
        .agent_memory()
        .add(
            &caller.org,
            NewFact {
                agent: id.as_str(),
                project_id: body.project_id,
                fact,
                source_events: &body.source_events,
                origin,
                author: body.author.as_deref(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(m).unwrap_or(Value::Null)),
    ))
}
