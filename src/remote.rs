//! The floor over HTTP, for `polaris agent run`: an agent host's [`FloorLink`] made of the
//! floor's public API. Streams are the floor's resumable WebSockets (`…/ws?after=SEQ`);
//! read positions, the roster and the lease are the `/agents/:agent/…` routes. The
//! roster is long-polled (`If-None-Match` with `wait_ms`), so a join or an invite reaches
//! the agent as soon as the floor makes it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use polaris_agents::link::{Events, FloorLink, LinkError, Remember, Roster, TaskProgress};
use polaris_protocol::Event;
use polaris_registry::{AgentSpec, ParticipantId};
use polaris_runtime::{Committed, MemoryFact, ProjectKey};
use polaris_sidecar::FloorClient;
use polaris_sidecar::uplink::segment;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

/// How long a roster request waits on the floor for a change.
const ROSTER_WAIT: Duration = Duration::from_secs(25);
/// A request's own time on top of what it asks the floor to wait.
const SLACK: Duration = Duration::from_secs(5);

/// The floor of one `polaris agent run` process.
pub struct RemoteFloor {
    floor: FloorClient,
    agent: ParticipantId,
    base_dir: PathBuf,
    changes: watch::Sender<u64>,
    /// The agent's floors with passive advice off, as the latest roster has them (the
    /// long poll wakes on a change).
    quiet: Arc<std::sync::Mutex<HashSet<Uuid>>>,
}

#[derive(Deserialize)]
struct RosterBody {
    agents: Vec<Value>,
    seats: Vec<Seat>,
}

#[derive(Deserialize)]
struct Seat {
    agent: String,
    project: String,
    project_id: Uuid,
    /// The floor's passive switch (absent from older floors: on).
    #[serde(default = "on")]
    passive: bool,
}

fn on() -> bool {
    true
}

/// Keeps the floors with passive advice off from a roster's seats.
fn note_quiet(quiet: &std::sync::Mutex<HashSet<Uuid>>, body: &RosterBody) {
    let now: HashSet<Uuid> = body
        .seats
        .iter()
        .filter(|s| !s.passive)
        .map(|s| s.project_id)
        .collect();
    *quiet.lock().unwrap_or_else(|p| p.into_inner()) = now;
}

impl RemoteFloor {
    /// A link for `agent` over `floor`; knowledge paths start at `base_dir`. Starts the
    /// roster's long poll, which ends with the returned link.
    pub fn start(floor: FloorClient, agent: ParticipantId, base_dir: PathBuf) -> Arc<RemoteFloor> {
        let (changes, _) = watch::channel(0);
        let link = Arc::new(RemoteFloor {
            floor,
            agent,
            base_dir,
            changes,
            quiet: Arc::default(),
        });
        tokio::spawn(watch_roster(Arc::downgrade(&link)));
        link
    }

    fn agent_path(&self, who: &str, rest: &str) -> String {
        format!("/agents/{}/{rest}", segment(who))
    }

    async fn roster_page(&self, etag: Option<&str>) -> Result<Option<(String, Roster)>, LinkError> {
        let mut path = self.agent_path(self.agent.as_str(), "roster");
        if etag.is_some() {
            path.push_str(&format!("?wait_ms={}", ROSTER_WAIT.as_millis()));
        }
        let mut req = self
            .floor
            .request(Method::GET, &path)
            .timeout(ROSTER_WAIT + SLACK);
        if let Some(tag) = etag {
            req = req.header("if-none-match", tag);
        }
        let resp = req.send().await.map_err(LinkError::of)?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let tag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body: RosterBody = ok_json(resp).await?;
        note_quiet(&self.quiet, &body);
        Ok(Some((tag, roster_of(body, &self.base_dir))))
    }
}

/// The roster an agent host plans with, from the floor's JSON.
fn roster_of(body: RosterBody, base_dir: &std::path::Path) -> Roster {
    // The org is the token's; nothing here needs its name.
    let org: Arc<str> = "".into();
    let agents = body
        .agents
        .into_iter()
        .filter_map(|mut v| {
            // Where the definition came from is the listing's, not the definition's.
            if let Value::Object(m) = &mut v {
                m.remove("source");
                m.remove("table_definition");
            }
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            serde_json::from_value::<AgentSpec>(v)
                .map_err(|e| tracing::warn!(agent = %id, error = %e, "agent definition not understood; skipped"))
                .ok()
        })
        .collect();
    let seats = body
        .seats
        .into_iter()
        .map(|s| {
            let key = ProjectKey {
                id: s.project_id,
                org: org.clone(),
                name: s.project.into(),
            };
            (key, s.agent)
        })
        .collect();
    Roster {
        agents,
        seats,
        base_dir: base_dir.to_owned(),
    }
}

