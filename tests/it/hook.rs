//! `polaris hook` as Claude Code runs it: the real binary, the hook JSON on stdin, a home and
//! a `HOME` of its own. The sidecar is a small recording server on loopback that answers as
//! docs/sidecar.md says (until the real sidecar is wired in), or nothing at all (down).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use polaris_config::Env;
use polaris_sidecar::home::Home;
use polaris_sidecar::hook::PROVENANCE;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

/// A temporary `HOME` and Polaris home, with the local secret created as install would.
struct World {
    dir: tempfile::TempDir,
    secret: String,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("polaris"));
        let secret = polaris_sidecar::secret::load_or_create(&home, &Env::default()).unwrap();
        World { dir, secret }
    }

    fn polaris_home(&self) -> PathBuf {
        self.dir.path().join("polaris")
    }

    fn spool_files(&self) -> Vec<PathBuf> {
        polaris_sidecar::spool::list(&Home::at(self.polaris_home())).unwrap()
    }

    /// Runs `polaris hook ARGS` with `stdin`, talking to `port`.
    async fn hook(&self, port: u16, args: &[&str], stdin: &[u8]) -> Output {
        run_hook(
            &self.dir.path().join("user"),
            &self.polaris_home(),
            port,
            args,
            stdin,
        )
        .await
    }
}

/// Runs `polaris hook ARGS` as Claude Code does: `stdin` in, nothing of the developer's
/// environment, `HOME` and the Polaris home given, talking to the sidecar on `port`.
pub(crate) async fn run_hook(
    home: &Path,
    polaris_home: &Path,
    port: u16,
    args: &[&str],
    stdin: &[u8],
) -> Output {
    let mut child = Command::new(BIN)
        .arg("hook")
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("POLARIS_HOME", polaris_home)
        .env("POLARIS_PORT", port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).await.unwrap();
    drop(pipe);
    // A guard against a hang, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the hook finished")
        .unwrap()
}

/// A loopback port with nothing listening: the sidecar is down.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One request the fake sidecar received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
struct Fake {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The answers to give, in order; the last one repeats.
    answers: Arc<Mutex<Vec<(StatusCode, Value)>>>,
}

/// A fake sidecar answering `answers` in turn; returns its port and what it saw.
async fn fake_sidecar(answers: Vec<(StatusCode, Value)>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let fake = Fake {
        seen: Arc::default(),
        answers: Arc::new(Mutex::new(answers)),
    };
    let seen = fake.seen.clone();
    let app = axum::Router::new().fallback(record).with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr.port(), seen)
}

async fn record(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, axum::Json<Value>) {
    fake.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let mut answers = fake.answers.lock().unwrap();
    let (status, body) = if answers.len() > 1 {
        answers.remove(0)
    } else {
        answers[0].clone()
    };
    (status, axum::Json(body))
}

