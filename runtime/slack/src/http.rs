//! `POST /slack/events`: the Events API's request URL.
//!
//! Every request is checked before anything else: `X-Slack-Signature` must be the
//! HMAC-SHA256 of `v0:<timestamp>:<body>` under the signing secret (compared in constant
//! time by the `hmac` crate), and `X-Slack-Request-Timestamp` within five minutes of now,
//! so a captured request cannot be replayed later. A verified request is answered at once
//! (Slack waits three seconds, then retries) and handled afterwards. Slack retries a
//! delivery it thinks failed (`X-Slack-Retry-Num`); the handler's derived event ids make
//! a retry a no-op on the floor. What the bridge cannot use (a malformed body, an unknown
//! event, a channel no project links) is answered 200 and ignored: Slack would only retry
//! it.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::Shared;

/// Oldest request accepted, in seconds (Slack's own advice).
const MAX_AGE: i64 = 5 * 60;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The routes, when a signing secret is configured (none otherwise: Socket Mode only).
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    if shared.signing_secret.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/slack/events", post(events))
        .with_state(shared)
}

/// `v0=<hex>`: the signature Slack sends for `body` at `timestamp` (also what tests sign
/// their requests with).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a request was refused (never which part of a signature was wrong).
fn refuse(field: &str, message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": format!("{field}: {message}")})),
    )
        .into_response()
}

/// `Err((header, why))` when the request is not Slack's, or too old.
fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), (&'static str, &'static str)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(ts) = header("x-slack-request-timestamp") else {
        return Err(("x-slack-request-timestamp", "missing"));
    };
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return Err(("x-slack-request-timestamp", "not a number"));
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > MAX_AGE {
        return Err((
            "x-slack-request-timestamp",
            "more than 5 minutes from now (a replayed or delayed request)",
        ));
    }
    let Some(sig) = header("x-slack-signature") else {
        return Err(("x-slack-signature", "missing"));
    };
    let Some(Ok(sig)) = sig.strip_prefix("v0=").map(hex::decode) else {
        return Err(("x-slack-signature", "not a v0 signature"));
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| ("x-slack-signature", "does not match the request"))
}

#[tracing::instrument(name = "slack.events_api", skip_all, fields(retry))]
async fn events(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &shared.signing_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err((field, why)) = verify(secret.expose(), &headers, &body) {
        metrics::counter!("polaris_slack_requests_refused_total").increment(1);
        return refuse(field, why);
    }
    if let Some(n) = headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
    {
        tracing::Span::current().record("retry", n);
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return Json(json!({"ok": true, "ignored": "body: not JSON"})).into_response();
    };
    match v.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            let challenge = v.get("challenge").and_then(Value::as_str).unwrap_or("");
            Json(json!({"challenge": challenge})).into_response()
        }
        Some("event_callback") if shared.me().is_none() => {
            // Not connected to Slack yet (auth.test): Slack delivers it again later.
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "not connected to Slack yet"})),
            )
                .into_response()
        }
        Some("event_callback") => {
            // Answered now; the floor write happens after (Slack's 3-second deadline).
            match shared.inbound.try_send(v) {
                Ok(()) => Json(json!({"ok": true})).into_response(),
                // Slack delivers it again later.
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "busy: too many Slack events waiting"})),
                )
                    .into_response(),
            }
        }
        other => {
            tracing::debug!(kind = ?other, "slack request ignored");
            Json(json!({"ok": true, "ignored": "type"})).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_documented_example_verifies() {
        // From Slack's "Verifying requests from Slack" page.
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature(secret, 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
