//! `examples/nodes/`: the compose file runs every node with the same command and config,
//! its ports match the config's addresses, and that exact command and config, run twice as
//! processes on one PostgreSQL (secrets as files, addresses on loopback), make two nodes:
//! a write on one reaches a subscriber on the other, each serves `/metrics` without a token
//! on its own address and says it is listening to the other.

use std::path::Path;

use polaris_config::DatabaseUrl;
use polaris_runtime::auth::Role;
use serde_yaml::Value as Yaml;
use tokio::process::Command;

use crate::support::{BIN, Backend, Client, SECRET, TestDb, eventually, http, token};

fn example(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/nodes")
        .join(file)
}

fn command_of(service: &Yaml) -> Vec<String> {
    service["command"]
        .as_sequence()
        .expect("command")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Runs `cmd` with the example's config made local: secrets from `secrets`, data under
/// `dir/name`, loopback addresses on free ports. Answers the process, its API base URL
/// and its metrics base URL.
async fn spawn_node(
    cmd: &[String],
    config: &str,
    dir: &Path,
    secrets: &Path,
    name: &str,
    extra: &[&str],
) -> (tokio::process::Child, String, String) {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let local = config
        .replace("/run/secrets/", &format!("{}/", secrets.display()))
        .replace("/var/lib/polaris", data.to_str().unwrap())
        .replace("0.0.0.0:8080", "127.0.0.1:0")
        .replace("0.0.0.0:9464", "127.0.0.1:0");
    let file = dir.join(format!("polaris-{name}.yaml"));
    std::fs::write(&file, local).unwrap();
    let mut args = cmd.to_vec();
    args[2] = file.to_str().unwrap().to_owned();
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("DATABASE_URL")
        .env_remove("POLARIS_JWT_SECRET")
        .env_remove("POLARIS_LISTEN")
        .env_remove("POLARIS_METRICS_LISTEN")
        .env_remove("POLARIS_AGENTS")
        .env("POLARIS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (api, metrics) = crate::support::api_and_metrics(&mut child).await;
    (child, api, metrics)
}

/// The compose file's command, checked against the config and the compose file's ports
/// and secrets; and the config.
fn checked_example() -> (Vec<String>, String) {
    let text = std::fs::read_to_string(example("compose.yaml")).unwrap();
    let mut doc: Yaml = serde_yaml::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let (a, b) = (&services["node-a"], &services["node-b"]);
    let cmd = command_of(a);
    assert_eq!(cmd, command_of(b), "every node runs the same command");
    assert_eq!(cmd[..2], ["serve", "--config"]);
    let config_in_image = &cmd[2];
    // The image copies examples/ to /etc/polaris/.
    assert_eq!(config_in_image, "/etc/polaris/nodes/polaris.yaml");
    let config = std::fs::read_to_string(example("polaris.yaml")).unwrap();
    let conf: Yaml = serde_yaml::from_str(&config).unwrap();
    let port = |key: &str| -> String {
        conf[key]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    for node in [a, b] {
        let ports: Vec<&str> = node["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(
            ports
                .iter()
                .any(|p| p.ends_with(&format!(":{}", port("listen"))))
        );
        assert!(
            ports
                .iter()
                .any(|p| p.ends_with(&format!(":{}", port("metrics_listen"))))
        );
        let secrets: Vec<&str> = node["secrets"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for s in &secrets {
            assert!(
                doc["secrets"][*s]["file"].is_string(),
                "secret {s} declared"
            );
            assert!(
                config.contains(&format!("file:/run/secrets/{s}")),
                "{s} used"
            );
        }
    }

    (cmd, config)
}

/// Waits until the node's `/metrics` (at `metrics`, its scraper address) shows `line`.
async fn shows(metrics: &str, line: &str) {
    eventually(30, || async {
        let t = http()
            .get(format!("{metrics}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        t.contains(line).then_some(())
    })
    .await;
}

/// A fresh PostgreSQL database and what compose would mount: the secrets as files in a
/// directory (the nodes' data directories go beside it). `None` without PostgreSQL.
async fn mounted() -> Option<(TestDb, tempfile::TempDir, std::path::PathBuf)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let DatabaseUrl::Postgres(url) = &db.url else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("database_url"), url.expose()).unwrap();
    std::fs::write(secrets.join("polaris_jwt"), SECRET).unwrap();
    Some((db, dir, secrets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_example_runs_two_nodes_on_one_database() {
    let (cmd, config) = checked_example();
    let Some((mut db, dir, secrets)) = mounted().await else {
        return;
    };
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        nodes.push(spawn_node(&cmd, &config, dir.path(), &secrets, name, &[]).await);
    }

    let manu = token("acme", "user:manu", Role::Member);
    let on_a = Client::new(&nodes[0].1, Some(manu.clone()));
    let on_b = Client::new(&nodes[1].1, Some(manu));
    on_a.project_session("pj", "s").await;
    let mut ws = on_b
        .ws("/projects/pj/ws?after=0")
        .await
        .expect("ws on node B");
    let r = on_a.prompt("pj", "s", "user:manu", "written on A").await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(ws.next_event().await["payload"]["prompt"], "written on A");
    for (_, _, metrics) in &nodes {
        shows(metrics, "polaris_cluster_listening 1").await;
    }
    ws.close().await;
    for (child, _, _) in &mut nodes {
        let status = crate::support::terminate(child, 30, "a node").await;
        assert!(status.success(), "{status:?}");
    }
    db.drop_db().await;
}

/// `kill -9` of a node under load: every event it acknowledged is on the floor, the other
/// node keeps serving and its subscriber misses nothing, and the named agent the dead node
/// ran moves to the survivor (which answers `@dean` after the lease time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_nothing_acknowledged_and_its_agent_moves() {
    let (cmd, config) = checked_example();
    let Some((mut db, dir, secrets)) = mounted().await else {
        return;
    };
    let agents = dir.path().join("agents.yaml");
    std::fs::write(
        &agents,
        "agents:\n  - id: agent:dean\n    name: Dean\n    description: Data engineering\n    tags: [data]\n",
    )
    .unwrap();
    let extra = ["--agents", agents.to_str().unwrap()];
    // A starts first and takes Dean's lease; B waits as the standby.
    let mut a = spawn_node(&cmd, &config, dir.path(), &secrets, "a", &extra).await;
    let manu = token("acme", "user:manu", Role::Member);
    let on_a = Client::new(&a.1, Some(manu.clone()));
    let r = on_a
        .post(
            "/projects",
            serde_json::json!({"name": "pj", "tags": ["data"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    on_a.project_session("pj", "s").await;
    shows(&a.2, "polaris_lease_held{lease=\"agent:dean\"} 1").await;
    let b = spawn_node(&cmd, &config, dir.path(), &secrets, "b", &extra).await;
    let on_b = Client::new(&b.1, Some(manu));
    let mut ws = on_b
        .ws("/projects/pj/sessions/s/ws?after=0")
        .await
        .expect("ws on B");

    // Writers on A until it dies; every 201 is recorded.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let acked = acked.clone();
        let url = format!("{}/projects/pj/sessions/s/events", a.1);
        let bearer = token("acme", "user:manu", Role::Member);
        tokio::spawn(async move {
            let http = http();
            for k in 0.. {
                let text = format!("load {k}");
                let body = serde_json::json!({"sender": "user:manu", "payload": {
                    "hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": text}});
                let res = http
                    .post(&url)
                    .bearer_auth(&bearer)
                    .json(&body)
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(text),
                    _ => break,
                }
            }
        })
    };
    eventually(30, || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    let pid = a.0.id().unwrap().to_string();
    Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .await
        .unwrap();
    let _ = a.0.wait().await;
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    // B serves on, and its subscriber has every acknowledged event, in order, once.
    let after = on_b.prompt("pj", "s", "user:manu", "after the crash").await;
    assert_eq!(after.status, 201, "{after:?}");
    let mut seen = Vec::new();
    loop {
        let e = ws.next_event().await;
        if e["sender"] != "user:manu" {
            continue;
        }
        let t = e["payload"]["prompt"].as_str().unwrap().to_owned();
        if t == "after the crash" {
            break;
        }
        seen.push(t);
    }
    // Everything acknowledged is there; one more may have committed unanswered.
    assert!(
        seen.len() >= acked.len() && seen.len() <= acked.len() + 1,
        "{} {}",
        seen.len(),
        acked.len()
    );
    assert_eq!(&seen[..acked.len()], &acked[..]);

    // Dean moves to B within the lease time and answers there.
    shows(&b.2, "polaris_lease_held{lease=\"agent:dean\"} 1").await;
    let q = on_b
        .prompt("pj", "s", "user:manu", "@dean are you there?")
        .await;
    let qid = q.json["id"].clone();
    loop {
        let e = ws.next_event().await;
        if e["sender"] == "agent:dean" && e["payload"]["in_reply_to"] == qid {
            break;
        }
    }
    ws.close().await;
    let mut b = b;
    crate::support::terminate(&mut b.0, 30, "node B").await;
    db.drop_db().await;
}
