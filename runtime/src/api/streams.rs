//! Event reads and streams: paged reads (by `seq`, and the original's newest-first pages),
//! Server-Sent Events and WebSockets. Streams resume from a `seq` cursor (`?after=`,
//! `Last-Event-ID`), end cleanly on shutdown and never hold the floor back.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::extract::{PathParams, QueryParams};
use super::{Access, ApiError, AppState, Opened};
use crate::auth::Caller;
use crate::hub::Committed;
use crate::protocol::{Event, format_ms};
use crate::store::StoreError;
use crate::subscription::{Start, SubscriptionSpec};

/// Largest page of a `seq`-paged read.
const MAX_SEQ_PAGE: i64 = 1000;
/// The original's session pages: default and bounds (reference 2.5).
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;
/// Events written to a WebSocket before one flush.
const WS_BATCH: usize = 256;

/// A `seq`-paged read. Serialized directly (not through `serde_json::Value`): pages are
/// a hundred events of a kilobyte each.
#[derive(Serialize)]
struct SeqPage<'a> {
    events: &'a [Event],
    next_after: i64,
    has_more: bool,
}

/// The original's newest-first page.
#[derive(Serialize)]
struct CursorPage<'a> {
    events: &'a [Event],
    #[serde(rename = "nextCursor")]
    next_cursor: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct EventsQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    after: Option<i64>,
}

/// Where a stream starts: `?after=` wins over `Last-Event-ID`; neither means "from now".
fn start(q: &EventsQuery, headers: &HeaderMap) -> Result<Start, ApiError> {
    if let Some(a) = q.after {
        return Ok(Start::After(a.max(0)));
    }
    match headers.get("last-event-id") {
        None => Ok(Start::Now),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|n| Start::After(n.max(0)))
            .ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID: must be an event seq (an integer)".into())
            }),
    }
}

async fn seq_page(
    st: &AppState,
    opened: &Opened,
    session: Option<&str>,
    q: &EventsQuery,
) -> Result<Response, ApiError> {
    let after = q.after.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_SEQ_PAGE);
    let events = st
        .runtime
        .store()
        .events_after(&opened.key, session, after, limit)
        .await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    let has_more = events.len() as i64 == limit;
    Ok(Json(SeqPage {
        events: &events,
        next_after,
        has_more,
    })
    .into_response())
}

pub(super) async fn project_events(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParams(project): PathParams<String>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Response, ApiError> {
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    if q.limit.is_some() {
        return seq_page(&st, &opened, None, &q).await;
    }
    let start = start(&q, &headers)?;
    sse(&st, opened, None, start).await
}

pub(super) async fn session_events(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathParams((project, session)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Response, ApiError> {
    let opened = st.open_session(&caller, &project, &session).await?;
    if q.after.is_some() && q.limit.is_some() {
        return seq_page(&st, &opened, Some(&session), &q).await;
    }
    if q.limit.is_some() || q.before.is_some() {
        return newest_first_page(&st, &opened, &session, &q).await;
    }
    let start = start(&q, &headers)?;
    sse(&st, opened, Some(session), start).await
}

/// The original's session page: newest first, `nextCursor` = `<ISO time>|<event id>` of
/// the last row when the page is full. Pages follow commit order (`seq`); the cursor's
/// event id locates the position.
async fn newest_first_page(
    st: &AppState,
    opened: &Opened,
    session: &str,
    q: &EventsQuery,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let before = match q.before.as_deref().and_then(|c| c.split_once('|')) {
        None => None, // a cursor without '|' is ignored, as the original does
        Some((_, id)) => {
            let id = Uuid::parse_str(id)
                .map_err(|_| ApiError::BadRequest("before: not a cursor from nextCursor".into()))?;
            match st
                .runtime
                .store()
                .locate_event(opened.project.id, id)
                .await?
            {
                Some((seq, Some(s))) if s == session => Some(seq),
                _ => {
                    return Err(ApiError::BadRequest(
                        "before: not a cursor of this session".into(),
                    ));
                }
            }
        }
    };
    let events = st
        .runtime
        .store()
        .events_before(&opened.key, Some(session), before, limit)
        .await?;
    let next = (events.len() as i64 == limit)
        .then(|| {
            events
                .last()
                .map(|e| format!("{}|{}", format_ms(&e.timestamp), e.id))
        })
        .flatten();
    Ok(Json(CursorPage {
        events: &events,
        next_cursor: next,
    })
    .into_response())
}

async fn subscription(
    st: &AppState,
    opened: Opened,
    session: Option<String>,
    start: Start,
) -> Result<impl Stream<Item = Result<Arc<Committed>, StoreError>> + Send + 'static, ApiError> {
    let spec = SubscriptionSpec {
        project: opened.key,
        session,
        start,
    };
    Ok(st.runtime.subscribe(spec).await?)
}

async fn sse(
    st: &AppState,
    opened: Opened,
    session: Option<String>,
    start: Start,
) -> Result<Response, ApiError> {
    sse_with(st, opened, session, start, |c| {
        SseEvent::default()
            .id(c.event.seq.to_string())
            .data(c.text.as_str())
    })
    .await
}

/// A Server-Sent Events answer over a subscription, each event rendered by `render` (the
/// API sends the commit's JSON, the dashboard an HTML fragment) with its `seq` as the id,
/// so a client resumes with `Last-Event-ID`.
pub(super) async fn sse_with(
    st: &AppState,
    opened: Opened,
    session: Option<String>,
    start: Start,
    render: impl Fn(&Committed) -> SseEvent + Send + 'static,
) -> Result<Response, ApiError> {
    let events = subscription(st, opened, session, start).await?;
    let stream = events
        // A store failure ends the stream; the client reconnects with Last-Event-ID.
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| futures::future::ready(r.ok()))
        .map(move |c| Ok::<_, Infallible>(render(&c)))
        .take_until(st.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(st.sse_heartbeat)
                .text("heartbeat"),
        )
        .into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct WsQuery {
    #[serde(default)]
    after: Option<i64>,
}

pub(super) async fn project_ws(
    State(st): State<AppState>,
    caller: Caller,
    PathParams(project): PathParams<String>,
    QueryParams(q): QueryParams<WsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|_| ApiError::BadRequest("WebSocket upgrade failed".into()))?;
    let opened = st.open_project(&caller, &project, Access::Use).await?;
    websocket(&st, ws, opened, None, q).await
}

pub(super) async fn session_ws(
    State(st): State<AppState>,
    caller: Caller,
    PathParams((project, session)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<WsQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|_| ApiError::BadRequest("WebSocket upgrade failed".into()))?;
    let opened = st.open_session(&caller, &project, &session).await?;
    websocket(&st, ws, opened, Some(session), q).await
}

async fn websocket(
    st: &AppState,
    ws: WebSocketUpgrade,
    opened: Opened,
    session: Option<String>,
    q: WsQuery,
) -> Result<Response, ApiError> {
    let start = q.after.map_or(Start::Now, |a| Start::After(a.max(0)));
    // Subscribe before answering 101, so an event committed right after the upgrade is
    // not missed by a client that connected without a cursor.
    let events = subscription(st, opened, session, start).await?;
    let ping = st.ws_ping;
    let shutdown = st.shutdown.clone();
    // Subscribers only send pings, pongs and close frames: a small read buffer. The
    // default (128 KiB, zeroed on reads) cost a quarter of the fan-out CPU with a thousand
    // subscribers, and as much memory per socket.
    Ok(ws
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| pump(socket, events, ping, shutdown)))
}

