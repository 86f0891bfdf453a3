//! `polaris mcp` driven by real MCP clients over stdio: rmcp's client, always, and the
//! official Python SDK (`tests/mcp_client.py`) for interoperability when an interpreter
//! with it is configured (see [`Client::python`]). Each spawns the binary, initializes,
//! lists the tools and calls them; the tools talk to a sidecar over HTTP. Every scenario
//! runs with both clients and asserts the same.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::ServiceError;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_polaris");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mcp_client.py");

/// The interpreter with the Python SDK (`mcp`, the version `.ci/run` pins) installed.
const PYTHON_VAR: &str = "POLARIS_TEST_MCP_PYTHON";
/// Set (as CI does) to fail instead of skipping when no such interpreter is configured.
const REQUIRE_PYTHON_VAR: &str = "POLARIS_TEST_REQUIRE_MCP_PYTHON";

/// Which MCP client drives `polaris mcp`.
pub(crate) enum Client {
    /// rmcp's client, in this process.
    Rust,
    /// `tests/mcp_client.py` run by this interpreter.
    Python(PathBuf),
}

impl Client {
    /// The Python SDK client, if `POLARIS_TEST_MCP_PYTHON` names an interpreter; `None`
    /// (the interop test skipped, and said so) when it does not, unless
    /// `POLARIS_TEST_REQUIRE_MCP_PYTHON` is set. Nothing is installed here.
    fn python(test: &str) -> Option<Client> {
        let env = polaris_config::Env::from_process();
        match env.get(PYTHON_VAR).map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => Some(Client::Python(PathBuf::from(p))),
            None if env.get(REQUIRE_PYTHON_VAR).is_some() => {
                panic!("{REQUIRE_PYTHON_VAR} is set but {PYTHON_VAR} is not")
            }
            None => {
                eprintln!(
                    "skipped {test} with the Python MCP SDK: {PYTHON_VAR} is not set. To run it, \
                     point it at a Python with the SDK, e.g. `python3 -m venv /tmp/mcp && \
                     /tmp/mcp/bin/pip install mcp==<MCP_PYTHON_SDK of .ci/run>` and \
                     `{PYTHON_VAR}=/tmp/mcp/bin/python cargo test --test it mcp::` \
                     (.ci/run does this)"
                );
                None
            }
        }
    }
}

/// Runs each scenario with both clients: `<scenario>::rust` always, `<scenario>::python_sdk`
/// when the Python SDK is configured.
macro_rules! both_clients {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn rust() {
                super::$scenario(&super::Client::Rust).await;
            }

            #[tokio::test]
            async fn python_sdk() {
                if let Some(client) = super::Client::python(concat!("mcp::", stringify!($scenario))) {
                    super::$scenario(&client).await;
                }
            }
        }
    )*};
}

both_clients!(
    tools_list_and_calls_over_stdio,
    a_restarted_mcp_server_uses_the_daemons_mapping,
    a_daemon_that_is_down_is_a_text_answer,
    connect_and_reply_reach_the_floor_through_the_real_sidecar,
);