fn prompt(session: &str) -> Value {
    json!({"session_id": session, "transcript_path": "/nonexistent.jsonl", "cwd": "/w",
        "hook_event_name": "UserPromptSubmit", "prompt": "add a login page"})
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_down_spools_each_event_once_and_prints_nothing() {
    let w = World::new();
    let port = closed_port();
    let events = [
        prompt("cc-1"),
        json!({"session_id": "cc-1", "hook_event_name": "Stop", "stop_hook_active": false}),
        json!({"session_id": "cc-1", "hook_event_name": "PreToolUse", "tool_name": "Bash",
            "tool_input": {"command": "ls"}}),
    ];
    for (n, event) in events.iter().enumerate() {
        let out = w.hook(port, &[], event.to_string().as_bytes()).await;
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let files = w.spool_files();
        assert_eq!(files.len(), n + 1, "one spool file per event");
        // The newest file is this event's; names sort by time, then id.
        let file = files
            .iter()
            .find(|f| {
                let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
                v["payload"] == *event
            })
            .expect("a spool file with this payload");
        let entry: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let id: uuid::Uuid = entry["id"].as_str().unwrap().parse().unwrap();
        let t = entry["t"].as_str().unwrap();
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
        assert_eq!(entry["endpoint"], "/events");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with(&format!("-{id}.json")), "{name}");
        mode_is_private(file);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_that_is_not_an_event_is_ignored() {
    let w = World::new();
    let port = closed_port();
    // Not a JSON object, so not a hook event: there is nothing to deliver or keep, and
    // spooling it would only make the sidecar reject a file later.
    for garbage in [&b"not json at all"[..], b"", b"[1, 2]", b"\"Stop\""] {
        let out = w.hook(port, &[], garbage).await;
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty());
    }
    assert!(w.spool_files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_reaches_the_sidecar_and_its_injects_reach_claude() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"ok": true, "id": "x", "pendingInjects": [
            {"from": "user:krishna", "content": "Use RS256", "timestamp": "2026-11-25T01:00:00Z"},
            {"from": "slack:priya", "content": "mind GDPR", "timestamp": "2026-11-25T01:01:00Z"}
        ]}),
    )])
    .await;
    let event = prompt("cc-2");
    let out = w.hook(port, &[], event.to_string().as_bytes()).await;
    assert!(out.status.success(), "{out:?}");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, "/events");
    assert_eq!(req.header("x-polaris-daemon-secret"), w.secret);
    assert_eq!(req.header("content-type"), "application/json");
    req.header("x-polaris-event-id")
        .parse::<uuid::Uuid>()
        .expect("a UUID event id");
    let t = req.header("x-polaris-event-time");
    chrono::DateTime::parse_from_rfc3339(t).expect("an RFC 3339 time");
    assert_eq!(req.json(), event, "the payload goes unchanged");

    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        json!({"hookSpecificOutput": {
            "hookEventName": "UserPromptSubmit",
            "additionalContext":
                format!("{PROVENANCE}\n- user:krishna: Use RS256\n- slack:priya: mind GDPR"),
        }})
    );
    assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 1);
    assert!(w.spool_files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_injects_print_nothing_and_other_hooks_print_nothing() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"ok": true, "pendingInjects": []}),
    )])
    .await;
    let out = w
        .hook(port, &[], prompt("cc-3").to_string().as_bytes())
        .await;
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "{out:?}");

    // Injects in the answer to anything but a prompt are not printed: Claude Code only
    // reads additional context from UserPromptSubmit.
    let (port2, _) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"status": "accepted", "pendingInjects": [{"from": "a", "content": "b"}]}),
    )])
    .await;
    let tool = json!({"session_id": "cc-3", "hook_event_name": "PostToolUse",
        "tool_name": "Read", "tool_input": {"file_path": "/a"}, "tool_response": {}});
    let out = w.hook(port2, &[], tool.to_string().as_bytes()).await;
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(w.spool_files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_event_is_logged_not_spooled() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![(
        StatusCode::BAD_REQUEST,
        json!({"error": "payload.prompt: is required"}),
    )])
    .await;
    let out = w
        .hook(port, &[], prompt("cc-4").to_string().as_bytes())
        .await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    // The sidecar refused the event itself: a spooled copy would only be refused again.
    assert!(w.spool_files().is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("400"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_secret_or_an_unavailable_sidecar_keeps_the_event_in_the_spool() {
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let w = World::new();
        let (port, _) = fake_sidecar(vec![(status, json!({"error": "not now"}))]).await;
        let event = prompt("cc-5");
        let out = w.hook(port, &[], event.to_string().as_bytes()).await;
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        let files = w.spool_files();
        assert_eq!(files.len(), 1, "{status}");
        let entry = polaris_sidecar::spool::read(&files[0]).unwrap();
        assert_eq!(entry.payload, event);
    }
}

/// A transcript of one turn: the prompt, a tool call and its result, then the answer.
fn write_transcript(dir: &Path) -> PathBuf {
    let path = dir.join("transcript.jsonl");
    let lines = [
        json!({"type": "user", "message": {"role": "user", "content": "earlier"}}),
        json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "old"}]}}),
        json!({"type": "user", "message": {"role": "user", "content": "run the tests"}}),
        json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": "Running them."},
            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "cargo test"}}
        ]}}),
        json!({"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ok\u{0} 3 passed"}
        ]}}),
        json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "All green."}]}}),
    ];
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str("{\"type\": \"assistant\", \"message\": tor\n");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_posts_the_turn_rebuilt_from_the_transcript() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"status": "accepted", "id": "x"}),
    )])
    .await;
    let transcript = write_transcript(w.dir.path());
    let stop = json!({"session_id": "cc-6", "hook_event_name": "Stop",
        "transcript_path": transcript, "stop_hook_active": false});
    let out = w.hook(port, &[], stop.to_string().as_bytes()).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());

    let body = seen.lock().unwrap()[0].json();
    let text = "Running them.\n\n> _`Bash`: cargo test_\n\nAll green.";
    assert_eq!(body["stop_response"], text);
    assert_eq!(body["last_assistant_message"], text);
    assert_eq!(body["session_id"], "cc-6");
    assert_eq!(body["stop_hook_active"], false);
    let raw = body["raw_turn"].as_array().unwrap();
    assert_eq!(raw.len(), 3, "two assistant entries and one tool result");
    assert_eq!(
        raw[1]["message"]["content"][0]["content"], "ok 3 passed",
        "NUL removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_stop_goes_again_without_raw_turn_under_the_same_id() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![
        (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": "too large"})),
        (StatusCode::OK, json!({"status": "accepted"})),
    ])
    .await;
    let transcript = write_transcript(w.dir.path());
    let stop = json!({"session_id": "cc-7", "hook_event_name": "Stop",
        "transcript_path": transcript});
    let out = w.hook(port, &[], stop.to_string().as_bytes()).await;
    assert!(out.status.success());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].json().get("raw_turn").is_some());
    let second = seen[1].json();
    assert!(second.get("raw_turn").is_none());
    assert_eq!(
        second["stop_response"],
        "Running them.\n\n> _`Bash`: cargo test_\n\nAll green."
    );
    assert_eq!(
        seen[0].header("x-polaris-event-id"),
        seen[1].header("x-polaris-event-id")
    );
    assert!(w.spool_files().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_line_shows_this_windows_session_only() {
    let w = World::new();
    let (port, seen) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"connected": true, "project": "payments", "session": "swift-otter",
            "user": "user:manu", "slackChannel": "payments-dev"}),
    )])
    .await;
    let input = json!({"session_id": "cc 8/x", "model": {"display_name": "Opus"}});
    let out = w
        .hook(port, &["--statusline"], input.to_string().as_bytes())
        .await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "polaris: payments/swift-otter (user:manu) #payments-dev\n"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, Method::GET);
        assert_eq!(seen[0].path, "/status/cc%208%2Fx");
        assert_eq!(seen[0].header("x-polaris-daemon-secret"), w.secret);
    }

    // Not connected: say so, and never ask for the list of other windows' sessions.
    let (port, seen) = fake_sidecar(vec![(StatusCode::OK, json!({"connected": false}))]).await;
    let out = w
        .hook(port, &["--statusline"], br#"{"session_id": "cc-9"}"#)
        .await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "polaris: not connected\n"
    );
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, ["/status/cc-9"]);

    // No channel known: no `#` part.
    let (port, _) = fake_sidecar(vec![(
        StatusCode::OK,
        json!({"connected": true, "project": "p", "session": "s", "user": "user:u"}),
    )])
    .await;
    let out = w
        .hook(port, &["--statusline"], br#"{"session_id": "cc-10"}"#)
        .await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "polaris: p/s (user:u)\n"
    );

    // Sidecar down.
    let out = w
        .hook(
            closed_port(),
            &["--statusline"],
            br#"{"session_id": "cc-11"}"#,
        )
        .await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "polaris: not connected\n"
    );
    assert!(w.spool_files().is_empty(), "the status line spools nothing");
}

