//! Socket Mode: the workspace's events over a WebSocket the bridge opens, for deployments
//! Slack cannot reach. `apps.connections.open` (app-level token) gives a single-use URL;
//! every envelope is acknowledged the moment it arrives (Slack waits three seconds) and
//! handled after, by the Events API's handler. A `disconnect` frame (Slack refreshes
//! connections every few hours) or a dropped socket means a fresh URL, with backoff when
//! connecting keeps failing.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::web::{WebApi, str_of};

/// Connects, reads and reconnects until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(token) = shared.app_token.clone() else {
        return;
    };
    let api = match WebApi::new(&shared.api_url, token) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "socket mode client not built");
            return;
        }
    };
    let mut delay = Duration::from_millis(250);
    loop {
        let outcome = tokio::select! {
            o = connection(&shared, &api) => o,
            () = stop.cancelled() => return,
        };
        match outcome {
            // Slack asked for a new connection: no wait.
            Ok(true) => {
                delay = Duration::from_millis(250);
                continue;
            }
            Ok(false) => tracing::info!("socket mode connection closed; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "socket mode connection failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// One connection, until it ends: `Ok(true)` when Slack asked to reconnect, `Ok(false)`
/// when the socket closed after a good start.
async fn connection(shared: &Arc<Shared>, api: &WebApi) -> Result<bool, String> {
    let v = api
        .post("apps.connections.open", &json!({}))
        .await
        .map_err(|e| e.to_string())?;
    let url = str_of(&v, "url");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    while let Some(frame) = rx.next().await {
        let frame = frame.map_err(|e| format!("read: {e}"))?;
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(_) => return Ok(false),
            // Pings are answered by the library; nothing else is expected.
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            tracing::debug!("socket mode frame is not JSON; ignored");
            continue;
        };
        match str_of(&v, "type") {
            "hello" => tracing::info!("socket mode connected"),
            "disconnect" => {
                tracing::info!(
                    reason = str_of(&v, "reason"),
                    "socket mode refresh requested"
                );
                let _ = tx.close().await;
                return Ok(true);
            }
            kind => {
                // Queued for the floor, then acknowledged; a full queue leaves the envelope
                // unacknowledged and Slack sends it again.
                if kind == "events_api" && shared.inbound.try_send(v["payload"].clone()).is_err() {
                    tracing::warn!("slack events waiting; envelope left for Slack to resend");
                    continue;
                }
                let envelope = str_of(&v, "envelope_id");
                if !envelope.is_empty() {
                    let ack = json!({"envelope_id": envelope}).to_string();
                    tx.send(Message::text(ack))
                        .await
                        .map_err(|e| format!("ack: {e}"))?;
                }
            }
        }
    }
    Ok(false)
}
