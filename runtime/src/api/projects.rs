//! Project routes: create, list, rename, visibility, policies, members, messages.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{JsonBody, PathParams, QueryParams};
use super::{Access, ApiError, AppState};
use crate::auth::Caller;
use crate::protocol::{Project, Visibility};
use crate::validate::{self, FieldError};

/// Longest tag, and most tags per project.
const MAX_TAG_LEN: usize = 64;
const MAX_TAGS: usize = 32;

#[derive(Deserialize)]
pub(super) struct CreateProject {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// Tags are lowercase words (`data`, `data-quality`): agents join floors by them.
pub(crate) fn check_tags(field: &str, tags: &[String]) -> Result<Vec<String>, FieldError> {
    if tags.len() > MAX_TAGS {
        return Err(FieldError::new(field, format!("at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, t) in tags.iter().enumerate() {
        let ok = !t.is_empty()
            && t.len() <= MAX_TAG_LEN
            && t.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && t.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !ok {
            return Err(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "{t:?} must be lowercase letters, digits, '-', '_' or '.' (at most {MAX_TAG_LEN})"
                ),
            ));
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

pub(super) async fn list(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Project>>, ApiError> {
    Ok(Json(st.visible_projects(&caller).await?))
}

pub(super) async fn create(
    State(st): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<impl IntoResponse, ApiError> {
    validate::name("name", &body.name)?;
    let tags = check_tags("tags", &body.tags)?;
    let project = st
        .runtime
        .store()
        .create_project(&caller.org, &body.name, &tags)
        .await?;
    // Agents whose tags match join the new floor now (each join is an event on it).
    st.runtime
        .directory()
        .sync_floor(&caller.org, &project)
        .await?;
    // Every node's watchers learn of the new floor.
    st.runtime
        .project_changed(&caller.org, &project.name, project.id, false)
        .await;
    Ok((StatusCode::CREATED, Json(project)))
}

pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(
        st.open_project(&caller, &project, Access::Use)
            .await?
            .project,
    ))
}

#[derive(Deserialize)]
pub(super) struct Rename {
    name: String,
}

pub(super) async fn rename(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<Rename>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    validate::name("name", &body.name)?;
    if opened.project.name == "_system" {
        return Err(ApiError::BadRequest(
            "the _system project cannot be renamed".into(),
        ));
    }
    if body.name != opened.project.name {
        st.runtime
            .store()
            .rename_project(&caller.org, opened.project.id, &body.name)
            .await?;
        st.runtime
            .project_changed(&caller.org, &opened.project.name, opened.project.id, true)
            .await;
    }
    Ok(Json(
        json!({"status": "renamed", "oldName": opened.project.name, "newName": body.name}),
    ))
}

#[derive(Deserialize)]
pub(super) struct SetVisibility {
    visibility: Visibility,
}

pub(super) async fn visibility(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<SetVisibility>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Admin).await?;
    st.runtime
        .store()
        .set_visibility(opened.project.id, body.visibility)
        .await?;
    st.runtime
        .project_changed(&caller.org, &opened.project.name, opened.project.id, false)
        .await;
    Ok(Json(json!({"ok": true, "visibility": body.visibility})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetRedaction {
    redact_secrets: bool,
}

/// Turns the project's ingest-time redaction of credentials on or off (admins only). Off,
/// a secret pasted into a prompt is stored and streamed as typed, so the change is logged.
pub(super) async fn redaction(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<SetRedaction>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Admin).await?;
    st.runtime
        .store()
        .set_redact_secrets(opened.project.id, body.redact_secrets)
        .await?;
    tracing::warn!(
        project = %opened.project.name,
        by = ?caller.participant.as_ref().map(|p| p.as_str()),
        redact_secrets = body.redact_secrets,
        "redaction policy changed"
    );
    st.runtime
        .project_changed(&caller.org, &opened.project.name, opened.project.id, false)
        .await;
    Ok(Json(
        json!({"ok": true, "redact_secrets": body.redact_secrets}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetPassive {
    enabled: bool,
}

/// `POST /projects/:p/passive {"enabled"}`: turns the floor's passive advice (agents
/// speaking up unasked) on or off (admins only). Agents on any node read the switch for
/// each event they would score, so the change holds from the next event on.
pub(super) async fn passive(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<SetPassive>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Admin).await?;
    set_passive(&st, &caller, &opened.project, body.enabled).await?;
    Ok(Json(json!({"ok": true, "passive_advice": body.enabled})))
}

/// Stores the floor's passive switch and tells every node (the API and the dashboard's
/// settings page both change it here).
pub(super) async fn set_passive(
    st: &AppState,
    caller: &Caller,
    project: &Project,
    enabled: bool,
) -> Result<(), ApiError> {
    st.runtime
        .store()
        .set_passive_advice(project.id, enabled)
        .await?;
    tracing::info!(
        project = %project.name,
        by = ?caller.participant.as_ref().map(|p| p.as_str()),
        passive_advice = enabled,
        "passive advice switched"
    );
    st.runtime
        .project_changed(&caller.org, &project.name, project.id, false)
        .await;
    Ok(())
}

#[derive(Deserialize)]
pub(super) struct AddMember {
    participant_id: ParticipantId,
    #[serde(default)]
    role: Option<String>,
}

pub(super) async fn add_member(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<AddMember>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Admin).await?;
    if let Some(r) = &body.role
        && r.chars().count() > 64
    {
        return Err(FieldError::new("role", "must be at most 64 characters").into());
    }
    st.runtime
        .store()
        .add_member(
            opened.project.id,
            body.participant_id.as_str(),
            body.role.as_deref(),
        )
        .await?;
    Ok(Json(json!({"ok": true})))
}

pub(super) async fn members(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let members = st.runtime.store().list_members(opened.project.id).await?;
    Ok(Json(json!({"members": members})))
}

pub(super) async fn remove_member(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, pid)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Admin).await?;
    st.runtime
        .store()
        .remove_member(opened.project.id, &pid)
        .await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
pub(super) struct Since {
    #[serde(default, with = "crate::protocol::iso_ms_opt")]
    since: Option<DateTime<Utc>>,
}

pub(super) async fn messages(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    QueryParams(q): QueryParams<Since>,
) -> Result<impl IntoResponse, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let events = st
        .runtime
        .store()
        .events_since(&opened.key, None, q.since)
        .await?;
    Ok(Json(events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lowercase_words_deduplicated() {
        let t =
            |v: &[&str]| check_tags("tags", &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(t(&["data", "data", "etl"]).unwrap(), vec!["data", "etl"]);
        assert_eq!(t(&["Data"]).unwrap_err().field, "tags[0]");
        assert_eq!(t(&["ok", ""]).unwrap_err().field, "tags[1]");
    }
}
