//! A fake Slack on a free loopback port: the Web API methods the bridge calls, in Slack's
//! wire format (JSON or form bodies, `{"ok": …}` answers, Slack's error codes, 429s with
//! `Retry-After`), and Socket Mode (`apps.connections.open`, then a WebSocket that says
//! hello, carries envelopes and records acks). Everything it receives is recorded for the
//! test to inspect; waits are woken by a change counter, never by polling.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// One Web API call as the fake received and answered it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Query string and body merged into one object, JSON-looking form values parsed.
    pub params: Value,
    /// The bearer token, if any.
    pub token: Option<String>,
    pub at: Instant,
    pub status: u16,
    /// The JSON body of the answer.
    pub response: Value,
}

/// A message in a channel: posted by the bot through `chat.postMessage`, or typed by a
/// human through [`FakeSlack::human_message`].
#[derive(Debug, Clone)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    /// Set on replies only (the parent's ts).
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Option<Value>,
    pub username: Option<String>,
    pub icon_emoji: Option<String>,
    pub icon_url: Option<String>,
    pub metadata: Option<Value>,
    pub user: String,
    /// The request parameters (or the event, for a human's message).
    pub raw: Value,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub topic: String,
    pub is_member: bool,
    pub archived: bool,
    pub is_private: bool,
    pub created: u64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub display_name: String,
    pub email: Option<String>,
    pub is_bot: bool,
}

/// Holds calls of one method in flight until released (or every clone dropped).
#[derive(Debug, Clone)]
pub struct Pause {
    gate: Arc<watch::Sender<bool>>,
    arrived: Arc<AtomicUsize>,
    fake: FakeSlack,
}

impl Pause {
    /// Lets the held calls (and every later one) through.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    /// How many calls have reached the gate so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Until `n` calls have reached the gate.
    pub async fn wait_arrived(&self, n: usize, timeout: Duration) {
        let arrived = self.arrived.clone();
        self.fake
            .wait_until(
                timeout,
                |_| (arrived.load(Ordering::SeqCst) >= n).then_some(()),
                |_| {
                    format!(
                        "{} of {n} calls at the pause",
                        arrived.load(Ordering::SeqCst)
                    )
                },
            )
            .await;
    }
}

/// The fake server; clones share it.
#[derive(Debug, Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    port: u16,
    state: Mutex<SlackState>,
    /// Bumped on every change a test may wait for.
    changed: watch::Sender<u64>,
}

/// What a WebSocket task is told to do.
#[derive(Debug)]
enum SocketCmd {
    /// Send a text frame; answers whether it went out.
    Send(String, oneshot::Sender<bool>),
    /// Drop the connection without a close frame.
    Drop,
}

#[derive(Debug, Clone)]
struct SocketHandle {
    id: u64,
    tx: mpsc::UnboundedSender<SocketCmd>,
}

/// An answer the test queued ahead of the real one.
#[derive(Debug, Clone)]
enum Injected {
    RateLimited(u64),
    Fail(String),
}

#[derive(Debug, Clone)]
struct Ack {
    envelope_id: String,
    at: Instant,
    frame: Value,
}

#[derive(Debug, Default)]
struct SlackState {
    calls: Vec<Call>,
    /// Bot posts, in order.
    posted: Vec<Message>,
    /// Every message of every channel (bot and human), in ts order.
    history: Vec<Message>,
    ephemerals: Vec<Value>,
    channels: Vec<Channel>,
    users: Vec<User>,
    injected: HashMap<String, VecDeque<Injected>>,
    /// The gate of each paused method and how many calls reached it.
    pauses: HashMap<String, (watch::Receiver<bool>, Arc<AtomicUsize>)>,
    channel_rate: Option<Duration>,
    last_post: HashMap<String, Instant>,
    last_ts: (u64, u64),
    connections_opened: usize,
    next_ticket: u64,
    tickets: HashSet<u64>,
    next_socket: u64,
    sockets: Vec<SocketHandle>,
    sent_envelopes: HashMap<String, Instant>,
    acks: Vec<Ack>,
}

/// An answer before it becomes an HTTP response.
enum Answer {
    Ok(Value),
    Err(String),
    RateLimited(u64),
}

fn err(e: &str) -> Answer {
    Answer::Err(e.to_owned())
}

const METHODS: &[&str] = &[
    "auth.test",
    "apps.connections.open",
    "chat.postEphemeral",
    "chat.postMessage",
    "conversations.create",
    "conversations.history",
    "conversations.info",
    "conversations.join",
    "conversations.list",
    "conversations.rename",
    "conversations.replies",
    "conversations.setTopic",
    "users.info",
    "users.list",
];

impl FakeSlack {
    pub const BOT_TOKEN: &str = "xoxb-test-bot";
    pub const APP_TOKEN: &str = "xapp-test-app";
    pub const TEAM: &str = "T0TEST";
    pub const BOT_USER: &str = "U0BOT";
    pub const BOT_ID: &str = "B0BOT";
    pub const APP_ID: &str = "A0TEST";

