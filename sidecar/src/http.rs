//! The loopback HTTP API (reference 4.3, with the differences of `docs/sidecar.md`).
//!
//! Every route but `GET /healthz` needs the local secret. Handlers do the network and
//! disk work; the daemon actor only decides (where an event goes, who said it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use polaris_protocol::{NewEventBody, Source, TraceParent};
use polaris_registry::ParticipantId;
use ractor::rpc::CallResult;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::daemon::{Connect, DaemonMsg, DaemonRef, Mapping, RouteQuery};
use crate::home::{Home, private_file_options};
use crate::log::{Log, LogLine};
use crate::uplink::{FloorError, SubmitError, Uplink, segment};
use crate::wal::SessionOpen;
use crate::wire::{EVENT_ID_HEADER, EVENT_TIME_HEADER, SECRET_HEADER};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The state owner.
    pub daemon: DaemonRef,
    /// WAL and drain.
    pub uplink: Uplink,
    /// The JSONL log.
    pub log: Log,
    /// The local secret.
    pub secret: Arc<String>,
    /// The home (logs, history).
    pub home: Home,
}

/// An error answer: `{"error": …}` with a status.
#[derive(Debug)]
pub struct HttpError(StatusCode, String);

impl HttpError {
    fn bad(msg: impl Into<String>) -> HttpError {
        HttpError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<SubmitError> for HttpError {
    fn from(e: SubmitError) -> HttpError {
        match e {
            SubmitError::Invalid(m) => HttpError::bad(m),
            SubmitError::Io(e) => {
                tracing::error!(error = %e, "WAL append failed");
                HttpError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not write the event to disk; it was not accepted".into(),
                )
            }
        }
    }
}

type Res = Result<Response, HttpError>;

async fn ask<T: Send + 'static>(
    daemon: &DaemonRef,
    msg: impl FnOnce(ractor::RpcReplyPort<T>) -> DaemonMsg,
) -> Result<T, HttpError> {
    match daemon.call(msg, None).await {
        Ok(CallResult::Success(v)) => Ok(v),
        _ => Err(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sidecar is shutting down".into(),
        )),
    }
}

/// The router.
pub fn router(state: AppState) -> Router {
    let p = "/projects/{project}/sessions/{session}/events";
    Router::new()
        .route("/register", post(register))
        .route("/connect", post(connect))
        .route("/disconnect", post(disconnect))
        .route("/disconnect-all", post(disconnect_all))
        .route("/events", post(events))
        .route("/reply", post(reply))
        .route("/status", get(status))
        .route("/status/{cc}", get(status_of))
        .route("/context/{cc}/{session}", get(context))
        .route("/rename", post(rename))
        .route("/channel-update", post(channel_update))
        .route("/channels", get(channels))
        .route("/team", get(team))
        .route("/backfill", post(backfill))
        .route(p, post(floor_shaped))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .fallback(|| async { HttpError(StatusCode::NOT_FOUND, "Not found".into()) })
        .with_state(state)
}

async fn require_secret(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| crate::secret::matches(&st.secret, v));
    if ok {
        next.run(req).await
    } else {
        HttpError(StatusCode::UNAUTHORIZED, "Unauthorized".into()).into_response()
    }
}

fn parse_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, HttpError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(HttpError::bad("the body must be a JSON object")),
        Err(e) => Err(HttpError::bad(format!("Invalid JSON: {e}"))),
    }
}

fn field<'a>(o: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, HttpError> {
    match o.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(HttpError::bad(format!("{name}: is required")))
        }
        Some(_) => Err(HttpError::bad(format!("{name}: must be a string"))),
    }
}

fn opt_field<'a>(
    o: &'a serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, HttpError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HttpError::bad(format!("{name}: must be a string"))),
    }
}

fn participant(name: &str, v: &str) -> Result<ParticipantId, HttpError> {
    ParticipantId::parse(v).map_err(|e| HttpError::bad(format!("{name}: {e}")))
}