fn mode_is_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_that_never_answers_counts_as_down() {
    let w = World::new();
    // Accepts connections and holds them open without a word: a hung sidecar.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let event = prompt("cc-12");
    let out = w.hook(port, &[], event.to_string().as_bytes()).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    let files = w.spool_files();
    assert_eq!(files.len(), 1);
    assert_eq!(
        polaris_sidecar::spool::read(&files[0]).unwrap().payload,
        event
    );
}

/// Starts the real `polaris sidecar` on a free loopback port in front of `floor`; returns it
/// with its port.
async fn real_sidecar(home: &Path, floor: &str) -> (tokio::process::Child, u16) {
    let cmd = crate::support::sidecar_command(home, floor, &["--listen", "127.0.0.1:0"]);
    let (child, base) = crate::support::spawn_listening(cmd).await;
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {base:?}"));
    (child, port)
}

async fn stop_sidecar(mut child: tokio::process::Child) {
    let status = crate::support::terminate(&mut child, 20, "the sidecar").await;
    assert!(status.success(), "{status}");
}

async fn floor_events(floor: &str, project: &str, session: &str, n: usize) -> Vec<Value> {
    crate::support::eventually(30, || async {
        let r = reqwest::get(format!(
            "{floor}/projects/{project}/sessions/{session}/messages"
        ))
        .await
        .ok()?;
        let events: Vec<Value> = r.json().await.ok()?;
        (events.len() >= n).then_some(events)
    })
    .await
}

