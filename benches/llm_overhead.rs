//! The LLM brain's own overhead (not a timed test). In this process: a floor (SQLite in a
//! temporary directory), two agents on it with the same knowledge — Dean with the offline
//! brain, Lena with the LLM brain against a local OpenAI-compatible endpoint that answers
//! at once (the test suite's, streaming its answer in chunks) — and one session. Mentions
//! are asked one at a time, alternating between the two, and each is timed from the start
//! of its POST to its answer arriving on a WebSocket of the session. The difference of the
//! two distributions is what the LLM brain adds: building the prompt, the request and its
//! streamed response, with the model itself taking no time.
//!
//!   cargo bench --bench llm_overhead -- --questions 500
//!
//! Prints one line `RESULT {json}`.

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code, unreachable_pub, clippy::unwrap_used)]
#[path = "../tests/it/support/openai.rs"]
mod openai;

use common::{arg, pct};
use std::time::{Duration, Instant};

use futures::StreamExt;
use polaris_config::{DatabaseUrl, RateLimits};
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings, Store};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let questions: usize = arg(&args, "--questions", "500").parse()?;

    let llm = openai::FakeOpenAi::start(openai::Reply::Text(
        "Staging tables are named stg_<source>__<entity> (warehouse.md › Naming).".into(),
    ))
    .await;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("knowledge"))?;
    std::fs::write(
        dir.path().join("knowledge/warehouse.md"),
        "# Warehouse conventions\n\n## Naming\n\nStaging tables are named stg_<source>__<entity>.\n",
    )?;
    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        format!(
            "agents:
  - id: agent:dean
    name: Dean
    tags: [data]
    knowledge: [knowledge/*.md]
    rate: {{per_floor_per_minute: 100000, per_agent_per_minute: 100000}}
  - id: agent:lena
    name: Lena
    tags: [data]
    knowledge: [knowledge/*.md]
    rate: {{per_floor_per_minute: 100000, per_agent_per_minute: 100000}}
    brain: {{kind: llm, endpoint: {}, model: bench, timeout: 10s}}
",
            llm.base
        ),
    )?;
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("polaris.db"))).await?;
    let runtime = Runtime::start(store, Settings::default()).await?;
    runtime
        .directory()
        .load_agent_file(Some(polaris_registry::AgentFile::load(&agents)?))
        .await?;
    let host = polaris_agents::AgentHost::start(runtime.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_config = ApiConfig {
        rate_limits: RateLimits {
            writes_per_minute: 0,
            injects_per_minute: 0,
        },
        ..ApiConfig::default()
    };
    tokio::spawn(api::serve(
        listener,
        runtime.clone(),
        api_config,
        None,
        std::future::pending(),
    ));
    polaris_sidecar::uplink::install_tls_provider();
    let http = reqwest::Client::new();
    http.post(format!("{base}/projects"))
        .json(&json!({"name": "bench", "tags": ["data"]}))
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{base}/projects/bench/sessions"))
        .json(&json!({"name": "s"}))
        .send()
        .await?
        .error_for_status()?;
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/projects/bench/sessions/s/ws",
        base.replacen("http", "ws", 1)
    ))
    .await?;
    let (_, mut rx) = ws.split();

    let mut ask = async |who: &str| -> Result<f64, BoxErr> {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({"id": id, "sender": "user:bench", "payload": {
            "hook_event_name": "UserPromptSubmit", "session_id": "bench",
            "prompt": format!("@{who} how do we name staging tables?")}});
        let t0 = Instant::now();
        http.post(format!("{base}/projects/bench/sessions/s/events"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let deadline = t0 + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(m))) = tokio::time::timeout(left, rx.next()).await else {
                return Err(format!("no answer from {who}").into());
            };
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["source"] == "agent" && v["payload"]["in_reply_to"] == id.as_str() {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let content = v["payload"]["content"].as_str().unwrap_or_default();
                if who == "lena" && content.starts_with("_Answering from my offline brain") {
                    return Err(format!("Lena fell back: {content}").into());
                }
                return Ok(ms);
            }
        }
    };

    // Warm-up: connections, the knowledge index, the endpoint's socket.
    for _ in 0..20 {
        ask("dean").await?;
        ask("lena").await?;
    }
    let warm = llm.requests().len();
    let (mut offline, mut with_llm) = (Vec::new(), Vec::new());
    for i in 0..questions * 2 {
        // Alternate which goes first, so neither always follows the other.
        let who = if (i % 2 == 0) == (i / 2 % 2 == 0) {
            "dean"
        } else {
            "lena"
        };
        let ms = ask(who).await?;
        if who == "dean" {
            offline.push(ms)
        } else {
            with_llm.push(ms)
        }
    }
    offline.sort_by(|a, b| a.total_cmp(b));
    with_llm.sort_by(|a, b| a.total_cmp(b));
    let added = |p: f64| pct(&with_llm, p) - pct(&offline, p);
    println!(
        "RESULT {}",
        json!({
            "test": "llm_overhead", "questions_each": questions,
            "endpoint_requests": llm.requests().len() - warm,
            "offline_p50_ms": pct(&offline, 0.5), "offline_p90_ms": pct(&offline, 0.9), "offline_p99_ms": pct(&offline, 0.99),
            "llm_p50_ms": pct(&with_llm, 0.5), "llm_p90_ms": pct(&with_llm, 0.9), "llm_p99_ms": pct(&with_llm, 0.99),
            "added_p50_ms": added(0.5), "added_p90_ms": added(0.9), "added_p99_ms": added(0.99),
        })
    );
    host.shutdown().await;
    runtime.shutdown().await;
    Ok(())
}
