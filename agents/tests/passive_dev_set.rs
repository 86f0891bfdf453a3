//! Passive monitoring measured on the routing dev set: precision and recall of
//! `responders` on its passive, none and tricky cases, with the registry
//! `tests/data/agents.yaml` (whose written `examples:` are the only thing the scorer learns
//! from; the dev set is read here, for measuring, and nowhere else). Needs the model
//! (`POLARIS_TEST_MODEL_DIR`); skipped with a message without it, and failing then when
//! `POLARIS_TEST_REQUIRE_MODEL=1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polaris_agents::passive;
use polaris_agents::route::Router;
use polaris_passive::{Embedder, Input};
use polaris_registry::AgentFile;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(name)
}

/// The model, or `None` (with a message) when it is not configured and not required
/// (`.ci/run` fetches one).
fn model() -> Option<Arc<Embedder>> {
    polaris_passive::testing::model().map(Arc::new)
}

#[derive(serde::Deserialize)]
struct Case {
    id: String,
    source: String,
    text: String,
    responders: Vec<String>,
    kind: String,
}

#[test]
fn dev_set_precision_and_recall() {
    let Some(embedder) = model() else { return };
    let file = AgentFile::load(&data("agents.yaml")).expect("agents file");
    let router = Router::new(&file.agents);
    let scorer = passive::scorer(&file.agents, &file.base_dir, Some(embedder)).expect("scorer");
    let cases: Vec<Case> = std::fs::read_to_string(data("routing-dev.jsonl"))
        .expect("dev set")
        .lines()
        .map(|l| serde_json::from_str(l).expect("case"))
        .filter(|c: &Case| matches!(c.kind.as_str(), "passive" | "none" | "tricky"))
        .collect();
    let inputs: Vec<Input<'_>> = cases
        .iter()
        .map(|c| Input {
            text: &c.text,
            tool_output: c.source == "tool",
        })
        .collect();
    let scores = scorer.score(&inputs).expect("scores");
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    let mut wrong = Vec::new();
    for (c, s) in cases.iter().zip(&scores) {
        let routed = router.route(&c.text, None, false);
        // Mentioned agents answer; passive monitoring speaks only when nobody is addressed.
        let got: Vec<String> = if routed.mentions.is_empty() {
            s.iter()
                .filter(|x| x.fires)
                .map(|x| x.agent.clone())
                .collect()
        } else {
            routed.responders.iter().map(ToString::to_string).collect()
        };
        let hits = got.iter().filter(|g| c.responders.contains(g)).count();
        tp += hits;
        fp += got.len() - hits;
        fn_ += c.responders.len() - hits;
        if got.len() != hits || hits != c.responders.len() {
            wrong.push(format!(
                "{} ({}): expected {:?}, got {:?}",
                c.id, c.kind, c.responders, got
            ));
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    println!(
        "passive monitoring on {} dev cases (passive, none, tricky): precision {precision:.3}, recall {recall:.3} (tp {tp}, fp {fp}, fn {fn_})",
        cases.len()
    );
    for w in &wrong {
        println!("  {w}");
    }
    assert!(
        precision >= 0.90 && recall >= 0.80,
        "precision {precision:.3} (needs 0.90), recall {recall:.3} (needs 0.80)"
    );
}

#[test]
fn without_a_model_the_first_stage_still_decides() {
    let file = AgentFile::load(&data("agents.yaml")).expect("agents file");
    let scorer = passive::scorer(&file.agents, &file.base_dir, None).expect("scorer");
    assert!(!scorer.has_model());
    let inputs = [
        Input {
            text: "deploying now with AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY in the env",
            tool_output: false,
        },
        Input {
            text: "[PostToolUse] Bash: dbt build --select stg_orders\n10:01:02  Failure in test not_null_stg_orders_order_id (models/staging/schema.yml)\n10:01:02  Done. PASS=3 WARN=0 ERROR=1 SKIP=0 TOTAL=4",
            tool_output: true,
        },
        Input {
            text: "lunch at the usual place?",
            tool_output: false,
        },
    ];
    let scores = scorer.score(&inputs).expect("scores");
    let firing = |i: usize| -> Vec<&str> {
        scores[i]
            .iter()
            .filter(|s| s.fires)
            .map(|s| s.agent.as_str())
            .collect()
    };
    assert_eq!(firing(0), ["agent:sage"]);
    assert_eq!(firing(1), ["agent:dean"]);
    assert!(firing(2).is_empty());
    assert!(
        scores[0].iter().all(|s| !s.why.contains("wJalr")),
        "a score never carries the secret"
    );
}