/// Runs `client` against `polaris mcp` with `env`, making `calls` (a list of
/// `[tool, arguments]`). Returns what `tests/mcp_client.py` prints, whichever client ran:
/// `{"server", "instructions", "capabilities", "tools": {name: input schema}, "calls"}`,
/// each call `{"name", "is_error", "content_items", "text"}` or `{"name", "error"}` for an
/// MCP error answer.
pub(crate) async fn mcp_client(client: &Client, env: &[(&str, &str)], calls: Value) -> Value {
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap();
    // The server's environment: a home of its own and quiet logs, then the test's.
    let mut server_env = vec![("POLARIS_HOME", home_s), ("POLARIS_LOG", "warn")];
    server_env.extend_from_slice(env);
    let run = async {
        match client {
            Client::Rust => rust_client(&server_env, &calls).await,
            Client::Python(python) => python_client(python, &server_env, &calls).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the MCP client finished within 60 s")
}

/// rmcp's client over its child-process transport, the server's stderr kept for failures.
async fn rust_client(env: &[(&str, &str)], calls: &Value) -> Value {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("mcp").env_clear().envs(env.iter().copied());
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn polaris mcp");
    let mut stderr = stderr.expect("stderr is piped");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        // What was read before an error is still worth showing.
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let session = match ().serve(transport).await {
        Ok(s) => s,
        Err(e) => panic!("MCP initialisation: {e}\nstderr: {}", stderr.await.unwrap()),
    };
    let init = serde_json::to_value(session.peer_info().expect("initialized").as_ref()).unwrap();
    let tools = session.list_all_tools().await.expect("tools/list");
    let mut out = json!({
        "server": init["serverInfo"],
        "instructions": init["instructions"],
        "capabilities": init["capabilities"],
        "tools": tools
            .iter()
            .map(|t| {
                let t = serde_json::to_value(t).unwrap();
                (t["name"].as_str().unwrap().to_owned(), t["inputSchema"].clone())
            })
            .collect::<serde_json::Map<_, _>>(),
        "calls": [],
    });
    for call in calls.as_array().unwrap() {
        let name = call[0].as_str().unwrap().to_owned();
        let args = call[1].as_object().unwrap().clone();
        let params = CallToolRequestParams::new(name.clone()).with_arguments(args);
        let result = match session.call_tool(params).await {
            Ok(r) => serde_json::to_value(r).unwrap(),
            Err(ServiceError::McpError(e)) => {
                out["calls"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": name, "error": e.message}));
                continue;
            }
            Err(e) => panic!("tools/call {name}: {e}"),
        };
        let texts: Vec<&str> = result["content"]
            .as_array()
            .map(|c| c.iter().map(|c| c["text"].as_str().unwrap_or("")).collect())
            .unwrap_or_default();
        out["calls"].as_array_mut().unwrap().push(json!({
            "name": name,
            "is_error": result["isError"].as_bool().unwrap_or(false),
            "content_items": texts.len(),
            "text": texts.join("\n"),
        }));
    }
    session.cancel().await.expect("close the session");
    out
}

/// `tests/mcp_client.py` under `python`, which passes the `POLARIS_*` and `CLAUDE_*`
/// variables of its own environment on to the server.
async fn python_client(python: &std::path::Path, env: &[(&str, &str)], calls: &Value) -> Value {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(CLIENT)
        .arg(BIN)
        .arg(calls.to_string())
        .env_remove("POLARIS_DAEMON_SECRET")
        .env_remove("POLARIS_DAEMON_URL")
        .env_remove("POLARIS_CC_SESSION_ID")
        .env_remove("CLAUDE_SESSION_ID")
        .env_remove("CLAUDE_CODE_SESSION_ID")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {} ({PYTHON_VAR}): {e}", python.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mcp_client.py failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The text of call `i`, which must be a text result (not an MCP error).
pub(crate) fn text(out: &Value, i: usize) -> &str {
    let call = &out["calls"][i];
    assert_eq!(call["is_error"], false, "call {i}: {call}");
    assert_eq!(call["content_items"], 1, "one text item: {call}");
    call["text"].as_str().unwrap()
}

/// One request the fake sidecar saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    secret: Option<String>,
    body: Value,
}

/// A stand-in sidecar speaking the routes the tools call (reference 4.3), recording every
/// request. It keeps one mapping, as the real one does per Claude Code session.
#[derive(Default)]
struct FakeDaemon {
    seen: Mutex<Vec<Seen>>,
    mapping: Mutex<Option<(String, Value)>>, // (cc, {"project", "session", "user"})
}

const DAEMON_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn fake_daemon(
    State(d): State<Arc<FakeDaemon>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let secret = headers
        .get("x-polaris-daemon-secret")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    d.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        secret: secret.clone(),
        body: body.clone(),
    });
    if secret.as_deref() != Some(DAEMON_SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "Unauthorized"})),
        )
            .into_response();
    }
    let segs: Vec<String> = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            // The only escapes the tests use.
            s.replace("%20", " ").replace("%2F", "/")
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let mapping = d.mapping.lock().unwrap().clone();
    let connected_cc = |cc: &str| {
        mapping
            .as_ref()
            .filter(|(c, _)| c == cc)
            .map(|(_, m)| m.clone())
    };
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    let bad = |e: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": e}))).into_response();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["register"]) => {
            ok(json!({"status": "registered", "ccSessionId": body["ccSessionId"]}))
        }
        ("GET", ["channels"]) => ok(json!({"channels": ["#payments", "#search"]})),
        ("POST", ["connect"]) => {
            let session = body["session"].as_str().unwrap_or("quiet-otter").to_owned();
            let m = json!({"project": body["project"], "session": session, "user": body["user"]});
            *d.mapping.lock().unwrap() = Some((
                body["ccSessionId"].as_str().unwrap_or_default().to_owned(),
                m.clone(),
            ));
            ok(
                json!({"status": "connected", "project": body["project"], "session": session,
                      "user": body["user"], "agent": body["agent"].as_str().unwrap_or("agent:claude")}),
            )
        }
        ("POST", ["disconnect"]) => {
            *d.mapping.lock().unwrap() = None;
            ok(json!({"status": "disconnected"}))
        }
        ("GET", ["status", cc]) => match connected_cc(cc) {
            Some(m) => ok(
                json!({"connected": true, "project": m["project"], "session": m["session"],
                                 "user": m["user"], "slackChannel": null}),
            ),
            None => ok(json!({"connected": false})),
        },
        ("POST", ["reply"]) => match connected_cc(body["ccSessionId"].as_str().unwrap_or_default())
        {
            Some(_) => ok(json!({"status": "accepted", "id": uuid::Uuid::new_v4()})),
            None => bad("Not connected"),
        },
        ("POST", ["rename"]) => {
            if body["newName"] == "taken" {
                return (
                    StatusCode::CONFLICT,
                    axum::Json(json!({"error": "Project name already taken"})),
                )
                    .into_response();
            }
            if let Some((_, m)) = d.mapping.lock().unwrap().as_mut() {
                m["project"] = body["newName"].clone();
            }
            ok(json!({"status": "renamed", "oldName": body["oldName"], "newName": body["newName"]}))
        }
        ("GET", ["context", cc, session]) => match (connected_cc(cc), *session) {
            (None, _) => bad("Not connected"),
            (Some(_), "empty one") => ok(json!([])),
            (Some(_), "gone") => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "Session not found"})),
            )
                .into_response(),
            (Some(_), _) => ok(json!([
                {"sender": "user:priya", "payload": {"hook_event_name": "UserPromptSubmit", "prompt": "add retries"}},
                {"sender": "agent:claude", "payload": {"hook_event_name": "Stop", "stop_response": "done: 3 retries"}},
                {"sender": "agent:claude", "payload": {"hook_event_name": "PreToolUse", "tool_name": "Bash"}}
            ])),
        },
        ("GET", ["team"]) => ok(json!({"members": [
            {"name": "Krishna Patel", "slack_id": "U01", "slack_handle": "krishna", "alias": "krishna", "polaris_user": true,
             "participant_id": "user:krishna.patel"},
            {"name": "Priya Shah", "slack_id": "U02", "slack_handle": "pshah", "alias": "priya", "polaris_user": false,
             "participant_id": null},
            {"name": "Sam Lee", "slack_id": null, "slack_handle": null, "alias": "sam", "polaris_user": true,
             "participant_id": "user:sam.lee"}
        ]})),
        ("POST", ["backfill"]) => ok(json!({"recovered": 3, "source": "daemon_log",
                                            "gaps": ["no log entries found since 2026-01-01T00:00:00.000Z"]})),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "Not found"})),
        )
            .into_response(),
    }
}

