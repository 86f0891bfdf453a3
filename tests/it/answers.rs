//! Named agents answering on the floor, driven as a user would: an agents file, tagged
//! projects, prompts over HTTP, answers read over WebSocket.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::both_stores;
use crate::support::client::{Ws, WsItem};
use crate::support::{Client, Options};

/// An agents file in a temporary directory, with knowledge documents beside it.
pub struct AgentsDir {
    pub file: PathBuf,
}

pub fn agents_dir(yaml: &str) -> AgentsDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("knowledge")).unwrap();
    std::fs::write(
        dir.path().join("knowledge/warehouse.md"),
        "# Warehouse conventions\n\n## Naming\n\nStaging tables are named stg_<source>__<entity>, one per source table, \
         and never joined to each other. Marts are named fct_ or dim_.\n\n## Retention\n\nRaw events are kept 400 days.\n",
    )
    .unwrap();
    let file = dir.path().join("agents.yaml");
    std::fs::write(&file, yaml).unwrap();
    // Agents read their documents when they start, which may be late in a test: the
    // directory outlives the test (it is small, under the system temp directory).
    let _kept = dir.keep();
    AgentsDir { file }
}

pub const TEAM: &str = r#"
agents:
  - id: agent:dean
    name: Dean
    display_name: Dean (Data)
    icon: "📊"
    skills: [sql, warehouse]
    tags: [data]
    knowledge: [knowledge/*.md]
  - id: agent:dean.dbt
    parent: agent:dean
    name: dean.dbt
    display_name: Dean (dbt)
    icon: "🧱"
    skills: [dbt, incremental models, snapshots]
  - id: agent:sage
    name: Sage
    display_name: Sage (Security)
    icon: "🛡️"
    tags: [security, data]
    tools:
      secrets: {}
  - id: agent:martha
    name: Martha
    display_name: Martha (Marketing)
    tags: [marketing]
    rate:
      per_floor_per_minute: 2
"#;

pub fn team() -> (AgentsDir, Options) {
    let d = agents_dir(TEAM);
    let o = Options {
        agents_file: Some(d.file.clone()),
        ..Options::default()
    };
    (d, o)
}

/// Reads the socket until an event matches, failing after 15 s.
pub async fn wait_for(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ws.next_item(left).await {
            WsItem::Event(e) if pred(&e) => return e,
            WsItem::Event(_) => {}
            other => panic!("waiting for {what}: {other:?}"),
        }
    }
}

fn reply_to<'a>(id: &'a Value) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| e["payload"]["in_reply_to"] == *id
}

async fn ask(c: &Client, session: &str, text: &str) -> Value {
    let r = c.prompt("warehouse", session, "user:manu", text).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json["id"].clone()
}

/// Posts an event no agent answers, after whatever a test says must stay unanswered, and
/// waits until each of `agents` has read the warehouse floor past it with nothing left to
/// post: an agent's saved cursor stays below an event it is answering until the answer is
/// on the floor (agents/src/reader.rs), and it reads the floor in order, so from then on
/// anything it was going to post about an earlier event is there to be seen.
async fn read_past_a_marker(srv: &crate::support::TestServer, session: &str, agents: &[&str]) {
    let c = srv.client();
    let marker = c
        .prompt(
            "warehouse",
            session,
            "user:manu",
            "marker: nothing to answer here",
        )
        .await;
    assert_eq!(marker.status, 201, "{marker:?}");
    let seq = marker.json["seq"].as_i64().unwrap();
    let project = c.get("/projects/warehouse").await.json["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    crate::support::eventually(30, || async {
        for agent in agents {
            let cursor = srv
                .runtime
                .directory()
                .saved_position(polaris_runtime::auth::DEFAULT_ORG, agent, project)
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

/// The answers to `id` on the floor, read back from the store.
async fn answers(c: &Client, id: &Value) -> Vec<Value> {
    let all = c.get("/projects/warehouse/messages").await.json;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["payload"]["in_reply_to"] == *id)
        .cloned()
        .collect()
}

both_stores!(dean_answers_as_dean_from_his_notes, team().1, |srv| {
    let _keep = team().0;
    let c = srv.client();
    c.post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    c.post(
        "/projects/warehouse/sessions",
        json!({"name": "s-7a3f", "driver": "user:manu"}),
    )
    .await;
    let mut ws = c
        .ws("/projects/warehouse/sessions/s-7a3f/ws")
        .await
        .unwrap();

    let q = ask(&c, "s-7a3f", "@dean how do we name staging tables?").await;
    let a = wait_for(&mut ws, "Dean's answer", reply_to(&q)).await;
    assert_eq!(a["source"], "agent");
    assert_eq!(a["sender"], "agent:dean");
    assert_eq!(a["session"], "s-7a3f");
    assert_eq!(
        a["payload"]["persona"],
        json!({"name": "Dean (Data)", "icon": "📊"})
    );
    let content = a["payload"]["content"].as_str().unwrap();
    assert!(content.contains("stg_<source>__<entity>"), "{content}");
    assert!(
        content.contains("warehouse.md") && content.contains("Naming"),
        "cites file and heading: {content}"
    );

    // A subagent answers under its own persona; the parent hands over by skill too.
    let q = ask(&c, "s-7a3f", "@dean.dbt what about snapshots?").await;
    let a = wait_for(&mut ws, "dbt's answer", reply_to(&q)).await;
    assert_eq!(a["sender"], "agent:dean.dbt");
    assert_eq!(a["payload"]["persona"]["name"], "Dean (dbt)");
    let q = ask(
        &c,
        "s-7a3f",
        "@dean should int_subscriptions be incremental models or a table?",
    )
    .await;
    let a = wait_for(&mut ws, "hand-off", reply_to(&q)).await;
    assert_eq!(a["sender"], "agent:dean.dbt");

    // Nothing in the notes: said plainly.
    let q = ask(
        &c,
        "s-7a3f",
        "@dean what is the airspeed of an unladen swallow?",
    )
    .await;
    let a = wait_for(&mut ws, "a plain no", reply_to(&q)).await;
    assert!(
        a["payload"]["content"]
            .as_str()
            .unwrap()
            .starts_with("I don't have anything on that"),
        "{a}"
    );
});

both_stores!(
    sage_reports_secrets_without_repeating_them,
    team().1,
    |srv| {
        let _keep = team().0;
        let c = srv.client();
        c.post(
            "/projects",
            json!({"name": "warehouse", "tags": ["security"]}),
        )
        .await;
        c.post("/projects/warehouse/sessions", json!({"name": "s"}))
            .await;
        let mut ws = c.ws("/projects/warehouse/sessions/s/ws").await.unwrap();
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/routing-dev.jsonl");
        let cases: Vec<Value> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|c: &Value| {
                c["responders"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("agent:sage"))
            })
            .filter(|c: &Value| {
                !polaris_protocol::secrets::scan(c["text"].as_str().unwrap()).is_empty()
            })
            .collect();
        assert!(
            cases.len() >= 3,
            "the dataset has secret cases: {}",
            cases.len()
        );
        for case in &cases {
            let text = case["text"].as_str().unwrap();
            let q = ask(&c, "s", &format!("@sage is this safe to commit?\n{text}")).await;
            let a = wait_for(&mut ws, "Sage's report", reply_to(&q)).await;
            assert_eq!(a["sender"], "agent:sage");
            let content = a["payload"]["content"].as_str().unwrap();
            assert!(
                content.starts_with("**I found"),
                "{}: {content}",
                case["id"]
            );
            for f in polaris_protocol::secrets::scan(text) {
                let secret = &text[f.start..f.end];
                if secret.len() >= 8 {
                    assert!(
                        !content.contains(secret),
                        "{}: Sage repeated {secret:?}",
                        case["id"]
                    );
                }
            }
        }
    }
);

both_stores!(safety_valves_hold, team().1, |srv| {
    let _keep = team().0;
    let c = srv.client();
    c.post(
        "/projects",
        json!({"name": "warehouse", "tags": ["data", "marketing"]}),
    )
    .await;
    c.post("/projects/warehouse/sessions", json!({"name": "s"}))
        .await;
    let mut ws = c.ws("/projects/warehouse/sessions/s/ws").await.unwrap();

    // An agent never answers itself.
    let own = c
        .post(
            "/projects/warehouse/sessions/s/events",
            json!({"source": "agent", "sender": "agent:dean",
            "payload": {"type": "message", "content": "@dean note to self"}}),
        )
        .await;
    assert_eq!(own.status, 201);
    // Agent-to-agent chains stop at max_hops (3): hops 2 is answered (with hops 3) …
    let chained = c
        .post(
            "/projects/warehouse/sessions/s/events",
            json!({"source": "agent", "sender": "agent:martha",
            "payload": {"type": "message", "content": "@sage please check", "hops": 2}}),
        )
        .await;
    let a = wait_for(
        &mut ws,
        "answer within the bound",
        reply_to(&chained.json["id"]),
    )
    .await;
    assert_eq!(a["payload"]["hops"], 3);
    // … hops 3 is not.
    let stopped = c
        .post(
            "/projects/warehouse/sessions/s/events",
            json!({"source": "agent", "sender": "agent:martha",
            "payload": {"type": "message", "content": "@sage and again", "hops": 3}}),
        )
        .await;
    // A mention of an agent that is not on the floor gets a notice saying how to invite it.
    c.post("/projects", json!({"name": "other"})).await;
    let q = ask(&c, "s", "@martha write the launch e-mail").await; // Martha is here (marketing)
    wait_for(&mut ws, "Martha", reply_to(&q)).await;
    c.delete("/projects/warehouse/agents/agent:martha").await;
    let q = ask(&c, "s", "@martha one more?").await;
    let notice = wait_for(&mut ws, "absent-agent notice", reply_to(&q)).await;
    assert_eq!(notice["source"], "system");
    assert_eq!(notice["sender"], "agent:polaris");
    assert!(
        notice["payload"]["content"]
            .as_str()
            .unwrap()
            .contains("POST /projects/warehouse/agents"),
        "{notice}"
    );
    // Rate limits: Martha answers 2 a minute on a floor (her limiter may already count
    // the answer above, if her actor kept running); past that, one notice and no answer.
    c.post("/projects/warehouse/agents", json!({"agent": "martha"}))
        .await;
    let q2 = ask(&c, "s", "@martha a tagline?").await;
    let q3 = ask(&c, "s", "@martha and a subject line?").await;
    let q4 = ask(&c, "s", "@martha and a footer?").await;
    let limited = wait_for(&mut ws, "rate limit notice", |e| {
        e["kind"] == "rate_limited"
    })
    .await;
    let over = limited["payload"]["in_reply_to"].clone();
    assert!(over == q3 || over == q4, "{limited}");
    assert_eq!(limited["sender"], "agent:martha");
    // Her answer to q2 is written after its brain runs; the notice needs no brain and can
    // be on the floor first.
    crate::support::eventually(10, || async {
        (answers(&c, &q2).await.len() == 1).then_some(())
    })
    .await;

    // Nothing answered the agent's own event or the chain past its bound.
    read_past_a_marker(
        &srv,
        "s",
        &["agent:dean", "agent:dean.dbt", "agent:sage", "agent:martha"],
    )
    .await;
    assert!(answers(&c, &own.json["id"]).await.is_empty());
    assert!(answers(&c, &stopped.json["id"]).await.is_empty());
    assert_eq!(
        answers(&c, &over)
            .await
            .iter()
            .filter(|e| e["kind"] == "message")
            .count(),
        0
    );
    assert_eq!(
        answers(&c, &q4)
            .await
            .iter()
            .filter(|e| e["kind"] == "message")
            .count(),
        0
    );
});

both_stores!(restarts_neither_miss_nor_repeat_answers, team().1, |srv| {
    let keep = team().0;
    let c = srv.client();
    c.post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    c.post("/projects/warehouse/sessions", json!({"name": "s"}))
        .await;
    let mut ws = c.ws("/projects/warehouse/sessions/s/ws").await.unwrap();
    let first = ask(&c, "s", "@dean how do we name staging tables?").await;
    wait_for(&mut ws, "first answer", reply_to(&first)).await;

    // Restart without the agents; a question arrives while Dean is away.
    srv.stop().await;
    srv.store.close().await;
    srv.opts.agents_file = None;
    srv.reopen().await;
    let c = srv.client();
    let second = ask(&c, "s", "@dean how long are raw events kept?").await;
    srv.stop().await;
    srv.store.close().await;
    srv.opts.agents_file = Some(keep.file.clone());
    srv.reopen().await;
    let c = srv.client();
    let mut ws = c
        .ws("/projects/warehouse/sessions/s/ws?after=0")
        .await
        .unwrap();
    let a = wait_for(
        &mut ws,
        "the answer to the question asked while away",
        reply_to(&second),
    )
    .await;
    assert!(
        a["payload"]["content"]
            .as_str()
            .unwrap()
            .contains("400 days"),
        "{a}"
    );
    read_past_a_marker(&srv, "s", &["agent:dean", "agent:dean.dbt", "agent:sage"]).await;
    assert_eq!(
        answers(&c, &first).await.len(),
        1,
        "answered once across restarts"
    );
    assert_eq!(answers(&c, &second).await.len(), 1);
});

/// Dean's database: the example warehouse, as SQLite (seeded from its script) or as a
/// fresh PostgreSQL database.
async fn warehouse_url(
    kind: crate::support::Backend,
    dir: &std::path::Path,
) -> Option<(String, Option<String>, Option<crate::support::TestDb>)> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    match kind {
        crate::support::Backend::Sqlite => Some((
            format!("sqlite:{}", dir.join("warehouse.db").display()),
            Some(examples.join("warehouse.sql").display().to_string()),
            None,
        )),
        crate::support::Backend::Postgres => {
            let db = crate::support::TestDb::new(kind).await?;
            let polaris_config::DatabaseUrl::Postgres(url) = &db.url else {
                return None;
            };
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url.expose())
                .await
                .unwrap();
            let script = std::fs::read_to_string(examples.join("warehouse.postgres.sql")).unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(script))
                .execute(&mut conn)
                .await
                .unwrap();
            let url = url.expose().to_owned();
            Some((url, None, Some(db)))
        }
    }
}

both_stores!(
    dean_inspects_a_real_warehouse_read_only,
    Options::default(),
    |srv| {
        // The floor's store and Dean's warehouse use the same backend in each run.
        let dir = tempfile::tempdir().unwrap();
        let Some((url, seed, mut warehouse_db)) = warehouse_url(srv.backend, dir.path()).await
        else {
            return;
        };
        let seed = seed
            .map(|s| format!("\n        seed: {s}"))
            .unwrap_or_default();
        let yaml = format!(
            "agents:\n  - id: agent:dean\n    name: Dean\n    display_name: Dean (Data)\n    tags: [data]\n    tools:\n      database:\n        url: {url}{seed}\n"
        );
        let d = agents_dir(&yaml);
        srv.stop().await;
        srv.store.close().await;
        srv.opts.agents_file = Some(d.file.clone());
        srv.reopen().await;
        let c = srv.client();
        c.post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
            .await;
        c.post("/projects/warehouse/sessions", json!({"name": "s"}))
            .await;
        let mut ws = c.ws("/projects/warehouse/sessions/s/ws").await.unwrap();

        let q = ask(&c, "s", "@dean which tables hold PII?").await;
        let a = wait_for(&mut ws, "PII report", reply_to(&q)).await;
        let text = a["payload"]["content"].as_str().unwrap();
        for col in ["customers.email", "customers.phone", "customers.dob"] {
            assert!(text.contains(col), "{col} missing: {text}");
        }

        let q = ask(
            &c,
            "s",
            "@dean why is `SELECT * FROM orders WHERE customer_id = 42` slow?",
        )
        .await;
        let a = wait_for(&mut ws, "plan", reply_to(&q)).await;
        let text = a["payload"]["content"].as_str().unwrap();
        assert!(
            text.to_lowercase().contains("create index") && text.contains("customer_id"),
            "{text}"
        );

        let q = ask(&c, "s", "@dean show the DDL of payments").await;
        let a = wait_for(&mut ws, "DDL", reply_to(&q)).await;
        assert!(
            a["payload"]["content"]
                .as_str()
                .unwrap()
                .contains("CREATE TABLE"),
            "{a}"
        );

        // Dean never writes: a write in backticks is refused and the data is unchanged.
        let q = ask(
            &c,
            "s",
            "@dean run `WITH x AS (DELETE FROM orders RETURNING 1) SELECT count(*) FROM x`",
        )
        .await;
        let a = wait_for(&mut ws, "refusal", reply_to(&q)).await;
        assert!(
            a["payload"]["content"]
                .as_str()
                .unwrap()
                .starts_with("I did not run that"),
            "{a}"
        );
        let q = ask(&c, "s", "@dean what tables are there?").await;
        let a = wait_for(&mut ws, "tables", reply_to(&q)).await;
        assert!(
            a["payload"]["content"]
                .as_str()
                .unwrap()
                .contains("`orders` — ~12000 rows"),
            "{a}"
        );
        // Dean lets go of the warehouse before it is dropped.
        srv.stop().await;
        if let Some(db) = warehouse_db.as_mut() {
            db.drop_db().await;
        }
    }
);

both_stores!(
    isolated_agents_run_one_instance_per_floor,
    {
        let d = agents_dir(
            "agents:\n  - id: agent:iris\n    name: Iris\n    context: isolated\n    tags: [data]\n    knowledge: [knowledge/*.md]\n",
        );
        Options {
            agents_file: Some(d.file),
            ..Options::default()
        }
    },
    |srv| {
        let c = srv.client();
        for p in ["one", "two"] {
            c.post("/projects", json!({"name": p, "tags": ["data"]}))
                .await;
            c.post(&format!("/projects/{p}/sessions"), json!({"name": "s"}))
                .await;
        }
        for p in ["one", "two"] {
            let mut ws = c.ws(&format!("/projects/{p}/sessions/s/ws")).await.unwrap();
            let q = c
                .prompt(p, "s", "user:manu", "@iris how long are raw events kept?")
                .await
                .json["id"]
                .clone();
            let a = wait_for(&mut ws, "Iris", reply_to(&q)).await;
            assert_eq!(a["sender"], "agent:iris");
            assert!(
                a["payload"]["content"]
                    .as_str()
                    .unwrap()
                    .contains("400 days"),
                "{a}"
            );
        }
    }
);
