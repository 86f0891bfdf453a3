//! `polaris recover` as a user runs it: a sidecar home whose JSONL log and write-ahead log
//! hold events the floor partly lacks; the binary puts back exactly what is missing, with
//! the original ids and times, and a second run restores nothing.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use polaris_protocol::NewEventBody;
use polaris_registry::ParticipantId;
use polaris_sidecar::home::Home;
use polaris_sidecar::wal::SessionOpen;
use polaris_sidecar::{FloorClient, Uplink};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Backend, Client, Options, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

/// Runs `polaris recover` on `home` against `floor`; returns (success, stdout, stderr).
async fn recover(home: &std::path::Path, floor: &str) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["recover", "--home"])
        .arg(home)
        .args(["--floor", floor])
        .env_remove("POLARIS_SERVICE_URL")
        .env_remove("POLARIS_AUTH_TOKEN")
        .env_remove("POLARIS_HOME")
        .env("POLARIS_LOG", "warn")
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("recover finished within 60 s")
        .expect("run polaris recover");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn time(i: u32) -> String {
    format!("2026-11-20T10:00:{i:02}.000Z")
}

fn prompt(id: Uuid, i: u32, text: &str) -> Value {
    json!({"t": time(i), "endpoint": "/events", "id": id, "project": "recov", "session": "s1",
           "sender": "user:ann",
           "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": text}})
}

/// The floor body a log line stands for.
fn floor_body(line: &Value) -> Value {
    json!({"id": line["id"], "timestamp": line["t"], "sender": line["sender"], "payload": line["payload"]})
}

async fn session_events(c: &Client, session: &str) -> Vec<Value> {
    let r = c
        .get(&format!(
            "/projects/recov/sessions/{session}/events?after=0&limit=1000"
        ))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json["events"].as_array().unwrap().clone()
}

fn write_lines(path: &std::path::Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[tokio::test]
async fn recover_resends_what_the_floor_lacks_once() {
    let Some(server) = TestServer::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let c = server.client();
    c.project_session("recov", "s1").await;

    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path().join("home"));
    home.ensure_dir(Some(std::path::Path::new("logs"))).unwrap();
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let s2_id = Uuid::new_v4();
    let s1: Vec<Value> = vec![
        prompt(ids[0], 0, "add retries"),
        // The log redacts; the WAL below holds the real text under the same id.
        prompt(ids[1], 1, "use key [REDACTED:aws_key]"),
        prompt(ids[2], 2, "and a test"),
        json!({"t": time(3), "endpoint": "/events", "id": ids[3], "project": "recov", "session": "s1",
               "sender": "agent:claude",
               "payload": {"hook_event_name": "PreToolUse", "session_id": "cc-1", "tool_name": "Bash",
                           "tool_input": {"command": "cargo test"}}}),
        prompt(ids[4], 4, "thanks"),
        json!({"t": time(5), "endpoint": "/reply", "id": ids[5], "project": "recov", "session": "s1",
               "sender": "agent:claude", "payload": {"ccSessionId": "cc-1", "message": "done, 3 retries"}}),
    ];
    let mut day1: Vec<String> = vec![
        json!({"t": time(0), "endpoint": "/connect",
               "payload": {"ccSessionId": "cc-1", "project": "recov", "user": "user:ann", "session": "s1"}})
        .to_string(),
    ];
    day1.extend(s1.iter().map(Value::to_string));
    // Two lines that went nowhere: dropped while not connected, and a reply with no mapping.
    day1.push(
        json!({"t": time(6), "endpoint": "/events",
               "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc-9", "prompt": "lost"},
               "response": {"status": 200, "body": "dropped: not connected"}})
        .to_string(),
    );
    day1.push(
        json!({"t": time(7), "endpoint": "/reply", "payload": {"ccSessionId": "cc-9", "message": "x"}})
            .to_string(),
    );
    day1.push("{half a line".to_owned());
    write_lines(&home.logs_dir().join("daemon-2026-11-20.jsonl"), &day1);
    // The next day, a session the floor has never seen.
    write_lines(
        &home.logs_dir().join("daemon-2026-11-21.jsonl"),
        &[json!({"t": "2026-11-21T09:00:00.000Z", "endpoint": "/events", "id": s2_id, "project": "recov",
                 "session": "s2", "sender": "user:ann",
                 "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": "next day"}})
        .to_string()],
    );

    // Half of s1 reached the floor before things went wrong.
    for i in [0, 2, 4] {
        let r = c
            .post("/projects/recov/sessions/s1/events", floor_body(&s1[i]))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }

    // Undelivered records in the write-ahead log: one for a new session (with how to open
    // it) and the real version of the redacted prompt.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let uplink = Uplink::open_home(&home, FloorClient::new(&dead, None).unwrap())
        .await
        .unwrap();
    let s3_id = Uuid::new_v4();
    let body = |id: Uuid, t: &str, text: &str| -> NewEventBody {
        serde_json::from_value(json!({"id": id, "timestamp": t, "sender": "user:ann",
            "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": text}}))
        .unwrap()
    };
    let open = SessionOpen {
        driver: Some(ParticipantId::parse("user:ann").unwrap()),
        agent: Some(ParticipantId::parse("agent:claude").unwrap()),
    };
    uplink
        .submit_opening(
            "recov",
            "s3",
            body(s3_id, "2026-11-22T08:00:00.000Z", "from the wal"),
            Some(open),
        )
        .await
        .unwrap();
    uplink
        .submit(
            "recov",
            "s1",
            body(ids[1], &time(1), "use key AKIA-the-real-one"),
        )
        .await
        .unwrap();
    uplink.shutdown().await;

    // First run: 6 + 1 + 1 events and 2 unroutable lines; 3 are on the floor.
    let (ok, out, err) = recover(home.root(), &server.base).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("scanned 10, present 3, restored 5, unroutable 2"),
        "{out}\n{err}"
    );

    // The floor has every id exactly once, at its original time, in order.
    let got = session_events(&c, "s1").await;
    let got_ids: Vec<Uuid> = got
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let mut sorted = got_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got_ids.len(), "no duplicates: {got_ids:?}");
    assert_eq!(got_ids.len(), 6);
    for (i, id) in ids.iter().enumerate() {
        let e = got.iter().find(|e| e["id"] == id.to_string()).unwrap();
        assert_eq!(e["timestamp"], time(i as u32), "event {i}");
    }
    let redacted = got.iter().find(|e| e["id"] == ids[1].to_string()).unwrap();
    assert_eq!(redacted["payload"]["prompt"], "use key AKIA-the-real-one");
    let reply = got.iter().find(|e| e["id"] == ids[5].to_string()).unwrap();
    assert_eq!(reply["sender"], "agent:claude");
    assert_eq!(reply["kind"], "Stop");
    assert_eq!(reply["payload"]["stop_response"], "done, 3 retries");
    let tool = got.iter().find(|e| e["id"] == ids[3].to_string()).unwrap();
    assert_eq!(tool["payload"]["tool_input"]["command"], "cargo test");

    let s2 = session_events(&c, "s2").await;
    assert_eq!(s2.len(), 1);
    assert_eq!(s2[0]["id"], s2_id.to_string());
    let s3 = session_events(&c, "s3").await;
    assert_eq!(s3.len(), 1);
    assert_eq!(s3[0]["payload"]["prompt"], "from the wal");
    let s3_row = c.get("/projects/recov/sessions/s3").await;
    assert_eq!(s3_row.json["driver"], "user:ann", "{s3_row:?}");

    // Second run: everything is there.
    let (ok, out, err) = recover(home.root(), &server.base).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("scanned 10, present 8, restored 0, unroutable 2"),
        "{out}\n{err}"
    );
    assert_eq!(session_events(&c, "s1").await.len(), 6);
    server.finish().await;
}

