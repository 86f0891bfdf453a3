//! Sidecar load program (not a timed test). Two modes:
//!
//! * `ack` (default): N concurrent clients post hook events to a sidecar's `/events`;
//!   prints acknowledged events/s and ack latency p50/p99. Every ack is an fsynced WAL
//!   append (group commit); the floor drains concurrently.
//! * `drain`: the floor is down while `--events` events are accepted, then comes up;
//!   prints how long the sidecar takes to deliver the backlog, then reads the session back
//!   from the floor (paged by seq) and reports, by event id, the acknowledged events that
//!   are not there (`lost`) and those there more than once (`doubled`), and events that
//!   are there under more than one id (`doubled_payloads`: the same numbered event resent
//!   as a new one).
//!
//!   cargo bench --bench sidecar_ack -- --mode ack --clients 64 --events 100000
//!   cargo bench --bench sidecar_ack -- --mode drain --events 100000
//!
//! By default it runs a sidecar and a SQLite floor in this process (temporary homes);
//! `--sidecar URL --secret S --cc ID` points it at a running sidecar instead (`ack` mode,
//! with window `ID` already connected). Prints one line `RESULT {json}`.

#[path = "common/mod.rs"]
mod common;

use common::{arg, pct};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use polaris_config::RateLimits;
use polaris_runtime::Store;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings};
use polaris_sidecar::home::Home;
use serde_json::{Value, json};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// An in-process floor on SQLite at `addr` (port 0 = any).
async fn floor(dir: &std::path::Path, addr: &str) -> Result<String, BoxErr> {
    let url = polaris_config::DatabaseUrl::Sqlite(dir.join("floor.db"));
    let store = Store::open(&url).await?;
    let runtime = Runtime::start(
        store,
        Settings {
            session_idle: Duration::from_secs(300),
            subscriber_buffer: 1024,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = ApiConfig {
        metrics_elsewhere: false,
        slack: None,
        jwt_secret: None,
        rate_limits: RateLimits {
            writes_per_minute: 0,
            injects_per_minute: 0,
        },
        max_body_bytes: 4 << 20,
        sse_heartbeat: Duration::from_secs(15),
        ws_ping: Duration::from_secs(30),
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

/// An in-process sidecar in `home` delivering to `floor_url`; returns its URL and secret.
async fn sidecar(home: &std::path::Path, floor_url: &str) -> Result<(String, String), BoxErr> {
    let home = Home::at(home);
    let secret = polaris_sidecar::secret::load_or_create(&home, &polaris_config::Env::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let world = polaris_sidecar::SidecarWorld {
        home,
        floor: polaris_sidecar::FloorClient::new(floor_url, None)?,
        secret: secret.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = polaris_sidecar::run(listener, world, std::future::pending()).await {
            eprintln!("sidecar: {e:#}");
        }
    });
    Ok((base, secret))
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    path: &str,
    body: &Value,
) -> Result<Value, BoxErr> {
    let r = http
        .post(format!("{base}{path}"))
        .header("x-polaris-daemon-secret", secret)
        .json(body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {v}").into());
    }
    Ok(v)
}

/// Connects window `cc` and claims it, as the MCP tool and its hook would.
async fn join(http: &reqwest::Client, base: &str, secret: &str, cc: &str) -> Result<(), BoxErr> {
    post(
        http,
        base,
        secret,
        "/connect",
        &json!({"ccSessionId": format!("mcp-{cc}"), "project": "bench", "user": "user:bench", "session": "s"}),
    )
    .await?;
    post(
        http,
        base,
        secret,
        "/events",
        &json!({"hook_event_name": "PostToolUse", "session_id": cc,
                "tool_name": "mcp__polaris__polaris_connect", "tool_input": {}}),
    )
    .await?;
    Ok(())
}

fn event(cc: &str, n: usize) -> Value {
    json!({"hook_event_name": "PostToolUse", "session_id": cc, "tool_name": "Bash",
           "tool_input": {"command": format!("cargo test --package bench -- case_{n}")},
           "tool_response": {"stdout": "test result: ok. 1 passed", "exit_code": 0}})
}

/// What [`load`] measured.
struct Loaded {
    elapsed: Duration,
    /// Ack latencies, ms, sorted.
    lat: Vec<f64>,
    errors: usize,
    /// The ids the sidecar acknowledged, with the number of each event.
    acked: Vec<(String, usize)>,
}

/// Posts `total` events from `clients` concurrent clients.
async fn load(
    base: &str,
    secret: &str,
    cc: &str,
    clients: usize,
    total: usize,
) -> Result<Loaded, BoxErr> {
    let http = {
        polaris_sidecar::uplink::install_tls_provider();
        reqwest::Client::builder()
    }
    .pool_max_idle_per_host(clients)
    .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, errors) = (http.clone(), next.clone(), errors.clone());
        let (base, secret, cc) = (base.to_owned(), secret.to_owned(), cc.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut acked) = (Vec::new(), Vec::new());
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return (lat, acked);
                }
                let t = Instant::now();
                match post(&http, &base, &secret, "/events", &event(&cc, n)).await {
                    Ok(v) if v["status"] == "accepted" => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        acked.push((v["id"].as_str().unwrap_or_default().to_owned(), n));
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let (mut lat, mut acked) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, a) = t.await?;
        lat.extend(l);
        acked.extend(a);
    }
    let elapsed = t0.elapsed();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(Loaded {
        elapsed,
        lat,
        errors: errors.load(Ordering::Relaxed),
        acked,
    })
}

/// Every event of `project`/`session` on the floor, read in seq pages.
async fn read_back(
    http: &reqwest::Client,
    floor: &str,
    project: &str,
    session: &str,
) -> Result<Vec<Value>, BoxErr> {
    let (mut events, mut after) = (Vec::new(), 0i64);
    loop {
        let page: Value = http
            .get(format!(
                "{floor}/projects/{project}/sessions/{session}/events?after={after}&limit=1000"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let got = page["events"].as_array().cloned().unwrap_or_default();
        let next = page["next_after"].as_i64().unwrap_or(after);
        events.extend(got);
        if page["has_more"] != true || next <= after {
            return Ok(events);
        }
        after = next;
    }
}

/// `(lost, doubled, doubled_payloads)`: acknowledged ids missing from `events`, ids in it
/// more than once, and numbered events in it under more than one id.
fn check_delivery(acked: &[(String, usize)], events: &[Value]) -> (usize, usize, usize) {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut ids_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in events {
        let id = e["id"].as_str().unwrap_or_default();
        *by_id.entry(id).or_default() += 1;
        if let Some(cmd) = e["payload"]["tool_input"]["command"].as_str() {
            ids_of.entry(cmd).or_default().push(id);
        }
    }
    let lost = acked
        .iter()
        .filter(|(id, _)| !by_id.contains_key(id.as_str()))
        .count();
    let doubled = by_id.values().filter(|n| **n > 1).count();
    let doubled_payloads = ids_of
        .values()
        .filter(|ids| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            ids.len() > 1
        })
        .count();
    (lost, doubled, doubled_payloads)
}

async fn pending(http: &reqwest::Client, base: &str, secret: &str) -> Result<u64, BoxErr> {
    let v: Value = http
        .get(format!("{base}/status"))
        .header("x-polaris-daemon-secret", secret)
        .send()
        .await?
        .json()
        .await?;
    v["uplink"]["pending"]
        .as_u64()
        .ok_or_else(|| "no pending count in /status".into())
}

#[tokio::main]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let mode = arg(&args, "--mode", "ack");
    let clients: usize = arg(&args, "--clients", "64").parse()?;
    let events: usize = arg(&args, "--events", "100000").parse()?;
    let dir = tempfile::tempdir()?;
    let http = {
        polaris_sidecar::uplink::install_tls_provider();
        reqwest::Client::new()
    };
    match mode.as_str() {
        "ack" => {
            let (base, secret, cc) = match args.iter().position(|a| a == "--sidecar") {
                Some(_) => (
                    arg(&args, "--sidecar", ""),
                    arg(&args, "--secret", ""),
                    arg(&args, "--cc", "bench"),
                ),
                None => {
                    let floor_url = floor(dir.path(), "127.0.0.1:0").await?;
                    let (base, secret) = sidecar(&dir.path().join("home"), &floor_url).await?;
                    join(&http, &base, &secret, "bench").await?;
                    (base, secret, "bench".to_owned())
                }
            };
            let Loaded {
                elapsed,
                lat,
                errors,
                ..
            } = load(&base, &secret, &cc, clients, events).await?;
            println!(
                "RESULT {}",
                json!({
                    "test": "sidecar_ack", "clients": clients, "events": events,
                    "acked": lat.len(), "errors": errors,
                    "acked_per_s": (lat.len() as f64 / elapsed.as_secs_f64()).round(),
                    "p50_ms": pct(&lat, 0.5), "p99_ms": pct(&lat, 0.99), "max_ms": lat.last(),
                })
            );
        }
        "drain" => {
            // A port with nothing on it: the floor is down while events are accepted.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let floor_url = format!("http://{port}");
            let (base, secret) = sidecar(&dir.path().join("home"), &floor_url).await?;
            join(&http, &base, &secret, "bench").await?;
            let loaded = load(&base, &secret, "bench", clients, events).await?;
            let queued = pending(&http, &base, &secret).await?;
            let t0 = Instant::now();
            floor(dir.path(), &port.to_string()).await?;
            loop {
                if pending(&http, &base, &secret).await? == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let drained = t0.elapsed();
            let on_floor = read_back(&http, &floor_url, "bench", "s").await?;
            let (lost, doubled, doubled_payloads) = check_delivery(&loaded.acked, &on_floor);
            println!(
                "RESULT {}",
                json!({
                    "test": "sidecar_drain", "events": events, "errors": loaded.errors,
                    "queued": queued, "acked": loaded.acked.len(), "on_floor": on_floor.len(),
                    "lost": lost, "doubled": doubled, "doubled_payloads": doubled_payloads,
                    "accept_s": loaded.elapsed.as_secs_f64(), "drain_s": drained.as_secs_f64(),
                    "drained_per_s": (queued as f64 / drained.as_secs_f64()).round(),
                })
            );
        }
        other => return Err(format!("--mode {other}: expected ack or drain").into()),
    }
    Ok(())
}
