//! The uplink: the write-ahead log plus the task that drains it to the floor.
//!
//! [`Uplink::submit`] returns once the event is fsynced; the drain task then delivers the
//! log in order, in batches of one session's consecutive events, with the same event ids
//! on every attempt, so the floor stores each event once however often it is resent. A
//! floor that is down, slow or restarting only delays delivery (exponential backoff with
//! jitter); a 4xx for an event is a permanent rejection and goes to the dead letters.
//!
//! Agents embed this directly; the daemon uses it for everything it accepts.

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use polaris_protocol::{NewEventBody, to_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::home::{Home, private_file_options};
use crate::wal::{Append, SessionOpen, Wal, WalRecord};

/// Most events in one delivery (the floor takes up to 1000).
const BATCH: usize = 500;
/// First retry delay; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An HTTP client for one floor: base URL and optional bearer token.
#[derive(Clone)]
pub struct FloorClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for FloorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("FloorClient")
            .field("base", &self.base)
            .finish()
    }
}

/// Picks ring as rustls's cryptography for the whole process (reqwest and the WebSocket
/// client share it); the first call wins, later ones are no-ops.
pub fn install_tls_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub use crate::wire::segment;

impl FloorClient {
    /// A client for the floor at `base_url` (`http://` or `https://`), sending `token` as
    /// a bearer token when given. HTTPS trusts the system's certificate store (and
    /// `SSL_CERT_FILE`), as curl on the same machine would.
    pub fn new(base_url: &str, token: Option<String>) -> anyhow::Result<FloorClient> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("floor URL {base:?}: must start with http:// or https://");
        }
        install_tls_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(FloorClient {
            http,
            base,
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The bearer token, if any (for the WebSocket handshake).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` (already encoded) with the token attached.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// The `ws://` (`wss://` for an https floor) URL of `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.base.replacen("http", "ws", 1))
    }

    /// `POST /projects` then `POST /projects/:p/sessions`; "already exists" is success.
    /// Returns the session-create status (201 created, 409 existed).
    pub async fn open_session(
        &self,
        project: &str,
        session: &str,
        open: &SessionOpen,
    ) -> Result<u16, FloorError> {
        let r = self
            .request(reqwest::Method::POST, "/projects")
            .json(&json!({"name": project}))
            .send()
            .await
            .map_err(FloorError::Unreachable)?;
        let st = r.status().as_u16();
        if st != 409 && !(200..300).contains(&st) {
            return Err(FloorError::Status(st, r.text().await.unwrap_or_default()));
        }
        let mut body = json!({"name": session});
        if let Some(d) = &open.driver {
            body["driver"] = json!(d);
        }
        if let Some(a) = &open.agent {
            body["agent"] = json!(a);
        }
        let r = self
            .request(
                reqwest::Method::POST,
                &format!("/projects/{}/sessions", segment(project)),
            )
            .json(&body)
            .send()
            .await
            .map_err(FloorError::Unreachable)?;
        let st = r.status().as_u16();
        if st == 409 || (200..300).contains(&st) {
            Ok(st)
        } else {
            Err(FloorError::Status(st, r.text().await.unwrap_or_default()))
        }
    }
}

/// A failed floor call.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// No answer (connection refused, timeout).
    #[error("floor unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// An answer that is not a success.
    #[error("floor answered {0}: {1}")]
    Status(u16, String),
}

/// Why [`Uplink::submit`] refused an event.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The floor would refuse it too; names the field.
    #[error("{0}")]
    Invalid(String),
    /// The log could not be written; nothing was accepted.
    #[error("write-ahead log: {0}")]
    Io(#[from] io::Error),
}

/// What the uplink has done so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// Accepted, not yet acknowledged by the floor.
    pub pending: usize,
    /// Delivered since start.
    pub delivered: u64,
    /// Events in the dead-letter file.
    pub dead_letters: u64,
    /// The last delivery error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Whether the last attempt reached the floor.
    pub floor_reachable: bool,
    /// The floor's base URL.
    pub floor_url: String,
}

