//! The `polaris` binary as people run it: start-up line, configuration errors, tokens,
//! and SIGTERM losing nothing that was acknowledged.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};

use crate::support::{Backend, Client, SECRET, TestDb};
use polaris_config::DatabaseUrl;

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

pub(crate) fn polaris(args: &[&str]) -> Command {
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
async fn serve(cmd: Command) -> (Child, String) {
    crate::support::spawn_listening(cmd).await
}

pub(crate) fn db_args(db: &TestDb) -> Vec<String> {
    match &db.url {
        DatabaseUrl::Sqlite(p) => vec!["--database".into(), format!("sqlite:{}", p.display())],
        DatabaseUrl::Postgres(s) => vec!["--database".into(), s.expose().to_owned()],
    }
}

pub(crate) async fn sigterm(child: &Child) {
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
    // A method of the client's own making is refused, and counted without its name.
    let brew = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{base}/projects/pj/sessions/s/events"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brew.status(), 405);
    // A search waits for the index to hold every acknowledged event.
    let found = c.get("/search?q=count").await;
    assert_eq!(
        found.json["results"].as_array().map(Vec::len),
        Some(1),
        "{found:?}"
    );
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
    assert!(
        metrics.contains("polaris_search_indexed_total 1"),
        "{metrics}"
    );
    // The post's duration, under its route's pattern rather than its path.
    let posts = metrics
        .lines()
        .find(|l| {
            l.starts_with("polaris_http_request_duration_seconds_count{")
                && l.contains("method=\"POST\"")
                && l.contains("route=\"/projects/{project}/sessions/{session}/events\"")
                && l.contains("status=\"201\"")
        })
        .unwrap_or_else(|| panic!("no request duration for the post: {metrics}"));
    assert!(posts.ends_with(" 1"), "{posts}");
    // A histogram with the server's buckets, which add up across nodes.
    assert!(
        metrics.lines().any(
            |l| l.starts_with("polaris_http_request_duration_seconds_bucket{")
                && l.contains("le=\"0.0005\"")
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("/projects/pj/"), "{metrics}");
    assert!(!metrics.contains("BREW"), "{metrics}");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("polaris_http_request_duration_seconds_count{")
                && l.contains("method=\"other\"")
                && l.contains("status=\"405\"")
        ),
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

    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let http = crate::support::http();
                for i in 0.. {
                    let id = uuid::Uuid::new_v4().to_string();
                    let body = json!({"id": id, "sender": "user:manu",
                        "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("{i}")}});
                    match http.post(format!("{}/projects/pj/sessions/s/events", c.base)).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            acked.push(id);
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        // 503 while shutting down, or the connection refused: stop.
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    // Signal mid-stream, once writing is well under way (however loaded the machine is).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count.load(std::sync::atomic::Ordering::Relaxed) < 200
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

#[tokio::test]
async fn agents_route_reads_json_lines_and_matches_every_labelled_case() {
    use tokio::io::AsyncWriteExt;
    let dataset = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let cases: Vec<serde_json::Value> = std::fs::read_to_string(dataset.join("routing-dev.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut input = String::new();
    for c in &cases {
        input.push_str(&json!({"text": c["text"], "source": c["source"]}).to_string());
        input.push('\n');
    }
    let mut child = polaris(&[
        "agents",
        "route",
        "--agents",
        dataset.join("agents.yaml").to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (c, got) in cases.iter().zip(&lines) {
        assert_eq!(got["mentions"], c["mentions"], "case {}", c["id"]);
    }

    // --explain says why, and an agent never answers itself.
    let mut child = polaris(&[
        "agents",
        "route",
        "--explain",
        "--agents",
        dataset.join("agents.yaml").to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"text\": \"@dean and ops@dean.io\", \"source\": \"response\", \"sender\": \"agent:dean\"}\nnot json\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        !out.status.success(),
        "a bad line makes the exit status non-zero"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["mentions"], json!(["agent:dean"]));
    assert_eq!(first["responders"], json!([]));
    let why = first["explain"].to_string();
    assert!(
        why.contains("never answers itself") && why.contains("e-mail"),
        "{why}"
    );
    assert!(
        stdout.lines().nth(1).unwrap().contains("stdin line 2"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bad_agent_files_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(&file, "agents:\n  - id: agent:dean\n    name: Dean\n  - id: agent:dean.dbt\n    name: dbt\n    parent: agent:deen\n").unwrap();
    let out = polaris(&["agents", "validate", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agents.yaml:6:5: agents[1].parent:"), "{err}");
    let out = polaris(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--agents",
        file.to_str().unwrap(),
    ])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success(), "serve refuses a broken agents file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("agents.yaml:6:5"));
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents.yaml");
    let out = polaris(&["agents", "validate", good.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = polaris(&["agents", "list", "--agents", good.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("agent:dean.dbt") && listing.contains("yaml"),
        "{listing}"
    );
}

/// Editing agents.yaml while the server runs: the new agent joins its floors and answers;
/// a broken edit is reported and changes nothing.
#[tokio::test]
async fn agents_file_edits_take_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(
        &file,
        "agents:\n  - id: agent:dean\n    name: Dean\n    tags: [data]\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (_child, base) = serve(polaris(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--agents",
        file.to_str().unwrap(),
    ]))
    .await;
    let c = Client::new(&base, None);
    c.post(
        "/projects",
        json!({"name": "pj", "tags": ["data", "security"]}),
    )
    .await;
    c.post("/projects/pj/sessions", json!({"name": "s"})).await;
    let agents = |v: serde_json::Value| -> Vec<String> {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["agent"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        agents(c.get("/projects/pj/agents").await.json),
        ["agent:dean"]
    );

    std::fs::write(&file, "agents:\n  - id: agent:dean\n    name: Dean\n    tags: [data]\n  - id: agent:sage\n    name: Sage\n    tags: [security]\n    tools:\n      secrets: {}\n").unwrap();
    crate::support::eventually(15, || async {
        agents(c.get("/projects/pj/agents").await.json)
            .contains(&"agent:sage".to_owned())
            .then_some(())
    })
    .await;
    let q = c
        .prompt(
            "pj",
            "s",
            "user:manu",
            "@sage check ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        )
        .await;
    let id = q.json["id"].clone();
    crate::support::eventually(15, || async {
        let all = c.get("/projects/pj/sessions/s/messages").await.json;
        all.as_array()
            .unwrap()
            .iter()
            .any(|e| e["payload"]["in_reply_to"] == id && e["sender"] == "agent:sage")
            .then_some(())
    })
    .await;

    // A broken edit keeps the agents as they were.
    std::fs::write(&file, "agents:\n  - id: agent:dean\n    nme: Dean\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.get("/agents").await.json.as_array().unwrap().len(), 2);

    // An agent removed from the file leaves its floors (a leave event) and stops.
    std::fs::write(
        &file,
        "agents:\n  - id: agent:dean\n    name: Dean\n    tags: [data]\n",
    )
    .unwrap();
    crate::support::eventually(15, || async {
        let floor = c.get("/projects/pj/events?after=0&limit=100").await.json;
        floor["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| {
                e["kind"] == "leave"
                    && e["payload"]["agent"] == "agent:sage"
                    && e["payload"]["reason"] == "agent removed"
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        agents(c.get("/projects/pj/agents").await.json),
        ["agent:dean"]
    );
}

/// `--metrics-listen`: `/metrics` on an address of its own without a token, while the
/// API's `/metrics` needs one like every other route; the node's figures include the
/// leases it holds.
#[tokio::test]
async fn metrics_on_their_own_address_while_the_api_needs_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        "agents:\n  - id: agent:dean\n    name: Dean\n    description: Data engineering\n    tags: [data]\n",
    )
    .unwrap();
    let mut cmd = polaris(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--agents",
        agents.to_str().unwrap(),
    ]);
    cmd.env("POLARIS_JWT_SECRET", SECRET);
    let mut child = cmd.spawn().unwrap();
    let (base, scrape) = crate::support::api_and_metrics(&mut child).await;
    assert_ne!(base, scrape);

    let api = crate::support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let c = Client::new(
        &base,
        Some(crate::support::token(
            "acme",
            "user:ops",
            polaris_runtime::auth::Role::Admin,
        )),
    );
    assert_eq!(c.get("/metrics").await.status, 200);
    let r = c
        .post(
            "/projects",
            serde_json::json!({"name": "pj", "tags": ["data"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    c.project_session("pj", "s").await;
    c.prompt("pj", "s", "user:ops", "count me").await;

    let text = crate::support::eventually(30, || async {
        let t = crate::support::http()
            .get(format!("{scrape}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (t.contains("polaris_events_committed_total") && t.contains("polaris_leases_held 1"))
            .then_some(t)
    })
    .await;
    assert!(
        text.contains("polaris_lease_held{lease=\"agent:dean\"} 1"),
        "{text}"
    );
    // Only metrics there: the API is not reachable through the scraper's address.
    let other = crate::support::http()
        .get(format!("{scrape}/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