/// The caller's id and time for the event, from the `x-polaris-event-*` headers.
fn event_headers(h: &HeaderMap) -> Result<(Option<Uuid>, Option<DateTime<Utc>>), HttpError> {
    let id = match h.get(EVENT_ID_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok())
                .ok_or_else(|| HttpError::bad(format!("{EVENT_ID_HEADER}: must be a UUID")))?,
        ),
    };
    let t = match h.get(EVENT_TIME_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    HttpError::bad(format!("{EVENT_TIME_HEADER}: must be an RFC 3339 time"))
                })?,
        ),
    };
    Ok((id, t))
}

fn append_history(home: &Home, line: Value) {
    use std::io::Write;
    let res = private_file_options()
        .append(true)
        .create(true)
        .open(home.history_file())
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot write session-history.jsonl");
    }
}

async fn register(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let cc = field(&o, "ccSessionId")?.to_owned();
    ask(&st.daemon, |r| DaemonMsg::Register(cc.clone(), r)).await?;
    Ok(Json(json!({"status": "registered", "ccSessionId": cc})).into_response())
}

/// A generated session name: `s-` and four hex digits (reference 1.5).
fn slug() -> String {
    format!("s-{}", &Uuid::new_v4().simple().to_string()[..4])
}

#[tracing::instrument(name = "sidecar.connect", skip_all)]
async fn connect(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let cc = field(&o, "ccSessionId")?.to_owned();
    let project = field(&o, "project")?.trim_start_matches('#').to_owned();
    let user = participant("user", field(&o, "user")?)?;
    let agent = match opt_field(&o, "agent")? {
        Some(a) => participant("agent", a)?,
        None => participant("agent", "agent:claude")?,
    };
    polaris_protocol::validate::name("project", &project)
        .map_err(|e| HttpError::bad(e.to_string()))?;
    let explicit = opt_field(&o, "session")?.map(str::to_owned);
    if let Some(s) = &explicit {
        polaris_protocol::validate::name("session", s)
            .map_err(|e| HttpError::bad(e.to_string()))?;
    }
    st.log.write(LogLine {
        t: Utc::now(),
        endpoint: "/connect".into(),
        payload: Value::Object(o.clone()),
        response: None,
        id: None,
        project: None,
        session: None,
        sender: None,
    });
    let open = SessionOpen {
        driver: Some(user.clone()),
        agent: Some(agent.clone()),
    };
    let floor = st.uplink.floor().clone();
    let mut session = explicit.clone().unwrap_or_else(slug);
    let mut floor_pending = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match floor.open_session(&project, &session, &open).await {
            Ok(409) if explicit.is_some() => {
                // Joining an existing session: ask for the driver seat; whoever holds it
                // keeps it, so the outcome does not matter.
                let path = format!(
                    "/projects/{}/sessions/{}/driver",
                    segment(&project),
                    segment(&session)
                );
                if let Err(e) = floor
                    .request(reqwest::Method::POST, &path)
                    .json(&json!({"driver": user}))
                    .send()
                    .await
                {
                    tracing::debug!(error = %e, "driver claim not sent");
                }
                break;
            }
            Ok(409) if attempts < 3 => session = slug(),
            Ok(409) => {
                return Err(HttpError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not generate a unique session name".into(),
                ));
            }
            Ok(_) => break,
            // The floor is down or failing: keep the connection; the uplink creates the
            // session before delivering its first event.
            Err(FloorError::Unreachable(_)) => {
                floor_pending = true;
                break;
            }
            Err(FloorError::Status(s, _)) if s >= 500 => {
                floor_pending = true;
                break;
            }
            Err(FloorError::Status(s, text)) => {
                let msg = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                return Err(HttpError(
                    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
                    format!("Failed to create session: {msg}"),
                ));
            }
        }
    }
    let slack_channel = if floor_pending {
        None
    } else {
        match floor
            .request(
                reqwest::Method::GET,
                &format!("/projects/{}", segment(&project)),
            )
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["slack_channel_name"].as_str().map(str::to_owned)),
            _ => None,
        }
    };
    let mapping = Mapping {
        project: project.clone(),
        session: session.clone(),
        user: user.clone(),
        agent: agent.clone(),
        slack_channel: slack_channel.clone(),
        awaiting_claim: true,
        floor_pending,
        connected_at: Utc::now(),
    };
    ask(&st.daemon, |r| {
        DaemonMsg::Connect(
            Connect {
                cc: cc.clone(),
                mapping,
            },
            r,
        )
    })
    .await?;
    append_history(
        &st.home,
        json!({"t": Utc::now(), "action": "connect", "ccSessionId": cc, "project": project,
               "session": session, "user": user, "agent": agent}),
    );
    let mut out = json!({"status": "connected", "project": project, "session": session,
                         "user": user, "agent": agent, "slackChannel": slack_channel});
    if floor_pending {
        out["pending"] = json!(true);
    }
    Ok(Json(out).into_response())
}

