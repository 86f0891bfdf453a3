//! What an agent hosted outside the floor's process (`polaris agent run`, which has no
//! database of its own) needs from the floor besides its streams and its lease: its roster
//! (the org's agents and the floors it and its subagents are on), long-polled so a join or
//! an invite reaches it at once; and its read positions, saved under its lease's term so a
//! fenced instance cannot move them.

use std::collections::HashSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::agents::{agent_id, listed_json};
use super::extract::{JsonBody, PathParams, QueryParams};
use super::leases::hosted_agent;
use super::{ApiError, AppState};
use crate::auth::Caller;

/// Longest a roster request waits for a change.
const MAX_WAIT_MS: u64 = 60_000;
/// Most cursors in one save.
const MAX_CURSORS: usize = 10_000;
/// Names the roster's ETag: `v5(namespace, body)`, the same on every node.
const ROSTER_NAMESPACE: Uuid = Uuid::from_u128(0x3f0c_9d2e_77a1_4b58_8e61_5a0d_c4b2_19e7);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RosterQuery {
    /// With `If-None-Match`: how long to wait for the roster to differ from that ETag.
    #[serde(default)]
    wait_ms: u64,
}

/// The roster's JSON for the agent `root`: every agent of the org (the router needs them
/// all) and the floors `root` and its subagents are on, with each floor's passive switch.
async fn roster(st: &AppState, org: &str, root: &str) -> Result<Value, ApiError> {
    let directory = st.runtime.directory();
    let agents = directory.agents(org).await?;
    let mut seats: Vec<Value> = Vec::new();
    for (p, a) in directory.seats(org).await? {
        if a == root || a.strip_prefix(root).is_some_and(|r| r.starts_with('.')) {
            // The floor's passive switch rides along: a change wakes the long poll, so
            // the agent hears of it without asking per event.
            let passive = st.runtime.passive_advice(p.id).await?;
            seats.push(
                json!({"agent": a, "project": &*p.name, "project_id": p.id, "passive": passive}),
            );
        }
    }
    // A stable order, so the same roster has the same ETag on every node.
    seats.sort_by_key(|s| (s["project_id"].to_string(), s["agent"].to_string()));
    Ok(json!({
        "agent": root,
        "agents": agents.iter().map(listed_json).collect::<Vec<_>>(),
        "seats": seats,
    }))
}

fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", Uuid::new_v5(&ROSTER_NAMESPACE, body).simple())
}

/// `GET /agents/:agent/roster[?wait_ms=N]`: the agent's roster with an ETag. Sent with
/// `If-None-Match` and `wait_ms`, the answer waits until the roster differs from that ETag
/// (200) or the wait ends (304). A change made on any node wakes it at once (ADR 0014);
/// a notice lost between nodes is bounded by the wait.
pub(super) async fn get_roster(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParams(agent): PathParams<String>,
    QueryParams(q): QueryParams<RosterQuery>,
) -> Result<Response, ApiError> {
    let id = hosted_agent(&st, &caller, agent_id(&agent)?).await?;
    if q.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::BadRequest(format!(
            "wait_ms: must be at most {MAX_WAIT_MS}"
        )));
    }
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms);
    // Subscribed before the first read, so a change between the read and the wait wakes it.
    let mut changes = st.runtime.directory().subscribe();
    loop {
        let body = serde_json::to_vec(&roster(&st, &caller.org, id.root()).await?)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let etag = etag_of(&body);
        let tag = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
        if known.as_deref() != Some(etag.as_str()) {
            return Ok((
                [(header::ETAG, tag), (header::CONTENT_TYPE, json_type())],
                body,
            )
                .into_response());
        }
        let woke = tokio::select! {
            c = changes.changed() => c.is_ok(),
            _ = tokio::time::sleep_until(deadline) => false,
            _ = st.shutdown.cancelled() => false,
        };
        if !woke {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
        }
    }
}

fn json_type() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CursorQuery {
    project_id: Uuid,
}

/// The floor ids of the caller's org, to check that a cursor names one of them.
async fn org_floors(st: &AppState, org: &str) -> Result<HashSet<Uuid>, ApiError> {
    Ok(st
        .runtime
        .directory()
        .floors(org)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect())
}

/// `GET /agents/:agent/cursors?project_id=…`: where the agent reads that floor from: its
/// saved position, else just before its (or its parent's) join, else the floor's head.
pub(super) async fn get_cursor(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    QueryParams(q): QueryParams<CursorQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = hosted_agent(&st, &caller, agent_id(&agent)?).await?;
    if !org_floors(&st, &caller.org).await?.contains(&q.project_id) {
        return Err(ApiError::NotFound("Project not found".into()));
    }
    let directory = st.runtime.directory();
    let parent = directory
        .agent(&caller.org, &id)
        .await?
        .and_then(|l| l.spec.parent)
        .map(|p| p.to_string());
    let joined_as: Vec<String> = std::iter::once(id.to_string()).chain(parent).collect();
    let after = directory
        .read_position(&caller.org, id.as_str(), &joined_as, q.project_id)
        .await?;
    Ok(Json(
        json!({"agent": id, "project_id": q.project_id, "after": after}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SaveCursors {
    /// The term of the lease the agent runs under; absent for an agent run without one.
    #[serde(default)]
    term: Option<i64>,
    cursors: Vec<Cursor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cursor {
    project_id: Uuid,
    seq: i64,
}

/// `PUT /agents/:agent/cursors {"term", "cursors": [{"project_id", "seq"}]}`: saves read
/// positions (never moving one back); 409 when the lease has passed to a newer term.
pub(super) async fn save_cursors(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    JsonBody(body): JsonBody<SaveCursors>,
) -> Result<StatusCode, ApiError> {
    let id = hosted_agent(&st, &caller, agent_id(&agent)?).await?;
    if body.cursors.len() > MAX_CURSORS {
        return Err(ApiError::BadRequest(format!(
            "cursors: at most {MAX_CURSORS} in one request"
        )));
    }
    if body.term.is_some_and(|t| t <= 0) {
        return Err(ApiError::BadRequest("term: must be positive".into()));
    }
    let floors = org_floors(&st, &caller.org).await?;
    let mut positions = Vec::with_capacity(body.cursors.len());
    for (i, c) in body.cursors.iter().enumerate() {
        if !floors.contains(&c.project_id) {
            return Err(ApiError::NotFound(format!(
                "cursors[{i}].project_id: no such project"
            )));
        }
        if c.seq < 0 {
            return Err(ApiError::BadRequest(format!(
                "cursors[{i}].seq: must not be negative"
            )));
        }
        positions.push((c.project_id, c.seq));
    }
    let saved = st
        .runtime
        .directory()
        .save_read_positions(&caller.org, id.as_str(), &positions, body.term)
        .await?;
    if saved {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(format!(
            "term: the lease of {} is no longer under term {}; another instance took it over",
            id.root(),
            body.term.unwrap_or_default()
        )))
    }
}
