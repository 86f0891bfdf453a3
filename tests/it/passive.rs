//! Passive monitoring on the floor, driven as a user would: an agents file, tagged
//! projects, events posted over HTTP, advice read over WebSocket and from the stored log.
//! "Nothing said" is checked after the agent has read past a later marker: its read
//! position stays below an event until its passive verdict is final (no advice, or the
//! advice on the floor).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::answers::{agents_dir, wait_for};
use crate::both_stores;
use crate::support::client::{Ws, WsItem};
use crate::support::{Client, Options, TestServer};

const TEAM: &str = r#"
agents:
  - id: agent:sage
    name: Sage
    display_name: Sage (Security)
    tags: [security]
    tools:
      secrets: {}
    passive:
      signals: [secrets]
  - id: agent:dean
    name: Dean
    display_name: Dean (Data)
    tags: [data]
    passive:
      signals: [data_job_failure]
  - id: agent:martha
    name: Martha
    tags: [data]
    passive:
      enabled: false
      signals: [data_job_failure]
"#;

fn team() -> (crate::answers::AgentsDir, Options) {
    let d = agents_dir(TEAM);
    let o = Options {
        agents_file: Some(d.file.clone()),
        passive: Some(None),
        ..Options::default()
    };
    (d, o)
}

fn advice_to<'a>(agent: &'a str, id: &'a Value) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| {
        e["kind"] == "advice" && e["sender"] == agent && e["payload"]["in_reply_to"] == *id
    }
}

async fn prompt(c: &Client, session: &str, text: &str) -> Value {
    let r = c.prompt("app", session, "user:manu", text).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["id"].clone()
}

