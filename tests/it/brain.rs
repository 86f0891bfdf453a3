//! The LLM brain and agent memory, driven as a user would: an agents file whose Dean
//! thinks with an OpenAI-compatible endpoint started by the test (`support::openai`),
//! mentions posted over HTTP, answers read over WebSocket, memory listed and deleted
//! through the API — on both stores.

use std::time::Duration;

use serde_json::{Value, json};

use crate::answers::{AgentsDir, agents_dir, wait_for};
use crate::both_stores;
use crate::support::openai::{FakeOpenAi, Reply};
use crate::support::{Client, Options, TestServer};

/// The API key the test endpoint expects; it must never show on the floor or in the API.
const KEY: &str = "sk-test-4f1c9e2b7d60a8e35c21";

/// Dean (LLM brain against `endpoint`, key by file reference) and his knowledge notes.
fn llm_team(endpoint: &str, timeout: &str) -> (AgentsDir, Options) {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{KEY}\n")).unwrap();
    let (_, key_path) = key_file.keep().unwrap();
    let d = agents_dir(&format!(
        r#"
agents:
  - id: agent:dean
    name: Dean
    display_name: Dean (Data)
    tags: [data]
    skills: [sql, warehouse]
    knowledge: [knowledge/*.md]
    brain:
      kind: llm
      endpoint: {endpoint}
      model: test-model
      api_key: file:{}
      max_tokens: 300
      max_turns: 4
      timeout: {timeout}
"#,
        key_path.display()
    ));
    let o = Options {
        agents_file: Some(d.file.clone()),
        ..Options::default()
    };
    (d, o)
}

async fn floor(c: &Client, project: &str) -> crate::support::client::Ws {
    let r = c
        .post("/projects", json!({"name": project, "tags": ["data"]}))
        .await;
    assert!(r.status == 201 || r.status == 409, "{r:?}");
    let r = c
        .post(
            &format!("/projects/{project}/sessions"),
            json!({"name": "s-1", "driver": "user:manu"}),
        )
        .await;
    assert!(r.status == 201 || r.status == 409, "{r:?}");
    c.ws(&format!("/projects/{project}/sessions/s-1/ws"))
        .await
        .unwrap()
}

/// Asks on `project`/s-1 and waits for the answer's content.
async fn ask(c: &Client, ws: &mut crate::support::client::Ws, project: &str, text: &str) -> String {
    let r = c.prompt(project, "s-1", "user:manu", text).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json["id"].clone();
    let a = wait_for(ws, text, move |e: &Value| e["payload"]["in_reply_to"] == id).await;
    a["payload"]["content"].as_str().unwrap().to_owned()
}

/// Every event of a floor, as JSON text.
async fn floor_text(c: &Client, project: &str) -> String {
    c.get(&format!("/projects/{project}/events?after=0&limit=1000"))
        .await
        .json
        .to_string()
}

/// The text of a tool message in a recorded request.
fn tool_results(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// A tool call round trip: bad arguments go back to the model as the tool's result, a good
// call runs the tool, and the final streamed text is the answer.
both_stores!(an_llm_brain_calls_tools_and_answers, |srv| {
    let llm = FakeOpenAi::start(Reply::Text("unused".into())).await;
    llm.script([
        Reply::Tool {
            name: "search_knowledge".into(),
            arguments: "{\"query\": ".into(),
        },
        Reply::Tool {
            name: "search_knowledge".into(),
            arguments: json!({"query": "staging tables naming"}).to_string(),
        },
        Reply::Text("Staging tables are stg_<source>__<entity> (warehouse.md › Naming).".into()),
    ]);
    let (_dir, opts) = llm_team(&llm.base, "20s");
    restart_with(&mut srv, opts).await;
    let c = srv.client();
    let mut ws = floor(&c, "warehouse").await;
    c.prompt(
        "warehouse",
        "s-1",
        "user:ana",
        "we are renaming the raw layer today",
    )
    .await;
    let a = ask(
        &c,
        &mut ws,
        "warehouse",
        "@dean how do we name staging tables?",
    )
    .await;
    assert_eq!(
        a,
        "Staging tables are stg_<source>__<entity> (warehouse.md › Naming)."
    );
    let seen = llm.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let first = &seen[0].body;
    assert_eq!(first["model"], "test-model");
    assert_eq!(first["stream"], true);
    assert_eq!(first["max_tokens"], 300);
    let tools: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        tools.contains(&"search_knowledge") && tools.contains(&"remember"),
        "{tools:?}"
    );
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("Dean (Data)"), "{system}");
    assert!(
        system.contains("user:ana: we are renaming the raw layer today"),
        "recent floor context in the prompt: {system}"
    );
    assert!(
        first["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("how do we name staging tables")
    );
    // The key went in the header, resolved from its reference.
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    // Turn 2 carries the error, turn 3 the passage; the budget shrinks by what was written.
    let second = tool_results(&seen[1].body);
    assert!(
        second[0].starts_with("error: the arguments are not valid JSON"),
        "{second:?}"
    );
    let third = tool_results(&seen[2].body);
    assert!(third[1].contains("stg_<source>__<entity>"), "{third:?}");
    assert!(
        third[1].contains("warehouse.md › Warehouse conventions > Naming")
            || third[1].contains("warehouse.md"),
        "{third:?}"
    );
    assert!(seen[2].body["max_tokens"].as_u64().unwrap() < 300);
    // The key is nowhere on the floor or in the API.
    assert!(!floor_text(&c, "warehouse").await.contains(KEY));
    let dean = c.get("/agents/dean").await;
    assert_eq!(dean.status, 200);
    assert!(!dean.json.to_string().contains(KEY));
    assert!(
        dean.json["brain"]["api_key"]
            .as_str()
            .unwrap()
            .starts_with("file:")
    );
    assert_eq!(dean.json["brain"]["kind"], "llm");
});

// 429 with Retry-After (seconds, then a date), then success: the brain waits as asked and
// answers from the model.
both_stores!(a_rate_limited_endpoint_is_retried_after_its_delay, |srv| {
    let llm = FakeOpenAi::start(Reply::Text("unused".into())).await;
    llm.script([
        Reply::Status {
            code: 429,
            retry_after: Some("1".into()),
        },
        Reply::Text("Answered after the rate limit.".into()),
    ]);
    let (_dir, opts) = llm_team(&llm.base, "20s");
    restart_with(&mut srv, opts).await;
    let c = srv.client();
    let mut ws = floor(&c, "warehouse").await;
    let a = ask(&c, &mut ws, "warehouse", "@dean anything new?").await;
    assert_eq!(a, "Answered after the rate limit.");
    let seen = llm.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(950),
        "Retry-After honoured"
    );

    // `Retry-After` as an HTTP date (two seconds on, by the endpoint's own `Date`): waited
    // for too. Dates have whole seconds, so at least one passes.
    llm.script([
        Reply::StatusUntil {
            code: 429,
            after: Duration::from_secs(2),
        },
        Reply::Text("Answered after the date.".into()),
    ]);
    let a = ask(&c, &mut ws, "warehouse", "@dean and now?").await;
    assert_eq!(a, "Answered after the date.");
    let seen = llm.requests();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[3].at.duration_since(seen[2].at) >= Duration::from_millis(950),
        "Retry-After's date honoured"
    );
});

// Repeated 500s: retried, then the offline brain answers with a note saying so; a hung
// endpoint hits the timeout; malformed JSON is reported — never a hang or a silent drop.
both_stores!(a_failing_endpoint_falls_back_to_the_offline_brain, |srv| {
    let llm = FakeOpenAi::start(Reply::Status {
        code: 500,
        retry_after: None,
    })
    .await;
    let (_dir, opts) = llm_team(&llm.base, "3s");
    restart_with(&mut srv, opts).await;
    let c = srv.client();
    let mut ws = floor(&c, "warehouse").await;

    let a = ask(
        &c,
        &mut ws,
        "warehouse",
        "@dean how do we name staging tables?",
    )
    .await;
    assert!(
        a.starts_with("_Answering from my offline brain: my model (test-model at"),
        "{a}"
    );
    assert!(a.contains("500"), "{a}");
    assert!(
        a.contains("stg_<source>__<entity>"),
        "the offline answer follows: {a}"
    );
    assert_eq!(llm.requests().len(), 4, "the first try and three retries");

    llm.set_fallback(Reply::Hang);
    let a = ask(
        &c,
        &mut ws,
        "warehouse",
        "@dean how long are raw events kept?",
    )
    .await;
    assert!(a.starts_with("_Answering from my offline brain:"), "{a}");
    assert!(a.contains("in time") || a.contains("within 3s"), "{a}");
    assert!(a.contains("400 days"), "{a}");

    llm.set_fallback(Reply::Malformed);
    let a = ask(&c, &mut ws, "warehouse", "@dean how do we name marts?").await;
    assert!(a.contains("not a chat completion"), "{a}");
    assert!(a.contains("fct_"), "{a}");
    assert!(!floor_text(&c, "warehouse").await.contains(KEY));
});

const MEMORY_TEAM: &str = r#"
agents:
  - id: agent:dean
    name: Dean
    tags: [data]
  - id: agent:ivy
    name: Ivy
    tags: [data]
    context: isolated
"#;

fn memory_team() -> (AgentsDir, Options) {
    let d = agents_dir(MEMORY_TEAM);
    let o = Options {
        agents_file: Some(d.file.clone()),
        ..Options::default()
    };
    (d, o)
}

// Memory: a shared agent recalls on every floor, an isolated one only where it learned;
// both across a restart; decisions become memory; a fact deleted through the API is gone
// from answers.
both_stores!(agents_remember_by_their_context_model, |srv| {
    let (_dir, opts) = memory_team();
    restart_with(&mut srv, opts).await;
    let c = srv.client();
    let mut a_ws = floor(&c, "warehouse").await;
    let a = ask(
        &c,
        &mut a_ws,
        "warehouse",
        "@dean remember: the orders table is partitioned by month",
    )
    .await;
    assert!(
        a.starts_with("I'll remember that: the orders table is partitioned by month"),
        "{a}"
    );
    let a = ask(
        &c,
        &mut a_ws,
        "warehouse",
        "@ivy remember that the deploy freeze starts on friday",
    )
    .await;
    assert!(
        a.starts_with("I'll remember that on warehouse: the deploy freeze starts on friday"),
        "{a}"
    );
    drop(a_ws);

    srv.restart().await;
    let c = srv.client();
    let mut b_ws = floor(&c, "lake").await;
    let a = ask(&c, &mut b_ws, "lake", "@dean how is orders partitioned?").await;
    assert!(
        a.contains("From memory:") && a.contains("partitioned by month"),
        "{a}"
    );
    assert!(a.contains("from event `"), "cites its source: {a}");
    let a = ask(
        &c,
        &mut b_ws,
        "lake",
        "@ivy when does the deploy freeze start?",
    )
    .await;
    assert!(!a.contains("friday"), "nothing crosses floors: {a}");
    let mut a_ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
    let a = ask(
        &c,
        &mut a_ws,
        "warehouse",
        "@ivy when does the deploy freeze start?",
    )
    .await;
    assert!(a.contains("friday"), "{a}");

    // A decision on the floor becomes memory (Ivy's of this floor).
    let r = c
        .post(
            "/projects/warehouse/sessions/s-1/annotations",
            json!({"kind": "decision", "value": "use dbt snapshots for customers"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let ivy = c.get("/agents/ivy/memory?project=warehouse").await;
    assert_eq!(ivy.status, 200, "{ivy:?}");
    let facts: Vec<&str> = ivy.json["memory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["fact"].as_str().unwrap())
        .collect();
    assert!(
        facts
            .iter()
            .any(|f| f.contains("use dbt snapshots for customers")),
        "{facts:?}"
    );
    assert_eq!(
        c.get("/agents/ivy/memory?project=lake").await.json["memory"],
        json!([])
    );

    // Listed, fetched, deleted: then gone from answers.
    let dean = c.get("/agents/dean/memory").await;
    let list = dean.json["memory"].as_array().unwrap().clone();
    let orders = list
        .iter()
        .find(|m| m["fact"].as_str().unwrap().contains("orders"))
        .unwrap();
    assert_eq!(orders["origin"], "remember");
    assert_eq!(orders["project_id"], Value::Null);
    assert_eq!(orders["author"], "user:manu");
    assert_eq!(orders["source_events"].as_array().unwrap().len(), 1);
    let path = format!("/agents/dean/memory/{}", orders["id"].as_str().unwrap());
    assert_eq!(c.get(&path).await.json["fact"], orders["fact"]);
    let r = c.delete(&path).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.get(&path).await;
    assert_eq!(r.status, 404);
    assert!(r.json["error"].is_string(), "{r:?}");
    assert_eq!(c.delete(&path).await.status, 404);
    let a = ask(
        &c,
        &mut a_ws,
        "warehouse",
        "@dean how is orders partitioned?",
    )
    .await;
    assert!(!a.contains("partitioned by month"), "{a}");

    // Forgetting by words.
    let a = ask(&c, &mut a_ws, "warehouse", "@ivy forget deploy freeze").await;
    assert!(a.starts_with("Forgotten:") && a.contains("friday"), "{a}");
    let a = ask(
        &c,
        &mut a_ws,
        "warehouse",
        "@ivy when does the deploy freeze start?",
    )
    .await;
    assert!(!a.contains("friday"), "{a}");

    // Bad input: 4xx with JSON errors.
    assert_eq!(c.get("/agents/nobody/memory").await.status, 404);
    let r = c.get("/agents/dean/memory/not-a-uuid").await;
    assert_eq!(r.status, 400);
    assert!(r.json["error"].as_str().unwrap().contains("mid"), "{r:?}");
    assert_eq!(c.get("/agents/dean/memory?limit=0").await.status, 400);
});

// Memory is org-scoped: another org neither sees nor deletes it.
both_stores!(
    memory_is_org_scoped,
    Options {
        secret: true,
        ..Options::default()
    },
    |srv| {
        let (_dir, opts) = memory_team();
        restart_with(
            &mut srv,
            Options {
                secret: true,
                ..opts
            },
        )
        .await;
        use polaris_runtime::auth::{DEFAULT_ORG, Role};
        let c = srv.client_as(DEFAULT_ORG, "user:manu", Role::Admin);
        let mut ws = floor(&c, "warehouse").await;
        ask(
            &c,
            &mut ws,
            "warehouse",
            "@dean remember: invoices close on the 5th",
        )
        .await;
        let list = c.get("/agents/dean/memory").await.json["memory"].clone();
        let id = list[0]["id"].as_str().unwrap().to_owned();
        let other = srv.client_as("other-org", "user:eve", Role::Admin);
        let r = other.get(&format!("/agents/dean/memory/{id}")).await;
        assert_eq!(r.status, 404, "{r:?}");
        assert_eq!(
            other
                .delete(&format!("/agents/dean/memory/{id}"))
                .await
                .status,
            404
        );
        assert_eq!(
            c.get(&format!("/agents/dean/memory/{id}")).await.status,
            200
        );
    }
);

/// Starts the test's server again with `opts` (its agents file), on the same database.
async fn restart_with(srv: &mut TestServer, opts: Options) {
    srv.stop().await;
    srv.store.close().await;
    srv.opts = opts;
    srv.reopen().await;
}

// An agent in a process of its own (`polaris agent run`) keeps and recalls memory through
// the floor's API.
both_stores!(
    an_agent_run_on_its_own_remembers_through_the_api,
    Options::secured(),
    |srv| {
        use polaris_runtime::auth::Role;
        let dir = agents_dir(&crate::answers::TEAM.replacen(
            "  - id: agent:dean\n",
            "  - id: agent:dean\n    hosting: external\n",
            1,
        ));
        srv.load_agents(&dir.file).await;
        let c = srv.client_as("default", "user:manu", Role::Member);
        let mut ws = floor(&c, "warehouse").await;
        let states = tempfile::tempdir().unwrap();
        let run = crate::agent_run::Run::start(&srv, &dir.file, &states.path().join("one")).await;
        run.until_ready().await;
        let a = ask(
            &c,
            &mut ws,
            "warehouse",
            "@dean remember: the ledger closes on the 5th",
        )
        .await;
        assert!(
            a.starts_with("I'll remember that: the ledger closes on the 5th"),
            "{a}"
        );
        let list = c.get("/agents/dean/memory").await;
        assert_eq!(
            list.json["memory"][0]["fact"], "the ledger closes on the 5th",
            "{list:?}"
        );
        let a = ask(
            &c,
            &mut ws,
            "warehouse",
            "@dean when does the ledger close?",
        )
        .await;
        assert!(a.contains("From memory:") && a.contains("5th"), "{a}");
        // Only the agent itself (or a service, or an admin) writes its memory.
        let r = c
            .post("/agents/dean/memory", json!({"fact": "made up"}))
            .await;
        assert_eq!(r.status, 403, "{r:?}");
        drop(run);
    }
);

/// A key nobody could mistake for anything else.
const LIVE_KEY: &str = "sk-hyg1ene-Q7vX2mK9pL4rT8wZ3nB6cD5f";

/// Reads a child's pipe to the end into `into`.
fn collect(
    pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut s = into.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    })
}

// API keys never reach logs, events or API answers: `polaris serve` as people run it, at
// debug level, Dean's key in its environment. The endpoint fails once (a retry is logged)
// then answers; later it refuses the key repeating it in its error (the offline answer's
// note and the log line say why, without the key); then it fails for good.
async fn api_keys_never_reach_logs_events_or_answers(backend: crate::support::Backend) {
    let Some(mut db) = crate::support::TestDb::new(backend).await else {
        return;
    };
    let llm = FakeOpenAi::start(Reply::Text("unused".into())).await;
    llm.script([
        Reply::Status {
            code: 500,
            retry_after: None,
        },
        Reply::Text("Staging tables are stg_<source>__<entity>.".into()),
        Reply::BadKey,
    ]);
    let dir = agents_dir(&format!(
        r#"
agents:
  - id: agent:dean
    name: Dean
    display_name: Dean (Data)
    tags: [data]
    knowledge: [knowledge/*.md]
    brain:
      kind: llm
      endpoint: {}
      model: test-model
      api_key: env:POLARIS_TEST_DEAN_KEY
      max_turns: 2
      timeout: 10s
"#,
        llm.base
    ));
    let db_args = crate::process::db_args(&db);
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--agents",
        dir.file.to_str().unwrap(),
    ];
    args.extend(db_args.iter().map(String::as_str));
    let mut cmd = crate::process::polaris(&args);
    cmd.env("POLARIS_LOG", "debug")
        .env("POLARIS_TEST_DEAN_KEY", LIVE_KEY);
    let mut child = cmd.spawn().unwrap();
    let (out, err) = (
        std::sync::Arc::new(std::sync::Mutex::new(String::new())),
        std::sync::Arc::new(std::sync::Mutex::new(String::new())),
    );
    let readers = [
        collect(child.stdout.take().unwrap(), out.clone()),
        collect(child.stderr.take().unwrap(), err.clone()),
    ];
    let base = crate::support::eventually(30, || async {
        let s = out.lock().unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("listening on "))
            .map(str::to_owned)
    })
    .await;

    let c = Client::new(&base, None);
    let mut ws = floor(&c, "warehouse").await;
    let a = ask(
        &c,
        &mut ws,
        "warehouse",
        "@dean how do we name staging tables?",
    )
    .await;
    assert_eq!(a, "Staging tables are stg_<source>__<entity>.");
    let a = ask(
        &c,
        &mut ws,
        "warehouse",
        "@dean how long are raw events kept?",
    )
    .await;
    assert!(a.starts_with("_Answering from my offline brain:"), "{a}");
    assert!(
        a.contains("401") && a.contains("Incorrect API key provided"),
        "{a}"
    );
    llm.set_fallback(Reply::Status {
        code: 500,
        retry_after: None,
    });
    let a = ask(&c, &mut ws, "warehouse", "@dean how do we name marts?").await;
    assert!(
        a.starts_with("_Answering from my offline brain:") && a.contains("500"),
        "{a}"
    );
    // The key was used: it went to the endpoint, in the header.
    assert_eq!(
        llm.requests()[0].authorization.as_deref(),
        Some(format!("Bearer {LIVE_KEY}").as_str())
    );

    let mut answers = vec![floor_text(&c, "warehouse").await];
    for path in [
        "/agents",
        "/agents/dean",
        "/agents/agent:dean",
        "/projects/warehouse/messages",
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        answers.push(r.json.to_string());
    }
    for a in &answers {
        assert!(!a.contains(LIVE_KEY), "the key in an API answer: {a}");
    }
    ws.close().await;
    crate::process::sigterm(&child).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    for r in readers {
        r.await.unwrap();
    }
    let (out, err) = (out.lock().unwrap().clone(), err.lock().unwrap().clone());
    assert!(
        err.contains("DEBUG") && err.contains("model endpoint refused; retrying"),
        "logged at debug, the retry included: {err}"
    );
    assert!(
        err.contains("llm brain failed; answering offline"),
        "the failure is logged: {err}"
    );
    assert!(!out.contains(LIVE_KEY), "the key on stdout");
    assert!(!err.contains(LIVE_KEY), "the key in the log");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_reach_logs_events_or_answers_sqlite() {
    api_keys_never_reach_logs_events_or_answers(crate::support::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_reach_logs_events_or_answers_postgres() {
    api_keys_never_reach_logs_events_or_answers(crate::support::Backend::Postgres).await;
}