/// One event the floor rejected for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was given up.
    pub t: DateTime<Utc>,
    /// The event id.
    pub id: Option<Uuid>,
    /// Where it was going.
    pub project: String,
    /// Where it was going.
    pub session: String,
    /// The floor's status.
    pub status: u16,
    /// The floor's error text.
    pub error: String,
    /// The event as it was sent.
    pub event: NewEventBody,
}

/// Reads a dead-letter file (missing = none); unreadable lines are skipped.
pub fn read_dead_letters(path: &Path) -> io::Result<Vec<DeadLetter>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in io::BufReader::new(f).lines() {
        if let Ok(d) = serde_json::from_str(&line?) {
            out.push(d);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Stats {
    delivered: u64,
    dead_letters: u64,
    last_error: Option<String>,
    floor_reachable: bool,
}

struct Inner {
    wal: Wal,
    floor: FloorClient,
    dead_path: PathBuf,
    stats: Mutex<Stats>,
    stop: CancellationToken,
    drain: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The highest WAL record the floor has handled (delivered or refused for good).
    handled: tokio::sync::watch::Sender<u64>,
}

/// A handle to the write-ahead log and its drain task.
#[derive(Clone)]
pub struct Uplink {
    inner: Arc<Inner>,
}

impl Uplink {
    /// Opens (or recovers) the WAL in `dir` and starts draining to `floor`; dead letters
    /// go to `dir/dead-letter.jsonl`.
    pub async fn open(dir: &Path, floor: FloorClient) -> anyhow::Result<Uplink> {
        Self::open_with(dir, &dir.join("dead-letter.jsonl"), floor).await
    }

    /// Opens the uplink of a sidecar home (`wal/` and `dead-letter.jsonl`).
    pub async fn open_home(home: &Home, floor: FloorClient) -> anyhow::Result<Uplink> {
        home.ensure_dir(None)?;
        Self::open_with(&home.wal_dir(), &home.dead_letters(), floor).await
    }

    /// Opens the WAL in `wal_dir`, with dead letters appended to `dead_letters`.
    pub async fn open_with(
        wal_dir: &Path,
        dead_letters: &Path,
        floor: FloorClient,
    ) -> anyhow::Result<Uplink> {
        let dir = wal_dir.to_owned();
        let wal = tokio::task::spawn_blocking(move || Wal::open(&dir)).await??;
        let (handled, _) = tokio::sync::watch::channel(wal.shared.acked());
        let dead = read_dead_letters(dead_letters)?.len() as u64;
        let inner = Arc::new(Inner {
            wal,
            floor,
            dead_path: dead_letters.to_owned(),
            stats: Mutex::new(Stats {
                dead_letters: dead,
                floor_reachable: true,
                ..Stats::default()
            }),
            stop: CancellationToken::new(),
            drain: tokio::sync::Mutex::new(None),
            handled,
        });
        let task = tokio::spawn(drain(inner.clone()));
        *inner.drain.lock().await = Some(task);
        Ok(Uplink { inner })
    }

    /// Durably appends one event (fsynced before it returns) and returns its id.
    pub async fn submit(
        &self,
        project: &str,
        session: &str,
        body: NewEventBody,
    ) -> Result<Uuid, SubmitError> {
        self.submit_opening(project, session, body, None).await
    }

    /// Like [`Uplink::submit`], and also returns a future that completes once the floor
    /// has handled the event: committed it (or refused it for good, which the dead-letter
    /// file records). An agent moves its read position past a question only then, so an
    /// answer still waiting here when another instance takes over is given again there,
    /// under the same id.
    pub async fn submit_tracked(
        &self,
        project: &str,
        session: &str,
        body: NewEventBody,
    ) -> Result<(Uuid, impl Future<Output = ()> + Send + 'static), SubmitError> {
        let (id, at) = self.append(project, session, body, None).await?;
        let mut handled = self.inner.handled.subscribe();
        Ok((id, async move {
            // Ends early only if the uplink is dropped: then nothing more is handled here.
            let _ = handled.wait_for(|h| *h >= at).await;
        }))
    }

    /// Like [`Uplink::submit`], and if the floor has no such session when the event is
    /// delivered, creates the project and session with `open` first.
    #[tracing::instrument(name = "uplink.submit", skip_all, fields(project, session))]
    pub async fn submit_opening(
        &self,
        project: &str,
        session: &str,
        body: NewEventBody,
        open: Option<SessionOpen>,
    ) -> Result<Uuid, SubmitError> {
        Ok(self.append(project, session, body, open).await?.0)
    }

    /// Checks and appends one event: its id and its position in the log. When this
    /// process exports traces, the acknowledgement is a `sidecar.ack` span (a child of the
    /// context the event came with, if any) whose context the event is logged with, so
    /// the floor's spans join its trace.
    async fn append(
        &self,
        project: &str,
        session: &str,
        mut body: NewEventBody,
        open: Option<SessionOpen>,
    ) -> Result<(Uuid, u64), SubmitError> {
        let id = *body.id.get_or_insert_with(Uuid::new_v4);
        let span = if polaris_telemetry::enabled() {
            tracing::info_span!("sidecar.ack", project, session, event = %id)
        } else {
            tracing::Span::none()
        };
        body.traceparent = polaris_telemetry::adopt(&span, body.traceparent.take());
        let at = self
            .log(project, session, body, open)
            .instrument(span)
            .await?;
        Ok((id, at))
    }

    /// [`Uplink::append`] once the event has its id: its position in the log.
    async fn log(
        &self,
        project: &str,
        session: &str,
        mut body: NewEventBody,
        open: Option<SessionOpen>,
    ) -> Result<u64, SubmitError> {
        body.timestamp = Some(to_ms(body.timestamp.unwrap_or_else(Utc::now)));
        // Refuse now what the floor would refuse later: nothing invalid enters the log.
        polaris_protocol::validate::name("project", project)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        polaris_protocol::validate::name("session", session)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        polaris_protocol::validate::event(body.clone())
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let at = self
            .inner
            .wal
            .append(vec![Append {
                project: project.to_owned(),
                session: session.to_owned(),
                open,
                body,
            }])
            .await?;
        Ok(at.first().copied().unwrap_or_default())
    }

    /// Records still to deliver whose project was renamed go to the new name.
    pub fn rename_project(&self, old: &str, new: &str) {
        self.inner.wal.shared.retarget(old, new);
    }

    /// The floor this uplink delivers to.
    pub fn floor(&self) -> &FloorClient {
        &self.inner.floor
    }

    /// Pending count, delivered count, dead letters, last error, floor reachable.
    pub fn status(&self) -> UplinkStatus {
        let s = self.inner.stats.lock().unwrap_or_else(|p| p.into_inner());
        UplinkStatus {
            pending: self.inner.wal.shared.pending_len(),
            delivered: s.delivered,
            dead_letters: s.dead_letters,
            last_error: s.last_error.clone(),
            floor_reachable: s.floor_reachable,
            floor_url: self.inner.floor.base.clone(),
        }
    }

    /// The dead-letter file.
    pub fn dead_letter_path(&self) -> &Path {
        &self.inner.dead_path
    }

    /// Stops draining after the current batch; what is left stays in the log.
    pub async fn shutdown(self) {
        self.inner.stop.cancel();
        if let Some(t) = self.inner.drain.lock().await.take()
            && let Err(e) = t.await
        {
            tracing::warn!(error = %e, "the drain task ended badly");
        }
    }
}

impl Inner {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self, reachable: bool, err: String) {
        let mut s = self.stats();
        s.floor_reachable = reachable;
        s.last_error = Some(err);
    }

    fn dead_letter(&self, rec: &WalRecord, status: u16, error: &str) -> io::Result<()> {
        tracing::warn!(id = ?rec.body.id, project = %rec.project, session = %rec.session, status, error, "the floor rejected an event for good; dead-lettered");
        let d = DeadLetter {
            t: Utc::now(),
            id: rec.body.id,
            project: rec.project.clone(),
            session: rec.session.clone(),
            status,
            error: error.to_owned(),
            event: rec.body.clone(),
        };
        let mut line = serde_json::to_vec(&d).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = private_file_options()
            .append(true)
            .create(true)
            .open(&self.dead_path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        self.stats().dead_letters += 1;
        Ok(())
    }
}

/// How one delivery attempt ended.
enum Outcome {
    /// Handled up to (and including) this many records of the batch; retry the rest
    /// after a pause if fewer than all.
    Handled(usize),
    /// Nothing handled; wait and retry.
    Retry,
    /// Nothing handled; retry at once one record at a time.
    Split,
    /// Nothing handled; retry the same batch at once (the session was just created).
    Again,
}

async fn drain(inner: Arc<Inner>) {
    let mut backoff = BACKOFF_MIN;
    let mut single = false;
    let mut opened_for: Option<(String, String)> = None;
    loop {
        if inner.wal.shared.needs_refill() {
            let shared = inner.wal.shared.clone();
            match tokio::task::spawn_blocking(move || shared.refill()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read waiting events back from the WAL");
                    let reachable = inner.stats().floor_reachable;
                    inner.failed(reachable, format!("reading the WAL: {e}"));
                }
                Err(e) => tracing::error!(error = %e, "the WAL read task failed"),
            }
        }
        let batch = inner.wal.shared.next_batch(if single { 1 } else { BATCH });
        if batch.is_empty() {
            tokio::select! {
                _ = inner.wal.shared.appended.notified() => continue,
                _ = inner.stop.cancelled() => return,
            }
        }
        let outcome = deliver(&inner, &batch, &mut opened_for).await;
        let handled = match outcome {
            Outcome::Handled(n) => n,
            Outcome::Split => {
                single = true;
                continue;
            }
            Outcome::Again => continue,
            Outcome::Retry => 0,
        };
        if handled > 0 {
            let last = batch[handled - 1].seq;
            let shared = inner.wal.shared.clone();
            match tokio::task::spawn_blocking(move || shared.ack(last)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot record the acknowledged mark"),
                Err(e) => tracing::error!(error = %e, "the ack task failed"),
            }
            // Handled on the floor whether or not the mark reached the disk.
            inner.handled.send_replace(last);
            single = false;
        }
        if handled == batch.len() {
            backoff = BACKOFF_MIN;
            // A session missing again later (a wiped floor) may be created again.
            opened_for = None;
            if inner.stop.is_cancelled() {
                return;
            }
            continue;
        }
        // Full jitter between half and all of the current delay.
        let half = backoff / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(half + jitter) => {}
            _ = inner.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[tracing::instrument(name = "uplink.deliver", skip_all, fields(project = %batch[0].project, session = %batch[0].session, n = batch.len()))]
async fn deliver(
    inner: &Inner,
    batch: &[Arc<WalRecord>],
    opened_for: &mut Option<(String, String)>,
) -> Outcome {
    let first = &batch[0];
    let path = format!(
        "/projects/{}/sessions/{}/events/batch",
        segment(&first.project),
        segment(&first.session)
    );
    #[derive(Serialize)]
    struct Batch<'a> {
        events: Vec<&'a NewEventBody>,
    }
    // Each attempt at forwarding an event is a span of its trace (retries show there), and
    // the floor continues from it. Without export the records go as they are.
    let (forwarding, traced): (Vec<tracing::Span>, Vec<NewEventBody>) =
        if polaris_telemetry::enabled() {
            batch
            .iter()
            .map(|r| {
                let span = tracing::info_span!(parent: None, "sidecar.forward", project = %r.project, session = %r.session, event = ?r.body.id);
                let mut body = r.body.clone();
                body.traceparent = polaris_telemetry::adopt(&span, body.traceparent.take());
                (span, body)
            })
            .unzip()
        } else {
            (Vec::new(), Vec::new())
        };
    // Serialized straight from the records (no intermediate JSON tree).
    let events = Batch {
        events: if traced.is_empty() {
            batch.iter().map(|r| &r.body).collect()
        } else {
            traced.iter().collect()
        },
    };
    let resp = inner
        .floor
        .request(reqwest::Method::POST, &path)
        .json(&events)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            inner.failed(false, format!("floor unreachable: {e}"));
            return Outcome::Retry;
        }
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    drop(forwarding);
    if status == 200 {
        return handle_results(inner, batch, &text);
    }
    let error = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    match status {
        404 => {
            // The project or session does not exist (yet): a `/connect` made while the
            // floor was down. Create it once, then retry; still missing is permanent.
            let key = (first.project.clone(), first.session.clone());
            if let Some(open) = &first.open
                && opened_for.as_ref() != Some(&key)
            {
                match inner
                    .floor
                    .open_session(&first.project, &first.session, open)
                    .await
                {
                    Ok(_) => {
                        *opened_for = Some(key);
                        return Outcome::Again;
                    }
                    Err(FloorError::Unreachable(e)) => {
                        inner.failed(false, format!("floor unreachable: {e}"));
                        return Outcome::Retry;
                    }
                    Err(e) => {
                        inner.failed(true, e.to_string());
                        *opened_for = Some(key);
                        return Outcome::Retry;
                    }
                }
            }
            dead_all(inner, batch, status, &error)
        }
        // Auth, rate limits and timeouts are not the event's fault: keep it, keep trying.
        401 | 403 | 408 | 429 => {
            inner.failed(true, format!("floor answered {status}: {error}"));
            Outcome::Retry
        }
        400..=499 if batch.len() > 1 => Outcome::Split,
        400..=499 => dead_all(inner, batch, status, &error),
        _ => {
            inner.failed(true, format!("floor answered {status}: {error}"));
            Outcome::Retry
        }
    }
}

fn dead_all(inner: &Inner, batch: &[Arc<WalRecord>], status: u16, error: &str) -> Outcome {
    for r in batch {
        if let Err(e) = inner.dead_letter(r, status, error) {
            inner.failed(true, format!("cannot write the dead-letter file: {e}"));
            return Outcome::Retry;
        }
    }
    inner.failed(true, format!("floor rejected an event ({status}): {error}"));
    Outcome::Handled(batch.len())
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<ItemAnswer>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    status: u16,
    #[serde(default)]
    error: Option<String>,
}

fn handle_results(inner: &Inner, batch: &[Arc<WalRecord>], text: &str) -> Outcome {
    let answer: BatchAnswer = match serde_json::from_str(text) {
        Ok(a) => a,
        Err(e) => {
            inner.failed(true, format!("unreadable batch answer: {e}"));
            return Outcome::Retry;
        }
    };
    let mut handled = 0;
    let mut delivered = 0;
    for (rec, item) in batch.iter().zip(answer.results.iter()) {
        match item.status {
            200..=299 => delivered += 1,
            s @ 400..=499 if !matches!(s, 401 | 403 | 408 | 429) => {
                let err = item.error.as_deref().unwrap_or("rejected");
                if let Err(e) = inner.dead_letter(rec, s, err) {
                    inner.failed(true, format!("cannot write the dead-letter file: {e}"));
                    break;
                }
            }
            s => {
                inner.failed(
                    true,
                    format!(
                        "floor answered {s} for an event: {}",
                        item.error.as_deref().unwrap_or("")
                    ),
                );
                break;
            }
        }
        handled += 1;
    }
    let mut s = inner.stats();
    s.delivered += delivered;
    s.floor_reachable = true;
    if handled == batch.len() {
        s.last_error = None;
    }
    Outcome::Handled(handled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::extract::State;
    use axum::routing::post;
    use polaris_registry::ParticipantId;
    use std::collections::HashSet;

    /// A floor that fails its first request, rejects events marked `reject`, answers 500
    /// the first time it sees an event marked `flaky` (and for everything after it in that
    /// batch), and stores each id once.
    #[derive(Default)]
    struct Fake {
        requests: usize,
        stored: Vec<Value>,
        ids: HashSet<String>,
        flaked: HashSet<String>,
    }

    type Shared = Arc<Mutex<Fake>>;

    async fn batch(
        State(f): State<Shared>,
        Json(body): Json<Value>,
    ) -> (axum::http::StatusCode, Json<Value>) {
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        f.requests += 1;
        if f.requests == 1 {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "starting"})),
            );
        }
        let mut results = Vec::new();
        let mut failing = false;
        for e in body["events"].as_array().cloned().unwrap_or_default() {
            let id = e["id"].as_str().unwrap_or_default().to_owned();
            if failing {
                results.push(json!({"status": 500, "error": "store unavailable"}));
            } else if e["payload"]["reject"] == true {
                results.push(json!({"status": 400, "error": "payload.x: bad"}));
            } else if e["payload"]["flaky"] == true && f.flaked.insert(id.clone()) {
                failing = true;
                results.push(json!({"status": 500, "error": "store unavailable"}));
            } else if f.ids.insert(id) {
                f.stored.push(e.clone());
                results.push(json!({"status": 201, "event": e}));
            } else {
                results.push(json!({"status": 200, "event": e}));
            }
        }
        (
            axum::http::StatusCode::OK,
            Json(json!({"results": results})),
        )
    }

    fn event(n: u64, mark: Option<&str>) -> NewEventBody {
        let mut payload = json!({"hook_event_name": "Stop", "session_id": "cc", "n": n});
        if let Some(m) = mark {
            payload[m] = json!(true);
        }
        NewEventBody {
            traceparent: None,
            term: None,
            id: None,
            timestamp: None,
            source: None,
            sender: ParticipantId::parse("agent:claude").expect("participant"),
            payload,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_failures_dead_letters_rejections_and_keeps_order() {
        let fake: Shared = Arc::default();
        let app = axum::Router::new()
            .route("/projects/{p}/sessions/{s}/events/batch", post(batch))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().expect("tempdir");
        let floor = FloorClient::new(&base, None).expect("client");
        let uplink = Uplink::open(dir.path(), floor).await.expect("open");

        // Refused before it reaches the log.
        let bad = NewEventBody {
            term: None,
            payload: json!({"hook_event_name": "Stop"}),
            ..event(9, None)
        };
        assert!(matches!(
            uplink.submit("p", "s", bad).await,
            Err(SubmitError::Invalid(m)) if m.contains("session_id")
        ));
        let marks = [None, Some("reject"), Some("flaky"), None, None];
        let mut ids = Vec::new();
        for (n, m) in marks.iter().enumerate() {
            ids.push(
                uplink
                    .submit("p", "s", event(n as u64, *m))
                    .await
                    .expect("submit"),
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while uplink.status().pending > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                uplink.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let st = uplink.status();
        assert_eq!((st.delivered, st.dead_letters), (4, 1), "{st:?}");
        let stored: Vec<u64> = fake
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stored
            .iter()
            .map(|e| e["payload"]["n"].as_u64().unwrap_or(99))
            .collect();
        assert_eq!(stored, vec![0, 2, 3, 4], "in order, each once");
        let dead = read_dead_letters(uplink.dead_letter_path()).expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id, dead[0].status), (Some(ids[1]), 400));
        assert_eq!(dead[0].error, "payload.x: bad");
        uplink.shutdown().await;
    }
}
