//! `polaris sidecar status`: what the running sidecar reports, or, when none runs, what
//! its home holds (events waiting in the WAL, dead letters).

use std::net::SocketAddr;
use std::time::Duration;

use polaris_config::Env;
use serde_json::Value;

use crate::config::FloorSettings;
use crate::home::Home;
use crate::uplink::read_dead_letters;
use crate::wire::SECRET_HEADER;

/// Prints the status to stdout.
pub async fn print(
    home: &Home,
    addr: SocketAddr,
    floor: &FloorSettings,
    env: &Env,
) -> anyhow::Result<()> {
    // reqwest is built with TLS and needs the process's rustls provider.
    crate::uplink::install_tls_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let secret = crate::secret::read(home, env)?.unwrap_or_default();
    let live = http
        .get(format!("http://{addr}/status"))
        .header(SECRET_HEADER, secret)
        .send()
        .await;
    if let Ok(r) = live {
        if r.status().as_u16() == 401 {
            anyhow::bail!(
                "the sidecar on {addr} refused the local secret of {} (another home?)",
                home.root().display()
            );
        }
        let v: Value = r.json().await?;
        let up = &v["uplink"];
        println!("sidecar: running on http://{addr}");
        println!(
            "floor: {} ({})",
            up["floor_url"].as_str().unwrap_or("?"),
            if up["floor_reachable"] == true {
                "reachable"
            } else {
                "unreachable"
            }
        );
        println!("pending: {}", up["pending"]);
        println!("delivered: {}", up["delivered"]);
        println!("dead letters: {}", up["dead_letters"]);
        for d in v["recentDeadLetters"].as_array().into_iter().flatten() {
            println!(
                "  {} {} {}/{} {} {}",
                d["t"].as_str().unwrap_or(""),
                d["id"].as_str().unwrap_or(""),
                d["project"].as_str().unwrap_or(""),
                d["session"].as_str().unwrap_or(""),
                d["status"],
                d["error"].as_str().unwrap_or("")
            );
        }
        if let Some(e) = up["last_error"].as_str() {
            println!("last error: {e}");
        }
        println!("sessions: {}", v["sessions"].as_array().map_or(0, Vec::len));
        return Ok(());
    }
    println!("sidecar: not running on http://{addr}");
    let reachable = http
        .get(format!("{}/healthz", floor.url.trim_end_matches('/')))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    println!(
        "floor: {} ({})",
        floor.url,
        if reachable {
            "reachable"
        } else {
            "unreachable"
        }
    );
    let pending = crate::wal::read_pending(home)?;
    println!("pending: {}", pending.len());
    let dead = read_dead_letters(&home.dead_letters())?;
    println!("dead letters: {}", dead.len());
    for d in dead.iter().rev().take(5) {
        println!(
            "  {} {} {}/{} {} {}",
            polaris_protocol::format_ms(&d.t),
            d.id.map(|i| i.to_string()).unwrap_or_default(),
            d.project,
            d.session,
            d.status,
            d.error
        );
    }
    Ok(())
}
