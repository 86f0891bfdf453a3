//! `polaris agent run` as an operator runs it: Dean as a process of its own beside the
//! floor, a second one as a hot standby, kill -9, SIGTERM, a restart from the same state
//! directory, and a paused holder that must not answer once it has been replaced.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use polaris_runtime::auth::Role;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::answers::{TEAM, agents_dir, wait_for};
use crate::both_stores;
use crate::support::{BIN, Client, Options, TestServer, eventually, spawn_listening, token};

/// TEAM with Dean hosted outside the floor's process.
fn external_team() -> String {
    TEAM.replacen(
        "  - id: agent:dean\n",
        "  - id: agent:dean\n    hosting: external\n",
        1,
    )
}

/// `polaris agent run AGENT` against `floor`, with the agent's own token by reference.
fn agent_run_as(agent: &str, floor: &str, file: &Path, state: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "run", agent, "--floor", floor, "--agents"])
        .arg(file)
        .arg("--state")
        .arg(state)
        .args(["--listen", "127.0.0.1:0", "--token", "env:AGENT_TOKEN"])
        .env("AGENT_TOKEN", token("default", agent, Role::Member))
        .env_remove("POLARIS_SERVICE_URL")
        .env_remove("POLARIS_AUTH_TOKEN")
        .env_remove("POLARIS_AGENTS")
        .env_remove("POLARIS_SIDECAR_URL")
        .env_remove("POLARIS_MODEL_DIR")
        .env("POLARIS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// A running `agent run`: the process and its health address.
pub(crate) struct Run {
    pub(crate) child: Child,
    health: String,
}

impl Run {
    pub(crate) async fn start(srv: &TestServer, file: &Path, state: &Path) -> Run {
        Run::start_with(srv, file, state, &[]).await
    }

    async fn start_with(srv: &TestServer, file: &Path, state: &Path, extra: &[&str]) -> Run {
        Run::start_as(srv, "agent:dean", file, state, extra).await
    }

    async fn start_as(
        srv: &TestServer,
        agent: &str,
        file: &Path,
        state: &Path,
        extra: &[&str],
    ) -> Run {
        let mut cmd = agent_run_as(agent, &srv.base, file, state);
        cmd.args(extra);
        let (child, health) = spawn_listening(cmd).await;
        Run { child, health }
    }

    async fn ready(&self) -> (u16, Value) {
        let r = crate::support::http()
            .get(format!("{}/readyz", self.health))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Waits until it holds the lease with its streams open.
    pub(crate) async fn until_ready(&self) {
        eventually(20, || async { (self.ready().await.0 == 200).then_some(()) }).await;
    }

    /// Waits until it has planned its agent and waits for the lease.
    async fn until_standby(&self) {
        eventually(20, || async {
            let (status, v) = self.ready().await;
            (status == 503 && v["agents"]["leases_wanted"] == 1 && v["agents"]["leases_held"] == 0)
                .then_some(())
        })
        .await;
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

async fn floor(srv: &TestServer) -> (Client, std::path::PathBuf) {
    let dir = agents_dir(&external_team());
    srv.load_agents(&dir.file).await;
    let c = srv.client_as("default", "user:manu", Role::Member);
    let r = c
        .post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = c
        .post(
            "/projects/warehouse/sessions",
            json!({"name": "s-1", "driver": "user:manu"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (c, dir.file)
}

/// The floor, and two Deans: the active one (state in `one`) and the standby (`two`).
async fn active_and_standby(
    srv: &TestServer,
) -> (Client, std::path::PathBuf, tempfile::TempDir, Run, Run) {
    let (c, file) = floor(srv).await;
    let states = tempfile::tempdir().unwrap();
    let active = Run::start(srv, &file, &states.path().join("one")).await;
    active.until_ready().await;
    let standby = Run::start(srv, &file, &states.path().join("two")).await;
    standby.until_standby().await;
    (c, file, states, active, standby)
}

async fn ask(c: &Client, text: &str) -> Value {
    let r = c.prompt("warehouse", "s-1", "user:manu", text).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["id"].clone()
}

/// Dean's answers to `id` on the floor.
async fn answers(c: &Client, id: &Value) -> usize {
    let all = c
        .get("/projects/warehouse/sessions/s-1/messages")
        .await
        .json;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == "agent:dean" && e["payload"]["in_reply_to"] == *id)
        .count()
}

both_stores!(
    a_standby_takes_over_and_a_restart_answers_what_it_missed,
    Options::secured(),
    |srv| {
        let (c, file, states, mut active, mut standby) = active_and_standby(&srv).await;
        let one = states.path().join("one");

        let mut ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
        let q1 = ask(&c, "@dean how do we name staging tables?").await;
        let a = wait_for(&mut ws, "the container Dean's answer", |e: &Value| {
            e["payload"]["in_reply_to"] == q1
        })
        .await;
        assert_eq!(a["sender"], "agent:dean");
        assert_eq!(a["payload"]["persona"]["name"], "Dean (Data)");
        let content = a["payload"]["content"].as_str().unwrap();
        assert!(content.contains("stg_<source>__<entity>"), "{content}");

        // The active one dies without a word; the standby takes over within the lease.
        active.child.start_kill().unwrap();
        active.child.wait().await.unwrap();
        standby.until_ready().await;
        let q2 = ask(&c, "@dean how long are raw events kept?").await;
        wait_for(&mut ws, "the standby's answer", |e: &Value| {
            e["payload"]["in_reply_to"] == q2
        })
        .await;

        // SIGTERM: it saves its cursor, releases the lease and exits 0.
        standby.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(20), standby.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
        let lease = srv
            .client_as("default", "user:admin", Role::Admin)
            .get("/agents/dean/lease")
            .await;
        assert_eq!(lease.json["held"], false, "{lease:?}");

        // Asked while no Dean runs: the next one to start answers it, once.
        let q3 = ask(&c, "@dean how do we name staging tables, again?").await;
        let restarted = Run::start(&srv, &file, &one).await;
        restarted.until_ready().await;
        wait_for(
            &mut ws,
            "the answer to what came in while Dean was down",
            |e: &Value| e["payload"]["in_reply_to"] == q3,
        )
        .await;
        // A later question answered means everything before it was read again.
        let q4 = ask(&c, "@dean how long are raw events kept, once more?").await;
        wait_for(&mut ws, "the marker's answer", |e: &Value| {
            e["payload"]["in_reply_to"] == q4
        })
        .await;
        for q in [&q1, &q2, &q3, &q4] {
            assert_eq!(answers(&c, q).await, 1, "answers to {q}");
        }
    }
);

both_stores!(
    a_paused_holder_is_replaced_and_does_not_answer_again,
    Options::secured(),
    |srv| {
        let (c, _file, states, paused, standby) = active_and_standby(&srv).await;
        let one = states.path().join("one");

        let mut ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
        // Frozen with the question on its way to it: its lease runs out meanwhile.
        paused.signal("-STOP");
        let q1 = ask(&c, "@dean how do we name staging tables?").await;
        standby.until_ready().await;
        wait_for(&mut ws, "the new holder's answer", |e: &Value| {
            e["payload"]["in_reply_to"] == q1
        })
        .await;

        // Woken, it finds its lease gone and waits as the standby now.
        paused.signal("-CONT");
        paused.until_standby().await;
        let lease = srv
            .client_as("default", "user:admin", Role::Admin)
            .get("/agents/dean/lease")
            .await;
        let pid = standby.child.id().unwrap().to_string();
        let holder = lease.json["holder"].as_str().unwrap();
        assert!(
            holder.contains(&format!("/{pid}/")),
            "{holder} is not {pid}"
        );

        let q2 = ask(&c, "@dean how long are raw events kept?").await;
        wait_for(&mut ws, "the marker's answer", |e: &Value| {
            e["payload"]["in_reply_to"] == q2
        })
        .await;
        assert_eq!(answers(&c, &q1).await, 1);
        // Whatever it had queued under its old term was refused by the floor, not posted.
        if let Ok(text) = std::fs::read_to_string(one.join("dead-letter.jsonl")) {
            for line in text.lines() {
                let d: Value = serde_json::from_str(line).unwrap();
                assert_eq!(d["status"], 409, "{d}");
                assert!(d["error"].as_str().unwrap().starts_with("term:"), "{d}");
            }
        }
    }
);

#[tokio::test]
async fn agent_run_refuses_bad_arguments_by_name() {
    let dir = agents_dir(&external_team());
    let cases: [(&[&str], &str); 4] = [
        (
            &["agent:dean.dbt"],
            "is a subagent: run its parent, agent:dean",
        ),
        (&["user:manu"], "is not an agent id"),
        (
            &["agent:nobody", "--agents", dir.file.to_str().unwrap()],
            "defines no agent agent:nobody",
        ),
        (
            &["agent:dean", "--token", "sk-literal"],
            "--token: secrets must be references",
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .args(["agent", "run"])
            .args(args)
            .args(["--floor", "http://127.0.0.1:9"])
            .env("POLARIS_LOG", "warn")
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

both_stores!(
    agent_run_rides_out_a_floor_restart,
    Options::secured(),
    |srv| {
        let (c, file) = floor(&srv).await;
        let states = tempfile::tempdir().unwrap();
        let dean = Run::start(&srv, &file, &states.path().join("one")).await;
        dean.until_ready().await;
        let q1 = ask(&c, "@dean how do we name staging tables?").await;
        eventually(20, || async { (answers(&c, &q1).await == 1).then_some(()) }).await;

        // The floor goes away (its streams close, renewals fail) and comes back at the
        // same address; Dean finds it again, under a new term, from its saved position.
        srv.restart_in_place().await;
        // The same agents file, as `polaris serve --agents` loads it at every start.
        srv.load_agents(&file).await;
        let c = srv.client_as("default", "user:manu", Role::Member);
        dean.until_ready().await;
        let q2 = ask(&c, "@dean how long are raw events kept?").await;
        eventually(30, || async { (answers(&c, &q2).await == 1).then_some(()) }).await;
        assert_eq!(answers(&c, &q1).await, 1);
    }
);

both_stores!(
    agent_run_posts_through_an_external_sidecar,
    Options::secured(),
    |srv| {
        let (c, file) = floor(&srv).await;
        let home = tempfile::tempdir().unwrap();
        let dean_token = token("default", "agent:dean", Role::Member);
        let sidecar = crate::support::sidecar_command(
            home.path(),
            &srv.base,
            &["--listen", "127.0.0.1:0", "--token", &dean_token],
        );
        let (_sidecar, sidecar_url) = spawn_listening(sidecar).await;
        let secret = format!("file:{}", home.path().join("daemon.secret").display());
        let states = tempfile::tempdir().unwrap();
        let dean = Run::start_with(
            &srv,
            &file,
            states.path(),
            &["--sidecar", &sidecar_url, "--sidecar-secret", &secret],
        )
        .await;
        dean.until_ready().await;
        let mut ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
        let q = ask(&c, "@dean how do we name staging tables?").await;
        let a = wait_for(&mut ws, "Dean's answer through the sidecar", |e: &Value| {
            e["payload"]["in_reply_to"] == q
        })
        .await;
        assert_eq!(a["sender"], "agent:dean");
        // The answer went through that sidecar (its JSONL log has it), not an embedded one.
        assert!(
            !states.path().join("wal").exists(),
            "no embedded write-ahead log"
        );
        let logs = home.path().join("logs");
        eventually(10, || async {
            let found = std::fs::read_dir(&logs)
                .ok()?
                .filter_map(Result::ok)
                .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("agent:dean")));
            found.then_some(())
        })
        .await;
    }
);

/// Sage hosted outside the floor's process, watching for secrets.
const WATCHER: &str = r#"
agents:
  - id: agent:sage
    name: Sage
    display_name: Sage (Security)
    hosting: external
    tags: [security]
    tools:
      secrets: {}
    passive:
      signals: [secrets]
"#;

both_stores!(
    agent_run_speaks_up_unasked_on_a_floor_it_reaches_over_http,
    Options::secured(),
    |srv| {
        let dir = agents_dir(WATCHER);
        srv.load_agents(&dir.file).await;
        let c = srv.client_as("default", "user:manu", Role::Member);
        let r = c
            .post("/projects", json!({"name": "app", "tags": ["security"]}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = c
            .post(
                "/projects/app/sessions",
                json!({"name": "s-7a3f", "driver": "user:manu"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let states = tempfile::tempdir().unwrap();
        let sage = Run::start_as(&srv, "agent:sage", &dir.file, states.path(), &[]).await;
        sage.until_ready().await;
        // No model: the first stage alone, which has nothing to fit.
        let (_, v) = sage.ready().await;
        assert_eq!(
            v["passive"],
            json!({"model": false, "ready": true, "fitting": 0})
        );

        let mut ws = c.ws("/projects/app/sessions/s-7a3f/ws").await.unwrap();
        let key = "AKIAZ3MBKQ7XJ2LRWN4P";
        let r = c
            .prompt(
                "app",
                "s-7a3f",
                "user:manu",
                &format!("deploy with AWS_ACCESS_KEY_ID={key} please"),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let q = r.json["id"].clone();
        let a = wait_for(
            &mut ws,
            "Sage's advice from its own process",
            |e: &Value| e["kind"] == "advice" && e["payload"]["in_reply_to"] == q,
        )
        .await;
        assert_eq!(a["sender"], "agent:sage");
        assert_eq!(a["payload"]["persona"]["name"], "Sage (Security)");
        let content = a["payload"]["content"].as_str().unwrap();
        assert!(content.contains("aws-access-key-id"), "{content}");
        assert!(
            !content.contains(key),
            "advice never repeats the secret: {content}"
        );
    }
);

/// With `--model-dir`: Dean, in a process of his own, places an event no keyword gives
/// away once his heads are fitted (in the background after the start: `/readyz` says
/// when).
#[tokio::test]
async fn agent_run_with_the_model_advises_on_what_only_the_model_can_place() {
    let Some(model) = crate::passive::model_dir() else {
        return;
    };
    let Some(srv) = TestServer::start(crate::support::Backend::Sqlite, Options::secured()).await
    else {
        return;
    };
    let registry = std::fs::read_to_string(crate::support::dataset_agents()).unwrap();
    let external = registry.replacen(
        "    name: \"Dean\"\n",
        "    name: \"Dean\"\n    hosting: external\n",
        1,
    );
    assert_ne!(external, registry, "Dean is in the registry");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(&file, external).unwrap();
    srv.load_agents(&file).await;
    let c = srv.client_as("default", "user:manu", Role::Member);
    let r = c
        .post("/projects", json!({"name": "app", "tags": ["data"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = c
        .post(
            "/projects/app/sessions",
            json!({"name": "s-1", "driver": "user:manu"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let states = tempfile::tempdir().unwrap();
    let dean = Run::start_as(
        &srv,
        "agent:dean",
        &file,
        states.path(),
        &["--model-dir", &model],
    )
    .await;
    dean.until_ready().await;
    let (_, v) = dean.ready().await;
    assert_eq!(v["passive"]["model"], true, "{v}");

    let mut ws = c.ws("/projects/app/sessions/s-1/ws").await.unwrap();
    let r = c
        .prompt(
            "app",
            "s-1",
            "user:manu",
            "the customer dimension doubled in size after last night's merge and the daily revenue rollup now double counts",
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let q = r.json["id"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let a = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_item(left).await {
            crate::support::client::WsItem::Event(e)
                if e["kind"] == "advice" && e["payload"]["in_reply_to"] == q =>
            {
                break e;
            }
            crate::support::client::WsItem::Event(_) => {}
            other => panic!("waiting for Dean's advice: {other:?}"),
        }
    };
    assert_eq!(a["sender"], "agent:dean");
    let content = a["payload"]["content"].as_str().unwrap();
    assert!(content.contains("nearest example"), "{content}");
    eventually(60, || async {
        (dean.ready().await.1["passive"]["ready"] == true).then_some(())
    })
    .await;
    // Dean goes first: the floor is there while he saves his read positions.
    dean.signal("-TERM");
    let mut dean = dean;
    let _ = tokio::time::timeout(Duration::from_secs(20), dean.child.wait()).await;
    srv.finish().await;
}
