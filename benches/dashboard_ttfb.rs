//! Dashboard load program (not a timed test): time to first byte of the floors page and
//! of a 20,000-event session's transcript page, signed in with a cookie session, at
//! `--clients` concurrent clients. In this process: a floor (SQLite in a temporary
//! directory, or `--database URL`) with `--floors` floors of five sessions each, one of
//! which holds `--events` events (posted in batches of 1,000).
//!
//!   cargo bench --bench dashboard_ttfb -- --clients 16 --requests 2000 --events 20000
//!
//! Time to first byte is from the start of the request to the response's status line and
//! headers (reqwest's `send`); the body is then read in full before the client's next
//! request. Prints one line `RESULT {json}`.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{arg, pct};
use polaris_config::{DatabaseUrl, RateLimits, Secret};
use polaris_registry::ParticipantId;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::auth::{Role, TokenKeys};
use polaris_runtime::{Runtime, Settings, Store};
use serde_json::{Value, json};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"n": v.len(), "p50_ms": pct(&v, 0.5), "p90_ms": pct(&v, 0.9), "p99_ms": pct(&v, 0.99), "max_ms": v.last()})
}

/// `requests` GETs of `path` spread over `clients` concurrent clients: the TTFB of each.
async fn load(
    http: &reqwest::Client,
    url: String,
    cookie: String,
    clients: usize,
    requests: usize,
) -> Result<Vec<f64>, BoxErr> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, cookie) = (http.clone(), url.clone(), cookie.clone());
        let n = requests / clients + usize::from(c < requests % clients);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = http.get(&url).header("cookie", &cookie).send().await?;
                let ttfb = t.elapsed();
                if r.status() != 200 {
                    return Err(format!("{url}: {}", r.status()).into());
                }
                r.bytes().await?;
                out.push(ttfb.as_secs_f64() * 1000.0);
            }
            Ok::<_, BoxErr>(out)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> Result<(), BoxErr> {
    let args: Vec<String> = std::env::args().collect();
    let clients: usize = arg(&args, "--clients", "16").parse()?;
    let requests: usize = arg(&args, "--requests", "2000").parse()?;
    let events: usize = arg(&args, "--events", "20000").parse()?;
    let floors: usize = arg(&args, "--floors", "10").parse()?;
    let database = arg(&args, "--database", "");

    let dir = tempfile::tempdir()?;
    let url = if database.is_empty() {
        DatabaseUrl::Sqlite(dir.path().join("polaris.db"))
    } else {
        DatabaseUrl::parse(&database)?
    };
    let store = Store::open(&url).await?;
    let runtime = Runtime::start(store.clone(), Settings::default()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let secret = Secret::new(SECRET.into());
    let config = ApiConfig {
        jwt_secret: Some(secret.clone()),
        rate_limits: RateLimits {
            writes_per_minute: 0,
            injects_per_minute: 0,
        },
        ..ApiConfig::default()
    };
    tokio::spawn(api::serve(
        listener,
        runtime.clone(),
        config,
        None,
        std::future::pending(),
    ));
    polaris_sidecar::uplink::install_tls_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(clients * 2)
        .build()?;
    let manu = ParticipantId::parse("user:manu")?;
    let token =
        TokenKeys::new(&secret).mint("acme", &manu, Role::Admin, Duration::from_secs(3600))?;
    let post = |path: String, body: Value| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            if !r.status().is_success() {
                return Err(format!("{path}: {}", r.status()).into());
            }
            Ok::<Value, BoxErr>(r.json().await?)
        }
    };

    // Floors, sessions, a little activity each; one long session.
    for f in 0..floors {
        post("/projects".into(), json!({"name": format!("floor-{f}")})).await?;
        for s in 0..5 {
            post(
                format!("/projects/floor-{f}/sessions"),
                json!({"name": format!("s-{s}")}),
            )
            .await?;
            post(
                format!("/projects/floor-{f}/sessions/s-{s}/events"),
                json!({"sender": "user:manu",
                       "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "b", "prompt": format!("hello from s-{s}")}}),
            )
            .await?;
        }
    }
    let t = Instant::now();
    let mut posted = 0;
    while posted < events {
        let n = (events - posted).min(1000);
        let batch: Vec<Value> = (posted..posted + n)
            .map(|i| {
                if i % 3 == 2 {
                    json!({"sender": "agent:claude",
                           "payload": {"hook_event_name": "PostToolUse", "session_id": "b", "tool_name": "Bash", "tool_input": {"command": format!("cargo test -- case_{i}")}}})
                } else {
                    json!({"sender": if i % 3 == 0 { "user:manu" } else { "agent:claude" },
                           "payload": {"hook_event_name": if i % 3 == 0 { "UserPromptSubmit" } else { "Stop" },
                                       "session_id": "b", "prompt": format!("prompt {i}: why does the nightly job fail?"),
                                       "stop_response": format!("answer {i}: the warehouse credentials rotated.")}})
                }
            })
            .collect();
        post(
            "/projects/floor-0/sessions/s-0/events/batch".into(),
            json!({"events": batch}),
        )
        .await?;
        posted += n;
    }
    eprintln!(
        "{events} events posted in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Sign in as a person does: a one-time link, then the cookie.
    let link =
        api::login_link(&store, "acme", &manu, Role::Admin, Duration::from_secs(600)).await?;
    let r = http
        .post(format!("{base}/ui/login"))
        .header("origin", &base)
        .form(&[("token", link.as_str())])
        .send()
        .await?;
    let cookie = r
        .headers()
        .get("set-cookie")
        .ok_or("no cookie")?
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();

    let floors_url = format!("{base}/");
    let transcript_url = format!("{base}/ui/floors/floor-0/sessions/s-0");
    let page = http
        .get(&transcript_url)
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    let floors_page = http
        .get(&floors_url)
        .header("cookie", &cookie)
        .send()
        .await?
        .text()
        .await?;
    // Warm up (connections, caches), then measure each page on its own.
    load(
        &http,
        floors_url.clone(),
        cookie.clone(),
        clients,
        clients * 4,
    )
    .await?;
    load(
        &http,
        transcript_url.clone(),
        cookie.clone(),
        clients,
        clients * 4,
    )
    .await?;
    let t = Instant::now();
    let f = load(&http, floors_url, cookie.clone(), clients, requests).await?;
    let f_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = load(&http, transcript_url, cookie, clients, requests).await?;
    let s_secs = t.elapsed().as_secs_f64();
    println!(
        "RESULT {}",
        json!({
            "clients": clients,
            "requests": requests,
            "events_in_session": events,
            "floors": floors,
            "store": if database.is_empty() { "sqlite" } else { "postgres" },
            "floors_page": {"ttfb": summary(f), "pages_per_s": requests as f64 / f_secs, "bytes": floors_page.len()},
            "transcript_page": {"ttfb": summary(s), "pages_per_s": requests as f64 / s_secs, "bytes": page.len()},
        })
    );
    runtime.shutdown().await;
    Ok(())
}
