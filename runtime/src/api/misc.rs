//! Org-wide routes: health, metrics, search, decisions, annotations by id, the team.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{PathParams, QueryParams};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::store::SearchQuery;

pub(super) async fn status() -> Json<Value> {
    Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

/// Up, and the store answers.
pub(super) async fn healthz(State(st): State<AppState>) -> Response {
    let backend = match st.runtime.store().backend() {
        crate::store::Backend::Sqlite => "sqlite",
        crate::store::Backend::Postgres => "postgres",
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), st.runtime.store().ping()).await {
        Ok(Ok(())) => Json(json!({"ok": true, "store": backend})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "store unreachable", "store": backend})),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "store timed out", "store": backend})),
        )
            .into_response(),
    }
}

/// Prometheus text format.
pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    render_metrics(&st.runtime, st.metrics.as_ref())
}

/// `/metrics`, wherever it is served: the recorder's figures plus this node's gauges,
/// read when asked.
pub(super) fn render_metrics(
    runtime: &crate::runtime::Runtime,
    handle: Option<&metrics_exporter_prometheus::PrometheusHandle>,
) -> Response {
    let (floors, sessions) = runtime.live_actors();
    metrics::gauge!("polaris_floors_live").set(floors as f64);
    metrics::gauge!("polaris_sessions_live").set(sessions as f64);
    let leases = runtime.leases();
    metrics::gauge!("polaris_lease_waiters").set(leases.waiting() as f64);
    leases.export_holdings();
    match handle {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => {
            ApiError::NotFound("metrics are not enabled in this process".into()).into_response()
        }
    }
}

pub(super) async fn delete_annotation(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| ApiError::BadRequest("id: must be an annotation id (UUID)".into()))?;
    let store = st.runtime.store();
    if let Some(project) = store.annotation_project(&caller.org, id).await? {
        // The annotation's project must be visible to the caller (the original did not check).
        let visible = st.visible_projects(&caller).await?;
        if !visible.iter().any(|p| p.id == project) {
            return Err(ApiError::Forbidden(
                "Forbidden: project is restricted to members".into(),
            ));
        }
        store.delete_annotation(&caller.org, id).await?;
    }
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
pub(super) struct DecisionsQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

pub(super) async fn decisions(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<DecisionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let projects = st.projects_in_scope(&caller, q.project.as_deref()).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let list = st
        .runtime
        .store()
        .decisions(&caller.org, &projects, limit)
        .await?;
    Ok(Json(json!({"decisions": list})))
}

#[derive(Deserialize, Default)]
pub(super) struct SearchParams {
    #[serde(default)]
    pub(super) q: Option<String>,
    #[serde(default)]
    pub(super) project: Option<String>,
    #[serde(default)]
    pub(super) session: Option<String>,
    #[serde(default)]
    pub(super) sender: Option<String>,
    #[serde(default)]
    pub(super) source: Option<String>,
    #[serde(default)]
    pub(super) tag: Option<String>,
    #[serde(default)]
    pub(super) limit: Option<i64>,
}

pub(super) async fn search(
    State(st): State<AppState>,
    caller: Caller,
    QueryParams(p): QueryParams<SearchParams>,
) -> Result<Json<Value>, ApiError> {
    let results: Vec<Value> = search_as(&st, &caller, p)
        .await?
        .into_iter()
        .map(|(event, snippet)| json!({"event": event, "snippet": snippet}))
        .collect();
    Ok(Json(json!({"results": results})))
}

/// A search within the projects the caller may see: the API's route and the dashboard's
/// page both go through here.
pub(super) async fn search_as(
    st: &AppState,
    caller: &Caller,
    p: SearchParams,
) -> Result<Vec<(crate::protocol::Event, String)>, ApiError> {
    let q = p.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::BadRequest("q: a search query is required".into()));
    }
    if q.len() > 1000 {
        return Err(ApiError::BadRequest(
            "q: must be at most 1000 characters".into(),
        ));
    }
    let projects = st.projects_in_scope(caller, p.project.as_deref()).await?;
    // Everything committed before this request is findable.
    if !st
        .runtime
        .sync_search(std::time::Duration::from_secs(2))
        .await
    {
        tracing::warn!("search index is behind; answering from it as it is");
    }
    let sq = SearchQuery {
        q,
        projects,
        session: p.session,
        sender: p.sender,
        source: p.source,
        tag: p.tag,
        limit: p.limit.unwrap_or(50).clamp(1, 100),
    };
    Ok(st.runtime.store().search(&caller.org, &sq).await?)
}

/// The org's people (reference 7.8 without Slack, which a later bridge adds): everyone
/// who has acted in the org, with the alias `@mentions` use.
pub(super) async fn team(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let members = team_of(&st, &caller).await?;
    Ok(Json(json!({"members": members})))
}

/// The caller's org's people and agents (the API's `/team` and the dashboard's page).
pub(super) async fn team_of(
    st: &AppState,
    caller: &Caller,
) -> Result<Vec<polaris_protocol::team::TeamMember>, ApiError> {
    let directory = st.runtime.directory();
    let users = directory.users(&caller.org).await?;
    let slack = match &st.slack_team {
        Some(t) => t.members(&caller.org).await,
        None => Vec::new(),
    };
    let agents: Vec<(String, String)> = directory
        .agents(&caller.org)
        .await?
        .into_iter()
        .map(|a| (a.spec.id.to_string(), a.spec.shown_name().to_owned()))
        .collect();
    Ok(polaris_protocol::team::merge(&users, &slack, &agents))
}
