//! `polaris agent run <agent>`: one named agent (with its subagents) as a process of its
//! own, beside a floor it reaches only over HTTP. It reads its floors from stored cursors
//! over the floor's streams, holds the agent's lease (a second process of the same agent
//! waits as a standby), and posts only through a sidecar: embedded by default (a
//! write-ahead log in `--state`), or an external `polaris sidecar` given by URL.
//!
//! It runs passive monitoring for the agent it hosts, as `polaris serve` does for its own:
//! the first stage always, the model too with `--model-dir` (its heads are fitted in the
//! background after the start).
//!
//! `GET /healthz` says the process is alive; `GET /readyz` says it holds the lease and its
//! streams are open, and how far passive monitoring is. SIGTERM stops the agents (they
//! save their cursors), lets the sidecar deliver what they posted, releases the lease and
//! exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use clap::Args;
use polaris_agents::outbox::{Delivered, Outbox, Relay};
use polaris_agents::passive::Passive;
use polaris_agents::{AgentHost, HostArgs, HostHandle, Scope};
use polaris_config::{Env, SecretRef};
use polaris_protocol::NewEventBody;
use polaris_registry::{AgentFile, ParticipantId};
use polaris_sidecar::uplink::segment;
use polaris_sidecar::{FloorClient, Uplink};
use serde_json::json;
use uuid::Uuid;

use crate::remote::RemoteFloor;

/// The longest SIGTERM waits for the embedded sidecar to deliver what the agents posted
/// before giving the lease up (what is left is delivered at the next start, and refused
/// if another instance has taken over by then: that one answers again).
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct AgentRunArgs {
    /// The agent, e.g. agent:dean (or dean).
    agent: String,
    /// The floor's URL.
    #[arg(long, env = "POLARIS_SERVICE_URL", value_name = "URL")]
    floor: String,
    /// Where the floor token is: env:NAME or file:PATH (a token of the agent, or a
    /// service token of its org). Without one, only a development floor answers.
    #[arg(long, value_name = "REF", default_value = "env:POLARIS_AUTH_TOKEN")]
    token: String,
    /// Definitions and knowledge from this agents file instead of the floor's.
    #[arg(long, env = "POLARIS_AGENTS", value_name = "FILE")]
    agents: Option<PathBuf>,
    /// The embedded sidecar's write-ahead log and dead letters.
    #[arg(
        long,
        env = "POLARIS_AGENT_STATE",
        value_name = "DIR",
        default_value = ".polaris-agent"
    )]
    state: PathBuf,
    /// Post through this external `polaris sidecar` instead of an embedded one.
    #[arg(long, env = "POLARIS_SIDECAR_URL", value_name = "URL")]
    sidecar: Option<String>,
    /// Where the external sidecar's local secret is (env:NAME or file:PATH).
    #[arg(long, value_name = "REF", default_value = "env:POLARIS_SIDECAR_SECRET")]
    sidecar_secret: String,
    /// Address of /healthz and /readyz; port 0 picks a free port.
    #[arg(
        long,
        env = "POLARIS_AGENT_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:4330"
    )]
    listen: SocketAddr,
    /// How long the lease lasts unless renewed (renewed every third of it): the longest
    /// a standby waits after this process dies without releasing it.
    #[arg(long, env = "POLARIS_LEASE_TTL", value_name = "DURATION", default_value = "1500ms", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Passive monitoring's model (all-MiniLM-L6-v2, sentence-transformers layout), as
    /// `polaris serve --model-dir`; without it only the first stage (precise signals) runs.
    #[arg(long, env = "POLARIS_MODEL_DIR", value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// No passive monitoring: the agent answers mentions and never speaks up unasked.
    #[arg(long, conflicts_with = "model_dir")]
    no_passive: bool,
    /// Export traces to this OpenTelemetry collector (OTLP/HTTP base URL, e.g.
    /// http://127.0.0.1:4318) [default: $OTEL_EXPORTER_OTLP_ENDPOINT, else none]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// Parses the arguments' references and files, then runs until SIGTERM or Ctrl-C.
