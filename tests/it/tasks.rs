//! Agents driving sessions of their own: a task handed to Dean over the API runs as steps
//! in a session (prompt, tool calls, a Stop with the outcome), advice given with the
//! hand-over steers it, and a stop request, a human taking the seat back or the budget ends
//! it. Dean runs as `polaris agent run` (hosting: external), as in production.

use serde_json::{Value, json};

use crate::agent_run::Run;
use crate::answers::agents_dir;
use crate::both_stores;
use crate::support::{Client, Options, TestServer, eventually};
use polaris_runtime::auth::Role;

/// Dean, hosted outside the floor, with the example warehouse (SQLite, seeded in `dir`).
fn dean_with_a_warehouse(dir: &std::path::Path) -> std::path::PathBuf {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let yaml = format!(
        "agents:\n  - id: agent:dean\n    hosting: external\n    name: Dean\n    display_name: Dean (Data)\n    tags: [data]\n    tools:\n      database:\n        url: sqlite:{}\n        seed: {}\n",
        dir.join("warehouse.db").display(),
        examples.join("warehouse.sql").display()
    );
    agents_dir(&yaml).file
}

async fn setup(srv: &TestServer) -> (Client, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dean_with_a_warehouse(dir.path());
    srv.load_agents(&file).await;
    let c = srv.client_as("default", "user:manu", Role::Member);
    let r = c
        .post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (c, file, dir)
}

const TASKS: &str = "/projects/warehouse/agents/dean/tasks";

/// The events of the task's session, once its Stop is there.
async fn until_stopped(c: &Client, session: &str, task: &Value) -> Vec<Value> {
    eventually(30, || async {
        let events = c
            .get(&format!("/projects/warehouse/sessions/{session}/messages"))
            .await
            .json;
        let events = events.as_array()?.clone();
        events
            .iter()
            .any(|e| e["kind"] == "Stop" && e["payload"]["task_id"] == *task)
            .then_some(events)
    })
    .await
}

/// Hands Dean a task over the API: its id and session.
async fn hand(c: &Client, body: Value) -> (Value, String) {
    let r = c.post(TASKS, body).await;
    assert_eq!(r.status, 201, "{r:?}");
    (
        r.json["id"].clone(),
        r.json["session"].as_str().unwrap().to_owned(),
    )
}

/// Waits until the task's first tool result is on the floor.
async fn until_first_tool_step(c: &Client, session: &str, task: &Value) {
    eventually(20, || async {
        let events = c
            .get(&format!("/projects/warehouse/sessions/{session}/messages"))
            .await
            .json;
        events
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "PostToolUse" && e["payload"]["task_id"] == *task)
            .then_some(())
    })
    .await;
}