async fn start_fake_daemon() -> (Arc<FakeDaemon>, String) {
    let d = Arc::new(FakeDaemon::default());
    let app = axum::Router::new()
        .fallback(fake_daemon)
        .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        // The server lives as long as the test's runtime.
        let _ = axum::serve(listener, app).await;
    });
    (d, url)
}

const TOOLS: [(&str, &[&str]); 8] = [
    ("polaris_connect", &["user"]),
    ("polaris_disconnect", &[]),
    ("polaris_status", &[]),
    ("polaris_reply", &["message"]),
    ("polaris_rename", &["name"]),
    ("polaris_context", &["session"]),
    ("polaris_team", &[]),
    ("polaris_backfill", &[]),
];

async fn tools_list_and_calls_over_stdio(client: &Client) {
    let (daemon, url) = start_fake_daemon().await;
    let cc = format!("cc-{}", uuid::Uuid::new_v4());
    let env = [
        ("POLARIS_DAEMON_URL", url.as_str()),
        ("POLARIS_DAEMON_SECRET", DAEMON_SECRET),
        ("POLARIS_CC_SESSION_ID", cc.as_str()),
    ];
    let out = mcp_client(
        client,
        &env,
        json!([
            ["polaris_status", {}],
            ["polaris_reply", {"message": "too early"}],
            ["polaris_connect", {"user": "user:manu"}],
            ["polaris_connect", {"user": "user:manu", "channel": "#payments", "session": "retry work"}],
            ["polaris_status", {}],
            ["polaris_reply", {"message": "I added the retries <@U02>"}],
            ["polaris_context", {"session": "other"}],
            ["polaris_context", {"session": "empty one"}],
            ["polaris_context", {"session": "gone"}],
            ["polaris_team", {}],
            ["polaris_backfill", {"duration": "2h"}],
            ["polaris_rename", {"name": "taken"}],
            ["polaris_rename", {"name": "#billing"}],
            ["polaris_status", {}],
            ["polaris_disconnect", {}],
            ["polaris_status", {}],
            ["polaris_nope", {}],
            ["polaris_reply", {}]
        ]),
    )
    .await;

    // The server names itself and lists the eight tools with the original's schemas.
    assert_eq!(out["server"]["name"], "polaris");
    assert_eq!(out["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        out["capabilities"]["tools"].is_object(),
        "{}",
        out["capabilities"]
    );
    assert!(out["instructions"].as_str().unwrap().contains("Polaris"));
    let tools = out["tools"].as_object().unwrap();
    assert_eq!(tools.len(), TOOLS.len(), "{:?}", tools.keys());
    for (name, required) in TOOLS {
        let schema = &tools[name];
        assert_eq!(schema["type"], "object", "{name}");
        let mut got: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, required, "{name} required fields");
    }
    let props = |tool: &str| -> Vec<(String, Value)> {
        tools[tool]["properties"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["type"].clone()))
            .collect()
    };
    let s = json!("string");
    assert_eq!(
        props("polaris_connect"),
        vec![
            ("channel".into(), s.clone()),
            ("user".into(), s.clone()),
            ("session".into(), s.clone()),
            ("agent".into(), s.clone())
        ]
    );
    assert_eq!(
        props("polaris_backfill"),
        vec![("duration".into(), s.clone()), ("from".into(), s.clone())]
    );
    assert_eq!(props("polaris_reply"), vec![("message".into(), s.clone())]);
    assert_eq!(props("polaris_rename"), vec![("name".into(), s.clone())]);
    assert_eq!(
        props("polaris_context"),
        vec![("session".into(), s.clone())]
    );
    for t in ["polaris_status", "polaris_team", "polaris_disconnect"] {
        assert!(props(t).is_empty(), "{t} takes no arguments");
    }

    // The tools' texts.
    assert!(
        text(&out, 0).starts_with("Not connected"),
        "{}",
        text(&out, 0)
    );
    assert!(
        text(&out, 1).starts_with("Not connected"),
        "{}",
        text(&out, 1)
    );
    let channels = text(&out, 2);
    assert!(
        channels.contains("#payments") && channels.contains("#search"),
        "{channels}"
    );
    assert_eq!(
        text(&out, 3),
        "Connected to #payments/retry work as user:manu."
    );
    assert_eq!(text(&out, 4), "Connected: payments/retry work as user:manu");
    assert_eq!(text(&out, 5), "Reply sent to the floor.");
    assert_eq!(
        text(&out, 6),
        "[user:priya] add retries\n[agent:claude] done: 3 retries\n\
         [agent:claude] {\"hook_event_name\":\"PreToolUse\",\"tool_name\":\"Bash\"}"
    );
    assert_eq!(text(&out, 7), "(no activity yet)");
    let gone = text(&out, 8);
    assert!(
        gone.contains("404") && gone.contains("Session not found"),
        "{gone}"
    );
    let team = text(&out, 9);
    let lines: Vec<&str> = team.lines().collect();
    assert!(
        lines[0].contains("@alias") || lines[0].contains("<@SLACK_ID>"),
        "{team}"
    );
    assert_eq!(lines[1], "@krishna — Krishna Patel ✓ [U01]");
    assert_eq!(lines[2], "@priya (@pshah) — Priya Shah [U02]");
    assert_eq!(lines[3], "Not on Slack:");
    assert_eq!(lines[4], "- Sam Lee (user:sam.lee) ✓");
    let backfill = text(&out, 10);
    assert!(
        backfill.contains("Recovered 3 events") && backfill.contains("daemon_log"),
        "{backfill}"
    );
    assert!(backfill.contains("no log entries found"), "{backfill}");
    let taken = text(&out, 11);
    assert!(taken.contains("Project name already taken"), "{taken}");
    assert_eq!(text(&out, 12), "Renamed #payments → #billing.");
    assert_eq!(text(&out, 13), "Connected: billing/retry work as user:manu");
    assert_eq!(text(&out, 14), "Disconnected from Polaris.");
    assert!(text(&out, 15).starts_with("Not connected"));
    // An unknown tool is an MCP error; a missing required argument names the field.
    assert!(
        out["calls"][16]["error"].is_string(),
        "{}",
        out["calls"][16]
    );
    let missing = &out["calls"][17];
    assert!(
        missing["error"]
            .as_str()
            .unwrap_or(missing["text"].as_str().unwrap_or(""))
            .contains("message"),
        "{missing}"
    );

    // What the sidecar saw: a /register first, the secret on every request, and the bodies
    // of the original's routes.
    let seen = daemon.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/register");
    assert_eq!(seen[0].body, json!({"ccSessionId": cc}));
    assert!(
        seen.iter()
            .all(|s| s.secret.as_deref() == Some(DAEMON_SECRET)),
        "{seen:?}"
    );
    let find = |path: &str| {
        seen.iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("no {path}: {seen:?}"))
    };
    assert_eq!(
        find("/connect").body,
        json!({"ccSessionId": cc, "project": "payments", "user": "user:manu", "session": "retry work"})
    );
    assert_eq!(
        find("/reply").body,
        json!({"ccSessionId": cc, "message": "I added the retries <@U02>"})
    );
    assert_eq!(
        find("/backfill").body,
        json!({"ccSessionId": cc, "duration": "2h"})
    );
    let renames: Vec<&Seen> = seen.iter().filter(|s| s.path == "/rename").collect();
    assert_eq!(
        renames[1].body,
        json!({"oldName": "payments", "newName": "billing"})
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path == format!("/context/{cc}/empty%20one"))
    );
    assert_eq!(find("/disconnect").body, json!({"ccSessionId": cc}));
}