/// The whole path with the real sidecar and an in-process floor: the hook's events land on
/// the floor, a teammate's inject comes back at the next prompt, the status line shows the
/// session, and an event spooled while the sidecar was down reaches the floor once, under
/// the id the hook gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_real_sidecar_to_the_floor_and_back() {
    use crate::support::{Backend, Options, TestServer};
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let w = World::new();
    let (sidecar, port) = real_sidecar(&w.polaris_home(), &srv.base).await;
    let http = crate::support::http();
    let local = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // The MCP server connects; the connect tool's own PostToolUse hook claims the window.
    let v: Value = http
        .post(local("/connect"))
        .header("x-polaris-daemon-secret", &w.secret)
        .json(&json!({"ccSessionId": "mcp-e2e", "project": "hookproj", "user": "user:manu"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = v["session"].as_str().expect("a session").to_owned();
    let claim = json!({"session_id": "cc-e2e", "hook_event_name": "PostToolUse",
        "tool_name": "mcp__polaris__polaris_connect", "tool_input": {"channel": "#hookproj"}});
    let out = w.hook(port, &[], claim.to_string().as_bytes()).await;
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");

    let out = w
        .hook(port, &[], prompt("cc-e2e").to_string().as_bytes())
        .await;
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let events = floor_events(&srv.base, "hookproj", &session, 2).await;
    let prompt_event = events
        .iter()
        .find(|e| e["payload"]["hook_event_name"] == "UserPromptSubmit")
        .expect("the prompt on the floor");
    assert_eq!(prompt_event["sender"], "user:manu");
    assert_eq!(prompt_event["payload"]["prompt"], "add a login page");

    let out = w
        .hook(port, &["--statusline"], br#"{"session_id": "cc-e2e"}"#)
        .await;
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with(&format!("polaris: hookproj/{session} (user:manu)")),
        "{line}"
    );

    // A teammate's inject, once the sidecar's stream has it, comes back at the next prompt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http
        .post(format!(
            "{}/projects/hookproj/sessions/{session}/inject",
            srv.base
        ))
        .json(&json!({"content": "use RS256", "sender": "user:krishna"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    crate::support::eventually(20, || async {
        let v: Value = http
            .get(local("/status/cc-e2e"))
            .header("x-polaris-daemon-secret", &w.secret)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["injectsWaiting"].as_u64() == Some(1)).then_some(())
    })
    .await;
    let out = w
        .hook(port, &[], prompt("cc-e2e").to_string().as_bytes())
        .await;
    let printed: Value = serde_json::from_slice(&out.stdout).expect("injects printed");
    assert_eq!(
        printed["hookSpecificOutput"]["additionalContext"],
        format!("{PROVENANCE}\n- user:krishna: use RS256")
    );

    // Down: the hook spools; the sidecar takes the file in on start, under the hook's id.
    // First the prompt just acknowledged reaches the floor (connect, prompt, inject, prompt),
    // so the count below cannot be taken while it is still on its way.
    let before = floor_events(&srv.base, "hookproj", &session, 4).await.len();
    stop_sidecar(sidecar).await;
    let mut down = prompt("cc-e2e");
    down["prompt"] = json!("written while the sidecar was down");
    let out = w.hook(port, &[], down.to_string().as_bytes()).await;
    assert!(out.status.success() && out.stdout.is_empty());
    let files = w.spool_files();
    assert_eq!(files.len(), 1);
    let id = polaris_sidecar::spool::read(&files[0])
        .unwrap()
        .id
        .to_string();
    let (sidecar, _) = real_sidecar(&w.polaris_home(), &srv.base).await;
    let events = floor_events(&srv.base, "hookproj", &session, before + 1).await;
    let landed: Vec<&Value> = events.iter().filter(|e| e["id"] == id.as_str()).collect();
    assert_eq!(landed.len(), 1, "{events:?}");
    assert_eq!(landed[0]["payload"], down);
    assert!(w.spool_files().is_empty(), "the sidecar took the spool in");
    stop_sidecar(sidecar).await;
    srv.finish().await;
}
