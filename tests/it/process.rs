//! The `polaris` binary as people run it: start-up line, configuration errors, tokens,
//! and SIGTERM losing nothing that was acknowledged.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Backend, Client, SECRET, TestDb};
use polaris_config::DatabaseUrl;

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

fn polaris(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("POLARIS_JWT_SECRET")
        .env_remove("POLARIS_CONFIG")
        .env_remove("POLARIS_LISTEN")
        .env_remove("POLARIS_DATA_DIR")
        .env("POLARIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Starts `polaris serve` and returns it with its base URL (read from its first line).
async fn serve(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.spawn().expect("spawn polaris");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line within 30 s")
        .expect("read")
        .expect("polaris printed nothing");
    let base = line
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

fn db_args(db: &TestDb) -> Vec<String> {
    match &db.url {
        DatabaseUrl::Sqlite(p) => vec!["--database".into(), format!("sqlite:{}", p.display())],
        DatabaseUrl::Postgres(s) => vec!["--database".into(), s.expose().to_owned()],
    }
}

async fn sigterm(child: &Child) {
    let pid = child.id().expect("pid").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn serve_prints_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (mut child, base) = serve(polaris(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ]))
    .await;
    let c = Client::new(&base, None);
    assert_eq!(c.get("/healthz").await.json["store"], "sqlite");
    c.project_session("pj", "s").await;
    c.prompt("pj", "s", "user:manu", "count me").await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("polaris_events_committed_total 1"),
        "{metrics}"
    );
    assert!(dir.path().join("polaris.db").exists());
    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn bad_configuration_names_the_file_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("polaris.yaml");
    std::fs::write(&file, "listen: 127.0.0.1:0\nsessions:\n  idle_timeot: 5m\n").unwrap();
    let out = polaris(&["serve", "--config", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("polaris.yaml:3:"), "{err}");
    assert!(
        err.contains("sessions") && err.contains("idle_timeot"),
        "{err}"
    );

    let out = polaris(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("POLARIS_JWT_SECRET") && err.contains("loopback"),
        "{err}"
    );

    let out = polaris(&["serve", "--database", "mysql://x"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--database / DATABASE_URL"));
}

#[tokio::test]
async fn minted_tokens_are_accepted_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = polaris(&[
        "token",
        "--org",
        "acme",
        "--participant",
        "user:manu",
        "--ttl",
        "1h",
    ])
    .env("POLARIS_JWT_SECRET", SECRET)
    .output()
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = polaris(&["token", "--org", "acme", "--participant", "user:manu"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("POLARIS_JWT_SECRET"));

    let mut cmd = polaris(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    cmd.env("POLARIS_JWT_SECRET", SECRET);
    let (_child, base) = serve(cmd).await;
    let manu = Client::new(&base, Some(token));
    let r = manu.post("/projects", json!({"name": "pj"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(Client::new(&base, None).get("/projects").await.status, 401);
}

/// Writers post with their own ids until the server goes away; every id that got a 2xx
/// must be on the floor after a restart.
async fn sigterm_loses_nothing_acknowledged(backend: Backend) {
    let Some(mut db) = TestDb::new(backend).await else {
        return;
    };
    let args = db_args(&db);
    let mut all: Vec<&str> = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend(args.iter().map(String::as_str));
    let (mut child, base) = serve(polaris(&all)).await;
    let c = Client::new(&base, None);
    c.project_session("pj", "s").await;

    let writers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let http = reqwest::Client::new();
                for i in 0.. {
                    let id = uuid::Uuid::new_v4().to_string();
                    let body = json!({"id": id, "sender": "user:manu",
                        "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("{i}")}});
                    match http.post(format!("{}/projects/pj/sessions/s/events", c.base)).json(&body).send().await {
                        Ok(r) if r.status().is_success() => acked.push(id),
                        // 503 while shutting down, or the connection refused: stop.
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&child).await;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        acked.len() > 50,
        "too few events before the signal: {}",
        acked.len()
    );

    let (_child, base) = serve(polaris(&all)).await;
    let events = Client::new(&base, None)
        .get("/projects/pj/messages")
        .await
        .json;
    let stored: std::collections::HashSet<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for id in &acked {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged {id} lost in shutdown"
        );
    }
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    drop(_child);
    db.drop_db().await;
}

#[tokio::test]
async fn sigterm_loses_nothing_acknowledged_sqlite() {
    sigterm_loses_nothing_acknowledged(Backend::Sqlite).await;
}

#[tokio::test]
async fn sigterm_loses_nothing_acknowledged_postgres() {
    sigterm_loses_nothing_acknowledged(Backend::Postgres).await;
}
