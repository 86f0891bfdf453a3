//! Slack's Web API over reqwest: the dozen methods the bridge calls, against any base URL
//! (`SLACK_API_URL`), with Slack's two kinds of failure kept apart: HTTP 429 with
//! `Retry-After` (wait, then the same call again) and `{"ok": false, "error": …}` (the
//! caller decides). Write methods send JSON; read methods send a form, which is what
//! Slack accepts on all of them.

use std::time::Duration;

use polaris_config::Secret;
use serde_json::{Value, json};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// HTTP 429: call again after this long.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// Slack answered `ok: false`.
    #[error("slack error: {0}")]
    Api(String),
    /// No answer, or an answer that is not Slack's: the call may or may not have happened.
    #[error("slack unreachable: {0}")]
    Transport(String),
}

impl SlackError {
    /// The `error` code of an `ok: false` answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            SlackError::Api(c) => Some(c),
            _ => None,
        }
    }
}

/// A Web API client for one token.
#[derive(Clone)]
pub struct WebApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApi").field("base", &self.base).finish()
    }
}

/// Longest a call may take: Slack answers in well under a second; a hung connection must
/// not hold a channel's posts.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

impl WebApi {
    /// A client calling `base` (ending in `/`) with `token`.
    pub fn new(base: &str, token: Secret) -> Result<WebApi, SlackError> {
        // Err only means a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SlackError::Transport(e.to_string()))?;
        Ok(WebApi {
            http,
            base: base.to_owned(),
            token,
        })
    }

    /// Calls a write method with a JSON body.
    pub async fn post(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let req = self.http.post(format!("{}{method}", self.base)).json(body);
        self.send(method, req).await
    }

    /// Calls a read method with form parameters.
    pub async fn get(&self, method: &str, params: &[(&str, &str)]) -> Result<Value, SlackError> {
        let req = self
            .http
            .post(format!("{}{method}", self.base))
            .form(params);
        self.send(method, req).await
    }

    #[tracing::instrument(name = "slack.call", skip_all, fields(method))]
    async fn send(&self, method: &str, req: reqwest::RequestBuilder) -> Result<Value, SlackError> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| SlackError::Transport(e.without_url().to_string()))?;
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let secs = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            tracing::info!(method, retry_after = secs, "slack rate limit");
            return Err(SlackError::RateLimited(Duration::from_secs(secs.min(300))));
        }
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| SlackError::Transport(format!("{method}: HTTP {status}: {e}")))?;
        if body.get("ok").and_then(Value::as_bool) == Some(true) {
            Ok(body)
        } else {
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error");
            Err(SlackError::Api(code.to_owned()))
        }
    }

    /// `auth.test`: the bot's user id, bot id and team.
    pub async fn auth_test(&self) -> Result<Identity, SlackError> {
        let v = self.post("auth.test", &json!({})).await?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        Ok(Identity {
            team: s("team_id"),
            user: s("user_id"),
            bot: s("bot_id"),
        })
    }
}

/// Who the bot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `T…`.
    pub team: String,
    /// The bot user, `U…` (its own messages are ignored).
    pub user: String,
    /// `B…`.
    pub bot: String,
}

/// A string field of a JSON object (empty when missing).
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
