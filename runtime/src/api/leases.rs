//! An agent's lease over HTTP, for `polaris agent run` processes (which have no database
//! of their own): take it (waiting a while if someone holds it), renew it, give it up,
//! read it. Only the agent itself, a service or an admin may touch an agent's lease.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use polaris_registry::ParticipantId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::agents::agent_id;
use super::extract::{JsonBody, PathParams};
use super::{ApiError, AppState};
use crate::auth::{Caller, Role};
use crate::protocol::format_ms;
use crate::store::Lease;

/// Shortest and longest lease: short enough that a dead holder is replaced quickly, long
/// enough that a renewal every third of it is not a load.
const TTL_MS: (u64, u64) = (100, 3_600_000);
/// Longest wait for a held lease within one request.
const MAX_WAIT_MS: u64 = 60_000;
/// Longest holder name.
const MAX_HOLDER: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Take {
    /// Who takes it: an instance id the process chose (host, pid, start time…).
    holder: String,
    /// For how long, unless renewed.
    ttl_ms: u64,
    /// How long to wait if someone else holds it (0: answer at once).
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Renew {
    holder: String,
    term: i64,
    ttl_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Release {
    holder: String,
    term: i64,
}

fn lease_json(l: &Lease) -> Value {
    json!({
        "name": l.name,
        "holder": l.holder,
        "term": l.term,
        "expires_at": format_ms(&l.expires_at),
        "held": l.is_held(chrono::Utc::now()),
    })
}

/// The agent, if it exists in the caller's org and the caller may act for it.
async fn leased_agent(
    st: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<ParticipantId, ApiError> {
    let id = agent_id(raw)?;
    if id.root() != id.as_str() {
        return Err(ApiError::BadRequest(format!(
            "agent: {id} is a subagent; it runs under the lease of {}",
            id.root()
        )));
    }
    hosted_agent(st, caller, id).await
}

/// The agent `id` (or subagent), if it exists in the caller's org and the caller may act
/// for it as its host: the top-level agent itself, a service or an admin.
pub(super) async fn hosted_agent(
    st: &AppState,
    caller: &Caller,
    id: ParticipantId,
) -> Result<ParticipantId, ApiError> {
    let may = match &caller.participant {
        None => true,
        Some(_) if caller.role == Role::Service || caller.is_admin() => true,
        Some(me) => me.as_str() == id.root(),
    };
    if !may {
        return Err(ApiError::Forbidden(format!(
            "Forbidden: only {}, a service or an admin may act for {id}",
            id.root()
        )));
    }
    st.runtime
        .directory()
        .agent(&caller.org, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{id} not found")))?;
    Ok(id)
}

fn holder(h: &str) -> Result<&str, ApiError> {
    if h.trim().is_empty() || h.len() > MAX_HOLDER || h.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "holder: must be 1 to {MAX_HOLDER} characters, no control characters"
        )));
    }
    Ok(h)
}

fn ttl(ms: u64) -> Result<Duration, ApiError> {
    if !(TTL_MS.0..=TTL_MS.1).contains(&ms) {
        return Err(ApiError::BadRequest(format!(
            "ttl_ms: must be between {} and {}",
            TTL_MS.0, TTL_MS.1
        )));
    }
    Ok(Duration::from_millis(ms))
}

/// `POST /agents/:agent/lease`: 200 with the lease when the caller's holder has it, 409
/// with the holder's lease when someone else still holds it after `wait_ms`.
pub(super) async fn take(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    JsonBody(body): JsonBody<Take>,
) -> Result<Response, ApiError> {
    let id = leased_agent(&st, &caller, &agent).await?;
    let who = holder(&body.holder)?;
    let ttl = ttl(body.ttl_ms)?;
    if body.wait_ms > MAX_WAIT_MS {
        return Err(ApiError::BadRequest(format!(
            "wait_ms: must be at most {MAX_WAIT_MS}"
        )));
    }
    let wait = Duration::from_millis(body.wait_ms);
    let got = st
        .runtime
        .leases()
        .acquire(&caller.org, id.as_str(), who, ttl, wait)
        .await?;
    Ok(match got {
        Ok(lease) => Json(lease_json(&lease)).into_response(),
        Err(held) => {
            let mut v = lease_json(&held);
            v["error"] = json!(format!(
                "lease: {id} is held by {} until {}",
                held.holder,
                format_ms(&held.expires_at)
            ));
            (StatusCode::CONFLICT, Json(v)).into_response()
        }
    })
}

/// `PUT /agents/:agent/lease`: 200 with the extended lease, 409 when the holder lost it.
pub(super) async fn renew(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    JsonBody(body): JsonBody<Renew>,
) -> Result<Json<Value>, ApiError> {
    let id = leased_agent(&st, &caller, &agent).await?;
    let who = holder(&body.holder)?;
    let ttl = ttl(body.ttl_ms)?;
    st.runtime
        .leases()
        .renew(&caller.org, id.as_str(), who, body.term, ttl)
        .await?
        .map(|l| Json(lease_json(&l)))
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "term: {who} no longer holds the lease of {id} under term {}; take it again",
                body.term
            ))
        })
}

/// `DELETE /agents/:agent/lease`: 204 once released (waiting contenders take it at once),
/// 409 when the holder did not hold it under that term.
pub(super) async fn release(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
    JsonBody(body): JsonBody<Release>,
) -> Result<StatusCode, ApiError> {
    let id = leased_agent(&st, &caller, &agent).await?;
    let who = holder(&body.holder)?;
    let released = st
        .runtime
        .leases()
        .release(&caller.org, id.as_str(), who, body.term)
        .await?;
    if released {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(format!(
            "term: {who} does not hold the lease of {id} under term {}",
            body.term
        )))
    }
}

/// `GET /agents/:agent/lease`: the lease (held or expired), 404 if never taken.
pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(agent): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let id = leased_agent(&st, &caller, &agent).await?;
    st.runtime
        .leases()
        .get(&caller.org, id.as_str())
        .await?
        .map(|l| Json(lease_json(&l)))
        .ok_or_else(|| ApiError::NotFound(format!("lease: {id} has never been taken")))
}
