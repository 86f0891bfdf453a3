//! Slack bridge load program (not a timed test). In this process: a floor (SQLite in a
//! temporary directory, or `--database URL`), its Slack bridge at Slack's default pace (one
//! message per second per channel), and a local server speaking Slack's Web API (the test
//! suite's). Three measurements:
//!
//! * **outbound**: `--floors` floors, each sent one prompt every 1.1 s (under Slack's rate),
//!   `--rounds` times: from the start of the POST that commits a prompt to the
//!   `chat.postMessage` call carrying it arriving at "Slack".
//! * **inbound**: `--messages` signed Events API requests (`@s-1 …` in a floor's channel),
//!   one every 20 ms: from the start of the request to the inject on the floor (a
//!   subscriber of the floor sees it).
//! * **burst**: `--burst` prompts in one session, posted in batches of 100 as fast as the
//!   API takes them: the time until Slack has every one, the number of messages, and
//!   whether every prompt arrived once, in order.
//!
//!   cargo bench --bench slack_latency -- --floors 20 --rounds 25 --messages 500 --burst 1000
//!
//! Prints one line `RESULT {json}`.

#[path = "common/mod.rs"]
mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/slack.rs"]
mod fake;

use common::{arg, pct};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake::{FakeSlack, event_callback, sign};
use futures::StreamExt;
use polaris_config::{DatabaseUrl, RateLimits, Secret, SlackConfig};
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings, Start, Store, SubscriptionSpec};
use polaris_slack::{BridgeOptions, SlackBridge};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const SIGNING: &str = "bench-signing-secret";

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"n": v.len(), "p50_ms": pct(&v, 0.5), "p90_ms": pct(&v, 0.9), "p99_ms": pct(&v, 0.99), "max_ms": v.last()})
}