pub(crate) fn run(args: AgentRunArgs, env: &Env) -> anyhow::Result<()> {
    let agent = agent_id(&args.agent)?;
    let token = resolve(&args.token, env, "--token")?;
    let file = match &args.agents {
        Some(path) => {
            // Knowledge paths start at the file's directory, wherever the process runs.
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("{}: cannot read it", path.display()))?;
            let f = AgentFile::load(&path)?;
            if !f.agents.iter().any(|a| a.id == agent) {
                bail!("{}: defines no agent {agent}", path.display());
            }
            Some((f.agents, f.base_dir))
        }
        None => None,
    };
    let sidecar = match &args.sidecar {
        Some(url) => {
            let secret = resolve(&args.sidecar_secret, env, "--sidecar-secret")?.context(
                "--sidecar needs the sidecar's secret (--sidecar-secret env:NAME or file:PATH)",
            )?;
            Some((url.trim_end_matches('/').to_owned(), secret))
        }
        None => None,
    };
    if args.lease_ttl < Duration::from_millis(300) || args.lease_ttl > Duration::from_secs(600) {
        bail!("--lease-ttl: must be between 300ms and 10m");
    }
    let telemetry = crate::lifecycle::telemetry_from_flag(
        args.otlp_endpoint.as_deref(),
        env,
        "polaris-agent",
        "info",
    )?;
    let floor = FloorClient::new(&args.floor, token)?;
    // The model loads (and its hash is checked) before anything starts: a bad directory
    // stops the start with the file it names. Its heads are fitted later, in the
    // background.
    let passive = if args.no_passive {
        None
    } else {
        let embedder = match &args.model_dir {
            Some(dir) => {
                polaris_agents::passive::model_threads_in_the_background(
                    polaris_config::default_model_threads(),
                );
                Some(Arc::new(
                    polaris_passive::Embedder::load(dir).context("loading --model-dir")?,
                ))
            }
            None => None,
        };
        tracing::info!(model = embedder.is_some(), "passive monitoring on");
        Some(Passive::start(embedder))
    };
    // One agent's answers are a light load: two worker threads are plenty and keep the
    // process small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let host_name = hostname(env);
    let result = rt.block_on(serve(
        args,
        agent,
        floor,
        file,
        sidecar,
        host_name,
        passive.clone(),
    ));
    if let Some(p) = passive {
        p.stop();
    }
    // Outside the runtime: the last spans are sent from the exporter's own thread.
    drop(rt);
    telemetry.shutdown();
    result
}

fn agent_id(raw: &str) -> anyhow::Result<ParticipantId> {
    match ParticipantId::agent_named(raw) {
        Some(id) if id.root() == id.as_str() => Ok(id),
        Some(id) => bail!(
            "{id} is a subagent: run its parent, {}, which hosts it",
            id.root()
        ),
        None => bail!("{raw:?} is not an agent id such as agent:dean"),
    }
}

/// A secret reference's value; `None` when the default environment variable is unset.
fn resolve(reference: &str, env: &Env, flag: &str) -> anyhow::Result<Option<String>> {
    let r = SecretRef::parse(reference).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    match (&r, r.resolve(env)) {
        (_, Ok(s)) => Ok(Some(s.expose().to_owned()).filter(|s| !s.trim().is_empty())),
        (SecretRef::Env(_), Err(_)) => Ok(None),
        (SecretRef::File(_), Err(e)) => bail!("{flag}: {e}"),
    }
}

/// Where posts go: the embedded sidecar's uplink, or an external sidecar.
enum Post {
    Embedded(Uplink),
    External,
}