async fn tool_output(c: &Client, session: &str, command: &str, stdout: &str) -> Value {
    let r = c
        .post(
            &format!("/projects/app/sessions/{session}/events"),
            json!({"sender": "user:manu", "payload": {
                "hook_event_name": "PostToolUse", "session_id": "cc-1", "tool_name": "Bash",
                "tool_input": {"command": command}, "tool_response": {"stdout": stdout}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["id"].clone()
}

/// Posts a marker and waits until each of `agents` has read past it with nothing left
/// to post.
async fn read_past_a_marker(srv: &TestServer, session: &str, agents: &[&str]) {
    read_past_a_marker_as(
        srv,
        &srv.client(),
        polaris_runtime::auth::DEFAULT_ORG,
        session,
        agents,
    )
    .await;
}

/// [`read_past_a_marker`] on the floor `app` of `org`, posting as `c` (who is `user:manu`).
async fn read_past_a_marker_as(
    srv: &TestServer,
    c: &Client,
    org: &str,
    session: &str,
    agents: &[&str],
) {
    let marker = c
        .prompt("app", session, "user:manu", "marker: nothing to see here")
        .await;
    assert_eq!(marker.status, 201, "{marker:?}");
    let seq = marker.json["seq"].as_i64().unwrap();
    let project = c.get("/projects/app").await.json["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    crate::support::eventually(60, || async {
        for agent in agents {
            let cursor = srv
                .runtime
                .directory()
                .saved_position(org, agent, project)
                .await
                .unwrap();
            if cursor.is_none_or(|c| c < seq) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// A floor `app` with the four agents' tags and a session `s-1`; a data question nobody
/// addressed; Dean's advice on it (within the long wait, for a model). Returns the
/// question's id and the advice.
async fn deans_advice_on_a_data_question(c: &Client) -> (Value, Value) {
    let r = c
        .post(
            "/projects",
            json!({"name": "app", "tags": ["data", "security", "marketing", "sales"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    c.post(
        "/projects/app/sessions",
        json!({"name": "s-1", "driver": "user:manu"}),
    )
    .await;
    let mut ws = c.ws("/projects/app/sessions/s-1/ws").await.unwrap();
    let q = prompt(
        c,
        "s-1",
        "the customer dimension doubled in size after last night's merge and the daily revenue rollup now double counts",
    )
    .await;
    let a = wait_long(&mut ws, "Dean's advice", advice_to("agent:dean", &q)).await;
    assert_eq!(a["payload"]["persona"]["name"], "Dean (Data)");
    (q, a)
}

/// Like `wait_for`, with time for the scorer to fit its heads on the first event (a few
/// seconds, longer on a busy machine).
async fn wait_long(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_item(left).await {
            WsItem::Event(e) if pred(&e) => return e,
            WsItem::Event(_) => {}
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

/// Advice in reply to `id`, from the stored log.
async fn advice_on(c: &Client, id: &Value) -> Vec<Value> {
    let all = c.get("/projects/app/messages").await.json;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "advice" && e["payload"]["in_reply_to"] == *id)
        .cloned()
        .collect()
}

both_stores!(
    agents_speak_up_unasked_on_precise_signals_once_per_thing,
    team().1,
    |srv| {
        let _keep = team().0;
        let c = srv.client();
        let r = c
            .post(
                "/projects",
                json!({"name": "app", "tags": ["security", "data"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        c.post(
            "/projects/app/sessions",
            json!({"name": "s-7a3f", "driver": "user:manu"}),
        )
        .await;
        let mut ws = c.ws("/projects/app/sessions/s-7a3f/ws").await.unwrap();

        // A secret pasted into a prompt: Sage speaks up unasked, without repeating it.
        let key = "AKIAZ3MBKQ7XJ2LRWN4P";
        let q = prompt(
            &c,
            "s-7a3f",
            &format!("deploy with AWS_ACCESS_KEY_ID={key} please"),
        )
        .await;
        let a = wait_for(&mut ws, "Sage's advice", advice_to("agent:sage", &q)).await;
        assert_eq!(a["source"], "agent");
        assert_eq!(a["payload"]["type"], "advice");
        let content = a["payload"]["content"].as_str().unwrap();
        assert!(content.contains("aws-access-key-id"), "{content}");
        assert!(
            !content.contains(key),
            "advice never repeats the secret: {content}"
        );

        // A failing dbt test in a tool's output: Dean; Martha has passive advice off.
        let t = tool_output(
            &c,
            "s-7a3f",
            "dbt build --select stg_orders",
            "10:01:02  Failure in test not_null_stg_orders_order_id (models/staging/schema.yml)\n10:01:02  Done. PASS=3 WARN=0 ERROR=1 SKIP=0 TOTAL=4",
        )
        .await;
        wait_for(&mut ws, "Dean's advice", advice_to("agent:dean", &t)).await;

        // The same kind of secret again in the session, chit-chat, and the same failure
        // in another session's tool output (advice is per session, so Dean speaks there).
        let again = prompt(&c, "s-7a3f", &format!("retrying with {key}")).await;
        let chat = prompt(&c, "s-7a3f", "anyone up for lunch at noon?").await;
        c.post(
            "/projects/app/sessions",
            json!({"name": "s-other", "driver": "user:manu"}),
        )
        .await;
        let elsewhere = tool_output(
            &c,
            "s-other",
            "dbt build --select stg_orders",
            "Failure in test not_null_stg_orders_order_id (models/staging/schema.yml)",
        )
        .await;
        read_past_a_marker(
            &srv,
            "s-7a3f",
            &["agent:sage", "agent:dean", "agent:martha"],
        )
        .await;
        assert!(
            advice_on(&c, &again).await.is_empty(),
            "said once per thing"
        );
        assert!(advice_on(&c, &chat).await.is_empty(), "quiet on chit-chat");
        let there = c.get("/projects/app/sessions/s-other/messages").await.json;
        assert!(
            there
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "advice" && e["payload"]["in_reply_to"] == elsewhere),
            "{there}"
        );
        let on_t = advice_on(&c, &t).await;
        assert_eq!(on_t.len(), 1, "only Dean: Martha is switched off: {on_t:?}");

        // An event that addresses someone is theirs: nobody speaks up unasked on it.
        let asked = prompt(
            &c,
            "s-7a3f",
            &format!("@dean is {key} in the warehouse config?"),
        )
        .await;
        read_past_a_marker(&srv, "s-7a3f", &["agent:sage", "agent:dean"]).await;
        assert!(
            advice_on(&c, &asked).await.is_empty(),
            "a mention is answered, not advised on"
        );
    }
);

fn secured_team() -> (crate::answers::AgentsDir, Options) {
    let (d, o) = team();
    (d, Options { secret: true, ..o })
}

/// Waits for `agent`'s answer to the mention `id`.
async fn answer_from(ws: &mut Ws, agent: &str, id: &Value) -> Value {
    wait_for(ws, "the answer", |e: &Value| {
        e["sender"] == agent && e["payload"]["in_reply_to"] == *id && e["kind"] != "advice"
    })
    .await
}

// The per-floor switch: an admin turns passive advice off for a project (a member may
// not); its agents then stay quiet unasked on that floor and still answer mentions; back
// on, advice comes again. A switch made on another node reaches the node running the agent.
both_stores!(
    an_admin_turns_passive_advice_off_for_a_floor,
    secured_team().1,
    |srv| {
        use polaris_runtime::auth::Role;
        let _keep = secured_team().0;
        let admin = srv.client_as("acme", "user:ops", Role::Admin);
        let manu = srv.client_as("acme", "user:manu", Role::Member);
        let r = admin
            .post(
                "/projects",
                json!({"name": "app", "tags": ["security", "data"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        for s in ["s-1", "s-2"] {
            let r = manu
                .post(
                    "/projects/app/sessions",
                    json!({"name": s, "driver": "user:manu"}),
                )
                .await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        assert_eq!(
            admin.get("/projects/app").await.json["passive_advice"],
            true
        );

        let r = manu
            .post("/projects/app/passive", json!({"enabled": false}))
            .await;
        assert_eq!(r.status, 403, "{r:?}");
        let r = admin
            .post("/projects/app/passive", json!({"enable": false}))
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("enable"), "{r:?}");
        let r = admin
            .post("/projects/app/passive", json!({"enabled": "no"}))
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("enabled"), "{r:?}");
        assert_eq!(
            admin.get("/projects/app").await.json["passive_advice"],
            true
        );

        let r = admin
            .post("/projects/app/passive", json!({"enabled": false}))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["passive_advice"], false);
        assert_eq!(
            manu.get("/projects/app").await.json["passive_advice"],
            false
        );

        // Off: a pasted secret gets no advice; a mention is still answered.
        let mut ws = manu.ws("/projects/app/sessions/s-1/ws").await.unwrap();
        let key = "AKIAZ3MBKQ7XJ2LRWN4P";
        let quiet = prompt(
            &manu,
            "s-1",
            &format!("deploy with AWS_ACCESS_KEY_ID={key}"),
        )
        .await;
        let asked = prompt(&manu, "s-1", "@sage which keys can the deploy role use?").await;
        answer_from(&mut ws, "agent:sage", &asked).await;
        read_past_a_marker_as(&srv, &manu, "acme", "s-1", &["agent:sage", "agent:dean"]).await;
        assert!(
            advice_on(&manu, &quiet).await.is_empty(),
            "passive advice is off on this floor"
        );

        // Back on: the next secret is advised on.
        let r = admin
            .post("/projects/app/passive", json!({"enabled": true}))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let again = prompt(
            &manu,
            "s-1",
            &format!("retrying with AWS_ACCESS_KEY_ID={key}"),
        )
        .await;
        wait_for(&mut ws, "Sage's advice", advice_to("agent:sage", &again)).await;

        // Switched off on another node: the change reaches this one, which runs the agents
        // (the other node waits on their leases). SQLite is one node: no notices between
        // nodes there.
        if srv.backend == crate::support::Backend::Postgres {
            let other = srv.second_node().await;
            let admin_there = Client::new(
                &other.base,
                Some(crate::support::token("acme", "user:ops", Role::Admin)),
            );
            let r = admin_there
                .post("/projects/app/passive", json!({"enabled": false}))
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            crate::support::eventually(20, || async {
                (manu.get("/projects/app").await.json["passive_advice"] == false).then_some(())
            })
            .await;
            let there = prompt(
                &manu,
                "s-2",
                &format!("AWS_ACCESS_KEY_ID={key} is in the env file"),
            )
            .await;
            read_past_a_marker_as(&srv, &manu, "acme", "s-2", &["agent:sage"]).await;
            assert!(
                advice_on(&manu, &there).await.is_empty(),
                "the switch made on the other node holds here"
            );
            other.finish().await;
        }
        ws.close().await;
    }
);

/// A counter from `GET /metrics` (0 before it is first counted).
async fn counter(base: &str, name: &str) -> f64 {
    let text = crate::support::http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Under a flood of unaddressed events the scorer's queue (two jobs here, configured)
/// sheds its oldest jobs, counted in `/metrics`; a mention sent during the flood is still
/// answered, because mentions never wait in that queue. `polaris serve` as people run it.
async fn a_flood_is_shed_and_mentions_still_answered(backend: crate::support::Backend) {
    let Some(mut db) = crate::support::TestDb::new(backend).await else {
        return;
    };
    let agents = agents_dir(TEAM);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("polaris.yaml");
    std::fs::write(
        &config,
        format!(
            "agents: {}\nrate_limits:\n  writes_per_minute: 0\npassive:\n  queue: 2\n",
            agents.file.display()
        ),
    )
    .unwrap();
    let db_args = crate::process::db_args(&db);
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend(db_args.iter().map(String::as_str));
    let (mut child, base) = crate::support::spawn_listening(crate::process::polaris(&args)).await;
    let c = Client::new(&base, None);
    let r = c
        .post(
            "/projects",
            json!({"name": "app", "tags": ["security", "data"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    for s in ["s-1", "s-flood"] {
        let r = c
            .post(
                "/projects/app/sessions",
                json!({"name": s, "driver": "user:manu"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let mut ws = c.ws("/projects/app/sessions/s-1/ws").await.unwrap();
    let before = counter(&base, "polaris_passive_shed_total").await;

    // Tool output nobody addressed, in batches, until told to stop: every event is a job
    // for Sage and one for Dean.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        async move {
            let mut batches = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let events: Vec<Value> = (0..200)
                    .map(|i| {
                        json!({"sender": "user:manu", "payload": {
                            "hook_event_name": "PostToolUse", "session_id": "cc-flood",
                            "tool_name": "Bash", "tool_input": {"command": format!("make step-{batches}-{i}")},
                            "tool_response": {"stdout": "compiled 12 files, all green"}}})
                    })
                    .collect();
                let r = c
                    .post(
                        "/projects/app/sessions/s-flood/events/batch",
                        json!({"events": events}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{r:?}");
                batches += 1;
            }
            batches
        }
    });
    crate::support::eventually(120, || async {
        (counter(&base, "polaris_passive_shed_total").await > before).then_some(())
    })
    .await;
    let asked = prompt(
        &c,
        "s-1",
        "@sage should we rotate the deploy keys this week?",
    )
    .await;
    let answer = wait_long(&mut ws, "Sage's answer during the flood", |e: &Value| {
        e["sender"] == "agent:sage" && e["payload"]["in_reply_to"] == asked
    })
    .await;
    assert_ne!(answer["kind"], "advice", "{answer}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = flood.await.unwrap();
    let shed = counter(&base, "polaris_passive_shed_total").await;
    eprintln!(
        "{batches} batches of 200 events: {} jobs shed",
        shed - before
    );
    ws.close().await;
    crate::process::sigterm(&child).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_and_mentions_still_answered_sqlite() {
    a_flood_is_shed_and_mentions_still_answered(crate::support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_and_mentions_still_answered_postgres() {
    a_flood_is_shed_and_mentions_still_answered(crate::support::Backend::Postgres).await;
}

/// Sage's advice reaches the coding agent: a secret pasted into a prompt that `polaris
/// hook` hands the sidecar, redacted on the floor, advised on by Sage from the first
/// stage's signal, queued by the sidecar following the session, and printed by the next
/// `polaris hook` for the coding agent to read. A second secret of the same kind in the
/// session is not advised on again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_reaches_the_coding_agent_through_the_sidecar() {
    let (_keep, opts) = team();
    let srv = TestServer::start(crate::support::Backend::Sqlite, opts)
        .await
        .unwrap();
    let c = srv.client();
    let r = c
        .post("/projects", json!({"name": "app", "tags": ["security"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (dir, home) = crate::sidecar::home_dir();
    let sc = crate::sidecar::Sidecar::start(&home, &srv.base).await;
    let session = sc.join("w", "app", "user:manu").await;
    crate::sidecar::wait_following(&sc, &srv.base, "app", &session, "w").await;
    let user_home = dir.path().join("user");
    let hook = async |text: &str| {
        let event =
            json!({"session_id": "w", "hook_event_name": "UserPromptSubmit", "prompt": text});
        let out = crate::hook::run_hook(
            &user_home,
            &home,
            sc.port(),
            &[],
            event.to_string().as_bytes(),
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        let printed = String::from_utf8(out.stdout).unwrap();
        if printed.trim().is_empty() {
            return String::new();
        }
        let v: Value = serde_json::from_str(&printed).unwrap();
        v["hookSpecificOutput"]["additionalContext"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let advice_events = async || -> Vec<Value> {
        crate::sidecar::messages(&srv.base, "app", &session)
            .await
            .into_iter()
            .filter(|e| e["kind"] == "advice")
            .collect()
    };

    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Rt3pLvW";
    hook(&format!(
        "deploy failed, creds are aws_secret_access_key = {secret} can you check"
    ))
    .await;
    let advice =
        crate::support::eventually(60, || async { advice_events().await.into_iter().next() }).await;
    assert_eq!(advice["sender"], "agent:sage");
    crate::sidecar::wait_queued(&sc, "w", 1).await;
    let context = hook("ok, what now?").await;
    assert!(
        context.contains("- agent:sage: Sage (Security), unasked:")
            && context.contains("aws-secret-key"),
        "{context}"
    );
    assert!(!context.contains(secret), "{context}");

    // The same secret pasted again: Sage has said it once in this session.
    let context = hook(&format!(
        "still failing with aws_secret_access_key = {secret}, any idea?"
    ))
    .await;
    assert_eq!(context, "", "nothing queued yet");
    read_past_a_marker(&srv, &session, &["agent:sage"]).await;
    let advised = advice_events().await;
    assert_eq!(advised.len(), 1, "advised once per thing: {advised:#?}");
    // Whatever the sidecar queued before a last inject comes out with it.
    let r = c
        .post(
            &format!("/projects/app/sessions/{session}/inject"),
            json!({"sender": "user:krishna", "content": "last word"}),
        )
        .await;
    assert!(r.status < 300, "{r:?}");
    crate::sidecar::wait_queued(&sc, "w", 1).await;
    let context = hook("and now?").await;
    assert!(context.contains("last word"), "{context}");
    assert!(!context.contains("unasked"), "{context}");
    sc.stop().await;
    srv.finish().await;
}

/// The test model (`polaris_passive::testing`), shared.
fn model() -> Option<Arc<polaris_passive::Embedder>> {
    polaris_passive::testing::model().map(Arc::new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_finds_a_domain_without_keywords_and_stays_quiet_on_chit_chat() {
    let Some(embedder) = model() else { return };
    let opts = Options {
        agents_file: Some(crate::support::dataset_agents()),
        passive: Some(Some(embedder)),
        ..Options::default()
    };
    let Some(srv) = TestServer::start(crate::support::Backend::Sqlite, opts).await else {
        return;
    };
    let c = srv.client();
    let (q, _) = deans_advice_on_a_data_question(&c).await;
    let chat = prompt(&c, "s-1", "who's bringing the cake for Friday's birthday?").await;
    read_past_a_marker(
        &srv,
        "s-1",
        &["agent:dean", "agent:sage", "agent:martha", "agent:sean"],
    )
    .await;
    let on_q: Vec<String> = advice_on(&c, &q)
        .await
        .iter()
        .map(|e| e["sender"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(on_q, ["agent:dean"]);
    assert!(advice_on(&c, &chat).await.is_empty());
    srv.finish().await;
}

/// `polaris agents route` with the model: every top-level agent's passive score per line,
/// and the agents that would speak up as responders when nobody is addressed.
async fn route(lines: &str, extra: &[&str]) -> (bool, Vec<Value>, String) {
    use tokio::io::AsyncWriteExt;
    let agents = crate::support::dataset_agents();
    let mut args = vec!["agents", "route", "--agents", agents.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_polaris"))
        .args(&args)
        .env_remove("POLARIS_MODEL_DIR")
        .env("POLARIS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let parsed = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        out.status.success(),
        parsed,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn agents_route_reports_passive_responders_and_scores() {
    let input = concat!(
        r#"{"text": "pasted AWS_ACCESS_KEY_ID=AKIAZ3MBKQ7XJ2LRWN4P into the deploy script", "source": "prompt"}"#,
        "\n",
        r#"{"text": "@martha AWS_ACCESS_KEY_ID=AKIAZ3MBKQ7XJ2LRWN4P", "source": "prompt"}"#,
        "\n",
        r#"{"text": "quota attainment by rep for the quarter: who is furthest behind and which deals could close the gap?", "source": "prompt"}"#,
        "\n",
        r#"{"text": "anyone seen my blue umbrella? left it by the kitchen", "source": "slack"}"#,
        "\n",
    );
    // Without a model: the first stage alone (the secret), nothing else.
    let (ok, lines, err) = route(input, &[]).await;
    assert!(ok, "{err}");
    assert_eq!(lines[0]["responders"], json!(["agent:sage"]));
    let sage = |l: &Value| {
        l["passive"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["agent"] == "agent:sage")
            .cloned()
            .unwrap()
    };
    assert_eq!(sage(&lines[0])["stage"], "signal");
    assert!(
        !sage(&lines[0])["why"]
            .as_str()
            .unwrap()
            .contains("AKIAZ3MBKQ7XJ2LRWN4P")
    );
    assert_eq!(
        lines[1]["responders"],
        json!(["agent:martha"]),
        "a mention is answered, nobody advises"
    );
    assert_eq!(lines[1]["passive"], json!([]));
    assert_eq!(lines[2]["responders"], json!([]));
    assert!(
        lines[2]["passive"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["stage"] == "no_model")
    );

    // A model directory that is not the model fails naming the file.
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = route(input, &["--model-dir", dir.path().to_str().unwrap()]).await;
    assert!(!ok && err.contains("config.json"), "{err}");

    let Some(model) = model_dir() else {
        return;
    };
    let (ok, lines, err) = route(input, &["--model-dir", &model]).await;
    assert!(ok, "{err}");
    assert_eq!(lines[0]["responders"], json!(["agent:sage"]));
    assert_eq!(
        lines[2]["responders"],
        json!(["agent:sean"]),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3]["responders"], json!([]), "{}", lines[3]);
    let scores = lines[2]["passive"].as_array().unwrap();
    assert_eq!(scores.len(), 4, "one score per top-level agent");
    assert!(
        scores
            .iter()
            .all(|s| s["stage"] == "model" && s["score"].as_f64().is_some())
    );
}

/// `POLARIS_TEST_MODEL_DIR` (`polaris_passive::testing`).
pub(crate) fn model_dir() -> Option<String> {
    polaris_passive::testing::model_dir()
}

/// `polaris serve --model-dir` as an operator starts it: the floor answers at once, the
/// agents' heads are fitted in the background (`polaris_passive_ready` reaches 1), and an
/// event posted right after the start that only the model can place gets its advice all
/// the same (it waits for the heads rather than being scored by the first stage alone).
#[tokio::test]
async fn serve_fits_the_heads_in_the_background_and_advice_flows_after_start() {
    let Some(model) = model_dir() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(crate::support::BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--agents")
        .arg(crate::support::dataset_agents())
        .args(["--model-dir", &model])
        .env_remove("DATABASE_URL")
        .env_remove("POLARIS_JWT_SECRET")
        .env_remove("POLARIS_CONFIG")
        .env_remove("POLARIS_LISTEN")
        .env_remove("POLARIS_DATA_DIR")
        .env_remove("POLARIS_METRICS_LISTEN")
        .env("POLARIS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let (_child, base) = crate::support::spawn_listening(cmd).await;
    let c = Client::new(&base, None);
    assert_eq!(c.get("/healthz").await.status, 200);
    let (_, a) = deans_advice_on_a_data_question(&c).await;
    // Scored by the model, not the first stage alone.
    let content = a["payload"]["content"].as_str().unwrap();
    assert!(content.contains("nearest example"), "{content}");
    let metrics = crate::support::http();
    crate::support::eventually(60, || async {
        let text = metrics
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .any(|l| l == "polaris_passive_ready 1")
            .then_some(())
    })
    .await;
}
