//! End-to-end latency of a mention: from the start of the POST of `@dean …` to Dean's
//! answer arriving on a WebSocket of that session, with four agents on every floor.
//!
//!   polaris serve --agents benches/agents-bench.yaml --config <rate limits off> &
//!   cargo bench --bench agent_latency -- --base http://127.0.0.1:4321 --floors 100 --questions 2000 --rate 100
//!
//! Prints one line `RESULT {json}`: the latency percentiles of Dean's first answer to each
//! question, `answered`, `unanswered` (no answer from Dean), `duplicates` (answers past the
//! first to one question, from any agent) and `post_errors`. They are counted once a
//! marker question asked on every floor after the load has been answered: Dean reads each
//! floor in order, so his answers to the questions before it are on the socket by then.

#[path = "common/mod.rs"]
mod common;

use common::{arg, pct};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

/// What the sockets saw.
#[derive(Default)]
struct Tally {
    /// Questions posted, with when their POST started.
    asked: HashMap<String, Instant>,
    /// Answers from any agent, per question.
    answers: HashMap<String, u32>,
    /// Questions Dean answered.
    by_dean: HashSet<String>,
    /// Latency of Dean's first answer to each question, in ms.
    lat: Vec<f64>,
    /// Marker questions not answered yet.
    markers: HashSet<String>,
}

impl Tally {
    fn answer(&mut self, q: &str, by_dean: bool, at: Instant) {
        if by_dean && self.markers.remove(q) {
            return;
        }
        let Some(t0) = self.asked.get(q) else { return };
        *self.answers.entry(q.to_owned()).or_default() += 1;
        if by_dean && self.by_dean.insert(q.to_owned()) {
            self.lat.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = arg(&args, "--base", "http://127.0.0.1:4321");
    let floors: usize = arg(&args, "--floors", "100").parse()?;
    let questions: usize = arg(&args, "--questions", "2000").parse()?;
    let rate: f64 = arg(&args, "--rate", "100").parse()?;
    let run = format!("lat{}", std::process::id());
    let http = {
        polaris_sidecar::uplink::install_tls_provider();
        reqwest::Client::new()
    };

    // Floors tagged for all four agents, a session each, a socket on each session.
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut readers = Vec::new();
    for f in 0..floors {
        let p = format!("{run}-{f}");
        http.post(format!("{base}/projects"))
            .json(
                &serde_json::json!({"name": p, "tags": ["data", "marketing", "sales", "security"]}),
            )
            .send()
            .await?
            .error_for_status()?;
        http.post(format!("{base}/projects/{p}/sessions"))
            .json(&serde_json::json!({"name": "s"}))
            .send()
            .await?
            .error_for_status()?;
        let url = format!(
            "{}/projects/{p}/sessions/s/ws",
            base.replacen("http", "ws", 1)
        );
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let tally = tally.clone();
        readers.push(tokio::spawn(async move {
            let (_, mut rx) = ws.split();
            while let Some(Ok(m)) = rx.next().await {
                let Message::Text(t) = m else { continue };
                let now = Instant::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
                    continue;
                };
                if v["source"] != "agent" {
                    continue;
                }
                let Some(q) = v["payload"]["in_reply_to"].as_str() else {
                    continue;
                };
                tally
                    .lock()
                    .await
                    .answer(q, v["sender"] == "agent:dean", now);
            }
        }));
    }
    // Let the agents open their floors.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut errors = 0usize;
    for i in 0..questions {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let p = format!("{run}-{}", i % floors);
        let id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"id": id, "sender": "user:bench", "payload": {
            "hook_event_name": "UserPromptSubmit", "session_id": "bench",
            "prompt": "@dean how are timestamps named and stored in the warehouse?"}});
        tally.lock().await.asked.insert(id.clone(), Instant::now());
        let r = http
            .post(format!("{base}/projects/{p}/sessions/s/events"))
            .json(&body)
            .send()
            .await;
        if !r.map(|r| r.status().is_success()).unwrap_or(false) {
            errors += 1;
            tally.lock().await.asked.remove(&id);
        }
    }

    // A marker question on every floor, after all the others; once Dean has answered each,
    // every answer he was going to give (or give twice) to an earlier one is in.
    for f in 0..floors {
        let id = uuid::Uuid::new_v4().to_string();
        tally.lock().await.markers.insert(id.clone());
        let body = serde_json::json!({"id": id, "sender": "user:bench", "payload": {
            "hook_event_name": "UserPromptSubmit", "session_id": "bench",
            "prompt": "@dean last one: how are timestamps named?"}});
        http.post(format!("{base}/projects/{run}-{f}/sessions/s/events"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !tally.lock().await.markers.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = tally.lock().await;
    let mut l = t.lat.clone();
    l.sort_by(|a, b| a.total_cmp(b));
    let unanswered = t.asked.keys().filter(|q| !t.by_dean.contains(*q)).count();
    let duplicates: u32 = t.answers.values().map(|n| n.saturating_sub(1)).sum();
    println!(
        "RESULT {}",
        serde_json::json!({
            "test": "agent_latency", "floors": floors, "questions": questions, "rate_per_s": rate,
            "answered": l.len(), "unanswered": unanswered, "duplicates": duplicates,
            "post_errors": errors, "markers_unanswered": t.markers.len(),
            "p50_ms": pct(&l, 0.5), "p90_ms": pct(&l, 0.9), "p99_ms": pct(&l, 0.99), "max_ms": l.last(),
        })
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}