async fn serve(
    args: AgentRunArgs,
    agent: ParticipantId,
    floor: FloorClient,
    file: Option<(Vec<polaris_registry::AgentSpec>, PathBuf)>,
    sidecar: Option<(String, String)>,
    host_name: String,
    passive: Option<Passive>,
) -> anyhow::Result<()> {
    let (post, outbox) = match sidecar {
        None => {
            let dir = args.state.join("wal");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let uplink =
                Uplink::open_with(&dir, &args.state.join("dead-letter.jsonl"), floor.clone())
                    .await
                    .with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
            let outbox = embedded(uplink.clone());
            (Post::Embedded(uplink), outbox)
        }
        Some((url, secret)) => (Post::External, external(url, secret)?),
    };
    let base_dir = match &file {
        Some((_, dir)) => dir.clone(),
        None => std::env::current_dir().context("finding the working directory")?,
    };
    let link = RemoteFloor::start(floor.clone(), agent.clone(), base_dir);
    let host = AgentHost::spawn(HostArgs {
        link,
        outbox,
        scope: Scope::One {
            org: "".into(),
            agent: agent.clone(),
            file,
        },
        holder: format!(
            "polaris-agent-run/{}/{}/{}",
            host_name,
            std::process::id(),
            Uuid::new_v4().simple()
        ),
        lease_ttl: args.lease_ttl,
        passive: passive.clone(),
    })
    .await
    .context("starting the agent")?;

    let listener = crate::lifecycle::bind_announced(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %agent, floor = %floor.base(), "polaris agent run");
    let app = health_routes(
        host.clone(),
        match &post {
            Post::Embedded(u) => Some(u.clone()),
            Post::External => None,
        },
        passive,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    crate::lifecycle::shutdown_signal().await;
    tracing::info!("stopping: saving cursors, delivering answers, releasing the lease");
    host.stop_agents().await;
    if let Post::Embedded(uplink) = &post {
        let drained = tokio::time::timeout(DRAIN, async {
            while uplink.status().pending > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                pending = uplink.status().pending,
                "answers still queued; they go out at the next start"
            );
        }
    }
    host.shutdown().await;
    if let Post::Embedded(uplink) = post {
        uplink.shutdown().await;
    }
    stop.cancel();
    let _ = server.await;
    tracing::info!("bye");
    Ok(())
}

/// The host's name, for lease holders an operator can recognise (a container's id).
fn hostname(env: &Env) -> String {
    env.get("HOSTNAME")
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "host".into())
}

fn embedded(uplink: Uplink) -> Arc<dyn Outbox> {
    Relay::shared(move |project, session, body| {
        let uplink = uplink.clone();
        Box::pin(async move {
            let (_, delivered) = uplink
                .submit_tracked(&project, &session, body)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::pin(delivered) as Delivered)
        })
    })
}

/// Posts to an external sidecar's floor-shaped route; it answers once the event is in its
/// write-ahead log. Its delivery is not visible from here, so an answer counts as done
/// when the sidecar has it.
fn external(url: String, secret: String) -> anyhow::Result<Arc<dyn Outbox>> {
    if !url.starts_with("http://") {
        bail!("--sidecar {url:?}: a sidecar listens on loopback over http://");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    Ok(Relay::shared(
        move |project, session, body: NewEventBody| {
            let req = http
                .post(format!(
                    "{url}/projects/{}/sessions/{}/events",
                    segment(&project),
                    segment(&session)
                ))
                .header(polaris_sidecar::wire::SECRET_HEADER, &secret)
                .json(&body);
            Box::pin(async move {
                let resp = req.send().await.map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "the sidecar answered {}: {}",
                        resp.status(),
                        resp.text().await.unwrap_or_default()
                    ));
                }
                Ok(Box::pin(std::future::ready(())) as Delivered)
            })
        },
    ))
}

fn health_routes(
    host: HostHandle,
    uplink: Option<Uplink>,
    passive: Option<Passive>,
) -> axum::Router {
    let ready = move || {
        let report = host.health();
        let pending = uplink.as_ref().map(|u| u.status().pending);
        // Passive monitoring's heads are detail, not readiness: mentions are answered
        // while they are fitted.
        let passive = passive.as_ref().map(Passive::readiness);
        let body = json!({"ready": report.ready(), "agents": report, "pending": pending, "passive": passive});
        let status = if report.ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, Json(body)).into_response()
    };
    axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(|| async { Json(json!({"ok": true})) }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || std::future::ready(ready())),
        )
}