    /// Binds 127.0.0.1:0 and serves until the test's runtime ends.
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake slack");
        let port = listener.local_addr().expect("fake slack addr").port();
        let mut state = SlackState::default();
        state.users.push(User {
            id: "USLACKBOT".into(),
            name: "slackbot".into(),
            real_name: "Slackbot".into(),
            display_name: "Slackbot".into(),
            email: None,
            // Slack itself says so, though it is a bot: callers must skip it by id.
            is_bot: false,
        });
        state.users.push(User {
            id: Self::BOT_USER.into(),
            name: "polaris".into(),
            real_name: "Polaris".into(),
            display_name: String::new(),
            email: None,
            is_bot: true,
        });
        let fake = FakeSlack {
            inner: Arc::new(Inner {
                port,
                state: Mutex::new(state),
                changed: watch::Sender::new(0),
            }),
        };
        let app = Router::new()
            .route("/api/{method}", get(api).post(api))
            .route("/socket", get(socket))
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake slack serve");
        });
        fake
    }

    /// `http://127.0.0.1:PORT/api/`, to which the method name is appended.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/", self.inner.port)
    }

    // A panic elsewhere in a test must not hide what the fake recorded.
    fn state(&self) -> MutexGuard<'_, SlackState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Waits until `check` finds something, re-checking on every change; on timeout
    /// panics with `dump`.
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&SlackState) -> Option<T>,
        dump: impl FnOnce(&SlackState) -> String,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribing before the first check means no change can slip between the two.
        let mut rx = self.inner.changed.subscribe();
        loop {
            if let Some(v) = check(&self.state()) {
                return v;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(r) => r.expect("fake slack is alive while a handle is"),
                Err(_) => panic!("fake slack, after {timeout:?}: {}", dump(&self.state())),
            }
        }
    }

    // ---- what was received ----

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        let st = self.state();
        st.calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Until at least `n` calls of `method` were answered (whatever the answer).
    pub async fn wait_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let of = |st: &SlackState| -> Vec<Call> {
            st.calls
                .iter()
                .filter(|c| c.method == method)
                .cloned()
                .collect()
        };
        self.wait_until(
            timeout,
            |st| Some(of(st)).filter(|c| c.len() >= n),
            |st| format!("{n} calls of {method} expected, got {:#?}", of(st)),
        )
        .await
    }

    /// The bot's posts, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.state().posted.clone()
    }

    /// Until at least `n` bot posts exist.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Message> {
        self.wait_until(
            timeout,
            |st| (st.posted.len() >= n).then(|| st.posted.clone()),
            |st| {
                format!(
                    "{n} messages expected, got {}: {:#?}\ncalls: {:#?}",
                    st.posted.len(),
                    st.posted,
                    st.calls
                )
            },
        )
        .await
    }

    /// Every message of `channel` (bot's and humans', replies too), oldest first.
    pub fn history(&self, channel: &str) -> Vec<Message> {
        let st = self.state();
        st.history
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    pub fn ephemerals(&self) -> Vec<Value> {
        self.state().ephemerals.clone()
    }

    // ---- the workspace, as humans change it ----

    /// A channel that exists before the bridge starts; returns its id.
    pub fn add_channel(&self, name: &str, topic: &str, member: bool) -> String {
        let mut st = self.state();
        let id = st.new_channel(name, false);
        let ch = st.channel_mut(&id).expect("just created");
        ch.topic = topic.to_owned();
        ch.is_member = member;
        drop(st);
        self.bump();
        id
    }

    pub fn channel(&self, id: &str) -> Option<Channel> {
        self.state().channels.iter().find(|c| c.id == id).cloned()
    }

    pub fn channel_by_name(&self, name: &str) -> Option<Channel> {
        let st = self.state();
        st.channels.iter().find(|c| c.name == name).cloned()
    }

    pub fn channels(&self) -> Vec<Channel> {
        self.state().channels.clone()
    }

    /// A rename done by a human in Slack (no validation).
    pub fn rename_channel(&self, id: &str, new_name: &str) {
        let mut st = self.state();
        st.channel_mut(id).expect("no such channel").name = new_name.to_owned();
        drop(st);
        self.bump();
    }

    /// An archive done by a human in Slack; the name stays taken.
    pub fn archive_channel(&self, id: &str) {
        let mut st = self.state();
        st.channel_mut(id).expect("no such channel").archived = true;
        drop(st);
        self.bump();
    }

    pub fn add_user(
        &self,
        id: &str,
        name: &str,
        real_name: &str,
        display_name: &str,
        email: Option<&str>,
    ) {
        self.state().users.push(User {
            id: id.to_owned(),
            name: name.to_owned(),
            real_name: real_name.to_owned(),
            display_name: display_name.to_owned(),
            email: email.map(str::to_owned),
            is_bot: false,
        });
    }

    /// Another app's bot user: listed by `users.list`, which callers must skip.
    pub fn add_bot_user(&self, id: &str, name: &str) {
        self.state().users.push(User {
            id: id.to_owned(),
            name: name.to_owned(),
            real_name: name.to_owned(),
            display_name: String::new(),
            email: None,
            is_bot: true,
        });
    }

    /// A fresh ts, later than every ts handed out so far.
    pub fn next_ts(&self) -> String {
        self.state().next_ts()
    }

    /// Stores a message typed by `user` in `channel` (a reply if `thread_ts`) and returns
    /// its `message` event, for [`event_callback`].
    pub fn human_message(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Value {
        let mut st = self.state();
        let ts = st.next_ts();
        let event = message_event(channel, user, text, &ts, thread_ts);
        st.history.push(Message {
            channel: channel.to_owned(),
            ts,
            thread_ts: thread_ts.map(str::to_owned),
            text: text.to_owned(),
            blocks: None,
            username: None,
            icon_emoji: None,
            icon_url: None,
            metadata: None,
            user: user.to_owned(),
            raw: event.clone(),
        });
        drop(st);
        self.bump();
        event
    }

    // ---- trouble on demand ----

    /// The next `times` calls of `method` get 429 with `Retry-After: retry_after_secs`.
    pub fn rate_limit(&self, method: &str, times: usize, retry_after_secs: u64) {
        let mut st = self.state();
        let q = st.injected.entry(method.to_owned()).or_default();
        q.extend(std::iter::repeat_n(
            Injected::RateLimited(retry_after_secs),
            times,
        ));
    }

    /// The next `times` calls of `method` get 200 `{"ok":false,"error":error}`.
    pub fn fail(&self, method: &str, times: usize, error: &str) {
        let mut st = self.state();
        let q = st.injected.entry(method.to_owned()).or_default();
        q.extend(std::iter::repeat_n(Injected::Fail(error.to_owned()), times));
    }

    /// Slack's ~1 message/second/channel: a post sooner than `min_interval` after the last
    /// accepted one to the same channel gets 429 `Retry-After: 1`.
    pub fn enforce_channel_rate(&self, min_interval: Duration) {
        self.state().channel_rate = Some(min_interval);
    }

    /// Calls of `method` wait until the returned guard is released or dropped.
    pub fn pause(&self, method: &str) -> Pause {
        let (tx, rx) = watch::channel(false);
        let arrived = Arc::new(AtomicUsize::new(0));
        let entry = (rx, arrived.clone());
        self.state().pauses.insert(method.to_owned(), entry);
        Pause {
            gate: Arc::new(tx),
            arrived,
            fake: self.clone(),
        }
    }

    async fn pass_pause(&self, method: &str) {
        let gate = {
            let mut st = self.state();
            match st.pauses.get(method) {
                // Released, or every guard dropped: forget it.
                Some((rx, _)) if *rx.borrow() || rx.has_changed().is_err() => {
                    st.pauses.remove(method);
                    None
                }
                Some((rx, arrived)) => Some((rx.clone(), arrived.clone())),
                None => None,
            }
        };
        let Some((mut rx, arrived)) = gate else {
            return;
        };
        arrived.fetch_add(1, Ordering::SeqCst);
        self.bump();
        let _ = rx.wait_for(|open| *open).await; // Err: every guard dropped, open too
    }

    // ---- Socket Mode ----

    /// `apps.connections.open` calls answered ok.
    pub fn connections_opened(&self) -> usize {
        self.state().connections_opened
    }

    /// Sockets open now.
    /// WebSockets accepted so far, open or not.
    pub fn sockets_accepted(&self) -> usize {
        self.state().next_socket as usize
    }

    pub fn sockets_connected(&self) -> usize {
        self.state().sockets.len()
    }

    /// Until at least one socket is open.
    pub async fn wait_socket(&self, timeout: Duration) {
        self.wait_sockets(1, timeout).await;
    }

    /// Until at least `n` sockets are open.
    pub async fn wait_sockets(&self, n: usize, timeout: Duration) {
        self.wait_until(
            timeout,
            |st| (st.sockets.len() >= n).then_some(()),
            |st| {
                format!(
                    "{n} sockets expected, {} open ({} connections opened)",
                    st.sockets.len(),
                    st.connections_opened
                )
            },
        )
        .await;
    }

    /// Sends `frame` as a text frame on the newest open socket; panics if none is open.
    pub async fn send_frame(&self, frame: Value) {
        let tx = {
            let st = self.state();
            st.sockets.last().expect("no open socket").tx.clone()
        };
        send_on(&tx, frame.to_string()).await;
    }

    /// Wraps an Events API body in an `events_api` envelope, sends it on the newest
    /// socket and returns its envelope id.
    pub async fn send_envelope(&self, payload: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let frame = json!({
            "envelope_id": id,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": payload,
        });
        let tx = {
            let mut st = self.state();
            let tx = st.sockets.last().expect("no open socket").tx.clone();
            st.sent_envelopes.insert(id.clone(), Instant::now());
            tx
        };
        send_on(&tx, frame.to_string()).await;
        id
    }

    /// Until the client acked `envelope_id`; returns how long after sending it did.
    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) -> Duration {
        self.wait_until(
            timeout,
            |st| {
                let ack = st.acks.iter().find(|a| a.envelope_id == envelope_id)?;
                let sent = st.sent_envelopes.get(envelope_id).copied();
                Some(sent.map_or(Duration::ZERO, |s| ack.at.saturating_duration_since(s)))
            },
            |st| {
                let acked: Vec<_> = st.acks.iter().map(|a| &a.envelope_id).collect();
                format!("no ack for {envelope_id}; acks: {acked:?}")
            },
        )
        .await
    }

    /// Envelope ids the client acked, in order.
    pub fn acks(&self) -> Vec<String> {
        let st = self.state();
        st.acks.iter().map(|a| a.envelope_id.clone()).collect()
    }

    /// The ack frames themselves (an ack may carry a `payload`).
    pub fn ack_frames(&self) -> Vec<Value> {
        self.state().acks.iter().map(|a| a.frame.clone()).collect()
    }

    /// Asks every open socket's client to reconnect, as Slack does every few hours.
    pub async fn send_disconnect(&self) {
        let frame = json!({"type": "disconnect", "reason": "refresh_requested",
            "debug_info": {"host": "fake"}})
        .to_string();
        let txs: Vec<_> = self.state().sockets.iter().map(|s| s.tx.clone()).collect();
        for tx in txs {
            send_on(&tx, frame.clone()).await;
        }
    }

    /// Drops every open socket without a close frame, and waits until they are gone.
    pub async fn drop_sockets(&self) {
        let ids: HashSet<u64> = {
            let st = self.state();
            for s in &st.sockets {
                let _ = s.tx.send(SocketCmd::Drop);
            }
            st.sockets.iter().map(|s| s.id).collect()
        };
        self.wait_until(
            Duration::from_secs(10),
            |st| (!st.sockets.iter().any(|s| ids.contains(&s.id))).then_some(()),
            |st| format!("{} sockets still open", st.sockets.len()),
        )
        .await;
    }

    async fn serve_socket(self, mut socket: WebSocket) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (id, open) = {
            let mut st = self.state();
            st.next_socket += 1;
            let id = st.next_socket;
            st.sockets.push(SocketHandle { id, tx });
            (id, st.sockets.len())
        };
        self.bump();
        let hello = json!({
            "type": "hello",
            "num_connections": open,
            "debug_info": {"host": "fake", "build_number": 1,
                "approximate_connection_time": 18060},
            "connection_info": {"app_id": Self::APP_ID},
        });
        let mut alive = socket
            .send(WsMessage::Text(hello.to_string().into()))
            .await
            .is_ok();
        while alive {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(SocketCmd::Send(text, done)) => {
                        alive = socket.send(WsMessage::Text(text.into())).await.is_ok();
                        let _ = done.send(alive);
                    }
                    // Dropping the socket ends the TCP connection with no close frame.
                    Some(SocketCmd::Drop) | None => alive = false,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(WsMessage::Text(text))) => self.record_frame(text.as_str()),
                    // After a Close, reading on flushes tungstenite's reply; the stream
                    // then ends.
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => alive = false,
                },
            }
        }
        drop(socket);
        self.state().sockets.retain(|s| s.id != id);
        self.bump();
    }

    fn record_frame(&self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let Some(id) = frame["envelope_id"].as_str() else {
            return;
        };
        self.state().acks.push(Ack {
            envelope_id: id.to_owned(),
            at: Instant::now(),
            frame: frame.clone(),
        });
        self.bump();
    }
}

