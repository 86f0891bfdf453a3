//! `polaris sidecar` as hooks, the MCP server and agents use it: the real binary on
//! loopback, in front of an in-process floor on SQLite. The sidecar is floor-agnostic, so
//! these run once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use polaris_config::RateLimits;
use polaris_runtime::Store;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::{Runtime, Settings};
use polaris_sidecar::home::Home;
use polaris_sidecar::spool::{self, SpoolEntry};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::support::{Backend, Options, TestDb, TestServer, eventually};

/// A running `polaris sidecar`.
pub(crate) struct Sidecar {
    child: Child,
    pub(crate) base: String,
    secret: String,
    http: reqwest::Client,
}

fn sidecar_cmd(home: &Path, floor: &str, extra: &[&str]) -> Command {
    crate::support::sidecar_command(home, floor, extra)
}

impl Sidecar {
    pub(crate) async fn start(home: &Path, floor: &str) -> Sidecar {
        Sidecar::start_env(home, floor, &[]).await
    }

    /// Starts one with extra environment variables.
    pub(crate) async fn start_env(home: &Path, floor: &str, env: &[(&str, &Path)]) -> Sidecar {
        let env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        Sidecar::start_with(home, floor, &[], &env).await
    }

    /// Starts one with extra arguments and environment variables.
    pub(crate) async fn start_with(
        home: &Path,
        floor: &str,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Sidecar {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut cmd = sidecar_cmd(home, floor, &all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, base) = crate::support::spawn_listening(cmd).await;
        let secret = std::fs::read_to_string(home.join("daemon.secret"))
            .expect("secret file")
            .trim()
            .to_owned();
        Sidecar {
            child,
            base,
            secret,
            http: crate::support::http(),
        }
    }

    /// The loopback port it listens on (what `polaris hook` is pointed at).
    pub(crate) fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {:?}", self.base))
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with(path, body, &[]).await
    }