#[tokio::test]
async fn recover_with_the_floor_down_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::at(dir.path());
    home.ensure_dir(Some(std::path::Path::new("logs"))).unwrap();
    write_lines(
        &home.logs_dir().join("daemon-2026-11-20.jsonl"),
        &[prompt(Uuid::new_v4(), 0, "hello").to_string()],
    );
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (ok, out, err) = recover(home.root(), &dead).await;
    assert!(!ok, "{out}\n{err}");
    assert!(
        out.contains("scanned 1, present 0, restored 0, unroutable 0, failed 1"),
        "{out}"
    );
    assert!(
        err.contains("recov/s1") && err.contains("run it again"),
        "{err}"
    );
}

/// The log and WAL a real `polaris sidecar` wrote while its floor was unreachable are
/// what recover reads: everything the sidecar acknowledged reaches the floor once.
#[tokio::test]
async fn recover_delivers_what_a_real_sidecar_accepted_while_the_floor_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cmd = crate::support::sidecar_command(&home, &dead, &["--listen", "127.0.0.1:0"]);
    let (mut child, base) = crate::support::spawn_listening(cmd).await;
    let secret = std::fs::read_to_string(home.join("daemon.secret")).unwrap();
    let http = crate::support::http();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .header("x-polaris-daemon-secret", secret.trim())
            .json(&body)
            .send()
    };
    let r = post(
        "/connect",
        json!({"ccSessionId": "cc-r", "project": "outage", "user": "user:ann", "session": "main"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        let r = post(
            "/events",
            json!({"hook_event_name": "UserPromptSubmit", "session_id": "cc-r", "prompt": text}),
        )
        .await
        .unwrap();
        let v: Value = r.json().await.unwrap();
        ids.push(v["id"].as_str().expect("an id").to_owned());
    }
    let r = post("/reply", json!({"ccSessionId": "cc-r", "message": "on it"}))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    ids.push(v["id"].as_str().expect("an id").to_owned());
    // Stop the sidecar (SIGTERM) before the floor comes back.
    crate::support::terminate(&mut child, 30, "the sidecar").await;

    let Some(server) = TestServer::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let (ok, out, err) = recover(&home, &server.base).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("scanned 4, present 0, restored 4, unroutable 0"),
        "{out}\n{err}"
    );
    let c = server.client();
    let r = c
        .get("/projects/outage/sessions/main/events?after=0&limit=100")
        .await;
    let got: Vec<String> = r.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got, ids,
        "each once, in the order the sidecar accepted them"
    );
    let session = c.get("/projects/outage/sessions/main").await;
    assert_eq!(session.json["driver"], "user:ann", "{session:?}");

    let (ok, out, err) = recover(&home, &server.base).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("scanned 4, present 4, restored 0, unroutable 0"),
        "{out}\n{err}"
    );
    server.finish().await;
}
