//! Clients that speak to the server as users do.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The `error` string of an error body.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

/// An HTTP client with an optional bearer token.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        Client {
            base: base.to_owned(),
            token,
            http: http_builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// A GET with extra headers (conditional requests, say).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut r = self.req(reqwest::Method::GET, path);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Self::send(r).await
    }

    async fn send(r: reqwest::RequestBuilder) -> Resp {
        let res = r.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            json,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        Self::send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        Self::send(self.req(reqwest::Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        Self::send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    /// A POST with extra headers (a `traceparent`, say).
    pub async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        let mut r = self.req(reqwest::Method::POST, path).json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Self::send(r).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Resp {
        Self::send(
            self.req(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn method_json(&self, method: &str, path: &str, body: Value) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        Self::send(self.req(m, path).json(&body)).await
    }

    pub async fn method(&self, method: &str, path: &str) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        Self::send(self.req(m, path)).await
    }

    /// Creates a project and a session, asserting success.
    pub async fn project_session(&self, project: &str, session: &str) {
        let r = self
            .post("/projects", serde_json::json!({"name": project}))
            .await;
        assert!(r.status == 201 || r.status == 409, "create project: {r:?}");
        let r = self
            .post(
                &format!("/projects/{}/sessions", enc(project)),
                serde_json::json!({"name": session}),
            )
            .await;
        assert_eq!(r.status, 201, "create session: {r:?}");
    }

    /// Posts a prompt as `sender` and returns the answer.
    pub async fn prompt(&self, project: &str, session: &str, sender: &str, text: &str) -> Resp {
        self.post(
            &format!("/projects/{}/sessions/{}/events", enc(project), enc(session)),
            serde_json::json!({"sender": sender, "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": text}}),
        )
        .await
    }

    /// Opens a WebSocket on `path` (e.g. `/projects/pj/ws?after=0`).
    pub async fn ws(&self, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}{path}", self.base.replacen("http", "ws", 1));
        let mut req = url.into_client_request()?;
        if let Some(t) = &self.token {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let (stream, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Ws { stream })
    }

    /// Opens an SSE stream on `path`, with an optional `Last-Event-ID`.
    pub async fn sse(&self, path: &str, last_event_id: Option<i64>) -> Result<Sse, Resp> {
        let mut r = self
            .req(reqwest::Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id.to_string());
        }
        let res = r.send().await.expect("sse request");
        if res.status() != 200 {
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let json = res.json().await.unwrap_or(Value::Null);
            return Err(Resp {
                status,
                json,
                headers,
            });
        }
        Ok(Sse {
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        })
    }
}

/// A WebSocket subscriber.
#[allow(dead_code)] // used through its methods
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsItem {
    Event(Value),
    Closed(Option<(u16, String)>),
    Timeout,
}

impl Ws {
    /// The next event, skipping pings; `Closed` or `Timeout` otherwise.
    pub async fn next_item(&mut self, wait: Duration) -> WsItem {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return WsItem::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return WsItem::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return WsItem::Event(serde_json::from_str(t.as_str()).expect("event JSON"));
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    return WsItem::Closed(f.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next event, failing the test after 10 s.
    pub async fn next_event(&mut self) -> Value {
        match self.next_item(Duration::from_secs(10)).await {
            WsItem::Event(v) => v,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_event().await);
        }
        out
    }

    /// Asserts that nothing arrives for `ms`.
    pub async fn expect_silence(&mut self, ms: u64) {
        match self.next_item(Duration::from_millis(ms)).await {
            WsItem::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// An SSE subscriber.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

/// One SSE record.
#[derive(Debug, Clone)]
pub struct SseRecord {
    pub id: Option<String>,
    pub data: Option<String>,
    pub comment: Option<String>,
}

impl Sse {
    /// The next record (event or comment), or `None` on timeout or end of stream.
    pub async fn next_record(&mut self, wait: Duration) -> Option<SseRecord> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let mut rec = SseRecord {
                    id: None,
                    data: None,
                    comment: None,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        rec.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        let v = v.strip_prefix(' ').unwrap_or(v);
                        rec.data = Some(match rec.data.take() {
                            Some(d) => format!("{d}\n{v}"),
                            None => v.to_owned(),
                        });
                    } else if let Some(v) = line.strip_prefix(':') {
                        rec.comment = Some(v.trim().to_owned());
                    }
                }
                return Some(rec);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// The next event (skipping comments), with its `id`.
    pub async fn next_event(&mut self) -> (i64, Value) {
        loop {
            let rec = self
                .next_record(Duration::from_secs(10))
                .await
                .expect("an SSE event within 10 s");
            if let Some(data) = rec.data {
                let id = rec
                    .id
                    .expect("every event has an id")
                    .parse()
                    .expect("numeric id");
                return (id, serde_json::from_str(&data).expect("event JSON"));
            }
        }
    }
}

/// A reqwest client builder. reqwest is built with rustls and no built-in cryptography
/// (the sidecar picks ring for the process), so the provider goes in first.
pub fn http_builder() -> reqwest::ClientBuilder {
    polaris_sidecar::uplink::install_tls_provider();
    reqwest::Client::builder()
}
