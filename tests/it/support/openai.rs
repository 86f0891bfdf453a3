//! An OpenAI-compatible chat-completions endpoint for tests, on a loopback port: it plays
//! a script of replies (streamed text, streamed tool calls, error statuses, a hang,
//! malformed JSON) in the wire format real servers use — server-sent events of
//! `chat.completion.chunk` objects ending in `data: [DONE]` — and records every request
//! (body, `Authorization` header, arrival time) so tests can check what the brain sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

/// One reply of the endpoint.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A streamed answer, in chunks of a few characters.
    Text(String),
    /// A streamed call of `name` with `arguments` (sent in two pieces, as models do).
    Tool { name: String, arguments: String },
    /// An error status with a JSON error body and, maybe, `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    /// An error status whose `Retry-After` is an HTTP date, `after` from when it answers
    /// (the answer's own `Date` comes with it, as servers send it).
    StatusUntil {
        code: u16,
        after: std::time::Duration,
    },
    /// 401 with the key it was sent repeated in the error's message, as some providers do.
    BadKey,
    /// Accepts the request and never answers.
    Hang,
    /// A 200 event stream whose chunk is not JSON.
    Malformed,
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub body: Value,
    pub authorization: Option<String>,
    pub at: Instant,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    fallback: Arc<Mutex<Reply>>,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

/// The running endpoint; it stops when dropped.
pub struct FakeOpenAi {
    /// The API base to configure (`http://127.0.0.1:PORT/v1`).
    pub base: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOpenAi {
    /// Starts an endpoint that answers with `fallback` once the script is used up.
    pub async fn start(fallback: Reply) -> FakeOpenAi {
        let shared = Shared {
            script: Arc::default(),
            fallback: Arc::new(Mutex::new(fallback)),
            seen: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi { base, shared, task }
    }

    /// Replies to give, in order, before the fallback.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// What it answers once the script is used up.
    pub fn set_fallback(&self, r: Reply) {
        *self.shared.fallback.lock().unwrap() = r;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.seen.lock().unwrap().clone()
    }
}

async fn completions(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.seen.lock().unwrap().push(Recorded {
        body: parsed.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        at: Instant::now(),
    });
    let reply = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| s.fallback.lock().unwrap().clone());
    let model = parsed["model"].as_str().unwrap_or("test").to_owned();
    match reply {
        Reply::Text(t) => {
            let chars: Vec<char> = t.chars().collect();
            let mut chunks = vec![chunk(
                &model,
                json!({"role": "assistant", "content": ""}),
                None,
            )];
            for piece in chars.chunks(7) {
                chunks.push(chunk(
                    &model,
                    json!({"content": piece.iter().collect::<String>()}),
                    None,
                ));
            }
            chunks.push(chunk(&model, json!({}), Some("stop")));
            sse(chunks)
        }
        Reply::Tool { name, arguments } => {
            let mid = arguments.len() / 2;
            let (a, b) = arguments.split_at(mid);
            sse(vec![
                chunk(
                    &model,
                    json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": name, "arguments": a}}]}),
                    None,
                ),
                chunk(
                    &model,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                    None,
                ),
                chunk(&model, json!({}), Some("tool_calls")),
            ])
        }
        Reply::StatusUntil { code, after } => {
            let at = chrono::Utc::now() + chrono::Duration::from_std(after).expect("a short delay");
            error_status(
                code,
                Some(at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
            )
        }
        Reply::Status { code, retry_after } => error_status(code, retry_after),
        Reply::BadKey => {
            let sent = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_owned();
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"error": {"message": format!("Incorrect API key provided: {sent}"),
                        "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})
                    .to_string(),
                ))
                .unwrap()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Malformed => Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(
                "data: {\"id\": \"x\", \"choices\": [oops\n\ndata: [DONE]\n\n",
            ))
            .unwrap(),
    }
}

fn error_status(code: u16, retry_after: Option<String>) -> Response {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json");
    if let Some(ra) = retry_after {
        r = r.header("retry-after", ra);
    }
    r.body(Body::from(
                json!({"error": {"message": format!("scripted {code}"), "type": "test_error", "param": null, "code": null}})
                    .to_string(),
            ))
            .unwrap()
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })
}

fn sse(chunks: Vec<Value>) -> Response {
    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}
