//! What ingest-time redaction costs per event: `redact_payload` over ~1 KB hook payloads
//! (a prompt, a response, a tool call and a tool result), without and with a credential,
//! as the session actor runs it before each commit.
//!
//! cargo bench -p polaris-protocol --bench redaction_cost -- [--iterations 20000] [--rounds 5]

use std::hint::black_box;
use std::time::Instant;

use polaris_protocol::redaction::redact_payload;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The value after `name` in `args`, else `default`.
fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

const PROSE: &str = "we page the floor by seq so a reconnecting reader resumes from its cursor \
without gaps, the bridge keeps its own position, and the agents read the stream in order while \
the indexer catches up after each group commit and nothing is lost on a restart";

fn prose(n: usize) -> String {
    PROSE.chars().cycle().take(n).collect()
}

fn payloads(secret: bool) -> Vec<Box<RawValue>> {
    let common = |name: &str| {
        json!({"hook_event_name": name, "session_id": "cc-bench",
               "transcript_path": "/home/dev/.claude/projects/-home-dev-src-app/0f9c.jsonl",
               "cwd": "/home/dev/src/app", "permission_mode": "default"})
    };
    let mut out: Vec<Value> = Vec::new();
    let mut p = common("UserPromptSubmit");
    p["prompt"] = json!(format!(
        "Make the events page use a keyset cursor. {}",
        prose(700)
    ));
    out.push(p);
    let mut p = common("Stop");
    p["stop_response"] = json!(format!(
        "Changed the page query and added tests. {}",
        prose(680)
    ));
    out.push(p);
    let mut p = common("PreToolUse");
    p["tool_name"] = json!("Edit");
    p["tool_input"] = json!({"file_path": "/home/dev/src/app/db.rs", "old_string": prose(300), "new_string": prose(330)});
    out.push(p);
    let mut p = common("PostToolUse");
    p["tool_name"] = json!("Bash");
    p["tool_input"] = json!({"command": "cargo test pagination 2>&1 | tail -40"});
    p["tool_response"] = json!({"stdout": format!("running 2 tests\ntest first_page ... ok\n{}", prose(470)), "stderr": ""});
    out.push(p);
    if secret {
        out[0]["prompt"] = json!(format!(
            "it fails with aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Rt3pLvW {}",
            prose(640)
        ));
    }
    out.iter()
        .map(|v| serde_json::value::to_raw_value(v).expect("payload"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iterations: usize = arg(&args, "--iterations", "20000")
        .parse()
        .expect("--iterations");
    let rounds: usize = arg(&args, "--rounds", "5").parse().expect("--rounds");
    let key = [7u8; 32];
    for (label, secret) in [("no credential", false), ("one credential in four", true)] {
        let set = payloads(secret);
        let bytes: usize = set.iter().map(|p| p.get().len()).sum::<usize>() / set.len();
        let mut per_event = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            for i in 0..iterations {
                black_box(redact_payload(black_box(&set[i % set.len()]), &key));
            }
            per_event.push(start.elapsed().as_secs_f64() * 1e6 / iterations as f64);
        }
        per_event.sort_by(f64::total_cmp);
        println!(
            "{label:>24}: {:.2} µs/event median of {rounds} rounds (min {:.2}, max {:.2}), payloads ~{bytes} B",
            per_event[rounds / 2],
            per_event[0],
            per_event[rounds - 1]
        );
    }
}