async fn disconnect(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let cc = field(&o, "ccSessionId")?.to_owned();
    let was = ask(&st.daemon, |r| DaemonMsg::Disconnect(cc.clone(), r)).await?;
    if let Some(m) = was {
        append_history(
            &st.home,
            json!({"t": Utc::now(), "action": "disconnect", "ccSessionId": cc,
                   "project": m.project, "session": m.session, "user": m.user}),
        );
    }
    Ok(Json(json!({"status": "disconnected"})).into_response())
}

async fn disconnect_all(State(st): State<AppState>) -> Res {
    ask(&st.daemon, DaemonMsg::DisconnectAll).await?;
    Ok(Json(json!({"status": "all_disconnected"})).into_response())
}

/// Routes, stamps and durably accepts one hook payload; the `/events` answer.
async fn accept_hook(
    st: &AppState,
    payload: Value,
    id: Option<Uuid>,
    t: Option<DateTime<Utc>>,
    traceparent: Option<TraceParent>,
    endpoint: &str,
) -> Res {
    let Some(q) = RouteQuery::of(&payload) else {
        return Err(HttpError::bad("session_id: is required"));
    };
    let routed = ask(&st.daemon, |r| DaemonMsg::Route(q, r)).await?;
    let Some(routed) = routed else {
        return Ok(Json(json!({"status": "not_connected"})).into_response());
    };
    let prompt = payload["hook_event_name"] == "UserPromptSubmit";
    let body = NewEventBody {
        traceparent,
        term: None,
        id: Some(id.unwrap_or_else(Uuid::new_v4)),
        timestamp: Some(t.unwrap_or_else(Utc::now)),
        source: Some(Source::Hook),
        sender: routed.sender.clone(),
        payload,
    };
    let line_t = body.timestamp.unwrap_or_else(Utc::now);
    let log_payload = body.payload.clone();
    let id = st
        .uplink
        .submit_opening(&routed.project, &routed.session, body, Some(routed.open))
        .await?;
    st.log.write(LogLine {
        t: line_t,
        endpoint: endpoint.to_owned(),
        payload: log_payload,
        response: None,
        id: Some(id),
        project: Some(routed.project),
        session: Some(routed.session),
        sender: Some(routed.sender.to_string()),
    });
    if prompt {
        // Drained only once the prompt is safely in the log.
        let injects = ask(&st.daemon, |r| DaemonMsg::TakeInjects(routed.key, r)).await?;
        return Ok(Json(json!({"ok": true, "pendingInjects": injects, "id": id})).into_response());
    }
    Ok(Json(json!({"status": "accepted", "id": id})).into_response())
}