/// Hands `text` to a socket's task and waits until it is written.
async fn send_on(tx: &mpsc::UnboundedSender<SocketCmd>, text: String) {
    let (done, sent) = oneshot::channel();
    let ok = tx.send(SocketCmd::Send(text, done)).is_ok() && sent.await.unwrap_or(false);
    assert!(
        ok,
        "fake slack: the socket closed before the frame went out"
    );
}

// ---- HTTP ----

async fn api(
    AxState(fake): AxState<FakeSlack>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_params(&headers, query.as_deref(), &body);
    let token = bearer(&headers);
    fake.pass_pause(&method).await;
    let (status, retry_after, response) = {
        let mut st = fake.state();
        let answer = match &params {
            Ok(p) => st.answer(fake.inner.port, &method, token.as_deref(), p),
            Err(e) => err(e),
        };
        let (status, retry_after, response) = match answer {
            Answer::Ok(v) => {
                let mut body = Map::from_iter([("ok".to_owned(), Value::Bool(true))]);
                body.extend(v.as_object().cloned().unwrap_or_default());
                (200, None, Value::Object(body))
            }
            Answer::Err(e) => (200, None, json!({"ok": false, "error": e})),
            Answer::RateLimited(secs) => (
                429,
                Some(secs),
                json!({"ok": false, "error": "ratelimited"}),
            ),
        };
        st.calls.push(Call {
            method: method.clone(),
            params: params.unwrap_or(Value::Null),
            token,
            at: Instant::now(),
            status,
            response: response.clone(),
        });
        (status, retry_after, response)
    };
    fake.bump();
    let status = StatusCode::from_u16(status).expect("a valid status");
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        response.to_string(),
    )
        .into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    resp
}

