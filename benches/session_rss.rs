//! Memory with many sessions: creates `--sessions N` sessions (and, with `--events`, posts
//! one prompt to each, which starts its session actor), then prints the server's RSS.
//!
//!   cargo bench --bench session_rss -- --base http://127.0.0.1:4321 --pid PID --sessions 10000 [--events]
//!
//! Prints one line `RESULT {json}` like the shared load generator.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = arg(&args, "--base").unwrap_or_else(|| "http://127.0.0.1:4321".into());
    let pid = arg(&args, "--pid").ok_or("--pid PID is required")?;
    let n: usize = arg(&args, "--sessions")
        .unwrap_or_else(|| "10000".into())
        .parse()?;
    let events = args.iter().any(|a| a == "--events");
    let project = arg(&args, "--project").unwrap_or_else(|| format!("rss-{}", std::process::id()));
    let http = {
        polaris_sidecar::uplink::install_tls_provider();
        reqwest::Client::new()
    };
    let rss_start = rss_kib(&pid);
    let r = http
        .post(format!("{base}/projects"))
        .json(&serde_json::json!({"name": project}))
        .send()
        .await?;
    if !r.status().is_success() && r.status() != 409 {
        return Err(format!("create project: {}", r.status()).into());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (http, base, project, next) = (http.clone(), base.clone(), project.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, reqwest::Error>(());
                    }
                    let name = format!("s-{i:05x}");
                    http.post(format!("{base}/projects/{project}/sessions"))
                        .json(&serde_json::json!({"name": name, "driver": "user:bench", "agent": "agent:claude"}))
                        .send()
                        .await?
                        .error_for_status()?;
                    if events {
                        http.post(format!("{base}/projects/{project}/sessions/{name}/events"))
                            .json(&serde_json::json!({"sender": "user:bench", "payload": {
                                "hook_event_name": "UserPromptSubmit", "session_id": name, "prompt": "hello floor"}}))
                            .send()
                            .await?
                            .error_for_status()?;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = rss_kib(&pid);
    println!(
        "RESULT {}",
        serde_json::json!({
            "test": "session_rss", "sessions": n, "events": events, "seconds": elapsed,
            "rss_kib_start": rss_start, "rss_kib_after": rss_after,
        })
    );
    Ok(())
}