#[tracing::instrument(name = "sidecar.events", skip_all)]
async fn events(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Res {
    let (id, t) = event_headers(&headers)?;
    let o = parse_object(&body)?;
    field(&o, "session_id")?;
    accept_hook(
        &st,
        Value::Object(o),
        id,
        t,
        trace_header(&headers),
        "/events",
    )
    .await
}

/// The trace the request belongs to (`traceparent`, e.g. from `polaris mcp`): the
/// acknowledgement's span continues it. One that does not parse is ignored, as the W3C
/// recommendation says: tracing never fails a request.
fn trace_header(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

async fn reply(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Res {
    let (id, t) = event_headers(&headers)?;
    let o = parse_object(&body)?;
    let cc = field(&o, "ccSessionId")?.to_owned();
    let message = field(&o, "message")?.to_owned();
    let Some((_, m)) = ask(&st.daemon, |r| DaemonMsg::Lookup(cc.clone(), r)).await? else {
        return Err(HttpError::bad("Not connected"));
    };
    let payload = json!({"hook_event_name": "Stop", "session_id": cc, "stop_response": message});
    let body = NewEventBody {
        traceparent: trace_header(&headers),
        term: None,
        id: Some(id.unwrap_or_else(Uuid::new_v4)),
        timestamp: Some(t.unwrap_or_else(Utc::now)),
        source: Some(Source::Hook),
        sender: m.agent.clone(),
        payload: payload.clone(),
    };
    let line_t = body.timestamp.unwrap_or_else(Utc::now);
    let open = SessionOpen {
        driver: Some(m.user.clone()),
        agent: Some(m.agent.clone()),
    };
    let id = st
        .uplink
        .submit_opening(&m.project, &m.session, body, Some(open))
        .await?;
    st.log.write(LogLine {
        t: line_t,
        endpoint: "/reply".into(),
        payload: Value::Object(o),
        response: None,
        id: Some(id),
        project: Some(m.project),
        session: Some(m.session),
        sender: Some(m.agent.to_string()),
    });
    Ok(Json(json!({"status": "accepted", "id": id})).into_response())
}

async fn status(State(st): State<AppState>) -> Res {
    let rows = ask(&st.daemon, DaemonMsg::Status).await?;
    let up = st.uplink.status();
    let path = st.uplink.dead_letter_path().to_owned();
    let dead = tokio::task::spawn_blocking(move || crate::uplink::read_dead_letters(&path))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let recent: Vec<Value> = dead
        .iter()
        .rev()
        .take(5)
        .map(|d| {
            json!({"t": d.t, "id": d.id, "project": d.project, "session": d.session,
                   "status": d.status, "error": d.error})
        })
        .collect();
    Ok(Json(json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "sessions": rows,
        "uplink": up,
        "recentDeadLetters": recent,
    }))
    .into_response())
}

async fn status_of(State(st): State<AppState>, Path(cc): Path<String>) -> Res {
    match ask(&st.daemon, |r| DaemonMsg::Lookup(cc.clone(), r)).await? {
        Some((key, m)) => {
            let injects = ask(&st.daemon, |r| DaemonMsg::QueueLen(key, r)).await?;
            Ok(Json(json!({
                "connected": true, "project": m.project, "session": m.session, "user": m.user,
                "agent": m.agent, "slackChannel": m.slack_channel, "pending": m.floor_pending,
                "injectsWaiting": injects,
            }))
            .into_response())
        }
        None => Ok(Json(json!({"connected": false})).into_response()),
    }
}

/// Passes a floor answer through (status and body), or 503 when there is none.
async fn pass_through(r: Result<reqwest::Response, reqwest::Error>, what: &str) -> Res {
    match r {
        Ok(r) => {
            let status =
                StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = r.bytes().await.map_err(|e| {
                HttpError(
                    StatusCode::BAD_GATEWAY,
                    format!("{what}: the floor's answer broke off: {e}"),
                )
            })?;
            Ok((status, [("content-type", "application/json")], bytes).into_response())
        }
        Err(e) => Err(HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Floor unreachable: {e}"),
        )),
    }
}

async fn context(State(st): State<AppState>, Path((cc, session)): Path<(String, String)>) -> Res {
    let Some((_, m)) = ask(&st.daemon, |r| DaemonMsg::Lookup(cc.clone(), r)).await? else {
        return Err(HttpError::bad("Not connected"));
    };
    let path = format!(
        "/projects/{}/sessions/{}/messages",
        segment(&m.project),
        segment(&session)
    );
    let r = st
        .uplink
        .floor()
        .request(reqwest::Method::GET, &path)
        .send()
        .await;
    pass_through(r, "context").await
}