async fn socket(
    AxState(fake): AxState<FakeSlack>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let ticket = query.get("ticket").and_then(|t| t.parse::<u64>().ok());
    // Slack's socket URLs are single-use.
    let valid = ticket.is_some_and(|t| fake.state().tickets.remove(&t));
    if !valid {
        return (StatusCode::BAD_REQUEST, "invalid or used ticket").into_response();
    }
    ws.on_upgrade(move |socket| fake.serve_socket(socket))
}

/// Query string and body (JSON or form) as one object; the body wins.
fn parse_params(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Value, String> {
    let mut params = Map::new();
    if let Some(q) = query {
        form_into(&mut params, q.as_bytes())?;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        form_into(&mut params, body)?;
    } else if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => params.extend(m),
            _ => return Err("invalid_json".into()),
        }
    }
    Ok(Value::Object(params))
}

/// Form pairs into `params`; values such as `blocks` arrive as JSON text and are kept
/// parsed when they parse.
fn form_into(params: &mut Map<String, Value>, raw: &[u8]) -> Result<(), String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(raw).map_err(|_| "invalid_form_data".to_owned())?;
    for (k, v) in pairs {
        let looks_json = matches!(v.trim_start().as_bytes().first(), Some(b'[' | b'{'));
        let parsed = looks_json.then(|| serde_json::from_str(&v).ok()).flatten();
        params.insert(k, parsed.unwrap_or(Value::String(v)));
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

// ---- parameters as Slack reads them (strings in forms, any JSON type in JSON bodies) ----

/// A non-empty string parameter (numbers too, as a ts may come as one).
fn text_param(p: &Value, key: &str) -> Option<String> {
    match &p[key] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn flag(p: &Value, key: &str) -> bool {
    match &p[key] {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true" || s == "1",
        Value::Number(n) => n.as_u64() == Some(1),
        _ => false,
    }
}

fn limit(p: &Value, default: usize) -> usize {
    let n = match &p["limit"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    // Slack reads 0 as "the default" and caps at 1000.
    n.filter(|&n| n > 0)
        .map_or(default, |n| usize::try_from(n.min(1000)).unwrap_or(1000))
}

/// A ts as a comparable pair: "1733350000.0001" is (1733350000, 100).
fn ts_key(ts: &str) -> Option<(u64, u64)> {
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = format!("{frac:0<6}").parse().ok()?;
    Some((secs.parse().ok()?, frac))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_name(name: &str) -> Result<(), Answer> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    if name.is_empty() {
        Err(err("invalid_name_required"))
    } else if name.chars().count() > 80 {
        Err(err("invalid_name_maxlength"))
    } else if !name.bytes().all(allowed) {
        Err(err("invalid_name_specials"))
    } else {
        Ok(())
    }
}

/// Slack's block limits that a bridge can trip over with long or empty content.
fn check_blocks(blocks: &Value) -> Result<Option<Value>, Answer> {
    let list = match blocks {
        Value::Null => return Ok(None),
        Value::Array(list) if list.is_empty() => return Ok(None),
        Value::Array(list) => list,
        _ => return Err(err("invalid_blocks")),
    };
    let text_len = |b: &Value| b["text"]["text"].as_str().map(|t| t.chars().count());
    let bad = |b: &Value| match b["type"].as_str() {
        None => true,
        Some("section") => text_len(b).is_some_and(|n| n == 0 || n > 3000),
        Some("header") => text_len(b).is_none_or(|n| n == 0 || n > 150),
        Some(_) => false,
    };
    if list.len() > 50 || list.iter().any(bad) {
        return Err(err("invalid_blocks"));
    }
    Ok(Some(blocks.clone()))
}

fn check_metadata(metadata: &Value) -> Result<Option<Value>, Answer> {
    match metadata {
        Value::Null => Ok(None),
        m if m["event_type"].is_string() && m["event_payload"].is_object() => Ok(Some(m.clone())),
        _ => Err(err("invalid_metadata_format")),
    }
}

fn channel_json(c: &Channel) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "name_normalized": c.name,
        "is_channel": !c.is_private,
        "is_group": false,
        "is_im": false,
        "is_mpim": false,
        "is_private": c.is_private,
        "is_archived": c.archived,
        "is_general": false,
        "is_shared": false,
        "is_member": c.is_member,
        "created": c.created,
        "topic": {"value": c.topic, "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
    })
}

fn user_json(u: &User) -> Value {
    let mut profile = json!({
        "real_name": u.real_name,
        "real_name_normalized": u.real_name,
        "display_name": u.display_name,
        "display_name_normalized": u.display_name,
    });
    if let Some(email) = &u.email {
        profile["email"] = json!(email);
    }
    if u.is_bot {
        profile["bot_id"] = json!(bot_id_of(&u.id));
    }
    json!({
        "id": u.id,
        "team_id": FakeSlack::TEAM,
        "name": u.name,
        "deleted": false,
        "real_name": u.real_name,
        "is_bot": u.is_bot,
        "is_app_user": false,
        "profile": profile,
    })
}

fn bot_id_of(user: &str) -> String {
    if user == FakeSlack::BOT_USER {
        FakeSlack::BOT_ID.to_owned()
    } else {
        format!("B{}", user.trim_start_matches('U'))
    }
}

type Reply = Result<Value, Answer>;

impl SlackState {
    /// Strictly increasing across the server: the clock's seconds, then a counter.
    fn next_ts(&mut self) -> String {
        let (secs, n) = self.last_ts;
        let now = now_secs();
        self.last_ts = if now > secs {
            (now, 1)
        } else if n < 999_999 {
            (secs, n + 1)
        } else {
            (secs + 1, 1)
        };
        format!("{}.{:06}", self.last_ts.0, self.last_ts.1)
    }

    fn new_channel(&mut self, name: &str, is_private: bool) -> String {
        let id = loop {
            let hex = uuid::Uuid::new_v4().simple().to_string();
            let id = format!("C{}", hex[..8].to_uppercase());
            if !self.channels.iter().any(|c| c.id == id) {
                break id;
            }
        };
        self.channels.push(Channel {
            id: id.clone(),
            name: name.to_owned(),
            topic: String::new(),
            is_member: true,
            archived: false,
            is_private,
            created: now_secs(),
        });
        id
    }

    fn channel_mut(&mut self, id: &str) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    /// The `channel` parameter's index; a private channel the bot is not in is invisible.
    fn visible(&self, p: &Value) -> Result<usize, Answer> {
        let id = text_param(p, "channel").unwrap_or_default();
        self.channels
            .iter()
            .position(|c| c.id == id && (c.is_member || !c.is_private))
            .ok_or_else(|| err("channel_not_found"))
    }

    /// Like [`SlackState::visible`], and the bot must be in it to read it.
    fn readable(&self, p: &Value) -> Result<usize, Answer> {
        let i = self.visible(p)?;
        if !self.channels[i].is_member {
            return Err(err("not_in_channel"));
        }
        Ok(i)
    }

    fn is_top_level(&self, channel: &str, ts: &str) -> bool {
        self.history.iter().any(|m| {
            m.channel == channel && m.ts == ts && m.thread_ts.as_deref().is_none_or(|t| t == ts)
        })
    }

    fn answer(&mut self, port: u16, method: &str, token: Option<&str>, p: &Value) -> Answer {
        if let Some(injected) = self.injected.get_mut(method).and_then(VecDeque::pop_front) {
            return match injected {
                Injected::RateLimited(secs) => Answer::RateLimited(secs),
                Injected::Fail(e) => Answer::Err(e),
            };
        }
        if !METHODS.contains(&method) {
            return err("unknown_method");
        }
        let wanted = if method == "apps.connections.open" {
            FakeSlack::APP_TOKEN
        } else {
            FakeSlack::BOT_TOKEN
        };
        match token {
            None => return err("not_authed"),
            Some(t) if t == wanted => {}
            Some(FakeSlack::APP_TOKEN | FakeSlack::BOT_TOKEN) => {
                return err("not_allowed_token_type");
            }
            Some(_) => return err("invalid_auth"),
        }
        match self.dispatch(port, method, p) {
            Ok(v) => Answer::Ok(v),
            Err(e) => e,
        }
    }

    fn dispatch(&mut self, port: u16, method: &str, p: &Value) -> Reply {
        match method {
            "auth.test" => Ok(json!({
                "url": "https://fake.slack.com/",
                "team": "Fake",
                "user": "polaris",
                "team_id": FakeSlack::TEAM,
                "user_id": FakeSlack::BOT_USER,
                "bot_id": FakeSlack::BOT_ID,
            })),
            "apps.connections.open" => {
                self.next_ticket += 1;
                let ticket = self.next_ticket;
                self.tickets.insert(ticket);
                self.connections_opened += 1;
                let url = format!("ws://127.0.0.1:{port}/socket?ticket={ticket}");
                Ok(json!({ "url": url }))
            }
            "chat.postMessage" => self.post_message(p),
            "chat.postEphemeral" => {
                self.ephemerals.push(p.clone());
                Ok(json!({"message_ts": self.next_ts()}))
            }
            "conversations.create" => self.create(p),
            "conversations.join" => self.join(p),
            "conversations.info" => {
                let i = self.visible(p)?;
                Ok(json!({"channel": channel_json(&self.channels[i])}))
            }
            "conversations.list" => self.list(p),
            "conversations.rename" => self.rename(p),
            "conversations.setTopic" => self.set_topic(p),
            "conversations.history" => self.conversation_history(p),
            "conversations.replies" => self.replies(p),
            "users.info" => {
                let id = text_param(p, "user").unwrap_or_default();
                match self.users.iter().find(|u| u.id == id) {
                    Some(u) => Ok(json!({"user": user_json(u)})),
                    None => Err(err("user_not_found")),
                }
            }
            "users.list" => {
                let members: Vec<Value> = self.users.iter().map(user_json).collect();
                let (page, next) = page_offset(&members, p, 100)?;
                Ok(json!({"members": page, "cache_ts": now_secs(),
                    "response_metadata": {"next_cursor": next}}))
            }
            _ => Err(err("unknown_method")),
        }
    }

    fn create(&mut self, p: &Value) -> Reply {
        let name = text_param(p, "name").unwrap_or_default();
        check_name(&name)?;
        // Archived channels keep their names.
        if self.channels.iter().any(|c| c.name == name) {
            return Err(err("name_taken"));
        }
        let id = self.new_channel(&name, flag(p, "is_private"));
        let ch = self.channels.iter().find(|c| c.id == id).expect("created");
        Ok(json!({"channel": channel_json(ch)}))
    }

    fn join(&mut self, p: &Value) -> Reply {
        let i = self.visible(p)?;
        let ch = &mut self.channels[i];
        if ch.archived {
            return Err(err("is_archived"));
        }
        let already = std::mem::replace(&mut ch.is_member, true);
        let mut reply = json!({"channel": channel_json(ch)});
        if already {
            reply["warning"] = json!("already_in_channel");
            reply["response_metadata"] = json!({"warnings": ["already_in_channel"]});
        }
        Ok(reply)
    }

    fn list(&self, p: &Value) -> Reply {
        // Slack's default is public channels only.
        let types = text_param(p, "types").unwrap_or_else(|| "public_channel".into());
        let wants = |t: &str| types.split(',').any(|x| x.trim() == t);
        let (public, private) = (wants("public_channel"), wants("private_channel"));
        let exclude_archived = flag(p, "exclude_archived");
        let channels: Vec<Value> = self
            .channels
            .iter()
            .filter(|c| {
                let kind = if c.is_private {
                    private && c.is_member
                } else {
                    public
                };
                kind && !(exclude_archived && c.archived)
            })
            .map(channel_json)
            .collect();
        let (page, next) = page_offset(&channels, p, 100)?;
        Ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
    }

    fn rename(&mut self, p: &Value) -> Reply {
        let i = self.visible(p)?;
        let name = text_param(p, "name").unwrap_or_default();
        check_name(&name)?;
        let id = self.channels[i].id.clone();
        if self.channels.iter().any(|c| c.name == name && c.id != id) {
            return Err(err("name_taken"));
        }
        self.channels[i].name = name;
        Ok(json!({"channel": channel_json(&self.channels[i])}))
    }

    fn set_topic(&mut self, p: &Value) -> Reply {
        let i = self.visible(p)?;
        // An empty topic clears it.
        let topic = p["topic"].as_str().unwrap_or_default().to_owned();
        let ch = &mut self.channels[i];
        if ch.archived {
            return Err(err("is_archived"));
        }
        if !ch.is_member {
            return Err(err("not_in_channel"));
        }
        if topic.chars().count() > 250 {
            return Err(err("too_long"));
        }
        ch.topic = topic;
        Ok(json!({"channel": channel_json(ch)}))
    }

    fn post_message(&mut self, p: &Value) -> Reply {
        let target = text_param(p, "channel").unwrap_or_default();
        // Slack also takes a channel's name here.
        let name = target.strip_prefix('#').unwrap_or(&target);
        let i = self
            .channels
            .iter()
            .position(|c| c.id == target)
            .or_else(|| self.channels.iter().position(|c| c.name == name))
            .filter(|&i| self.channels[i].is_member || !self.channels[i].is_private)
            .ok_or_else(|| err("channel_not_found"))?;
        let ch = self.channels[i].clone();
        if let Some(min) = self.channel_rate
            && self
                .last_post
                .get(&ch.id)
                .is_some_and(|t| t.elapsed() < min)
        {
            return Err(Answer::RateLimited(1));
        }
        if ch.archived {
            return Err(err("is_archived"));
        }
        if !ch.is_member {
            return Err(err("not_in_channel"));
        }
        let text = p["text"].as_str().unwrap_or_default().to_owned();
        let no_blocks = p["blocks"].is_null() || p["blocks"].as_array().is_some_and(Vec::is_empty);
        if text.is_empty() && no_blocks {
            return Err(err("no_text"));
        }
        let blocks = check_blocks(&p["blocks"])?;
        if text.chars().count() > 40_000 {
            return Err(err("msg_too_long"));
        }
        let metadata = check_metadata(&p["metadata"])?;
        let thread_ts = text_param(p, "thread_ts");
        if let Some(t) = &thread_ts
            && !self.is_top_level(&ch.id, t)
        {
            return Err(err("thread_not_found"));
        }
        let ts = self.next_ts();
        self.last_post.insert(ch.id.clone(), Instant::now());
        let message = Message {
            channel: ch.id.clone(),
            ts: ts.clone(),
            thread_ts,
            text,
            blocks,
            username: text_param(p, "username"),
            icon_emoji: text_param(p, "icon_emoji"),
            icon_url: text_param(p, "icon_url"),
            metadata,
            user: FakeSlack::BOT_USER.to_owned(),
            raw: p.clone(),
        };
        self.posted.push(message.clone());
        self.history.push(message.clone());
        let mut echo = self.message_json(&message, true);
        echo["team"] = json!(FakeSlack::TEAM);
        Ok(json!({"channel": ch.id, "ts": ts, "message": echo}))
    }

    /// A message as `conversations.history`/`replies` show it.
    fn message_json(&self, m: &Message, with_metadata: bool) -> Value {
        let mut v = json!({"type": "message", "ts": m.ts, "text": m.text, "user": m.user});
        if m.user == FakeSlack::BOT_USER {
            v["bot_id"] = json!(FakeSlack::BOT_ID);
            v["app_id"] = json!(FakeSlack::APP_ID);
        }
        match &m.thread_ts {
            Some(parent) if *parent != m.ts => {
                v["thread_ts"] = json!(parent);
                let parent_user = self
                    .history
                    .iter()
                    .find(|x| x.channel == m.channel && x.ts == *parent)
                    .map(|x| x.user.clone());
                v["parent_user_id"] = json!(parent_user);
            }
            _ => {
                let replies: Vec<&Message> = self
                    .history
                    .iter()
                    .filter(|r| {
                        r.channel == m.channel
                            && r.ts != m.ts
                            && r.thread_ts.as_deref() == Some(&m.ts)
                    })
                    .collect();
                if let Some(last) = replies.last() {
                    let mut users: Vec<&str> = Vec::new();
                    for r in &replies {
                        if !users.contains(&r.user.as_str()) {
                            users.push(&r.user);
                        }
                    }
                    v["thread_ts"] = json!(m.ts);
                    v["reply_count"] = json!(replies.len());
                    v["reply_users_count"] = json!(users.len());
                    v["reply_users"] = json!(users);
                    v["latest_reply"] = json!(last.ts);
                }
            }
        }
        if let Some(b) = &m.blocks {
            v["blocks"] = b.clone();
        }
        if let Some(u) = &m.username {
            v["username"] = json!(u);
        }
        if let Some(e) = &m.icon_emoji {
            v["icons"] = json!({"emoji": e});
        } else if let Some(u) = &m.icon_url {
            v["icons"] = json!({"image_48": u});
        }
        if with_metadata && let Some(md) = &m.metadata {
            v["metadata"] = md.clone();
        }
        v
    }

    fn conversation_history(&self, p: &Value) -> Reply {
        let i = self.readable(p)?;
        let id = &self.channels[i].id;
        let bound = |key: &str, e: &str| match text_param(p, key) {
            None => Ok(None),
            Some(t) => ts_key(&t).map(Some).ok_or_else(|| err(e)),
        };
        let oldest = bound("oldest", "invalid_ts_oldest")?;
        let latest = bound("latest", "invalid_ts_latest")?;
        let inclusive = flag(p, "inclusive");
        let within = |m: &&Message| {
            let k = ts_key(&m.ts);
            let after = oldest.is_none_or(|o| if inclusive { k >= Some(o) } else { k > Some(o) });
            let before = latest.is_none_or(|l| if inclusive { k <= Some(l) } else { k < Some(l) });
            after && before
        };
        // Top-level messages only, newest first: replies live in conversations.replies.
        let items: Vec<&Message> = self
            .history
            .iter()
            .rev()
            .filter(|m| m.channel == *id && m.thread_ts.as_deref().is_none_or(|t| t == m.ts))
            .filter(within)
            .collect();
        let (page, next) = page_ts(&items, p, 100, true)?;
        let with_metadata = flag(p, "include_all_metadata");
        let messages: Vec<Value> = page
            .iter()
            .map(|m| self.message_json(m, with_metadata))
            .collect();
        Ok(
            json!({"messages": messages, "has_more": !next.is_empty(), "pin_count": 0,
            "response_metadata": {"next_cursor": next}}),
        )
    }

    fn replies(&self, p: &Value) -> Reply {
        let i = self.readable(p)?;
        let id = &self.channels[i].id;
        let ts = text_param(p, "ts").unwrap_or_default();
        if !self.is_top_level(id, &ts) {
            return Err(err("thread_not_found"));
        }
        // The parent, then its replies, oldest first.
        let items: Vec<&Message> = self
            .history
            .iter()
            .filter(|m| m.channel == *id && (m.ts == ts || m.thread_ts.as_deref() == Some(&ts)))
            .collect();
        let (page, next) = page_ts(&items, p, 1000, false)?;
        let with_metadata = flag(p, "include_all_metadata");
        let messages: Vec<Value> = page
            .iter()
            .map(|m| self.message_json(m, with_metadata))
            .collect();
        Ok(json!({"messages": messages, "has_more": !next.is_empty(),
            "response_metadata": {"next_cursor": next}}))
    }
}

/// A page of a list that only grows at its end; the cursor is the next offset.
fn page_offset<T: Clone>(
    items: &[T],
    p: &Value,
    default: usize,
) -> Result<(Vec<T>, String), Answer> {
    let start = match text_param(p, "cursor") {
        None => 0,
        Some(c) => c
            .strip_prefix("offset:")
            .and_then(|n| n.parse().ok())
            .filter(|&n| n <= items.len())
            .ok_or_else(|| err("invalid_cursor"))?,
    };
    let end = (start + limit(p, default)).min(items.len());
    let next = if end < items.len() {
        format!("offset:{end}")
    } else {
        String::new()
    };
    Ok((items[start..end].to_vec(), next))
}

/// A page of messages in `items`' order; the cursor names the first ts of the next page,
/// so messages posted between pages shift nothing.
fn page_ts<'a>(
    items: &[&'a Message],
    p: &Value,
    default: usize,
    newest_first: bool,
) -> Result<(Vec<&'a Message>, String), Answer> {
    let start = match text_param(p, "cursor") {
        None => 0,
        Some(c) => {
            let at = c
                .strip_prefix("ts:")
                .and_then(ts_key)
                .ok_or_else(|| err("invalid_cursor"))?;
            items
                .iter()
                .position(|m| {
                    let k = ts_key(&m.ts);
                    if newest_first {
                        k <= Some(at)
                    } else {
                        k >= Some(at)
                    }
                })
                .unwrap_or(items.len())
        }
    };
    let end = (start + limit(p, default)).min(items.len());
    let next = items
        .get(end)
        .map_or_else(String::new, |m| format!("ts:{}", m.ts));
    Ok((items[start..end].to_vec(), next))
}

// ---- Events API bodies ----

/// Slack's request signature: `v0=` + hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}")).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// An Events API `event_callback` body around `event`.
pub fn event_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "x",
        "team_id": FakeSlack::TEAM,
        "api_app_id": FakeSlack::APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now_secs(),
        "authorizations": [{"team_id": FakeSlack::TEAM, "user_id": FakeSlack::BOT_USER,
            "is_bot": true}],
    })
}

/// A `message` event, as a human's message in a public channel arrives.
pub fn message_event(
    channel: &str,
    user: &str,
    text: &str,
    ts: &str,
    thread_ts: Option<&str>,
) -> Value {
    let mut event = json!({
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "channel_type": "channel",
        "event_ts": ts,
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    event
}
