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

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_polaris");

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

fn time_runs(n: usize, stdin: &[u8], mut make: impl FnMut() -> Command) -> Vec<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = make();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn().expect("spawn");
        if let Some(mut pipe) = child.stdin.take() {
            // /bin/true may exit before reading; a broken pipe there is expected.
            let _ = pipe.write_all(stdin);
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

/// A sidecar stand-in: answers every request as `POST /events` does for a prompt.
fn responder() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new().fallback(|_body: axum::body::Bytes| async {
                axum::Json(serde_json::json!({"ok": true, "pendingInjects": [], "id": "x"}))
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--n").map_or(500, |s| s.parse().expect("--n"));
    let dir = tempfile::tempdir().expect("tempdir");
    let home: PathBuf = arg(&args, "--home").map_or_else(|| dir.path().join("home"), PathBuf::from);
    let payload = serde_json::json!({
        "session_id": "3f1c2d9e-bench", "transcript_path": "/nonexistent.jsonl", "cwd": "/w",
        "hook_event_name": "UserPromptSubmit", "prompt": "add a login page with OAuth and tests"
    })
    .to_string();
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
    let t = time_runs(n, payload.as_bytes(), || Command::new("/bin/true"));
    results.push(report("spawn", &t));

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let t = time_runs(n, payload.as_bytes(), hook(closed, dir.path().join("down")));
    let spooled = std::fs::read_dir(dir.path().join("down").join("spool")).map_or(0, |d| d.count());
    assert_eq!(spooled, n, "every run spooled its event");
    results.push(report("down", &t));

    let port = arg(&args, "--port").map_or_else(responder, |p| p.parse().expect("--port"));
    let t = time_runs(n, payload.as_bytes(), hook(port, home));
    results.push(report("up", &t));

    println!(
        "RESULT {}",
        serde_json::json!({"bin": bin, "results": results})
    );
}
