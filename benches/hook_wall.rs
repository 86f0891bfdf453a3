//! Wall time of `polaris hook` as Claude Code pays it: from spawning the process to its
//! exit, a `UserPromptSubmit` on stdin, run `--n` times one after another.
//!
//!   cargo bench --bench hook_wall -- --n 500
//!   cargo bench --bench hook_wall -- --n 500 --port 4322 --home ~/.polaris   # a real sidecar
//!   cargo bench --bench hook_wall -- --bin /path/to/polaris                   # another build
//!
//! Cases: `spawn /bin/true` (the machine's floor for starting any process), `down` (nothing
//! listens: the hook spools), and `up` (a sidecar answers `{"ok": true, "pendingInjects":
//! []}`: an in-process axum responder on loopback, or the real sidecar at `--port`).
//! Prints one line per case with median, p90 and p99 in milliseconds, then `RESULT {json}`.
//!
//! Each prompt is numbered and tagged with the run. `RESULT` says how many of the `up`
//! case's prompts did not arrive (`missing`) and where that was checked (`checked_on`):
//! with `--port`, on the floor — the session the sidecar maps window `3f1c2d9e-bench` to,
//! read back in seq pages from the floor its `/status` names once nothing is pending there
//! (`--floor-token T` if the floor wants one); with the stand-in, what the stand-in got.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_polaris");
/// The Claude Code session the prompts come from.
const CC: &str = "3f1c2d9e-bench";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `cmd` `n` times with `stdin`; returns the sorted wall times in milliseconds.
/// The binary under test: `--bin`, else the one cargo built for this bench.
fn polaris_bin(args: &[String]) -> String {
    arg(args, "--bin").unwrap_or_else(|| BIN.to_owned())
}

fn time_runs(
    n: usize,
    stdin: impl Fn(usize) -> Vec<u8>,
    mut make: impl FnMut() -> Command,
) -> Vec<f64> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let stdin = stdin(i);
        let mut cmd = make();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn");
        if let Some(mut pipe) = child.stdin.take() {
            // /bin/true may exit before reading; a broken pipe there is expected.
            let _ = pipe.write_all(&stdin);
        }
        let status = child.wait().expect("wait");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(status.success(), "the hook must always exit 0");
    }
    times.sort_by(f64::total_cmp);
    times
}

fn report(name: &str, t: &[f64]) -> serde_json::Value {
    let (p50, p90, p99) = (pct(t, 0.5), pct(t, 0.9), pct(t, 0.99));
    println!(
        "{name:<8} n={:<5} median {p50:6.2} ms   p90 {p90:6.2} ms   p99 {p99:6.2} ms   min {:6.2}   max {:6.2}",
        t.len(),
        t[0],
        t[t.len() - 1]
    );
    serde_json::json!({"case": name, "n": t.len(), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99})
}

/// A sidecar stand-in: answers every request as `POST /events` does for a prompt, and
/// keeps the prompts it is sent in `received`.
fn responder(received: Arc<Mutex<Vec<String>>>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
                let prompt = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["prompt"].as_str().map(str::to_owned));
                if let Some(p) = prompt {
                    received.lock().expect("lock").push(p);
                }
                async { axum::Json(json!({"ok": true, "pendingInjects": [], "id": "x"})) }
            });
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(l.local_addr().expect("addr").port()).expect("send");
            axum::serve(l, app).await.expect("serve");
        });
    });
    rx.recv().expect("port")
}