/// The original refused `polaris_reply` after an MCP restart although the daemon still had
/// the mapping (reference 6, ⚠): the tools now ask the daemon.
async fn a_restarted_mcp_server_uses_the_daemons_mapping(client: &Client) {
    let (daemon, url) = start_fake_daemon().await;
    let cc = format!("cc-{}", uuid::Uuid::new_v4());
    let env = [
        ("POLARIS_DAEMON_URL", url.as_str()),
        ("POLARIS_DAEMON_SECRET", DAEMON_SECRET),
        ("CLAUDE_CODE_SESSION_ID", cc.as_str()),
    ];
    let first = mcp_client(
        client,
        &env,
        json!([["polaris_connect", {"user": "user:manu", "channel": "search"}]]),
    )
    .await;
    assert_eq!(
        text(&first, 0),
        "Connected to #search/quiet-otter as user:manu."
    );
    // A new process, same session key: no connect this time.
    let second = mcp_client(
        client,
        &env,
        json!([["polaris_reply", {"message": "still here"}], ["polaris_context", {"session": "other"}]]),
    )
    .await;
    assert_eq!(text(&second, 0), "Reply sent to the floor.");
    assert!(text(&second, 1).contains("[user:priya] add retries"));
    let seen = daemon.seen.lock().unwrap();
    let registers: Vec<&Seen> = seen.iter().filter(|s| s.path == "/register").collect();
    assert_eq!(registers.len(), 2, "each process registers");
    assert!(
        registers
            .iter()
            .all(|r| r.body["ccSessionId"] == cc.as_str())
    );
}

