//! Two nodes on one PostgreSQL (not a timed test): prompts posted to node A, received on a
//! floor WebSocket opened on node B. Latency is from the start of each POST to node A to
//! the event's arrival on node B's socket; node B commits nothing, so every event reaches it
//! through node A's `appended` notice and a read from the store.
//!
//!   cargo bench --bench cross_node -- --database postgres://postgres@127.0.0.1/polaris_bench_nodes \
//!       --events 2000 --rate 200
//!
//! The database must exist and be empty. Prints one line `RESULT {json}`.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{arg, pct};
use futures::StreamExt;
use polaris_config::{DatabaseUrl, RateLimits};
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings, Store};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// A node: its own store pool, runtime and HTTP port.
async fn node(url: &DatabaseUrl) -> Result<String, BoxErr> {
    let store = Store::open(url).await?;
    let runtime = Runtime::start(store, Settings::default()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = ApiConfig {
        metrics_elsewhere: false,
        rate_limits: RateLimits {
            writes_per_minute: 0,
            injects_per_minute: 0,
        },
        ..ApiConfig::default()
    };
    tokio::spawn(api::serve(
        listener,
        runtime,
        config,
        None,
        std::future::pending(),
    ));
    Ok(base)
}

#[tokio::main]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let database = arg(&args, "--database", "");
    let events: usize = arg(&args, "--events", "2000").parse()?;
    let rate: f64 = arg(&args, "--rate", "200").parse()?;
    if database.is_empty() {
        return Err("--database postgres://… is required (SQLite is one node)".into());
    }
    let url = DatabaseUrl::parse(&database)?;
    let a = node(&url).await?;
    let b = node(&url).await?;
    polaris_sidecar::uplink::install_tls_provider();
    let http = reqwest::Client::new();
    http.post(format!("{a}/projects"))
        .json(&json!({"name": "nodes"}))
        .send()
        .await?;
    http.post(format!("{a}/projects/nodes/sessions"))
        .json(&json!({"name": "s-1"}))
        .send()
        .await?;

    let ws_url = format!("{}/projects/nodes/ws", b.replacen("http", "ws", 1));
    let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let (_tx, mut rx) = ws.split();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events);
            let mut order_ok = true;
            let mut last = -1i64;
            while lat.len() < events {
                let Some(Ok(Message::Text(t))) = rx.next().await else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                let at = Instant::now();
                let Some(p) = v["payload"]["prompt"].as_str() else {
                    continue;
                };
                let seq = v["seq"].as_i64().unwrap_or(0);
                order_ok &= seq > last;
                last = seq;
                if let Some(t0) = sent.lock().await.remove(p) {
                    lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                }
            }
            (lat, order_ok)
        })
    };
    // A moment for node B's stream to be live before the first post.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for i in 0..events {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let text = format!("n{i}");
        sent.lock().await.insert(text.clone(), Instant::now());
        let body = json!({"sender": "user:bench", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": text}});
        let h = http.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let _ = h
                .post(format!("{a}/projects/nodes/sessions/s-1/events"))
                .json(&body)
                .send()
                .await;
        });
    }
    let (mut lat, order_ok) = tokio::time::timeout(Duration::from_secs(60), reader).await??;
    lat.sort_by(f64::total_cmp);
    let result = json!({
        "events": events,
        "rate_per_s": rate,
        "received_on_b": lat.len(),
        "in_seq_order": order_ok,
        "p50_ms": pct(&lat, 0.5),
        "p90_ms": pct(&lat, 0.9),
        "p99_ms": pct(&lat, 0.99),
        "max_ms": lat.last(),
    });
    println!("RESULT {result}");
    Ok(())
}