async fn rename(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let old = field(&o, "oldName")?.to_owned();
    let new = field(&o, "newName")?.to_owned();
    let r = st
        .uplink
        .floor()
        .request(
            reqwest::Method::POST,
            &format!("/projects/{}/rename", segment(&old)),
        )
        .json(&json!({"name": new}))
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => {
            st.uplink.rename_project(&old, &new);
            ask(&st.daemon, |reply| DaemonMsg::Renamed {
                old: old.clone(),
                new: new.clone(),
                reply,
            })
            .await?;
            Ok(Json(json!({"status": "renamed", "oldName": old, "newName": new})).into_response())
        }
        other => pass_through(other, "rename").await,
    }
}

async fn channel_update(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let project = field(&o, "project")?.to_owned();
    let channel = field(&o, "slackChannel")?.to_owned();
    ask(&st.daemon, |reply| DaemonMsg::ChannelUpdate {
        project,
        channel,
        reply,
    })
    .await?;
    Ok(Json(json!({"status": "updated"})).into_response())
}

async fn channels(State(st): State<AppState>) -> Res {
    let r = st
        .uplink
        .floor()
        .request(reqwest::Method::GET, "/projects")
        .send()
        .await
        .map_err(|_| HttpError(StatusCode::SERVICE_UNAVAILABLE, "API unreachable".into()))?;
    if !r.status().is_success() {
        let s = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(HttpError(s, "Failed to fetch channels".into()));
    }
    let list: Vec<Value> = r
        .json()
        .await
        .map_err(|_| HttpError(StatusCode::BAD_GATEWAY, "Failed to fetch channels".into()))?;
    let names: Vec<String> = list
        .iter()
        .filter(|p| p["name"] != "_system")
        .filter_map(|p| {
            p["slack_channel_name"]
                .as_str()
                .or_else(|| p["name"].as_str())
                .map(|n| format!("#{n}"))
        })
        .collect();
    Ok(Json(json!({"channels": names})).into_response())
}

async fn team(State(st): State<AppState>) -> Res {
    let r = st
        .uplink
        .floor()
        .request(reqwest::Method::GET, "/team")
        .send()
        .await
        .map_err(|_| HttpError(StatusCode::SERVICE_UNAVAILABLE, "API unreachable".into()))?;
    if !r.status().is_success() {
        let s = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(HttpError(s, "Failed to fetch team".into()));
    }
    pass_through(Ok(r), "team").await
}

/// `^(\d+)(h|m|d)$` as a duration.
fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - 1].parse().ok()?;
    match unit {
        'h' => chrono::Duration::try_hours(n),
        'm' => chrono::Duration::try_minutes(n),
        'd' => chrono::Duration::try_days(n),
        _ => None,
    }
}

