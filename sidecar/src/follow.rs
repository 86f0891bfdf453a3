//! Following a floor session's stream: one task per followed session reads the floor's
//! WebSocket (`…/ws?after=SEQ`, bearer token if any) and hands every frame to the daemon
//! actor, which queues injects and advice and moves the cursor. After a drop it resumes
//! after the last seq the actor recorded, so nothing is missed; the actor ignores a seq it
//! has already seen, so nothing is queued twice.

use std::borrow::Cow;
use std::time::Duration;

use futures::StreamExt;
use ractor::rpc::CallResult;
use ractor::{DerivedActorRef, RpcReplyPort};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::uplink::{FloorClient, segment};

/// What a follow task asks of, and tells, the actor that owns the cursors and queues (the
/// daemon), through a derived reference: this module does not know that actor.
pub enum FollowMsg {
    /// The cursor of a stream (for a follow task starting or resuming).
    CursorOf(String, String, RpcReplyPort<Option<i64>>),
    /// A frame from a followed session stream.
    Frame(Frame),
}

/// An event frame of a followed session stream, as much of it as the sidecar uses.
pub struct Frame {
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// Its seq.
    pub seq: i64,
    /// The event's source.
    pub source: String,
    /// Sender.
    pub sender: String,
    /// Payload of injects and agents' events (`Null` for the others).
    pub payload: Value,
    /// Event time.
    pub timestamp: String,
}

/// What a follow task needs.
pub struct FollowArgs {
    /// Where frames go.
    pub daemon: DerivedActorRef<FollowMsg>,
    /// The floor.
    pub floor: FloorClient,
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// Cancelled when nobody follows the session any more.
    pub stop: CancellationToken,
}

/// The fields of an event frame the sidecar uses.
#[derive(serde::Deserialize)]
struct FrameHead<'a> {
    seq: i64,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    sender: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// Starts following.
pub fn spawn(a: FollowArgs) {
    tokio::spawn(run(a));
}

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(3);

#[tracing::instrument(name = "sidecar.follow", skip_all, fields(project = %a.project, session = %a.session))]
async fn run(a: FollowArgs) {
    let mut delay = RETRY_MIN;
    loop {
        if a.stop.is_cancelled() {
            return;
        }
        let cursor = match a
            .daemon
            .call(
                |r| FollowMsg::CursorOf(a.project.clone(), a.session.clone(), r),
                None,
            )
            .await
        {
            Ok(CallResult::Success(c)) => c,
            // The actor is gone: the sidecar is stopping.
            _ => return,
        };
        let mut url = a.floor.ws_url(&format!(
            "/projects/{}/sessions/{}/ws",
            segment(&a.project),
            segment(&a.session)
        ));
        if let Some(c) = cursor {
            url.push_str(&format!("?after={c}"));
        }
        match follow_once(&a, &url).await {
            Ok(true) => return,
            Ok(false) => delay = RETRY_MIN,
            Err(e) => tracing::debug!(error = %e, "session stream unavailable; retrying"),
        }
        let jitter = delay.mul_f64(rand::random::<f64>() / 2.0);
        tokio::select! {
            _ = tokio::time::sleep(delay + jitter) => {}
            _ = a.stop.cancelled() => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// One connection; `Ok(true)` when told to stop, `Ok(false)` when the stream ended after
/// it was open.
async fn follow_once(a: &FollowArgs, url: &str) -> anyhow::Result<bool> {
    let mut req = url.into_client_request()?;
    if let Some(t) = a.floor.token() {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    let connected = tokio::select! {
        c = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req)) => c,
        _ = a.stop.cancelled() => return Ok(true),
    };
    let (mut ws, _) = connected??;
    tracing::debug!("following the session stream");
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = a.stop.cancelled() => return Ok(true),
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => return Ok(false),
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "session stream dropped");
                return Ok(false);
            }
        };
        // Most frames are the session's own hook events: read only what routing needs and
        // parse the payload of injects and advice alone.
        let Ok(f) = serde_json::from_str::<FrameHead<'_>>(text.as_str()) else {
            continue;
        };
        let payload = match f.source.as_ref() {
            "inject" | "agent" => serde_json::from_str(f.payload.get()).unwrap_or_default(),
            _ => serde_json::Value::Null,
        };
        let frame = Frame {
            project: a.project.clone(),
            session: a.session.clone(),
            seq: f.seq,
            source: f.source.into_owned(),
            sender: f.sender.into_owned(),
            timestamp: f.timestamp.into_owned(),
            payload,
        };
        if a.daemon.cast(FollowMsg::Frame(frame)).is_err() {
            return Ok(true);
        }
    }
}
