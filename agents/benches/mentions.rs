//! Mention parsing throughput: the 120 texts of `tests/data/routing-dev.jsonl`,
//! parsed over and over on one thread, reported as events/s.
//!
//! A plain timing loop (`harness = false`), run with
//! `cargo bench -p polaris-agents --bench mentions`. The target is ≥ 1,000,000
//! events/s on one core. `cargo test --benches` runs it once, briefly, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use polaris_agents::mentions::{Handles, mentions};
use polaris_registry::ParticipantId;

fn dataset(name: &str) -> String {
    let path = format!("{}/../tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (cargo test) gets a short run.
    let full = std::env::args().any(|a| a == "--bench");

    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&dataset("agents.yaml")).expect("agents.yaml parses");
    let handles = Handles::new(
        yaml["agents"]
            .as_sequence()
            .expect("agents: is a list")
            .iter()
            .map(|a| ParticipantId::parse(a["id"].as_str().expect("id")).expect("valid id")),
    );
    let texts: Vec<String> = dataset("routing-dev.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("case is JSON");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let with_at = texts.iter().filter(|t| t.contains('@')).count();

    // Warm up caches and the branch predictor before timing.
    let mut sink = 0usize;
    for t in &texts {
        sink += mentions(black_box(t), &handles).len();
    }

    let budget = if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(100)
    };
    let mut rounds = 0u64;
    let started = Instant::now();
    while started.elapsed() < budget {
        // Check the clock once per 100 passes so that it is not what is measured.
        for _ in 0..100 {
            for t in &texts {
                sink += mentions(black_box(t), &handles).len();
            }
        }
        rounds += 100;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = rounds as f64 * texts.len() as f64;
    println!(
        "mentions: {} texts ({with_at} with '@', {bytes} bytes), {events:.0} events in {elapsed:.2}s: {:.0} events/s, {:.0} ns/event, {:.0} MB/s",
        texts.len(),
        events / elapsed,
        elapsed * 1e9 / events,
        rounds as f64 * bytes as f64 / elapsed / 1e6,
    );
    // Keeps the results alive so that the loop cannot be optimised away.
    black_box(sink);
}
