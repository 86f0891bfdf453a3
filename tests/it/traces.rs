//! Traces across processes (issue 17, items 4 and 5): `polaris serve` and `polaris sidecar`
//! run as processes, exporting to a collector this test starts on loopback. One event is
//! one trace from the sidecar's acknowledgement through the floor's commit, each node's
//! relay and Dean's answer, whose own event carries the trace on. Without an endpoint
//! nothing is exported and an event carries only the context its client sent; a malformed
//! `traceparent` is ignored, never an error; a collector that never answers does not hold
//! up the floor.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use polaris_config::DatabaseUrl;
use polaris_protocol::TraceParent;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::both_stores;
use crate::sidecar::{Sidecar, home_dir, messages, prompt};
use crate::support::otlp::{Collector, Got};
use crate::support::{BIN, Backend, Client, TestDb, eventually};

const DEAN: &str = "agents:\n  - id: agent:dean\n    name: Dean\n    description: Data engineering\n    tags: [data]\n";

/// Extra request headers.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The recommendation's example context, and another.
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TP2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// `polaris serve --config FILE --database DB`, with the file written to `dir` (listening
/// on a free loopback port, data under `dir/name`, `telemetry` added as written) and
/// nothing of the developer's environment leaking in. Spans leave every 100 ms.
async fn serve(
    db: &TestDb,
    dir: &Path,
    name: &str,
    telemetry: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Child, String) {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "listen: 127.0.0.1:0\ndata_dir: {}\n{telemetry}",
            data.display()
        ),
    )
    .unwrap();
    let database = match &db.url {
        DatabaseUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
        DatabaseUrl::Postgres(s) => s.expose().to_owned(),
    };
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .args(["--database", &database])
        .args(extra);
    for var in [
        "DATABASE_URL",
        "POLARIS_JWT_SECRET",
        "POLARIS_CONFIG",
        "POLARIS_LISTEN",
        "POLARIS_METRICS_LISTEN",
        "POLARIS_DATA_DIR",
        "POLARIS_AGENTS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_TRACES_SAMPLER_ARG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("POLARIS_LOG", "warn")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    crate::support::spawn_listening(cmd).await
}

fn telemetry(endpoint: &str, service: &str) -> String {
    format!(
        "telemetry:\n  otlp_endpoint: {endpoint}\n  service_name: {service}\n  sample_ratio: 1.0\n"
    )
}

/// SIGTERM, and the process exits 0 within 30 s (its last spans sent on the way out).
async fn stop(mut child: Child) {
    let status = crate::support::terminate(&mut child, 30, "polaris serve").await;
    assert!(status.success(), "{status:?}");
}