/// The body of a 2xx answer, or the floor's `{"error"}` as a [`LinkError`].
async fn ok_json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, LinkError> {
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(LinkError(format!("the floor answered {status}: {text}")));
    }
    resp.json().await.map_err(LinkError::of)
}

/// Long-polls the roster while the link lives, and says so whenever it changes.
async fn watch_roster(link: std::sync::Weak<RemoteFloor>) {
    let mut etag: Option<String> = None;
    let mut delay = Duration::from_millis(200);
    loop {
        let Some(l) = link.upgrade() else { return };
        match l.roster_page(etag.as_deref()).await {
            Ok(Some((tag, _))) => {
                if etag.is_some() {
                    l.changes.send_modify(|n| *n += 1);
                }
                etag = Some(tag);
                delay = Duration::from_millis(200);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, "roster unavailable; retrying");
                drop(l);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

impl FloorLink for RemoteFloor {
    fn subscribe(
        &self,
        project: ProjectKey,
        after: i64,
    ) -> BoxFuture<'static, Result<Events, LinkError>> {
        let url = self.floor.ws_url(&format!(
            "/projects/{}/ws?after={after}",
            segment(&project.name)
        ));
        let token = self.floor.token().map(str::to_owned);
        Box::pin(async move {
            let mut req = url.into_client_request().map_err(LinkError::of)?;
            if let Some(t) = token {
                req.headers_mut().insert(
                    "authorization",
                    format!("Bearer {t}").parse().map_err(LinkError::of)?,
                );
            }
            let (ws, _) = tokio::time::timeout(SLACK, tokio_tungstenite::connect_async(req))
                .await
                .map_err(|_| LinkError("the floor's stream did not open in time".into()))?
                .map_err(LinkError::of)?;
            let events = ws.filter_map(|msg| async move {
                match msg {
                    Ok(Message::Text(t)) => Some(
                        serde_json::from_str::<Event>(t.as_str())
                            .map(|e| Arc::new(Committed::new(e)))
                            .map_err(LinkError::of),
                    ),
                    Ok(_) => None,
                    Err(e) => Some(Err(LinkError::of(e))),
                }
            });
            // After an error the socket is done: end there, the reader opens it again.
            let mut failed = false;
            Ok(events
                .take_while(move |r| {
                    let go = !failed;
                    failed |= r.is_err();
                    std::future::ready(go)
                })
                .boxed())
        })
    }

    fn read_position(
        &self,
        _org: Arc<str>,
        reader: String,
        _joined_as: Vec<String>,
        project: Uuid,
    ) -> BoxFuture<'static, Result<i64, LinkError>> {
        // The floor knows whom a reader joins as (itself, then its parent).
        let req = self.floor.request(
            Method::GET,
            &self.agent_path(&reader, &format!("cursors?project_id={project}")),
        );
        Box::pin(async move {
            let v: Value = ok_json(req.send().await.map_err(LinkError::of)?).await?;
            v["after"]
                .as_i64()
                .ok_or_else(|| LinkError(format!("no read position in {v}")))
        })
    }

    fn save_read_positions(
        &self,
        _org: Arc<str>,
        reader: String,
        positions: Vec<(Uuid, i64)>,
        term: Option<i64>,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let cursors: Vec<Value> = positions
            .iter()
            .map(|(p, s)| json!({"project_id": p, "seq": s}))
            .collect();
        let req = self
            .floor
            .request(Method::PUT, &self.agent_path(&reader, "cursors"))
            .json(&json!({"term": term, "cursors": cursors}));
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            match resp.status() {
                StatusCode::CONFLICT => Ok(false),
                s if s.is_success() => Ok(true),
                s => Err(LinkError(format!(
                    "the floor answered {s}: {}",
                    resp.text().await.unwrap_or_default()
                ))),
            }
        })
    }

    fn roster(&self, _org: Arc<str>) -> BoxFuture<'static, Result<Roster, LinkError>> {
        let req = self
            .floor
            .request(Method::GET, &self.agent_path(self.agent.as_str(), "roster"));
        let base_dir = self.base_dir.clone();
        let quiet = self.quiet.clone();
        Box::pin(async move {
            let body: RosterBody = ok_json(req.send().await.map_err(LinkError::of)?).await?;
            note_quiet(&quiet, &body);
            Ok(roster_of(body, &base_dir))
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn acquire(
        &self,
        _org: Arc<str>,
        name: String,
        holder: String,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'static, Result<Option<i64>, LinkError>> {
        let req = self
            .floor
            .request(Method::POST, &self.agent_path(&name, "lease"))
            .timeout(wait + SLACK)
            .json(&json!({
                "holder": holder,
                "ttl_ms": ttl.as_millis() as u64,
                "wait_ms": wait.as_millis() as u64,
            }));
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            if resp.status() == StatusCode::CONFLICT {
                return Ok(None);
            }
            let v: Value = ok_json(resp).await?;
            Ok(v["term"].as_i64())
        })
    }

    fn renew(
        &self,
        _org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
        ttl: Duration,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        // A renewal slower than the lease is as good as none.
        let req = self
            .floor
            .request(Method::PUT, &self.agent_path(&name, "lease"))
            .timeout(ttl)
            .json(&json!({"holder": holder, "term": term, "ttl_ms": ttl.as_millis() as u64}));
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            if resp.status() == StatusCode::CONFLICT {
                return Ok(false);
            }
            ok_json::<Value>(resp).await.map(|_| true)
        })
    }

    fn task_progress(
        &self,
        project: ProjectKey,
        agent: String,
        task: Uuid,
    ) -> BoxFuture<'static, Result<Option<TaskProgress>, LinkError>> {
        let req = self.floor.request(
            Method::GET,
            &format!(
                "/projects/{}/agents/{}/tasks/{task}",
                segment(&project.name),
                segment(&agent)
            ),
        );
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let v: Value = ok_json(resp).await?;
            let status = v["status"].as_str().unwrap_or_default();
            Ok(Some(TaskProgress {
                finished: !matches!(status, "queued" | "running"),
                stop: v["stop_reason"].as_str().map(str::to_owned),
            }))
        })
    }

    fn release(
        &self,
        _org: Arc<str>,
        name: String,
        holder: String,
        term: i64,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let req = self
            .floor
            .request(Method::DELETE, &self.agent_path(&name, "lease"))
            .timeout(SLACK)
            .json(&json!({"holder": holder, "term": term}));
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            match resp.status() {
                StatusCode::CONFLICT => Ok(false),
                s if s.is_success() => Ok(true),
                s => Err(LinkError(format!("the floor answered {s}"))),
            }
        })
    }

    fn remember(
        &self,
        _org: Arc<str>,
        f: Remember,
    ) -> BoxFuture<'static, Result<MemoryFact, LinkError>> {
        let req = self
            .floor
            .request(Method::POST, &self.agent_path(&f.agent, "memory"))
            .timeout(SLACK)
            .json(&json!({
                "fact": f.fact,
                "project_id": f.project_id,
                "source_events": f.source_events,
                "origin": f.origin,
                "author": f.author,
            }));
        Box::pin(async move { ok_json(req.send().await.map_err(LinkError::of)?).await })
    }

    fn recall(
        &self,
        _org: Arc<str>,
        agent: String,
        scope: Option<ProjectKey>,
        limit: i64,
    ) -> BoxFuture<'static, Result<Vec<MemoryFact>, LinkError>> {
        let mut path = format!("memory?limit={}", limit.clamp(1, 1000));
        if let Some(k) = &scope {
            path.push_str(&format!("&project={}", segment(&k.name)));
        }
        let req = self
            .floor
            .request(Method::GET, &self.agent_path(&agent, &path))
            .timeout(SLACK);
        Box::pin(async move {
            let v: Value = ok_json(req.send().await.map_err(LinkError::of)?).await?;
            let mut facts: Vec<MemoryFact> =
                serde_json::from_value(v["memory"].clone()).map_err(LinkError::of)?;
            // Without a floor the listing holds every floor's facts too: a shared agent's
            // memory is the unscoped part.
            if scope.is_none() {
                facts.retain(|m| m.project_id.is_none());
            }
            Ok(facts)
        })
    }

    fn forget(
        &self,
        _org: Arc<str>,
        agent: String,
        id: Uuid,
    ) -> BoxFuture<'static, Result<bool, LinkError>> {
        let req = self
            .floor
            .request(
                Method::DELETE,
                &self.agent_path(&agent, &format!("memory/{id}")),
            )
            .timeout(SLACK);
        Box::pin(async move {
            let resp = req.send().await.map_err(LinkError::of)?;
            match resp.status() {
                StatusCode::NOT_FOUND => Ok(false),
                s if s.is_success() => Ok(true),
                s => Err(LinkError(format!("the floor answered {s}"))),
            }
        })
    }

    fn passive_advice(&self, project: ProjectKey) -> BoxFuture<'static, Result<bool, LinkError>> {
        let quiet = self
            .quiet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&project.id);
        Box::pin(std::future::ready(Ok(!quiet)))
    }
}
