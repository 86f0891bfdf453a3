//! Session routes: create, list, post events, inject, driver seat, label, annotations.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use polaris_registry::ParticipantId;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{JsonBody, PathParams, RawBody, parse_json};
use super::{Access, ApiError, AppState, Opened, RateKey, event_response};
use crate::auth::Caller;
use crate::commit::Posted;
use crate::protocol::{NewEventBody, Session, TraceParent};
use crate::session::SessionMsg;
use crate::store::StoreError;
use crate::validate::{self, FieldError, Incoming};
use tracing::Instrument;

/// Longest label.
const MAX_LABEL_LEN: usize = 200;

/// The org's system feed: posting to it creates it (reference 1.6).
const SYSTEM: &str = "_system";

#[derive(Deserialize)]
pub(super) struct CreateSession {
    name: String,
    #[serde(default)]
    driver: Option<ParticipantId>,
    #[serde(default)]
    agent: Option<ParticipantId>,
}

pub(super) async fn list(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
) -> Result<Json<Vec<Session>>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    Ok(Json(st.runtime.store().list_sessions(&opened.key).await?))
}

pub(super) async fn create(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    JsonBody(body): JsonBody<CreateSession>,
) -> Result<impl IntoResponse, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    validate::name("name", &body.name)?;
    if let Some(d) = &body.driver
        && !caller.may_post_as(d)
    {
        return Err(ApiError::Forbidden(format!(
            "driver: you may make yourself or an agent the driver, not {d}"
        )));
    }
    let session = st
        .runtime
        .store()
        .create_session(
            &opened.key,
            &body.name,
            body.driver.as_ref(),
            body.agent.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

async fn session_row(st: &AppState, opened: &Opened, name: &str) -> Result<Session, ApiError> {
    st.runtime
        .store()
        .get_session(&opened.key, name)
        .await?
        .ok_or_else(|| ApiError::NotFound("Session not found".into()))
}

pub(super) async fn get(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
) -> Result<Json<Session>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    Ok(Json(session_row(&st, &opened, &session).await?))
}

/// Opens the project for a post; the `_system/_system` feed is created on first use.
async fn open_for_post(
    st: &AppState,
    caller: &Caller,
    project: &str,
    session: &str,
) -> Result<Opened, ApiError> {
    if project == SYSTEM && session == SYSTEM {
        let store = st.runtime.store();
        if st.runtime.project(&caller.org, SYSTEM).await?.is_none() {
            match store.create_project(&caller.org, SYSTEM, &[]).await {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let opened = st.open_project(caller, SYSTEM, Access::Use).await?;
        match store.create_session(&opened.key, SYSTEM, None, None).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(opened);
    }
    st.open_project(caller, project, Access::Use).await
}

/// The request's `traceparent` header. One that does not parse is ignored (as the W3C
/// recommendation says): tracing never fails a request.
fn trace_header(headers: &HeaderMap) -> Option<TraceParent> {
    let v = headers.get("traceparent")?;
    let parsed = v.to_str().ok().and_then(TraceParent::parse);
    if parsed.is_none() {
        tracing::debug!("a malformed traceparent header was ignored");
    }
    parsed
}

/// The span of one event's way through the API: a child of the context it came with (its
/// own `traceparent` field, else the request's header), whose context the event goes on
/// with. Without export, no span: the context goes through as it came.
fn event_span(
    incoming: &mut Incoming,
    header: Option<&TraceParent>,
    project: &str,
    session: &str,
) -> tracing::Span {
    let came = incoming.traceparent.take().or_else(|| header.cloned());
    if !polaris_telemetry::enabled() {
        incoming.traceparent = came;
        return tracing::Span::none();
    }
    let span =
        tracing::info_span!(parent: None, "api.post_event", project, session, event = %incoming.id);
    incoming.traceparent = polaris_telemetry::adopt(&span, came);
    span
}

pub(super) async fn post_event(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let opened = open_for_post(&st, &caller, &project, &session).await?;
    let body: NewEventBody = parse_json(&body)?;
    let mut incoming = validate::event(body)?;
    let span = event_span(
        &mut incoming,
        trace_header(&headers).as_ref(),
        &project,
        &session,
    );
    let posted = st
        .runtime
        .ask(&opened.key, &session, |reply| {
            SessionMsg::Post(Box::new(incoming), caller.clone(), reply)
        })
        .instrument(span)
        .await?;
    Ok(event_response(&posted))
}

/// Most events one batch may carry.
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Batch {
    events: Vec<serde_json::Value>,
}

/// `POST …/events/batch`: several events of one session in one request (the sidecar
/// drains its write-ahead log with it). Each event is checked and answered on its own;
/// the response lists, in order, `{"status", "event"}` or `{"status", "error"}`. The
/// request counts once against the write rate limit.
pub(super) async fn post_batch(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Batch>,
) -> Result<Response, ApiError> {
    let header = trace_header(&headers);
    let opened = open_for_post(&st, &caller, &project, &session).await?;
    if body.events.len() > MAX_BATCH {
        return Err(
            FieldError::new("events", format!("at most {MAX_BATCH} events per batch")).into(),
        );
    }
    // Check every event first; only the valid ones go to the session, in order.
    let mut checked: Vec<Result<crate::validate::Incoming, ApiError>> =
        Vec::with_capacity(body.events.len());
    for (i, v) in body.events.into_iter().enumerate() {
        let item = serde_path_to_error::deserialize::<_, NewEventBody>(v)
            .map_err(|e| {
                let path = e.path().to_string();
                let msg = e.into_inner().to_string();
                if path == "." {
                    format!("events[{i}]: {msg}")
                } else {
                    format!("events[{i}].{path}: {msg}")
                }
            })
            .and_then(|b| validate::event(b).map_err(|e| format!("events[{i}].{e}")))
            .map_err(ApiError::BadRequest);
        checked.push(item);
    }
    let mut valid: Vec<_> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok().cloned())
        .collect();
    // Each event is its own trace: one span each, open until the batch is answered.
    let spans: Vec<tracing::Span> = valid
        .iter_mut()
        .map(|i| event_span(i, header.as_ref(), &project, &session))
        .collect();
    let mut posted = st
        .runtime
        .post_many(&opened.key, &session, &caller, valid)
        .await?
        .into_iter();
    drop(spans);
    // Assemble the answer around the JSON rendered at commit.
    let mut out = Vec::with_capacity(checked.len() * 1024);
    out.extend_from_slice(b"{\"results\":[");
    for (i, c) in checked.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let outcome = match c {
            Err(e) => Err(e),
            Ok(_) => match posted.next() {
                Some(Ok(p)) => Ok(p),
                Some(Err(e)) => Err(ApiError::from(e)),
                None => Err(ApiError::Internal("batch answer missing".into())),
            },
        };
        match outcome {
            Ok(p) => {
                out.extend_from_slice(if p.created {
                    b"{\"status\":201,\"event\":"
                } else {
                    b"{\"status\":200,\"event\":"
                });
                out.extend_from_slice(&p.committed.json);
                out.push(b'}');
            }
            Err(e) => {
                let status = e.status().as_u16();
                let item = json!({"status": status, "error": e.message()});
                out.extend_from_slice(item.to_string().as_bytes());
            }
        }
    }
    out.extend_from_slice(b"]}");
    Ok(super::json_bytes(StatusCode::OK, out))
}