    async fn post_with(&self, path: &str, body: Value, headers: &[(&str, String)]) -> (u16, Value) {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-polaris-daemon-secret", &self.secret)
            .json(&body);
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        let r = rb.send().await.expect("sidecar answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-polaris-daemon-secret", &self.secret)
            .send()
            .await
            .expect("sidecar answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Connects window `cc` (MCP id `mcp-<cc>`) to `project` as `user` and claims it with
    /// the connect tool's own PostToolUse hook, as Claude Code does. Returns the session.
    pub(crate) async fn join(&self, cc: &str, project: &str, user: &str) -> String {
        let (s, v) = self
            .post(
                "/connect",
                json!({"ccSessionId": format!("mcp-{cc}"), "project": project, "user": user}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "connected");
        let session = v["session"].as_str().expect("session").to_owned();
        let (s, v) = self
            .post("/events", tool_use(cc, "mcp__polaris__polaris_connect"))
            .await;
        assert_eq!((s, &v["status"]), (200, &json!("accepted")), "{v}");
        session
    }

    pub(crate) async fn stop(mut self) {
        let status = crate::support::terminate(&mut self.child, 20, "the sidecar").await;
        assert!(status.success(), "{status}");
    }
}

pub(crate) fn prompt(cc: &str, text: &str) -> Value {
    json!({"hook_event_name": "UserPromptSubmit", "session_id": cc, "prompt": text})
}

fn stop_hook(cc: &str, text: &str) -> Value {
    json!({"hook_event_name": "Stop", "session_id": cc, "stop_response": text})
}

fn tool_use(cc: &str, tool: &str) -> Value {
    json!({"hook_event_name": "PostToolUse", "session_id": cc, "tool_name": tool,
           "tool_input": {"channel": "#x"}})
}

pub(crate) async fn messages(base: &str, project: &str, session: &str) -> Vec<Value> {
    let r = reqwest::get(format!(
        "{base}/projects/{project}/sessions/{session}/messages"
    ))
    .await;
    match r {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Waits until the session holds exactly `n` events, then returns them.
pub(crate) async fn wait_for(base: &str, project: &str, session: &str, n: usize) -> Vec<Value> {
    eventually(30, || async {
        let m = messages(base, project, session).await;
        (m.len() >= n).then_some(m)
    })
    .await
}

/// Sends a marker event for window `cc` through the sidecar and waits until it is on the
/// floor. The uplink delivers in order, so anything it was going to deliver before the
/// marker (a resend included) has arrived by then. Returns the session's events without
/// the marker, which must be the last of them.
async fn through_a_marker(
    sc: &Sidecar,
    floor: &str,
    project: &str,
    session: &str,
    cc: &str,
) -> Vec<Value> {
    let (s, v) = sc
        .post("/events", stop_hook(cc, "marker: delivered last"))
        .await;
    assert_eq!(s, 200, "{v}");
    let marker = v["id"].as_str().unwrap().to_owned();
    let mut events = eventually(30, || async {
        let m = messages(floor, project, session).await;
        m.iter().any(|e| e["id"] == marker.as_str()).then_some(m)
    })
    .await;
    let last = events.pop().unwrap();
    assert_eq!(last["id"], marker.as_str(), "the marker came last");
    events
}

/// A floor on a fixed port, stoppable and restartable there (the sidecar keeps its URL).
struct PortFloor {
    addr: SocketAddr,
    db: TestDb,
    running: Option<Running>,
}

/// A floor's runtime, store, stop signal and server task.
type Running = (
    Runtime,
    Store,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

impl PortFloor {
    /// A free port with nothing listening on it yet.
    async fn reserve() -> PortFloor {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        PortFloor {
            addr,
            db: TestDb::new(Backend::Sqlite).await.expect("sqlite"),
            running: None,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn start(&mut self) {
        let store = Store::open(&self.db.url).await.expect("store");
        let runtime = Runtime::start(
            store.clone(),
            Settings {
                session_idle: Duration::from_secs(300),
                subscriber_buffer: 1024,
            },
        )
        .await
        .expect("runtime");
        let listener = eventually(10, || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await;
        let config = ApiConfig {
            metrics_elsewhere: false,
            slack: None,
            jwt_secret: None,
            rate_limits: RateLimits {
                writes_per_minute: 0,
                injects_per_minute: 0,
            },
            max_body_bytes: 1 << 20,
            sse_heartbeat: Duration::from_secs(15),
            ws_ping: Duration::from_secs(30),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(
            listener,
            runtime.clone(),
            config,
            None,
            async move {
                // A dropped sender also stops the server.
                let _ = rx.await;
            },
        ));
        self.running = Some((runtime, store, tx, task));
    }

    async fn stop(&mut self) {
        if let Some((runtime, store, tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
            runtime.shutdown().await;
            store.close().await;
        }
    }
}

pub(crate) fn home_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("polaris");
    (dir, home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stamps_senders_requires_the_secret_and_keeps_other_windows_out() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &srv.base).await;
    let http = crate::support::http();

    // The secret: /healthz is open, everything else needs it.
    let r = http
        .get(format!("{}/healthz", sc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ok": true}));
    let r = http
        .get(format!("{}/status", sc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "Unauthorized");
    let r = http
        .post(format!("{}/events", sc.base))
        .header("x-polaris-daemon-secret", "wrong")
        .json(&prompt("cc-1", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A window that never joined is not routed, even when it is the only one around.
    let (s, v) = sc
        .post(
            "/connect",
            json!({"ccSessionId": "mcp-cc-1", "project": "pj", "user": "user:manu"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let session = v["session"].as_str().unwrap().to_owned();
    assert!(
        session.len() == 6 && session.starts_with("s-"),
        "generated slug: {session}"
    );
    assert_eq!(v["agent"], "agent:claude");
    let (s, v) = sc
        .post("/events", prompt("cc-stranger", "secret plans"))
        .await;
    assert_eq!((s, v["status"].clone()), (200, json!("not_connected")));
    // The connect tool's own hook claims the connection for its window.
    let (s, v) = sc
        .post("/events", tool_use("cc-1", "mcp__polaris__polaris_connect"))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = sc.post("/events", prompt("cc-1", "build auth")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["pendingInjects"], json!([]));
    let prompt_id = v["id"].as_str().unwrap().to_owned();
    let (s, v) = sc.post("/events", stop_hook("cc-1", "done")).await;
    assert_eq!((s, v["status"].clone()), (200, json!("accepted")), "{v}");
    // Still nothing from the stranger, and a bad payload is refused at once.
    let (s, v) = sc.post("/events", prompt("cc-stranger", "more")).await;
    assert_eq!(v["status"], "not_connected", "{s} {v}");
    let (s, v) = sc.post("/events", json!({"hook_event_name": "Stop"})).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("session_id"), "{v}");
    let (s, v) = sc
        .post(
            "/events",
            json!({"hook_event_name": "UserPromptSubmit", "session_id": "cc-1"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("prompt"), "{v}");

    let events = wait_for(&srv.base, "pj", &session, 3).await;
    let senders: Vec<_> = events
        .iter()
        .map(|e| e["sender"].as_str().unwrap())
        .collect();
    assert_eq!(senders, ["agent:claude", "user:manu", "agent:claude"]);
    assert_eq!(events[1]["id"], prompt_id.as_str());
    assert!(
        events.iter().all(|e| e["payload"]["session_id"] == "cc-1"),
        "only the joined window: {events:?}"
    );
    let s: Value = reqwest::get(format!("{}/projects/pj/sessions/{session}", srv.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["agent"], "agent:claude");
    assert_eq!(s["driver"], "user:manu");

    // The status line and the JSONL log (with ids, for recover).
    let (_, st) = sc.get("/status/cc-1").await;
    assert_eq!(st["connected"], true);
    assert_eq!(st["session"], session.as_str());
    let (_, st) = sc.get("/status/cc-stranger").await;
    assert_eq!(st["connected"], false);
    // A credential pasted into a prompt: the floor gets the prompt as it was (Sage's to
    // flag), the sidecar's plain-text log on the laptop does not keep the credential.
    let token = "ghp_4fJ2kQ9xLmN7pR3sT8vW1yZ5bC6dE0gH2iK4";
    let (s, v) = sc
        .post(
            "/events",
            prompt("cc-1", &format!("deploy with {token} please")),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let secret_id = v["id"].as_str().unwrap().to_owned();
    let log = eventually(10, || async {
        let dir = home.join("logs");
        let f = std::fs::read_dir(&dir).ok()?.next()?.ok()?.path();
        let text = std::fs::read_to_string(f).ok()?;
        (text.contains(&prompt_id) && text.contains(&secret_id)).then_some(text)
    })
    .await;
    assert!(!log.contains(token), "the log keeps no credential");
    assert!(
        log.contains("deploy with"),
        "the rest of the prompt is logged"
    );
    assert!(
        !log.contains("secret plans"),
        "unjoined windows are not logged"
    );
    let line: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["id"] == prompt_id.as_str())
        .unwrap();
    assert_eq!(line["sender"], "user:manu");
    assert_eq!(line["project"], "pj");
    assert_eq!(line["endpoint"], "/events");

    // Everything the sidecar wrote is private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home), 0o700);
        for f in ["daemon.secret", "state.json", "session-history.jsonl"] {
            assert_eq!(mode(&home.join(f)), 0o600, "{f}");
        }
        for dir in ["wal", "logs"] {
            assert_eq!(mode(&home.join(dir)), 0o700, "{dir}");
            for e in std::fs::read_dir(home.join(dir)).unwrap() {
                let p = e.unwrap().path();
                assert_eq!(mode(&p), 0o600, "{}", p.display());
            }
        }
    }

    // Disconnect stops the aliases too.
    let (s, _) = sc
        .post("/disconnect", json!({"ccSessionId": "mcp-cc-1"}))
        .await;
    assert_eq!(s, 200);
    let (_, v) = sc.post("/events", prompt("cc-1", "after")).await;
    assert_eq!(v["status"], "not_connected");
    sc.stop().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_non_loopback_addresses() {
    let (_d, home) = home_dir();
    let out = sidecar_cmd(&home, "http://127.0.0.1:9", &["--listen", "0.0.0.0:4322"])
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_while_the_floor_is_down_and_delivers_in_order_once() {
    let mut floor = PortFloor::reserve().await;
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &floor.url()).await;
    // Connect with the floor down: connected, pending; the session is made later.
    let (s, v) = sc
        .post(
            "/connect",
            json!({"ccSessionId": "mcp-a", "project": "down", "user": "user:manu", "session": "main"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pending"], true);
    let (s, _) = sc
        .post("/events", tool_use("a", "mcp__polaris__polaris_connect"))
        .await;
    assert_eq!(s, 200);
    let mut ids = Vec::new();
    for i in 0..40 {
        let (s, v) = sc.post("/events", prompt("a", &format!("p{i}"))).await;
        assert_eq!(s, 200, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let out = sidecar_cmd(
        &home,
        &floor.url(),
        &["status", "--listen", sc.base.trim_start_matches("http://")],
    )
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("pending: 41"), "{text}");

    floor.start().await;
    let events = wait_for(&floor.url(), "down", "main", 41).await;
    let got: Vec<_> = events[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids, "in order, each once");

    // Down again mid-stream, back on the same port: still in order, still once.
    floor.stop().await;
    for i in 40..60 {
        let (s, v) = sc.post("/events", stop_hook("a", &format!("r{i}"))).await;
        assert_eq!(s, 200, "{v}");
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    floor.start().await;
    let events = wait_for(&floor.url(), "down", "main", 61).await;
    // A resend would reach the floor before an event sent after it.
    let events2 = through_a_marker(&sc, &floor.url(), "down", "main", "a").await;
    assert_eq!(events2.len(), events.len());
    let got: Vec<_> = events2[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids);
    sc.stop().await;
    floor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let (_d, home) = home_dir();
    let mut sc = Sidecar::start(&home, &srv.base).await;
    let session = sc.join("k", "kill", "user:manu").await;
    let base = sc.base.clone();
    let secret = sc.secret.clone();
    let acked = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (base, secret, acked) = (base.clone(), secret.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            let http = crate::support::http();
            for i in 0..1000 {
                let id = Uuid::new_v4().to_string();
                let r = http
                    .post(format!("{base}/events"))
                    .header("x-polaris-daemon-secret", &secret)
                    .header("x-polaris-event-id", &id)
                    .json(&stop_hook("k", &format!("c{c} e{i}")))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().await.push(id),
                    _ => return,
                }
            }
        }));
    }
    eventually(30, || async {
        (acked.lock().await.len() >= 200).then_some(())
    })
    .await;
    sc.child.start_kill().unwrap();
    sc.child.wait().await.unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    let sc = Sidecar::start(&home, &srv.base).await;
    let events = wait_for(&srv.base, "kill", &session, acked.len() + 1).await;
    let mut on_floor = std::collections::HashMap::<String, usize>::new();
    for e in &events {
        *on_floor
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &acked {
        assert_eq!(
            on_floor.get(id),
            Some(&1),
            "acknowledged {id} is on the floor once"
        );
    }
    sc.stop().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_in_the_spool_with_the_hooks_ids() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &srv.base).await;
    let session = sc.join("sp", "spool", "user:manu").await;
    sc.stop().await;
    // The hook spooled these while the sidecar was down.
    let h = Home::at(&home);
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut ids = Vec::new();
    for i in 0..3 {
        let e = SpoolEntry {
            id: Uuid::new_v4(),
            t: t0 + chrono::Duration::milliseconds(i),
            endpoint: "/events".into(),
            payload: prompt("sp", &format!("spooled {i}")),
        };
        spool::write(&h, &e).unwrap();
        ids.push(e.id.to_string());
    }
    let sc = Sidecar::start(&home, &srv.base).await;
    let events = wait_for(&srv.base, "spool", &session, 4).await;
    let got: Vec<_> = events[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(events[1]["sender"], "user:manu");
    assert_eq!(
        events[1]["timestamp"],
        polaris_protocol::format_ms(&t0).as_str()
    );
    assert!(spool::list(&h).unwrap().is_empty(), "spool emptied");
    sc.stop().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_dead_lettered_and_shown_by_status() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &srv.base).await;
    srv.client().post("/projects", json!({"name": "dl"})).await;
    srv.client()
        .post("/projects/dl/sessions", json!({"name": "real"}))
        .await;
    // An agent posts to a session that does not exist: the floor answers 404 for good.
    let body = json!({"source": "agent", "sender": "agent:dean", "payload": {"content": "hello"}});
    let (s, v) = sc
        .post("/projects/dl/sessions/ghost/events", body.clone())
        .await;
    assert_eq!(s, 200, "{v}");
    let dead_id = v["id"].as_str().unwrap().to_owned();
    // Later events still flow.
    let (s, v) = sc.post("/projects/dl/sessions/real/events", body).await;
    assert_eq!(s, 200, "{v}");
    wait_for(&srv.base, "dl", "real", 1).await;
    let out = eventually(10, || async {
        let out = sidecar_cmd(
            &home,
            &srv.base,
            &["status", "--listen", sc.base.trim_start_matches("http://")],
        )
        .output()
        .await
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("dead letters: 1").then_some(text)
    })
    .await;
    assert!(out.contains(&dead_id), "{out}");
    assert!(out.contains("404"), "{out}");
    assert!(out.contains("(reachable)"), "{out}");
    assert!(out.contains("pending: 0"), "{out}");
    sc.stop().await;
    // With the sidecar stopped, status reads the home.
    let out = sidecar_cmd(&home, &srv.base, &["status", "--listen", "127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("not running") && text.contains("dead letters: 1"),
        "{text}"
    );
    srv.finish().await;
}

pub(crate) async fn inject(floor: &str, project: &str, session: &str, content: &str) {
    let r = crate::support::http()
        .post(format!(
            "{floor}/projects/{project}/sessions/{session}/inject"
        ))
        .json(&json!({"content": content, "sender": "user:krishna"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

pub(crate) async fn wait_queued(sc: &Sidecar, cc: &str, n: u64) {
    eventually(20, || async {
        let (_, v) = sc.get(&format!("/status/{cc}")).await;
        (v["injectsWaiting"].as_u64() == Some(n)).then_some(())
    })
    .await;
}

/// Waits until the sidecar reads `session`'s stream for window `cc`, leaving its queue
/// empty. A first stream (no cursor yet) starts at "now", so an inject posted before it is
/// up is never queued: probe with injects until one is, then send a last probe and drain
/// until it comes out. The stream is in order, so no probe shows up after that one.
pub(crate) async fn wait_following(
    sc: &Sidecar,
    floor: &str,
    project: &str,
    session: &str,
    cc: &str,
) {
    let mut tries = 0u32;
    eventually(20, || {
        tries += 1;
        // A probe every tenth poll: one that went before the stream was up is lost.
        let probe = tries % 10 == 1;
        async move {
            if probe {
                inject(floor, project, session, "probe").await;
            }
            let (_, v) = sc.get(&format!("/status/{cc}")).await;
            (v["injectsWaiting"].as_u64() > Some(0)).then_some(())
        }
    })
    .await;
    inject(floor, project, session, "last probe").await;
    eventually(20, || async {
        let (_, v) = sc.post("/events", prompt(cc, "drain the probes")).await;
        let drained = v["pendingInjects"].as_array().cloned().unwrap_or_default();
        drained
            .iter()
            .any(|i| i["content"] == "last probe")
            .then_some(())
    })
    .await;
    wait_queued(sc, cc, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_reach_the_next_prompt_across_floor_and_sidecar_restarts() {
    let mut floor = PortFloor::reserve().await;
    floor.start().await;
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &floor.url()).await;
    let session = sc.join("i", "inj", "user:manu").await;
    // The follow stream sees the sidecar's own event first (its cursor starts there).
    wait_for(&floor.url(), "inj", &session, 1).await;
    wait_following(&sc, &floor.url(), "inj", &session, "i").await;

    inject(&floor.url(), "inj", &session, "use RS256").await;
    wait_queued(&sc, "i", 1).await;
    let (_, v) = sc.post("/events", prompt("i", "next")).await;
    assert_eq!(v["pendingInjects"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["pendingInjects"][0]["from"], "user:krishna");
    assert_eq!(v["pendingInjects"][0]["content"], "use RS256");
    assert!(v["pendingInjects"][0]["timestamp"].is_string());
    let (_, v) = sc.post("/events", prompt("i", "again")).await;
    assert_eq!(v["pendingInjects"], json!([]), "drained once");

    // The floor restarts: the stream resumes after its cursor, nothing lost or doubled.
    floor.stop().await;
    floor.start().await;
    inject(&floor.url(), "inj", &session, "mind GDPR").await;
    wait_queued(&sc, "i", 1).await;
    // A replay of anything before it would be queued before an inject sent after it.
    inject(&floor.url(), "inj", &session, "marker after the restart").await;
    wait_queued(&sc, "i", 2).await;
    let (_, v) = sc.post("/events", prompt("i", "p3")).await;
    let got: Vec<_> = v["pendingInjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"].clone())
        .collect();
    assert_eq!(got, [json!("mind GDPR"), json!("marker after the restart")]);

    // The sidecar restarts (even by kill -9) with an inject queued: the queue survives,
    // and the stream does not queue it again.
    inject(&floor.url(), "inj", &session, "ship it").await;
    wait_queued(&sc, "i", 1).await;
    let mut sc = sc;
    sc.child.start_kill().unwrap();
    sc.child.wait().await.unwrap();
    let sc = Sidecar::start(&home, &floor.url()).await;
    // The stream resumes after its saved cursor: an inject sent now is queued right behind
    // "ship it", and a second "ship it" would be queued before it.
    inject(&floor.url(), "inj", &session, "marker after the kill").await;
    wait_queued(&sc, "i", 2).await;
    let (_, v) = sc.post("/events", prompt("i", "p4")).await;
    let got: Vec<_> = v["pendingInjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["content"].clone())
        .collect();
    assert_eq!(got, [json!("ship it"), json!("marker after the kill")]);
    let (_, v) = sc.post("/events", prompt("i", "p5")).await;
    assert_eq!(v["pendingInjects"], json!([]));
    sc.stop().await;
    floor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_context_channels_team_rename_and_backfill() {
    let mut floor = PortFloor::reserve().await;
    floor.start().await;
    let f = floor.url();
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &f).await;
    let (s, v) = sc.post("/register", json!({"ccSessionId": "mcp-r"})).await;
    assert_eq!((s, v["status"].clone()), (200, json!("registered")));
    let session = sc.join("r", "ren", "user:manu").await;

    // /reply is the agent's answer, stored as a Stop hook.
    let (s, v) = sc
        .post(
            "/reply",
            json!({"ccSessionId": "r", "message": "hello team"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let events = wait_for(&f, "ren", &session, 2).await;
    assert_eq!(events[1]["sender"], "agent:claude");
    assert_eq!(events[1]["kind"], "Stop");
    assert_eq!(events[1]["payload"]["stop_response"], "hello team");
    let (s, v) = sc
        .post("/reply", json!({"ccSessionId": "nobody", "message": "x"}))
        .await;
    assert_eq!((s, v["error"].clone()), (400, json!("Not connected")));

    // Channels, team, a sibling session's context.
    let (s, v) = sc.get("/channels").await;
    assert_eq!(s, 200);
    assert!(
        v["channels"].as_array().unwrap().contains(&json!("#ren")),
        "{v}"
    );
    let (s, v) = sc.get("/team").await;
    assert_eq!(s, 200, "{v}");
    assert!(v["members"].is_array(), "{v}");
    let c = crate::support::http();
    c.post(format!("{f}/projects/ren/sessions"))
        .json(&json!({"name": "other"}))
        .send()
        .await
        .unwrap();
    c.post(format!("{f}/projects/ren/sessions/other/events"))
        .json(&json!({"sender": "user:krishna", "payload": prompt("k", "sibling work")}))
        .send()
        .await
        .unwrap();
    let (s, v) = sc.get("/context/r/other").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0]["payload"]["prompt"], "sibling work");
    let (s, _) = sc.get("/context/nobody/other").await;
    assert_eq!(s, 400);
    // An explicit name that exists is joined, not refused.
    let (s, v) = sc
        .post(
            "/connect",
            json!({"ccSessionId": "mcp-j", "project": "ren", "user": "user:krishna", "session": "other"}),
        )
        .await;
    assert_eq!((s, v["session"].clone()), (200, json!("other")), "{v}");
    let (s, v) = sc
        .post(
            "/connect",
            json!({"ccSessionId": "mcp-j", "project": "ren", "user": "krishna"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().starts_with("user:"), "{v}");
    sc.post("/disconnect", json!({"ccSessionId": "mcp-j"}))
        .await;

    // Channel update and rename: the connection, its pending events and its inject stream
    // all move to the new name.
    let (s, _) = sc
        .post(
            "/channel-update",
            json!({"project": "ren", "slackChannel": "ren-chan"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = sc.get("/status/r").await;
    assert_eq!(v["slackChannel"], "ren-chan");
    let (s, v) = sc
        .post("/rename", json!({"oldName": "ren", "newName": "ren2"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = sc.get("/status/r").await;
    assert_eq!(v["project"], "ren2");
    let (s, _) = sc.post("/events", stop_hook("r", "after the rename")).await;
    assert_eq!(s, 200);
    wait_for(&f, "ren2", &session, 3).await;
    // No pause for the stream to reopen under the new name: it resumes after the cursor
    // it kept, so an inject sent at once is not missed.
    inject(&f, "ren2", &session, "new name, same stream").await;
    wait_queued(&sc, "r", 1).await;
    let (_, v) = sc.post("/events", prompt("r", "go on")).await;
    assert_eq!(v["pendingInjects"][0]["content"], "new name, same stream");

    // Backfill: an event the log has and the floor lacks comes back, once; this window's
    // delivered events are not doubled; another window's lines are never replayed.
    let lost = Uuid::new_v4();
    let foreign = Uuid::new_v4();
    let t = chrono::Utc::now() - chrono::Duration::seconds(30);
    let lines = [
        json!({"t": t, "endpoint": "/events", "payload": prompt("r", "lost prompt"), "id": lost}),
        json!({"t": t, "endpoint": "/events", "payload": prompt("zz", "other window"), "id": foreign}),
    ];
    let log = home.join("logs").join(format!(
        "daemon-{}.jsonl",
        chrono::Utc::now().format("%Y-%m-%d")
    ));
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    for l in lines {
        text.push_str(&format!("{l}\n"));
    }
    std::fs::write(&log, text).unwrap();
    // The connect claim, the reply, the Stop, the inject itself and the prompt.
    let before = wait_for(&f, "ren2", &session, 5).await.len();
    assert_eq!(before, 5);
    let (s, v) = sc
        .post("/backfill", json!({"ccSessionId": "r", "duration": "1h"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["recovered"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["source"], "daemon_log");
    let events = wait_for(&f, "ren2", &session, before + 1).await;
    // Backfill goes through the uplink: a double would reach the floor before a later event.
    let events2 = through_a_marker(&sc, &f, "ren2", &session, "r").await;
    let shown: Vec<String> = events2
        .iter()
        .map(|e| format!("{} {} {}", e["id"], e["kind"], e["payload"]["session_id"]))
        .collect();
    assert_eq!(events2.len(), events.len(), "nothing doubled: {shown:#?}");
    assert_eq!(events2.len(), before + 1);
    let lost_ev = events2
        .iter()
        .find(|e| e["id"] == lost.to_string().as_str())
        .unwrap();
    assert_eq!(lost_ev["sender"], "user:manu");
    assert!(
        events2
            .iter()
            .all(|e| e["id"] != foreign.to_string().as_str())
    );
    let (_, v) = sc
        .post("/backfill", json!({"ccSessionId": "r", "duration": "soon"}))
        .await;
    assert_eq!(v["gaps"], json!(["invalid duration format"]));

    let (s, v) = sc.post("/disconnect-all", json!({})).await;
    assert_eq!((s, v["status"].clone()), (200, json!("all_disconnected")));
    let (_, v) = sc.get("/status").await;
    assert_eq!(v["sessions"], json!([]));
    let (s, _) = sc.get("/nope").await;
    assert_eq!(s, 404);
    sc.stop().await;
    floor.stop().await;
}