/// `POST /backfill`: re-sends this window's logged events since a time to its current
/// session, each under its original id, so the floor stores only those it lacks.
async fn backfill(State(st): State<AppState>, body: Bytes) -> Res {
    let o = parse_object(&body)?;
    let cc = field(&o, "ccSessionId")?.to_owned();
    let Some((key, m)) = ask(&st.daemon, |r| DaemonMsg::Lookup(cc.clone(), r)).await? else {
        return Err(HttpError::bad("Not connected"));
    };
    let now = Utc::now();
    let start = if let Some(from) = opt_field(&o, "from")? {
        DateTime::parse_from_rfc3339(from)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| HttpError::bad("from: must be an ISO 8601 time"))?
    } else if let Some(d) = opt_field(&o, "duration")? {
        match parse_duration(d) {
            Some(d) => now - d,
            None => {
                return Ok(Json(json!({"recovered": 0, "source": "none",
                                      "gaps": ["invalid duration format"]}))
                .into_response());
            }
        }
    } else {
        now - chrono::Duration::hours(1)
    };
    let keys = ask(&st.daemon, |r| DaemonMsg::KeysOf(key.clone(), r)).await?;
    let home = st.home.clone();
    let lines = tokio::task::spawn_blocking(move || crate::log::read_since(&home, start))
        .await
        .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            HttpError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the log: {e}"),
            )
        })?;
    let mut seen = std::collections::HashSet::new();
    let mut recovered = 0;
    for l in lines {
        if l.t <= start || l.t > now || !(l.endpoint == "/events" || l.endpoint == "/reply") {
            continue;
        }
        let Some(id) = l.id else { continue };
        if !seen.insert(id) {
            continue;
        }
        // Only this window's own events: never another window's or another project's.
        let payload = if l.endpoint == "/reply" {
            let (Some(c), Some(msg)) = (
                l.payload["ccSessionId"].as_str(),
                l.payload["message"].as_str(),
            ) else {
                continue;
            };
            json!({"hook_event_name": "Stop", "session_id": c, "stop_response": msg})
        } else {
            l.payload
        };
        if !payload["session_id"]
            .as_str()
            .is_some_and(|s| keys.iter().any(|k| k == s))
        {
            continue;
        }
        let sender = if payload["hook_event_name"] == "UserPromptSubmit" {
            m.user.clone()
        } else {
            m.agent.clone()
        };
        let body = NewEventBody {
            traceparent: None,
            term: None,
            id: Some(id),
            timestamp: Some(l.t),
            source: Some(Source::Hook),
            sender,
            payload,
        };
        let open = SessionOpen {
            driver: Some(m.user.clone()),
            agent: Some(m.agent.clone()),
        };
        match st
            .uplink
            .submit_opening(&m.project, &m.session, body, Some(open))
            .await
        {
            Ok(_) => recovered += 1,
            Err(SubmitError::Invalid(e)) => tracing::debug!(error = %e, "backfill skipped a line"),
            Err(e) => return Err(e.into()),
        }
    }
    if recovered == 0 {
        return Ok(Json(json!({"recovered": 0, "source": "daemon_log",
                              "gaps": [format!("no log entries found since {}", start.to_rfc3339())]}))
        .into_response());
    }
    Ok(Json(json!({"recovered": recovered, "source": "daemon_log", "gaps": []})).into_response())
}

/// `POST /projects/:p/sessions/:s/events`: a floor-shaped body from an agent.
async fn floor_shaped(
    State(st): State<AppState>,
    Path((project, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Res {
    let (hid, ht) = event_headers(&headers)?;
    let mut ev: NewEventBody =
        serde_json::from_slice(&body).map_err(|e| HttpError::bad(format!("Invalid event: {e}")))?;
    if ev.id.is_none() {
        ev.id = hid;
    }
    if ev.timestamp.is_none() {
        ev.timestamp = ht;
    }
    let line_t = ev.timestamp.unwrap_or_else(Utc::now);
    let (payload, sender) = (ev.payload.clone(), ev.sender.to_string());
    let id = st.uplink.submit(&project, &session, ev).await?;
    st.log.write(LogLine {
        t: line_t,
        endpoint: "/events".into(),
        payload,
        response: None,
        id: Some(id),
        project: Some(project),
        session: Some(session),
        sender: Some(sender),
    });
    Ok(Json(json!({"status": "accepted", "id": id})).into_response())
}

/// Takes in the hook's spool: each file is routed like a live `/events` (keeping its id
/// and time), accepted into the WAL, then deleted. Returns how many were taken in.
pub async fn take_in_spool(st: &AppState) -> usize {
    let files = match crate::spool::list(&st.home) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the spool");
            return 0;
        }
    };
    let mut n = 0;
    for path in files {
        let entry = match crate::spool::read(&path) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unreadable spool file; set aside");
                if let Err(e) = std::fs::rename(&path, path.with_extension("bad")) {
                    tracing::warn!(error = %e, "cannot set the spool file aside");
                }
                continue;
            }
        };
        let accepted = if entry.payload["session_id"].is_string() {
            accept_hook(
                st,
                entry.payload,
                Some(entry.id),
                Some(entry.t),
                None,
                "/events",
            )
            .await
        } else {
            Err(HttpError::bad("session_id: is required"))
        };
        match accepted {
            Ok(_) => n += 1,
            // A WAL failure: leave the file for the next start.
            Err(HttpError(s, m)) if s.is_server_error() => {
                tracing::error!(error = %m, "spool intake stopped");
                break;
            }
            Err(HttpError(_, m)) => {
                tracing::warn!(file = %path.display(), error = %m, "spooled event refused; dropped");
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete a taken-in spool file");
        }
    }
    n
}