/// Moves events to the socket. A slow client makes this task wait, never the floor: its
/// subscription falls behind and catches up from the store.
///
/// Client frames (pongs, close) and the server's shutdown are watched by a task of their
/// own, which tells this one through a oneshot: the sending loop is woken only by events
/// and by its ping timer, and polls nothing shared per event (with a thousand subscribers,
/// polling the shutdown token, a lock shared by every socket, showed in the fan-out
/// latency).
async fn pump(
    socket: WebSocket,
    events: impl Stream<Item = Result<Arc<Committed>, StoreError>> + Send + 'static,
    ping_every: Duration,
    shutdown: CancellationToken,
) {
    let (mut tx, mut rx) = socket.split();
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<Stop>();
    let watcher = tokio::spawn(async move {
        let why = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Stop::Shutdown,
            // Anything but a data frame ends the session; data frames are ignored.
            _ = async {
                while let Some(Ok(msg)) = rx.next().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            } => Stop::Gone,
        };
        let _ = stop_tx.send(why);
    });
    let mut cursor: Option<i64> = None;
    let close = {
        let run = async {
            let mut events = pin!(events.ready_chunks(WS_BATCH));
            let mut ping = tokio::time::interval(ping_every);
            ping.reset();
            let mut newest: Option<std::time::Instant> = None;
            loop {
                tokio::select! {
                    biased;
                    batch = events.next() => {
                        let batch = batch?;
                        for item in batch {
                            match item {
                                Ok(c) => {
                                    cursor = Some(c.event.seq);
                                    newest = Some(c.committed_at);
                                    if tx.feed(Message::Text(c.text.clone())).await.is_err() {
                                        return None;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "stream store read failed; closing the socket");
                                    return Some((1011, "store unavailable; reconnect with ?after=<last seq>"));
                                }
                            }
                        }
                        if tx.flush().await.is_err() {
                            return None;
                        }
                        // Once per write, not per event: with a thousand subscribers this
                        // runs a million times a second.
                        if let Some(t) = newest {
                            metrics::histogram!("polaris_ws_delivery_seconds").record(t.elapsed().as_secs_f64());
                        }
                    }
                    _ = ping.tick() => {
                        if tx.send(Message::Ping(Bytes::new())).await.is_err() {
                            return None;
                        }
                    }
                }
            }
        };
        tokio::select! {
            biased;
            why = &mut stop => match why {
                Ok(Stop::Shutdown) => Some((1001, "server shutting down; reconnect with ?after=<last seq>")),
                // The peer is gone, or the watcher ended without a word (it cannot panic).
                Ok(Stop::Gone) | Err(_) => None,
            },
            c = run => c,
        }
    };
    if let Some((code, reason)) = close {
        tracing::debug!(code, ?cursor, "closing websocket");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // Best effort: the peer may be gone already.
        let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(Message::Close(Some(frame))))
            .await;
    }
    watcher.abort();
}

/// Why a socket's sending loop stops before its stream ends.
enum Stop {
    /// The server is shutting down: the client is told to reconnect.
    Shutdown,
    /// The peer closed the socket or it failed.
    Gone,
}