#[derive(Deserialize)]
pub(super) struct Inject {
    pub(super) content: String,
    #[serde(default)]
    pub(super) sender: Option<ParticipantId>,
}

pub(super) async fn inject(
    State(st): State<AppState>,
    caller: Caller,
    Extension(key): Extension<RateKey>,
    PathParams((project, session)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Inject>,
) -> Result<Response, ApiError> {
    let came = trace_header(&headers);
    let (span, traceparent) = if polaris_telemetry::enabled() {
        let span = tracing::info_span!(parent: None, "api.inject", project, session);
        let next = polaris_telemetry::adopt(&span, came);
        (span, next)
    } else {
        (tracing::Span::none(), came)
    };
    let posted = inject_as(&st, &caller, &key, &project, &session, body, traceparent)
        .instrument(span)
        .await?;
    Ok(event_response(&posted))
}

/// An inject into a session, with the inject rate limit and the project's access rule:
/// the API's route and the dashboard's form both go through here.
pub(super) async fn inject_as(
    st: &AppState,
    caller: &Caller,
    key: &RateKey,
    project: &str,
    session: &str,
    Inject { content, sender }: Inject,
    traceparent: Option<TraceParent>,
) -> Result<Posted, ApiError> {
    st.check_rate(&st.injects, &key.0, "Rate limit exceeded: too many injects")?;
    let opened = st.open_project(caller, project, Access::Use).await?;
    if content.trim().is_empty() {
        return Err(FieldError::new("content", "must not be empty").into());
    }
    // An authenticated caller always injects as itself, whatever the body says.
    let sender = match (&caller.participant, sender) {
        (Some(me), _) => me.clone(),
        (None, Some(s)) => s,
        (None, None) => {
            return Err(FieldError::new("sender", "is required for anonymous injects").into());
        }
    };
    Ok(st
        .runtime
        .ask(&opened.key, session, |reply| SessionMsg::Inject {
            content,
            sender,
            traceparent,
            reply,
        })
        .await?)
}

pub(super) async fn messages(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    session_row(&st, &opened, &session).await?;
    let events = st
        .runtime
        .store()
        .events_since(&opened.key, Some(&session), None)
        .await?;
    Ok(Json(events).into_response())
}

pub(super) async fn handoff(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    let by = caller.participant.clone();
    st.runtime
        .ask(&opened.key, &session, |reply| SessionMsg::Handoff {
            by: by.clone(),
            reply,
        })
        .await?;
    Ok(Json(json!({"status": "open", "session": session})))
}

#[derive(Deserialize, Default)]
pub(super) struct ClaimDriver {
    #[serde(default)]
    driver: Option<ParticipantId>,
}

pub(super) async fn driver(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    // An authenticated caller claims the seat as itself (or for one of its agents).
    let wanted: ClaimDriver =
        if body.iter().all(u8::is_ascii_whitespace) && caller.participant.is_some() {
            ClaimDriver::default()
        } else {
            parse_json(&body)?
        };
    let driver = match (&caller.participant, wanted.driver) {
        (Some(me), None) => me.clone(),
        (_, Some(d)) if caller.may_post_as(&d) => d,
        (_, Some(d)) => {
            return Err(ApiError::Forbidden(format!(
                "driver: you may claim the seat for yourself or an agent, not for {d}"
            )));
        }
        (None, None) => return Err(FieldError::new("driver", "is required").into()),
    };
    st.runtime
        .ask(&opened.key, &session, |reply| SessionMsg::ClaimDriver {
            driver: driver.clone(),
            by: caller.participant.clone(),
            reply,
        })
        .await?;
    Ok(Json(
        json!({"status": "claimed", "driver": driver, "session": session}),
    ))
}

#[derive(Deserialize)]
pub(super) struct Label {
    label: String,
}

pub(super) async fn label(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Label>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    if body.label.chars().count() > MAX_LABEL_LEN {
        return Err(FieldError::new(
            "label",
            format!("must be at most {MAX_LABEL_LEN} characters"),
        )
        .into());
    }
    let by = caller.participant.clone();
    let label = body.label;
    st.runtime
        .ask(&opened.key, &session, |reply| SessionMsg::Label {
            label: label.clone(),
            by: by.clone(),
            reply,
        })
        .await?;
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum AnnotationKind {
    Star,
    Tag,
    Decision,
}

#[derive(Deserialize)]
pub(super) struct Annotate {
    #[serde(default)]
    pub(super) event_id: Option<Uuid>,
    pub(super) kind: AnnotationKind,
    #[serde(default)]
    pub(super) value: Option<String>,
}

pub(super) async fn annotate(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<Annotate>,
) -> Result<impl IntoResponse, ApiError> {
    let id = annotate_as(&st, &caller, &project, &session, body).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

/// Stars, tags or records a decision on a session (or one of its events): the API's
/// route and the dashboard's form both go through here.
pub(super) async fn annotate_as(
    st: &AppState,
    caller: &Caller,
    project: &str,
    session: &str,
    body: Annotate,
) -> Result<Uuid, ApiError> {
    let opened = st.open_project(caller, project, Access::Use).await?;
    session_row(st, &opened, session).await?;
    if let Some(id) = body.event_id {
        let found = st
            .runtime
            .store()
            .locate_event(opened.project.id, id)
            .await?;
        if found.and_then(|(_, s)| s).as_deref() != Some(session) {
            return Err(FieldError::new("event_id", "is not an event of this session").into());
        }
    }
    if body
        .value
        .as_deref()
        .is_some_and(|v| v.chars().count() > 2000)
    {
        return Err(FieldError::new("value", "must be at most 2000 characters").into());
    }
    if body.kind == AnnotationKind::Tag && body.value.as_deref().is_none_or(|v| v.trim().is_empty())
    {
        return Err(FieldError::new("value", "a tag needs a value").into());
    }
    let kind = match body.kind {
        AnnotationKind::Star => "star",
        AnnotationKind::Tag => "tag",
        AnnotationKind::Decision => "decision",
    };
    let id = st
        .runtime
        .store()
        .add_annotation(
            &opened.key,
            session,
            body.event_id,
            caller.participant.as_ref().map(ParticipantId::as_str),
            kind,
            body.value.as_deref(),
        )
        .await?;
    if body.kind == AnnotationKind::Decision
        && let Some(decision) = body.value.as_deref().filter(|v| !v.trim().is_empty())
    {
        remember_decision(st, &opened.key, session, body.event_id, decision).await?;
    }
    Ok(id)
}

pub(super) async fn annotations(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    session_row(&st, &opened, &session).await?;
    let list = st
        .runtime
        .store()
        .list_annotations(&opened.key, &session)
        .await?;
    Ok(Json(json!({"annotations": list})))
}

/// A decision taken on a floor becomes a memory of every agent on it: of the floor, for an
/// isolated agent; the agent's own, for a shared one.
async fn remember_decision(
    st: &AppState,
    key: &crate::store::ProjectKey,
    session: &str,
    event: Option<Uuid>,
    decision: &str,
) -> Result<(), ApiError> {
    let directory = st.runtime.directory();
    let agents = directory.agents(&key.org).await?;
    let fact = format!("Decided on {} ({session}): {}", key.name, decision.trim());
    let sources: Vec<Uuid> = event.into_iter().collect();
    for a in directory.floor_agents(key).await? {
        let Some(spec) = agents.iter().find(|l| l.spec.id.as_str() == a.agent) else {
            continue;
        };
        let scope =
            (spec.spec.context == polaris_registry::ContextMode::Isolated).then_some(key.id);
        st.runtime
            .agent_memory()
            .add(
                &key.org,
                crate::store::NewFact {
                    agent: &a.agent,
                    project_id: scope,
                    fact: &fact,
                    source_events: &sources,
                    origin: "decision",
                    author: None,
                },
            )
            .await?;
    }
    Ok(())
}
