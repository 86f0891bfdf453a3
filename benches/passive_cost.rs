//! Passive monitoring's cost, in one run: the first stage (µs an event), the second stage
//! (ms an event, batches of 16, 4 top-level agents), and floor ingest over HTTP with the
//! four agents watching against no agents at all, alternated in the same sitting.
//!
//!   cargo bench --bench passive_cost -- --model-dir DIR [--events 4000] [--clients 16] [--rounds 2]
//!
//! The texts are the routing dev set's (here only as realistic load, never to fit
//! anything), cycled; for ingest only the cases that mention nobody, so every agent has
//! something to score and nothing to answer. Prints `RESULT {json}` lines.

#[path = "common/mod.rs"]
mod common;

use common::{arg, pct};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use polaris_agents::passive::{self, Passive};
use polaris_config::{DatabaseUrl, RateLimits};
use polaris_passive::{Embedder, Input};
use polaris_registry::AgentFile;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings, Store};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = PathBuf::from(arg(&args, "--model-dir", ""));
    let events: usize = arg(&args, "--events", "4000").parse()?;
    let clients: usize = arg(&args, "--clients", "16").parse()?;
    let rounds: usize = arg(&args, "--rounds", "2").parse()?;
    // As `polaris serve` does: the model's matrix pool in the idle class, built before the
    // first product (here, the second-stage timing below).
    passive::model_threads_in_the_background(polaris_config::default_model_threads());
    let embedder = Arc::new(Embedder::load(&model_dir)?);
    let file = AgentFile::load(&data("agents.yaml"))?;
    let cases: Vec<serde_json::Value> = std::fs::read_to_string(data("routing-dev.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let texts: Vec<(String, bool)> = cases
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap_or_default().to_owned(),
                c["source"] == "tool",
            )
        })
        .collect();

    // First stage alone.
    let first = passive::scorer(&file.agents, &file.base_dir, None)?;
    let reps = 200;
    let t0 = Instant::now();
    let mut kept = 0usize;
    for _ in 0..reps {
        for (t, tool) in &texts {
            let p = first.first(Input {
                text: t,
                tool_output: *tool,
            });
            kept += usize::from(!p.discard);
        }
    }
    let stage1_us = t0.elapsed().as_secs_f64() * 1e6 / (reps * texts.len()) as f64;
    println!(
        "RESULT {}",
        serde_json::json!({"stage": 1, "us_per_event": stage1_us, "events": reps * texts.len(),
            "passed_to_stage_2": kept as f64 / (reps * texts.len()) as f64})
    );

    // Both stages, 4 agents, batches of 16.
    let t0 = Instant::now();
    let scorer = passive::scorer(&file.agents, &file.base_dir, Some(embedder.clone()))?;
    let fit_ms = t0.elapsed().as_secs_f64() * 1e3;
    let inputs: Vec<Input<'_>> = texts
        .iter()
        .map(|(t, tool)| Input {
            text: t,
            tool_output: *tool,
        })
        .collect();
    let t0 = Instant::now();
    for chunk in inputs.chunks(16) {
        scorer.score(chunk)?;
    }
    let stage2_ms = t0.elapsed().as_secs_f64() * 1e3 / inputs.len() as f64;
    println!(
        "RESULT {}",
        serde_json::json!({"stage": 2, "ms_per_event": stage2_ms, "events": inputs.len(),
            "agents": scorer.agents().count(), "batch": 16, "fit_ms": fit_ms})
    );

    // Ingest: none, watching, none, watching, …
    let unaddressed: Vec<String> = cases
        .iter()
        .filter(|c| c["mentions"].as_array().is_some_and(Vec::is_empty))
        .filter_map(|c| c["text"].as_str().map(str::to_owned))
        .collect();
    // No agents; four watching with the worker's default rest; four with a worker that
    // never rests (what the rest buys); four watching with the first stage only (no model:
    // what the agents' own reading and queuing costs, apart from the model's).
    let configs: [(&str, Option<(bool, f64)>); 4] = [
        ("no agents", None),
        ("4 agents watching", Some((true, passive::DUTY))),
        ("4 agents watching, worker never rests", Some((true, 1.0))),
        (
            "4 agents watching, first stage only",
            Some((false, passive::DUTY)),
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..rounds {
        for (i, (label, duty)) in configs.iter().enumerate() {
            let (rate, shed) = ingest(
                duty.map(|(model, d)| (model.then(|| embedder.clone()), d)),
                &unaddressed,
                events,
                clients,
            )
            .await?;
            println!(
                "RESULT {}",
                serde_json::json!({"ingest": label, "events_per_s": rate, "events": events,
                    "clients": clients, "shed": shed})
            );
            rates[i].push(rate);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        pct(v, 0.5)
    };
    let n = median(&mut rates[0]);
    let w = median(&mut rates[1]);
    let u = median(&mut rates[2]);
    let f = median(&mut rates[3]);
    println!(
        "RESULT {}",
        serde_json::json!({"ingest_ratio": w / n, "ingest_ratio_never_resting": u / n,
            "ingest_ratio_first_stage_only": f / n,
            "no_agents_median": n, "watching_median": w, "never_resting_median": u,
            "first_stage_only_median": f})
    );
    Ok(())
}

/// One server on a fresh SQLite file; `events` prompts from `clients` concurrent
/// clients. With `model`, the four dataset agents are on the floor, watching (scoring with the
/// embedder it holds, or with the first stage only).
async fn ingest(
    model: Option<(Option<Arc<Embedder>>, f64)>,
    texts: &[String],
    events: usize,
    clients: usize,
) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("p.db"))).await?;
    let runtime = Runtime::start(
        store.clone(),
        Settings {
            session_idle: Duration::from_secs(300),
            subscriber_buffer: 1024,
        },
    )
    .await?;
    let mut host = None;
    let mut watcher = None;
    if let Some((m, duty)) = model {
        runtime
            .directory()
            .load_agent_file(Some(AgentFile::load(&data("agents.yaml"))?))
            .await?;
        let p = Passive::start_with_duty(m, duty);
        host = Some(polaris_agents::AgentHost::start_watching(runtime.clone(), p.clone()).await?);
        watcher = Some(p);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        runtime.clone(),
        ApiConfig {
            metrics_elsewhere: false,
            jwt_secret: None,
            rate_limits: RateLimits {
                writes_per_minute: 0,
                injects_per_minute: 0,
            },
            max_body_bytes: 1 << 20,
            sse_heartbeat: Duration::from_secs(15),
            ws_ping: Duration::from_secs(30),
            slack: None,
        },
        None,
        async move {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        },
    ));
    // Every reqwest client runs on rustls' ring provider, installed once per process.
    polaris_sidecar::uplink::install_tls_provider();
    let http = reqwest::Client::new();
    http.post(format!("{base}/projects"))
        .json(&serde_json::json!({"name": "bench", "tags": ["data", "security", "marketing", "sales"]}))
        .send()
        .await?
        .error_for_status()?;
    for c in 0..clients {
        http.post(format!("{base}/projects/bench/sessions"))
            .json(&serde_json::json!({"name": format!("s{c}"), "driver": "user:bench"}))
            .send()
            .await?
            .error_for_status()?;
    }
    // Agents start reading once they have joined: give the host its first reconcile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The heads are fitted in the background after the start: measure ingest once they
    // are, as a server that has been up a while runs.
    if let Some(p) = &watcher {
        let fitted = Instant::now();
        while !p.readiness().ready {
            if fitted.elapsed() > Duration::from_secs(120) {
                return Err("the passive heads were not fitted within 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let t0 = Instant::now();
    let per = events / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base) = (http.clone(), base.clone());
        let texts: Vec<String> = texts.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let text = &texts[(c * per + i) % texts.len()];
                let body = serde_json::json!({"sender": "user:bench", "payload": {
                    "hook_event_name": "UserPromptSubmit", "session_id": format!("cc-{c}"), "prompt": text}});
                let r = http
                    .post(format!("{base}/projects/bench/sessions/s{c}/events"))
                    .json(&body)
                    .send()
                    .await;
                if !r.is_ok_and(|r| r.status().is_success()) {
                    return Err(format!("client {c}: post {i} failed"));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (per * clients) as f64 / t0.elapsed().as_secs_f64();
    let shed = watcher.as_ref().map_or(0, Passive::shed);
    let _ = stop.send(());
    server.await??;
    if let Some(h) = host {
        h.shutdown().await;
    }
    // Its queue is dropped and its threads joined, so nothing of this configuration
    // runs into the next one's measurement.
    if let Some(p) = watcher {
        tokio::task::spawn_blocking(move || p.stop_and_join()).await?;
    }
    runtime.shutdown().await;
    store.close().await;
    Ok((rate, shed))
}