/// With no sidecar running, every tool answers with a text that says so.
async fn a_daemon_that_is_down_is_a_text_answer(client: &Client) {
    // A port that was free a moment ago: nothing listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = mcp_client(
        client,
        &[("POLARIS_DAEMON_URL", url.as_str())],
        json!([
            ["polaris_status", {}],
            ["polaris_connect", {"user": "user:manu", "channel": "#x"}],
            ["polaris_reply", {"message": "hi"}],
            ["polaris_team", {}]
        ]),
    )
    .await;
    for i in 0..4 {
        let t = text(&out, i);
        assert!(
            t.contains("Could not reach the Polaris daemon") && t.contains(&url),
            "{t}"
        );
    }
}

/// A `polaris sidecar` started for a test, in front of `floor`.
struct RealSidecar {
    _child: tokio::process::Child,
    base: String,
}

async fn real_sidecar(home: &std::path::Path, floor: &str) -> RealSidecar {
    let cmd = crate::support::sidecar_command(home, floor, &["--listen", "127.0.0.1:0"]);
    let (child, base) = crate::support::spawn_listening(cmd).await;
    RealSidecar {
        _child: child,
        base,
    }
}

/// The whole path with nothing stubbed: an MCP client drives `polaris mcp`, which
/// talks to a real `polaris sidecar` (reading its secret from the shared home), which
/// delivers to an in-process floor; the reply shows up on the floor as the agent's.
async fn connect_and_reply_reach_the_floor_through_the_real_sidecar(client: &Client) {
    use crate::support::{Backend, Options, TestServer, eventually};
    let Some(server) = TestServer::start(Backend::Sqlite, Options::default()).await else {
        return;
    };
    let c = server.client();
    // A teammate's session the context tool can read.
    c.project_session("payments", "priya-work").await;
    let r = c
        .prompt(
            "payments",
            "priya-work",
            "user:priya",
            "add idempotency keys",
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    let home = tempfile::tempdir().unwrap();
    let sidecar = real_sidecar(home.path(), &server.base).await;
    let home_s = home.path().to_str().unwrap();
    let cc = format!("mcp-{}", uuid::Uuid::new_v4());
    let env = [
        ("POLARIS_DAEMON_URL", sidecar.base.as_str()),
        ("POLARIS_HOME", home_s),
        ("POLARIS_CC_SESSION_ID", cc.as_str()),
    ];
    let out = mcp_client(
        client,
        &env,
        json!([
            ["polaris_connect", {"user": "user:manu", "channel": "#payments", "session": "retries"}],
            ["polaris_status", {}],
            ["polaris_reply", {"message": "Retries are in; <@U02> please review"}],
            ["polaris_context", {"session": "priya-work"}],
            ["polaris_connect", {"user": "user:manu"}],
            ["polaris_backfill", {"duration": "1h"}]
        ]),
    )
    .await;
    assert_eq!(
        text(&out, 0),
        "Connected to #payments/retries as user:manu."
    );
    assert_eq!(text(&out, 1), "Connected: payments/retries as user:manu");
    assert_eq!(text(&out, 2), "Reply sent to the floor.");
    assert_eq!(text(&out, 3), "[user:priya] add idempotency keys");
    assert!(text(&out, 4).contains("#payments"), "{}", text(&out, 4));
    assert!(text(&out, 5).contains("daemon_log"), "{}", text(&out, 5));

    // The reply reaches the floor once, as the agent's Stop event.
    let events = eventually(20, || async {
        let r = c
            .get("/projects/payments/sessions/retries/events?after=0&limit=100")
            .await;
        let events = r.json["events"].as_array().cloned().unwrap_or_default();
        events.iter().any(|e| e["kind"] == "Stop").then_some(events)
    })
    .await;
    let stops: Vec<&Value> = events.iter().filter(|e| e["kind"] == "Stop").collect();
    assert_eq!(stops.len(), 1, "{events:?}");
    assert_eq!(stops[0]["sender"], "agent:claude");
    assert_eq!(
        stops[0]["payload"]["stop_response"],
        "Retries are in; <@U02> please review"
    );
    let session = c.get("/projects/payments/sessions/retries").await;
    assert_eq!(session.json["driver"], "user:manu", "{session:?}");

    // A restarted MCP server (same key) is still connected, by asking the sidecar.
    let again = mcp_client(
        client,
        &env,
        json!([
            ["polaris_status", {}],
            ["polaris_disconnect", {}],
            ["polaris_status", {}]
        ]),
    )
    .await;
    assert_eq!(text(&again, 0), "Connected: payments/retries as user:manu");
    assert_eq!(text(&again, 1), "Disconnected from Polaris.");
    assert!(
        text(&again, 2).starts_with("Not connected"),
        "{}",
        text(&again, 2)
    );
    server.finish().await;
}