fn steps(events: &[Value], task: &Value) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["payload"]["task_id"] == *task && e["sender"] == "agent:dean")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["payload"]["tool_name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

both_stores!(
    dean_drives_a_pii_audit_handed_over_through_the_api,
    Options::secured(),
    |srv| {
        let (c, file, dir) = setup(&srv).await;
        let dean = Run::start(&srv, &file, &dir.path().join("state")).await;
        dean.until_ready().await;

        let r = c
            .post(
                TASKS,
                json!({"task": "PII audit of the warehouse: propose masking policies", "budget": {"steps": 20}}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.json["id"].clone();
        let session = r.json["session"].as_str().unwrap().to_owned();
        assert!(session.starts_with("task-"), "{session}");
        assert_eq!(r.json["status"], "queued");

        let events = until_stopped(&c, &session, &id).await;
        let s = steps(&events, &id);
        assert_eq!(s[0].0, "UserPromptSubmit", "{s:?}");
        assert_eq!(
            s[1],
            ("PreToolUse".into(), "warehouse.tables".into()),
            "{s:?}"
        );
        assert_eq!(
            s[2],
            ("PostToolUse".into(), "warehouse.tables".into()),
            "{s:?}"
        );
        assert_eq!(
            s[3],
            ("PreToolUse".into(), "warehouse.pii_columns".into()),
            "{s:?}"
        );
        assert!(s.iter().any(|x| x.1 == "warehouse.ddl"), "{s:?}");
        assert_eq!(s.last().unwrap().0, "Stop");
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
        let summary = stop["payload"]["last_assistant_message"].as_str().unwrap();
        assert!(
            summary.contains("customers") && summary.contains("MASKING POLICY"),
            "{summary}"
        );
        // The floor shows the session driven by Dean, its steps under his persona.
        let sess = c
            .get(&format!("/projects/warehouse/sessions/{session}"))
            .await;
        assert_eq!(sess.json["driver"], "agent:dean", "{sess:?}");
        assert_eq!(stop["payload"]["persona"]["name"], "Dean (Data)");

        let t = c.get(&format!("{TASKS}/{}", id.as_str().unwrap())).await;
        assert_eq!(t.status, 200, "{t:?}");
        assert_eq!(t.json["status"], "done", "{t:?}");
        assert_eq!(t.json["session"], session.as_str());
        let tools = s.iter().filter(|x| x.0 == "PostToolUse").count() as u64;
        assert_eq!(t.json["used"]["steps"], tools, "{t:?}");
        assert!(t.json["finished_at"].is_string());
        let list = c.get(TASKS).await;
        assert_eq!(list.json["tasks"][0]["id"], id, "{list:?}");

        // A finished task cannot be stopped; a second task on a driven session is refused.
        let r = c
            .post(&format!("{TASKS}/{}/stop", id.as_str().unwrap()), json!({}))
            .await;
        assert_eq!(r.status, 409, "{r:?}");
        let r = c
            .post(
                TASKS,
                json!({"task": "PII audit again", "session": session}),
            )
            .await;
        assert_eq!(r.status, 409, "{r:?}");
        assert!(r.error().contains("driver"), "{}", r.error());
    }
);

both_stores!(
    advice_steers_a_task_and_budgets_stops_and_seats_end_it,
    Options::secured(),
    |srv| {
        let (c, file, dir) = setup(&srv).await;
        let dean = Run::start(&srv, &file, &dir.path().join("state")).await;
        dean.until_ready().await;

        // Advice in the session before the hand-over: the task leaves payments out.
        c.post(
            "/projects/warehouse/sessions",
            json!({"name": "audit", "driver": "user:manu"}),
        )
        .await;
        let sean = srv.client_as("default", "user:sean", Role::Member);
        let r = sean
            .post(
                "/projects/warehouse/sessions/audit/inject",
                json!({"content": "skip payments, finance owns that table"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        c.post("/projects/warehouse/sessions/audit/handoff", json!({}))
            .await;
        let r = c
            .post(TASKS, json!({"task": "PII audit", "session": "audit"}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.json["id"].clone();
        let events = until_stopped(&c, "audit", &id).await;
        let noted = events
            .iter()
            .find(|e| e["payload"]["task_id"] == id && e["kind"] == "message")
            .expect("the advice acknowledged");
        assert!(
            noted["payload"]["content"]
                .as_str()
                .unwrap()
                .contains("leaving out payments"),
            "{noted}"
        );
        let ddl_tables: Vec<&str> = events
            .iter()
            .filter(|e| e["kind"] == "PreToolUse" && e["payload"]["tool_name"] == "warehouse.ddl")
            .map(|e| e["payload"]["tool_input"]["table"].as_str().unwrap())
            .collect();
        assert!(ddl_tables.contains(&"customers"), "{ddl_tables:?}");
        assert!(!ddl_tables.contains(&"payments"), "{ddl_tables:?}");

        // A budget of one tool step: it stops after the first and says so.
        let r = c
            .post(TASKS, json!({"task": "PII audit", "budget": {"steps": 1}}))
            .await;
        let (id, session) = (
            r.json["id"].clone(),
            r.json["session"].as_str().unwrap().to_owned(),
        );
        let events = until_stopped(&c, &session, &id).await;
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "stopped", "{stop}");
        assert!(
            stop["payload"]["reason"]
                .as_str()
                .unwrap()
                .contains("1 of 1 steps"),
            "{stop}"
        );
        assert_eq!(
            steps(&events, &id)
                .iter()
                .filter(|s| s.0 == "PostToolUse")
                .count(),
            1
        );
        let t = c.get(&format!("{TASKS}/{}", id.as_str().unwrap())).await;
        assert_eq!(t.json["status"], "stopped", "{t:?}");

        // Handed over while Dean is down, then stopped, and a human takes another seat
        // back: when Dean comes back, each stops before its first tool step.
        let mut dean = dean;
        dean.child.start_kill().unwrap();
        dean.child.wait().await.unwrap();
        let stop_me = c.post(TASKS, json!({"task": "PII audit"})).await;
        let stop_id = stop_me.json["id"].clone();
        let stop_session = stop_me.json["session"].as_str().unwrap().to_owned();
        let r = c
            .post(
                &format!("{TASKS}/{}/stop", stop_id.as_str().unwrap()),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 202, "{r:?}");
        let seat = c.post(TASKS, json!({"task": "PII audit"})).await;
        let seat_id = seat.json["id"].clone();
        let seat_session = seat.json["session"].as_str().unwrap().to_owned();
        let s = format!("/projects/warehouse/sessions/{seat_session}");
        assert_eq!(c.post(&format!("{s}/handoff"), json!({})).await.status, 200);
        let r = c
            .post(&format!("{s}/driver"), json!({"driver": "user:manu"}))
            .await;
        assert_eq!(r.status, 200, "{r:?}");

        let again = Run::start(&srv, &file, &dir.path().join("state")).await;
        again.until_ready().await;
        for (id, session, why) in [
            (&stop_id, &stop_session, "stop requested by user:manu"),
            (&seat_id, &seat_session, "user:manu took the seat"),
        ] {
            let events = until_stopped(&c, session, id).await;
            let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
            assert_eq!(stop["payload"]["status"], "stopped", "{stop}");
            let reason = stop["payload"]["reason"].as_str().unwrap();
            assert!(
                reason.contains(why) || reason.contains("handed the seat back"),
                "{reason}"
            );
            assert_eq!(
                steps(&events, id)
                    .iter()
                    .filter(|s| s.0 == "PostToolUse")
                    .count(),
                0
            );
        }
    }
);

both_stores!(
    bad_task_requests_name_the_field_and_leave_nothing_behind,
    Options::secured(),
    |srv| {
        let (c, _file, _dir) = setup(&srv).await;
        let cases = [
            (
                "/projects/warehouse/agents/nobody/tasks",
                json!({"task": "x"}),
                404,
                "agent",
            ),
            (
                "/projects/nowhere/agents/dean/tasks",
                json!({"task": "x"}),
                404,
                "Project",
            ),
            (
                TASKS,
                json!({"task": "x", "budget": {"steps": "ten"}}),
                400,
                "budget.steps",
            ),
            (
                TASKS,
                json!({"task": "x", "budget": {"steps": 0}}),
                400,
                "budget.steps",
            ),
            (
                TASKS,
                json!({"task": "x", "budget": {"wall_ms": 5}}),
                400,
                "budget.wall_ms",
            ),
            (TASKS, json!({"task": "  "}), 400, "task"),
            (
                TASKS,
                json!({"task": "x", "session": "bad\nname"}),
                400,
                "session",
            ),
            (TASKS, json!({"task": "x", "extra": 1}), 400, "extra"),
        ];
        for (path, body, status, field) in cases {
            let r = c.post(path, body.clone()).await;
            assert_eq!(r.status, status, "{path} {body}: {r:?}");
            assert!(r.error().contains(field), "{path} {body}: {}", r.error());
        }
        // Nothing was created by any of them.
        let sessions = c.get("/projects/warehouse/sessions").await;
        assert_eq!(
            sessions.json.as_array().map(Vec::len),
            Some(0),
            "{sessions:?}"
        );
        assert_eq!(c.get(TASKS).await.json["tasks"], json!([]));
        let r = c
            .get(&format!("{TASKS}/0190a0a0-0000-7000-8000-000000000000"))
            .await;
        assert_eq!(r.status, 404, "{r:?}");
    }
);

fn with_the_floors_agents() -> Options {
    // The floor reads the same file (personas, joins, and the concierge that makes
    // hand-overs); Dean himself runs as `agent run`.
    let dir = tempfile::tempdir().unwrap().keep();
    Options {
        secret: true,
        agents_file: Some(dean_with_a_warehouse(&dir)),
        ..Options::default()
    }
}

/// The warehouse floor with a session `name` Manu drives, and Dean running as `agent run`
/// (kept alive by the returned values).
async fn manus_session_with_dean(srv: &TestServer, name: &str) -> (Client, Run, tempfile::TempDir) {
    let file = srv.opts.agents_file.clone().unwrap();
    let c = srv.client_as("default", "user:manu", Role::Member);
    c.post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
        .await;
    c.post(
        "/projects/warehouse/sessions",
        json!({"name": name, "driver": "user:manu"}),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let dean = Run::start(srv, &file, state.path()).await;
    dean.until_ready().await;
    (c, dean, state)
}

both_stores!(
    a_take_written_on_the_floor_hands_the_task_over,
    with_the_floors_agents(),
    |srv| {
        let (c, _dean, _state) = manus_session_with_dean(&srv, "s-1").await;

        let mut ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
        let q = c
            .prompt(
                "warehouse",
                "s-1",
                "user:manu",
                "@dean take: PII audit of the warehouse",
            )
            .await;
        assert_eq!(q.status, 201, "{q:?}");
        let qid = q.json["id"].clone();
        let took = crate::answers::wait_for(&mut ws, "the hand-over notice", |e: &Value| {
            e["payload"]["in_reply_to"] == qid
        })
        .await;
        assert_eq!(took["sender"], "agent:polaris", "{took}");
        let content = took["payload"]["content"].as_str().unwrap();
        assert!(content.contains("Dean (Data) took the task"), "{content}");
        let task = took["payload"]["task_id"].clone();
        let session = content
            .split("session ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .to_owned();
        let events = until_stopped(&c, &session, &task).await;
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
        let t = c.get(&format!("{TASKS}/{}", task.as_str().unwrap())).await;
        assert_eq!(t.json["status"], "done", "{t:?}");
        assert_eq!(t.json["task"], "PII audit of the warehouse");

        // The take was a hand-over, not a question: a later question is answered, the take
        // never was (by Dean).
        let later = c
            .prompt(
                "warehouse",
                "s-1",
                "user:manu",
                "@dean which tables hold PII?",
            )
            .await;
        let lid = later.json["id"].clone();
        crate::answers::wait_for(&mut ws, "the later answer", |e: &Value| {
            e["payload"]["in_reply_to"] == lid && e["sender"] == "agent:dean"
        })
        .await;
        let all = c
            .get("/projects/warehouse/sessions/s-1/messages")
            .await
            .json;
        let answered_take = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["sender"] == "agent:dean" && e["payload"]["in_reply_to"] == qid)
            .count();
        assert_eq!(answered_take, 0);
        assert_eq!(
            c.get(TASKS).await.json["tasks"].as_array().unwrap().len(),
            1
        );
    }
);

both_stores!(
    a_human_hands_the_seat_to_dean_and_he_continues_the_work,
    with_the_floors_agents(),
    |srv| {
        let (c, _dean, _state) = manus_session_with_dean(&srv, "mine").await;

        let p = c
            .prompt(
                "warehouse",
                "mine",
                "user:manu",
                "find the PII in our warehouse and propose masking",
            )
            .await;
        assert_eq!(p.status, 201, "{p:?}");
        let s = "/projects/warehouse/sessions/mine";
        assert_eq!(c.post(&format!("{s}/handoff"), json!({})).await.status, 200);
        let r = c
            .post(&format!("{s}/driver"), json!({"driver": "agent:dean"}))
            .await;
        assert_eq!(r.status, 200, "{r:?}");

        let task = eventually(20, || async {
            let tasks = c.get(TASKS).await.json["tasks"].as_array()?.clone();
            tasks.first().cloned()
        })
        .await;
        assert_eq!(task["session"], "mine", "{task}");
        let text = task["task"].as_str().unwrap();
        assert!(text.contains("find the PII in our warehouse"), "{text}");
        let events = until_stopped(&c, "mine", &task["id"]).await;
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
        // The floor seating Dean for its own hand-overs is not a second task.
        assert_eq!(
            c.get(TASKS).await.json["tasks"].as_array().unwrap().len(),
            1
        );
    }
);

both_stores!(
    dean_audits_slow_queries_and_says_when_no_playbook_fits,
    Options::secured(),
    |srv| {
        let (c, file, dir) = setup(&srv).await;
        let dean = Run::start(&srv, &file, &dir.path().join("state")).await;
        dean.until_ready().await;

        let r = c
            .post(
                TASKS,
                json!({"task": "These are slow, propose indexes: `SELECT * FROM orders WHERE customer_id = 42` and `SELECT count(*) FROM payments WHERE order_id = 7`"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let (id, session) = (
            r.json["id"].clone(),
            r.json["session"].as_str().unwrap().to_owned(),
        );
        let events = until_stopped(&c, &session, &id).await;
        let explained: Vec<&str> = events
            .iter()
            .filter(|e| {
                e["kind"] == "PostToolUse" && e["payload"]["tool_name"] == "warehouse.explain"
            })
            .map(|e| e["payload"]["tool_input"]["sql"].as_str().unwrap())
            .collect();
        assert_eq!(explained.len(), 2, "{explained:?}");
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
        let summary = stop["payload"]["last_assistant_message"].as_str().unwrap();
        assert!(
            summary.to_lowercase().contains("create index") && summary.contains("customer_id"),
            "{summary}"
        );

        let r = c
            .post(TASKS, json!({"task": "write a haiku about tables"}))
            .await;
        let (id, session) = (
            r.json["id"].clone(),
            r.json["session"].as_str().unwrap().to_owned(),
        );
        let events = until_stopped(&c, &session, &id).await;
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "failed", "{stop}");
        assert!(
            stop["payload"]["last_assistant_message"]
                .as_str()
                .unwrap()
                .contains("PII audit"),
            "{stop}"
        );
        let t = c.get(&format!("{TASKS}/{}", id.as_str().unwrap())).await;
        assert_eq!(t.json["status"], "failed");
        assert_eq!(t.json["stop_reason"], "no playbook fits");
    }
);

/// A repository Sage may read: a leaked key, personal data, a binary file, and a key inside
/// `.git` (never scanned).
fn repository() -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(
        dir.join("config/deploy.env"),
        "REGION=eu-west-1\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("customers.csv"),
        "id,name,ssn\n1,Ada Lovelace,123-45-6789\n",
    )
    .unwrap();
    std::fs::write(dir.join("logo.png"), [0u8, 1, 2, 3, 0, 0]).unwrap();
    std::fs::write(
        dir.join(".git/config"),
        "token ghp_abcdefghijklmnopqrstuvwxyz0123456789\n",
    )
    .unwrap();
    dir
}

fn with_sage() -> Options {
    let repo = repository();
    let yaml = format!(
        "agents:\n  - id: agent:sage\n    name: Sage\n    display_name: Sage (Security)\n    tags: [security]\n    tools:\n      secrets: {{}}\n      files:\n        root: {}\n",
        repo.display()
    );
    Options {
        agents_file: Some(agents_dir(&yaml).file),
        ..Options::default()
    }
}

both_stores!(
    sage_scans_the_directory_it_may_read_in_process,
    with_sage(),
    |srv| {
        // Sage runs inside the floor's process here (hosting: server): the same driver.
        let c = srv.client();
        c.post("/projects", json!({"name": "infra", "tags": ["security"]}))
            .await;
        let r = c
            .post(
                "/projects/infra/agents/sage/tasks",
                json!({"task": "secret and PII scan of the repository"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let (id, session) = (
            r.json["id"].clone(),
            r.json["session"].as_str().unwrap().to_owned(),
        );
        let events = eventually(30, || async {
            let events = c
                .get(&format!("/projects/infra/sessions/{session}/messages"))
                .await
                .json;
            let events = events.as_array()?.clone();
            events
                .iter()
                .any(|e| e["kind"] == "Stop" && e["payload"]["task_id"] == id)
                .then_some(events)
        })
        .await;
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
        let summary = stop["payload"]["last_assistant_message"].as_str().unwrap();
        assert!(summary.contains("config/deploy.env:2"), "{summary}");
        assert!(summary.contains("AKIA…MPLE"), "{summary}");
        assert!(summary.contains("customers.csv"), "{summary}");
        assert!(
            summary.contains("1 secret(s) and 1 personal data"),
            "{summary}"
        );
        // Masked everywhere, and nothing from .git.
        let all = serde_json::to_string(&events).unwrap();
        assert!(
            !all.contains("AKIAIOSFODNN7EXAMPLE"),
            "a secret reached the floor"
        );
        assert!(!all.contains("ghp_"), "{all}");

        // Only the agents file may give an agent a directory: the API refuses it.
        let r = c
            .post(
                "/agents",
                json!({"id": "agent:snoop", "name": "Snoop", "tools": {"files": {"root": "/etc"}}}),
            )
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("tools.files"), "{}", r.error());
    }
);

/// A slow-query task long enough to interrupt: `n` quoted queries, one tool step each.
fn many_queries(n: usize) -> String {
    let qs: Vec<String> = (0..n)
        .map(|i| format!("`SELECT * FROM orders WHERE customer_id = {i}`"))
        .collect();
    format!("These are slow, propose indexes: {}", qs.join(" "))
}

/// Dean (as `agent run`) driving a task of `n` tool steps, its first one on the floor:
/// the client, the agents file, the state directory, Dean, the task id and its session.
async fn long_task_running(
    srv: &TestServer,
    n: usize,
) -> (
    Client,
    std::path::PathBuf,
    tempfile::TempDir,
    Run,
    Value,
    String,
) {
    let (c, file, dir) = setup(srv).await;
    let dean = Run::start(srv, &file, &dir.path().join("state")).await;
    dean.until_ready().await;
    let (id, session) = hand(
        &c,
        json!({"task": many_queries(n), "budget": {"steps": 200}}),
    )
    .await;
    until_first_tool_step(&c, &session, &id).await;
    (c, file, dir, dean, id, session)
}

/// Steps of a task: each step number once, in order, and how many tool results.
fn check_steps(events: &[Value], task: &Value) -> usize {
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["payload"]["task_id"] == *task && e["sender"] == "agent:dean")
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut last = -1i64;
    let shown: Vec<String> = mine
        .iter()
        .map(|e| format!("{}:{}:{}", e["seq"], e["kind"], e["payload"]["step"]))
        .collect();
    for e in &mine {
        let key = (
            e["kind"].as_str().unwrap().to_owned(),
            e["payload"]["step"].as_i64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "step {key:?} twice: {shown:?}");
        assert!(key.1 >= last, "step {key:?} after step {last}: {shown:?}");
        last = key.1;
    }
    mine.iter().filter(|e| e["kind"] == "PostToolUse").count()
}

both_stores!(
    a_task_cut_off_by_kill_9_continues_from_its_last_step,
    Options::secured(),
    |srv| {
        let n = 60;
        let (c, file, dir, mut dean, id, session) = long_task_running(&srv, n).await;
        let state = dir.path().join("state");
        // Killed once its first tool step is on the floor.
        dean.child.start_kill().unwrap();
        dean.child.wait().await.unwrap();
        let before = c
            .get(&format!("/projects/warehouse/sessions/{session}/messages"))
            .await
            .json;
        let done_before = check_steps(before.as_array().unwrap(), &id);
        eprintln!("tool steps on the floor when Dean was killed: {done_before} of {n}");
        let again = Run::start(&srv, &file, &state).await;
        again.until_ready().await;
        let events = until_stopped(&c, &session, &id).await;
        assert_eq!(check_steps(&events, &id), n);
        let stop = events.iter().rev().find(|e| e["kind"] == "Stop").unwrap();
        assert_eq!(stop["payload"]["status"], "done", "{stop}");
    }
);

both_stores!(
    a_task_outlives_the_floor_going_down_and_its_steps_arrive_in_order,
    Options::secured(),
    |srv| {
        let n = 60;
        let (_, file, _dir, dean, id, session) = long_task_running(&srv, n).await;
        // The floor restarts mid-task: Dean's steps wait in his sidecar meanwhile.
        srv.restart_in_place().await;
        srv.load_agents(&file).await;
        let c = srv.client_as("default", "user:manu", Role::Member);
        let events = until_stopped(&c, &session, &id).await;
        assert_eq!(check_steps(&events, &id), n);
        // In seq order, the steps are in step order (check_steps) and the Stop is last.
        let last = events
            .iter()
            .rfind(|e| e["payload"]["task_id"] == id && e["sender"] == "agent:dean")
            .unwrap();
        assert_eq!(last["kind"], "Stop");
        drop(dean);
    }
);

both_stores!(
    an_inject_reaches_a_running_task_at_its_next_step,
    Options::secured(),
    |srv| {
        let n = 120;
        let (c, _file, _dir, _dean, id, session) = long_task_running(&srv, n).await;
        let sean = srv.client_as("default", "user:sean", Role::Member);
        let r = sean
            .post(
                &format!("/projects/warehouse/sessions/{session}/inject"),
                json!({"content": "orders is partitioned by month, mind the pruning"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let inject_seq = r.json["seq"].as_i64().unwrap();
        let events = until_stopped(&c, &session, &id).await;
        let noted = events
            .iter()
            .find(|e| e["payload"]["task_id"] == id && e["kind"] == "message")
            .expect("the advice taken in while the task ran");
        assert!(
            noted["payload"]["content"]
                .as_str()
                .unwrap()
                .contains("Noted from user:sean"),
            "{noted}"
        );
        assert!(noted["seq"].as_i64().unwrap() > inject_seq);
        let after: usize = events
            .iter()
            .filter(|e| {
                e["payload"]["task_id"] == id
                    && e["kind"] == "PostToolUse"
                    && e["seq"].as_i64().unwrap() > noted["seq"].as_i64().unwrap()
            })
            .count();
        assert!(after > 0, "taken in at a step, then the task went on");
        assert_eq!(check_steps(&events, &id), n);
    }
);