/// Every line of every section a message carries.
fn lines(call: &Value) -> Vec<String> {
    call["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let floors: usize = arg(&args, "--floors", "20").parse()?;
    let rounds: usize = arg(&args, "--rounds", "25").parse()?;
    let messages: usize = arg(&args, "--messages", "500").parse()?;
    let burst: usize = arg(&args, "--burst", "1000").parse()?;
    let database = arg(&args, "--database", "");

    let fake = FakeSlack::start().await;
    // Slack's own pace for a channel: a post sooner than a second after the last is a 429.
    fake.enforce_channel_rate(Duration::from_secs(1));
    let dir = tempfile::tempdir()?;
    let url = if database.is_empty() {
        DatabaseUrl::Sqlite(dir.path().join("polaris.db"))
    } else {
        DatabaseUrl::parse(&database)?
    };
    let store = Store::open(&url).await?;
    let runtime = Runtime::start(store, Settings::default()).await?;
    let config = SlackConfig {
        bot_token: Secret::new(FakeSlack::BOT_TOKEN.into()),
        signing_secret: Some(Secret::new(SIGNING.into())),
        app_token: None,
        api_url: fake.api_url(),
        org: "default".into(),
        post_interval: Duration::from_secs(1),
    };
    let bridge = SlackBridge::start(runtime.clone(), BridgeOptions::new(config))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_config = ApiConfig {
        metrics_elsewhere: false,
        rate_limits: RateLimits {
            writes_per_minute: 0,
            injects_per_minute: 0,
        },
        slack: Some(bridge.api()),
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
    let post = |path: String, body: Value| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .post(format!("{base}{path}"))
                .json(&body)
                .send()
                .await?;
            if !r.status().is_success() {
                return Err(format!("{path}: {}", r.status()).into());
            }
            Ok::<Value, BoxErr>(r.json().await?)
        }
    };

    // Floors and their channels.
    let mut channels = Vec::new();
    for f in 0..floors {
        post("/projects".into(), json!({"name": format!("f{f}")})).await?;
        post(format!("/projects/f{f}/sessions"), json!({"name": "s-1"})).await?;
    }
    for f in 0..floors {
        loop {
            let p: Value = http
                .get(format!("{base}/projects/f{f}"))
                .send()
                .await?
                .json()
                .await?;
            if let Some(c) = p["slack_channel_id"].as_str() {
                channels.push(c.to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Outbound: one prompt per floor per round, rounds 1.1 s apart.
    let mut sent: HashMap<String, Instant> = HashMap::new();
    for r in 0..rounds {
        for f in 0..floors {
            let text = format!("out-{f}-{r}");
            sent.insert(text.clone(), Instant::now());
            let body = json!({"sender": "user:bench", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": text}});
            post(format!("/projects/f{f}/sessions/s-1/events"), body).await?;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outbound = Vec::new();
    for call in fake.calls_of("chat.postMessage") {
        for line in lines(&call.params) {
            if let Some(t0) = sent.remove(&line) {
                outbound.push(call.at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
            }
        }
    }
    let outbound_missing = sent.len();

    // Inbound: signed events in floor 0's channel, seen on the floor.
    fake.add_user("U0BENCH", "bench", "Bench Person", "bench", None);
    let key = runtime
        .directory()
        .floors("default")
        .await?
        .into_iter()
        .find(|k| &*k.name == "f0")
        .ok_or("floor f0")?;
    let spec = SubscriptionSpec {
        project: key,
        session: Some("s-1".into()),
        start: Start::Now,
    };
    let mut stream = runtime.subscribe(spec).await?.boxed();
    let asked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = {
        let asked = asked.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while lat.len() < messages {
                let Some(Ok(c)) = stream.next().await else {
                    break;
                };
                let content = c.event.payload_value()["content"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                if let Some(t0) = asked.lock().await.remove(&content) {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            lat
        })
    };
    for i in 0..messages {
        let content = format!("in-{i}");
        let event = fake.human_message(&channels[0], "U0BENCH", &format!("@s-1 {content}"), None);
        let ts = event["ts"].as_str().unwrap_or("0").replace('.', "");
        let body = event_callback(&format!("Ev{ts}"), event).to_string();
        let now = chrono::Utc::now().timestamp();
        asked.lock().await.insert(content, Instant::now());
        let r = http
            .post(format!("{base}/slack/events"))
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", sign(SIGNING, now, &body))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(format!("events api: {}", r.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let inbound = tokio::time::timeout(Duration::from_secs(30), seen).await??;
    let inbound_missing = asked.lock().await.len();

    // Burst: one session, as fast as the API takes it.
    post("/projects".into(), json!({"name": "burst"})).await?;
    post("/projects/burst/sessions".into(), json!({"name": "s-1"})).await?;
    let channel = loop {
        let p: Value = http
            .get(format!("{base}/projects/burst"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(c) = p["slack_channel_id"].as_str() {
            break c.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let started = Instant::now();
    for b in 0..burst.div_ceil(100) {
        let events: Vec<Value> = (b * 100..((b + 1) * 100).min(burst))
            .map(|i| json!({"sender": "user:bench", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("b-{i}")}}))
            .collect();
        post(
            "/projects/burst/sessions/s-1/events/batch".into(),
            json!({"events": events}),
        )
        .await?;
    }
    let committed = started.elapsed();
    let last = format!("b-{}", burst - 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (got, count, done_at) = loop {
        let calls: Vec<_> = fake
            .calls_of("chat.postMessage")
            .into_iter()
            .filter(|c| c.status == 200 && c.params["channel"] == channel.as_str())
            .collect();
        let got: Vec<String> = calls.iter().flat_map(|c| lines(&c.params)).collect();
        if got.contains(&last) || Instant::now() > deadline {
            let at = calls.last().map(|c| c.at);
            break (got, calls.len(), at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let expected: Vec<String> = (0..burst).map(|i| format!("b-{i}")).collect();
    let burst_ms = done_at.map(|t| t.saturating_duration_since(started).as_secs_f64() * 1000.0);
    let result = json!({
        "store": if database.is_empty() { "sqlite" } else { "postgres" },
        "outbound_commit_to_post": summary(outbound),
        "outbound_missing": outbound_missing,
        "inbound_event_to_floor": summary(inbound),
        "inbound_missing": inbound_missing,
        "burst": {
            "events": burst,
            "committed_ms": committed.as_secs_f64() * 1000.0,
            "all_in_slack_ms": burst_ms,
            "messages": count,
            "in_order_once": got == expected,
            "lost": expected.iter().filter(|e| !got.contains(e)).count(),
        },
        "rate_limited": fake.calls_of("chat.postMessage").iter().filter(|c| c.status == 429).count(),
    });
    println!("RESULT {result}");
    bridge.shutdown().await;
    runtime.shutdown().await;
    Ok(())
}