/// The prompts of window [`CC`]'s session, read back from the floor once the sidecar on
/// `port` has nothing left to deliver.
fn prompts_on_the_floor(port: u16, home: &Path, floor_token: Option<&str>) -> Vec<String> {
    let secret = std::fs::read_to_string(home.join("daemon.secret")).expect("the sidecar's secret");
    let secret = secret.trim();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        polaris_sidecar::uplink::install_tls_provider();
        let http = reqwest::Client::new();
        let get = |rb: reqwest::RequestBuilder| async move {
            rb.send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .expect("read")
                .json::<Value>()
                .await
                .expect("a JSON answer")
        };
        let sidecar = |path: &str| {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .header("x-polaris-daemon-secret", secret)
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let floor = loop {
            let status = get(sidecar("/status")).await;
            if status["uplink"]["pending"] == 0 {
                break status["uplink"]["floor_url"]
                    .as_str()
                    .expect("the sidecar names its floor")
                    .trim_end_matches('/')
                    .to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the sidecar still has events pending"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mapping = get(sidecar(&format!("/status/{CC}"))).await;
        let (Some(project), Some(session)) =
            (mapping["project"].as_str(), mapping["session"].as_str())
        else {
            eprintln!("window {CC} is not connected on the sidecar: nothing reached a floor");
            return Vec::new();
        };
        let mut url = reqwest::Url::parse(&floor).expect("floor URL");
        url.path_segments_mut()
            .expect("a base URL")
            .extend(["projects", project, "sessions", session, "events"]);
        let (mut prompts, mut after) = (Vec::new(), 0i64);
        loop {
            let mut page_url = url.clone();
            page_url
                .query_pairs_mut()
                .append_pair("after", &after.to_string())
                .append_pair("limit", "1000");
            let mut rb = http.get(page_url);
            if let Some(t) = floor_token {
                rb = rb.bearer_auth(t);
            }
            let page = get(rb).await;
            for e in page["events"].as_array().into_iter().flatten() {
                if let Some(p) = e["payload"]["prompt"].as_str() {
                    prompts.push(p.to_owned());
                }
            }
            let next = page["next_after"].as_i64().unwrap_or(after);
            if page["has_more"] != true || next <= after {
                return prompts;
            }
            after = next;
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n").map_or(500, |s| s.parse().expect("--n"));
    let dir = tempfile::tempdir().expect("tempdir");
    let home: PathBuf = arg(&args, "--home").map_or_else(|| dir.path().join("home"), PathBuf::from);
    // The tag tells this run's prompts from those of earlier runs on the same session.
    let run = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let prompt = |i: usize| format!("add a login page with OAuth and tests (run {run} #{i})");
    let payload = |i: usize| {
        json!({
            "session_id": CC, "transcript_path": "/nonexistent.jsonl", "cwd": "/w",
            "hook_event_name": "UserPromptSubmit", "prompt": prompt(i)
        })
        .to_string()
        .into_bytes()
    };
    let bin = polaris_bin(&args);
    let hook = |port: u16, home: PathBuf| {
        let bin = bin.clone();
        move || {
            let mut c = Command::new(&bin);
            c.arg("hook")
                .env("POLARIS_HOME", &home)
                .env("POLARIS_PORT", port.to_string());
            c
        }
    };

    let mut results = Vec::new();
    let t = time_runs(n, payload, || Command::new("/bin/true"));
    results.push(report("spawn", &t));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let t = time_runs(n, payload, hook(closed, dir.path().join("down")));
    let spooled = std::fs::read_dir(dir.path().join("down").join("spool")).map_or(0, |d| d.count());
    assert_eq!(spooled, n, "every run spooled its event");
    results.push(report("down", &t));

    let received = Arc::new(Mutex::new(Vec::new()));
    let real = arg(&args, "--port").map(|p| p.parse::<u16>().expect("--port"));
    let port = real.unwrap_or_else(|| responder(received.clone()));
    let t = time_runs(n, payload, hook(port, home.clone()));
    results.push(report("up", &t));

    let (arrived, checked_on) = match real {
        Some(port) => (
            prompts_on_the_floor(port, &home, arg(&args, "--floor-token").as_deref()),
            "floor",
        ),
        None => (received.lock().expect("lock").clone(), "stand-in sidecar"),
    };
    let arrived: HashSet<String> = arrived.into_iter().collect();
    let missing = (0..n).filter(|i| !arrived.contains(&prompt(*i))).count();
    println!("up       missing {missing} of {n} (checked on the {checked_on})");

    println!(
        "RESULT {}",
        json!({"bin": bin, "results": results, "missing": missing, "checked_on": checked_on})
    );
}