fn context(e: &Value) -> TraceParent {
    TraceParent::parse(e["traceparent"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("a traceparent on {e}"))
}

/// Waits until a span answering `pred` has arrived.
async fn span(c: &Collector, what: &str, pred: impl Fn(&Got) -> bool) -> Got {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = c.spans();
        if let Some(s) = spans.iter().find(|s| pred(s)) {
            return s.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within 30 s; got {:#?}",
            spans
                .iter()
                .map(|s| format!(
                    "{}/{} {} {}<-{}",
                    s.service, s.name, s.trace_id, s.span_id, s.parent_id
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A question asked through the sidecar and Dean's answer are one trace: sidecar ack →
/// forward → the API → the commit → the relay (on each node) and Dean's answer → the
/// answer's commit. On PostgreSQL a second node, configured by the standard variables,
/// relays the question to its subscriber in the same trace.
async fn one_trace_from_the_sidecar_to_deans_answer(backend: Backend) {
    let Some(mut db) = TestDb::new(backend).await else {
        return;
    };
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents.yaml");
    std::fs::write(&agents, DEAN).unwrap();
    let (a, base_a) = serve(
        &db,
        dir.path(),
        "a",
        &telemetry(&collector.endpoint, "polaris-node-a"),
        &["--agents", agents.to_str().unwrap()],
        &[],
    )
    .await;
    let on_a = Client::new(&base_a, None);
    let r = on_a
        .post("/projects", json!({"name": "pj", "tags": ["data"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Dean reads the floor from his join on.
    eventually(30, || async {
        let v = on_a.get("/projects/pj/agents").await.json;
        v["agents"]
            .as_array()?
            .iter()
            .any(|x| x["agent"] == "agent:dean")
            .then_some(())
    })
    .await;
    let b = match backend {
        Backend::Postgres => {
            // The same agents (a node's directory reads the file): Dean stays on node A,
            // which took his lease first.
            let (child, base) = serve(
                &db,
                dir.path(),
                "b",
                "",
                &["--agents", agents.to_str().unwrap()],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
                    ("OTEL_SERVICE_NAME", "polaris-node-b"),
                ],
            )
            .await;
            let ws = Client::new(&base, None)
                .ws("/projects/pj/ws")
                .await
                .expect("a subscriber on node B");
            Some((child, ws))
        }
        Backend::Sqlite => None,
    };

    // The sidecar sends its spans only when it stops (its batches wait a minute): that its
    // acknowledgement arrives at all shows the flush on shutdown.
    let (_home, home) = home_dir();
    let sc = Sidecar::start_with(
        &home,
        &base_a,
        &["--otlp-endpoint", &collector.endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", OsStr::new("60000"))],
    )
    .await;
    let session = sc.join("cc-t", "pj", "user:manu").await;
    let (status, v) = sc
        .post(
            "/events",
            prompt("cc-t", "@dean how do we name staging tables?"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let qid = v["id"].clone();
    let (question, answer) = eventually(30, || async {
        let all = messages(&base_a, "pj", &session).await;
        let q = all.iter().find(|e| e["id"] == qid)?.clone();
        let a = all
            .iter()
            .find(|e| e["payload"]["in_reply_to"] == qid && e["sender"] == "agent:dean")?
            .clone();
        Some((q, a))
    })
    .await;
    let (tq, ta) = (context(&question), context(&answer));
    assert_eq!(
        ta.trace_id(),
        tq.trace_id(),
        "the answer is in the question's trace"
    );
    let t = tq.trace_id().to_owned();
    sc.stop().await;

    let on = |service: &'static str, name: &'static str| {
        let t = t.clone();
        move |s: &Got| s.service == service && s.name == name && s.trace_id == t
    };
    let ack = span(
        &collector,
        "sidecar.ack",
        on("polaris-sidecar", "sidecar.ack"),
    )
    .await;
    let fwd_on = on("polaris-sidecar", "sidecar.forward");
    let forward = span(&collector, "sidecar.forward", |s| {
        fwd_on(s) && s.parent_id == ack.span_id
    })
    .await;
    let api_on = on("polaris-node-a", "api.post_event");
    let api = span(&collector, "the API's span", |s| {
        api_on(s) && s.parent_id == forward.span_id
    })
    .await;
    // The question is stored with its commit span's context.
    let commit_on = on("polaris-node-a", "floor.commit");
    let commit = span(&collector, "the question's commit", |s| {
        commit_on(s) && s.span_id == tq.parent_id()
    })
    .await;
    assert_eq!(commit.parent_id, api.span_id);
    let relay_on = on("polaris-node-a", "floor.relay");
    let relay = span(&collector, "node A's relay", |s| {
        relay_on(s) && s.parent_id == commit.span_id
    })
    .await;
    assert_eq!(relay.attrs["via"], "commit");
    let dean_on = on("polaris-node-a", "agent.answer");
    let dean = span(&collector, "Dean's answer", |s| {
        dean_on(s) && s.parent_id == commit.span_id
    })
    .await;
    assert_eq!(dean.attrs["agent"], "agent:dean");
    // The answer event carries the context of its own commit, under Dean's span.
    let answer_commit = span(&collector, "the answer's commit", |s| {
        commit_on(s) && s.span_id == ta.parent_id()
    })
    .await;
    assert_eq!(answer_commit.parent_id, dean.span_id);

    if let Some((b, ws)) = b {
        let relay_b_on = on("polaris-node-b", "floor.relay");
        let relay_b = span(&collector, "node B's relay", |s| {
            relay_b_on(s) && s.parent_id == commit.span_id
        })
        .await;
        assert_eq!(relay_b.attrs["via"], "notice");
        assert_ne!(relay_b.attrs["node"], relay.attrs["node"]);
        ws.close().await;
        stop(b).await;
    }
    stop(a).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_sidecar_to_deans_answer_sqlite() {
    one_trace_from_the_sidecar_to_deans_answer(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_sidecar_to_deans_answer_on_two_nodes_postgres() {
    one_trace_from_the_sidecar_to_deans_answer(Backend::Postgres).await;
}

/// No endpoint anywhere: nothing reaches the collector (which both processes could reach),
/// an event through the sidecar has no context, and one a client sent is kept as sent.
async fn without_an_endpoint_nothing_is_exported(backend: Backend) {
    let Some(mut db) = TestDb::new(backend).await else {
        return;
    };
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, base) = serve(&db, dir.path(), "a", "", &[], &[]).await;
    let (_home, home) = home_dir();
    let sc = Sidecar::start_with(
        &home,
        &base,
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", OsStr::new(""))],
    )
    .await;
    let session = sc.join("cc-u", "pj", "user:manu").await;
    let (status, v) = sc.post("/events", prompt("cc-u", "plain")).await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].clone();
    let c = Client::new(&base, None);
    let r = c
        .post_with(
            &format!("/projects/pj/sessions/{session}/events"),
            json!({"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit",
                   "session_id": "cc-u", "prompt": "traced by my client"}}),
            &[("traceparent", TP)],
        )
        .await;
    assert_eq!(
        (r.status, r.json["traceparent"].as_str()),
        (201, Some(TP)),
        "{r:?}"
    );
    let all = eventually(30, || async {
        let all = messages(&base, "pj", &session).await;
        all.iter().any(|e| e["id"] == id).then_some(all)
    })
    .await;
    for e in &all {
        if e["id"] == id {
            assert!(e.get("traceparent").is_none(), "{e}");
        }
    }
    sc.stop().await;
    stop(node).await;
    assert_eq!(collector.requests(), 0, "{:?}", collector.spans());
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_sqlite() {
    without_an_endpoint_nothing_is_exported(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_postgres() {
    without_an_endpoint_nothing_is_exported(Backend::Postgres).await;
}

/// A collector that accepts connections and never answers: every post is still
/// committed and answered (spans leave from the exporter's own thread, in batches), and
/// the node still stops when told to (the last export gives up after its timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_hold_up_the_floor() {
    let Some(mut db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hold = held.clone();
    let black_hole = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            hold.lock().unwrap().push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (node, base) = serve(
        &db,
        dir.path(),
        "a",
        &telemetry(&endpoint, "polaris-node-a"),
        &[],
        &[],
    )
    .await;
    let c = Client::new(&base, None);
    c.project_session("pj", "s").await;
    let mut traces = std::collections::HashSet::new();
    for i in 0..30 {
        let r = c
            .prompt("pj", "s", "user:manu", &format!("event {i}"))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        traces.insert(context(&r.json).trace_id().to_owned());
    }
    assert_eq!(traces.len(), 30, "one trace per event");
    // The exporter is stuck on the collector now; the floor is not.
    eventually(30, || async {
        (!held.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let r = c
        .prompt("pj", "s", "user:manu", "after the export stalled")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    stop(node).await;
    black_hole.abort();
    db.drop_db().await;
}

both_stores!(
    a_clients_trace_context_is_kept_and_a_malformed_one_ignored,
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        let path = "/projects/pj/sessions/s/events";
        let hook = |text: &str| {
            json!({"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit",
               "session_id": "cc-1", "prompt": text}})
        };
        let upper = TP.to_uppercase();
        let mut own = hook("field");
        own["traceparent"] = json!(TP2);
        let mut bad = hook("bad field");
        bad["traceparent"] = json!(17);
        let cases: [(Value, Headers, Option<&str>); 6] = [
            // The header; none (then the field is absent, not null); malformed headers, ignored.
            (hook("header"), &[("traceparent", TP)], Some(TP)),
            (hook("none"), &[], None),
            (hook("bad header"), &[("traceparent", "00-nope-01")], None),
            (hook("upper case"), &[("traceparent", upper.as_str())], None),
            // The event's own field wins over the header; a malformed field is ignored too.
            (own, &[("traceparent", TP)], Some(TP2)),
            (bad, &[], None),
        ];
        let mut expected: Vec<(Value, Option<&str>)> = Vec::new();
        for (body, headers, want) in cases {
            let r = c.post_with(path, body, headers).await;
            assert_eq!(r.status, 201, "{r:?}");
            assert_eq!(
                r.json.get("traceparent").and_then(Value::as_str),
                want,
                "{r:?}"
            );
            expected.push((r.json["id"].clone(), want));
        }

        // A batch: each event its own context, the header for those without one.
        let mut first = hook("batch 1");
        first["traceparent"] = json!(TP2);
        let mut third = hook("batch 3");
        third["traceparent"] = json!("not a context");
        let r = c
            .post_with(
                &format!("{path}/batch"),
                json!({"events": [first, hook("batch 2"), third]}),
                &[("traceparent", TP)],
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let got: Vec<Option<&str>> = r.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                assert_eq!(x["status"], 201, "{x}");
                x["event"]["traceparent"].as_str()
            })
            .collect();
        assert_eq!(got, [Some(TP2), Some(TP), Some(TP)]);

        // An inject takes the header.
        let r = c
            .post_with(
                "/projects/pj/sessions/s/inject",
                json!({"content": "look at the index", "sender": "user:ann"}),
                &[("traceparent", TP2)],
            )
            .await;
        assert_eq!(
            (r.status, r.json["traceparent"].as_str()),
            (201, Some(TP2)),
            "{r:?}"
        );

        // Stored: read back, and replayed on a stream, as answered.
        let stored = c.get("/projects/pj/sessions/s/messages").await.json;
        let mut ws = c.ws("/projects/pj/sessions/s/ws?after=0").await.unwrap();
        let streamed = ws.take(stored.as_array().unwrap().len()).await;
        for (id, want) in &expected {
            for list in [stored.as_array().unwrap(), &streamed] {
                let e = list.iter().find(|e| e["id"] == *id).expect("stored");
                assert_eq!(e.get("traceparent").and_then(Value::as_str), *want, "{e}");
            }
        }
        ws.close().await;
    }
);

/// A reply posted through `polaris mcp` is one trace (issue 17, item 4): the tool call's
/// span in the MCP process, its request to the sidecar, the sidecar's acknowledgement and
/// the floor's commit, and the stored event carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_through_polaris_mcp_is_one_trace() {
    let Some(mut db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (floor, base) = serve(
        &db,
        dir.path(),
        "a",
        &telemetry(&collector.endpoint, "polaris-node-a"),
        &[],
        &[],
    )
    .await;
    let r = Client::new(&base, None)
        .post("/projects", json!({"name": "pj", "tags": []}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (_home, home) = home_dir();
    let sc = Sidecar::start_with(
        &home,
        &base,
        &["--otlp-endpoint", &collector.endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", OsStr::new("100"))],
    )
    .await;
    let cc = format!("mcp-{}", uuid::Uuid::new_v4());
    let out = crate::mcp::mcp_client(
        &crate::mcp::Client::Rust,
        &[
            ("POLARIS_DAEMON_URL", sc.base.as_str()),
            ("POLARIS_HOME", home.to_str().unwrap()),
            ("POLARIS_CC_SESSION_ID", cc.as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        json!([
            ["polaris_connect", {"user": "user:manu", "channel": "#pj", "session": "s"}],
            ["polaris_reply", {"message": "migrations are done"}]
        ]),
    )
    .await;
    assert_eq!(crate::mcp::text(&out, 1), "Reply sent to the floor.");
    let reply = crate::support::eventually(30, || async {
        messages(&base, "pj", "s")
            .await
            .into_iter()
            .find(|e| e["kind"] == "Stop")
    })
    .await;
    let stored = context(&reply);
    let t = stored.trace_id().to_owned();
    let on = |service: &'static str, name: &'static str| {
        let t = t.clone();
        move |s: &Got| s.service == service && s.name == name && s.trace_id == t
    };
    let tool = span(&collector, "the tool call", on("polaris-mcp", "mcp.tool")).await;
    assert_eq!(tool.attrs["tool"], "polaris_reply");
    assert_eq!(tool.parent_id, "", "the tool call starts the trace");
    let daemon_on = on("polaris-mcp", "mcp.daemon");
    let request = span(&collector, "the request to the sidecar", |s| {
        daemon_on(s)
            && s.parent_id == tool.span_id
            && s.attrs.get("route").map(String::as_str) == Some("reply")
    })
    .await;
    let ack_on = on("polaris-sidecar", "sidecar.ack");
    span(&collector, "the sidecar's acknowledgement", |s| {
        ack_on(s) && s.parent_id == request.span_id
    })
    .await;
    let commit_on = on("polaris-node-a", "floor.commit");
    span(&collector, "the reply's commit", |s| {
        commit_on(s) && s.span_id == stored.parent_id()
    })
    .await;
    sc.stop().await;
    stop(floor).await;
    db.drop_db().await;
}
