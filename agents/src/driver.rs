//! An agent driving a session of its own: given a `task` event, it runs a playbook with its
//! tools and posts every step into the session the way a coding session does — its prompt
//! to itself, each tool call as `PreToolUse` and its result as `PostToolUse`, a message when
//! an advisor's inject changes the plan, and a `Stop` with the outcome and a summary.
//!
//! Between steps it takes in what the agent actor saw on the session: injects (advice it
//! follows: "skip payments" leaves that table out) and stop signals (a `task_stop` event, or
//! a human taking the seat back), and it stops when the budget (steps, wall time) is spent.
//!
//! Every step's event id is derived from (agent, task, step, kind), so after a restart or a
//! takeover the task runs again from the top and the steps already on the floor are
//! recognised there by their ids: it continues from the last completed step with no step
//! shown twice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use polaris_protocol::Source;
use polaris_protocol::validate::Incoming;
use polaris_registry::AgentSpec;
use polaris_runtime::{Budget, ProjectKey};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::brain::OfflineBrain;
use crate::link::FloorLink;
use crate::outbox::{Delivered, Outbox};
use crate::text::ANSWER_NAMESPACE;

/// What the agent actor tells a running task.
#[derive(Debug)]
pub(crate) enum Signal {
    /// Stop at the next step, for this reason.
    Stop(String),
    /// Advice from someone on the floor.
    Inject {
        /// Who.
        sender: String,
        /// What.
        content: String,
    },
}

/// A task as its `task` event states it.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) id: Uuid,
    pub(crate) text: String,
    pub(crate) steps: u32,
    pub(crate) wall: Duration,
    pub(crate) started: DateTime<Utc>,
    pub(crate) project: ProjectKey,
    pub(crate) session: String,
}

impl Task {
    /// The task in a `task` event's payload, if it is one for `agent`.
    pub(crate) fn from_event(
        payload: &Value,
        agent: &str,
        id: Uuid,
        started: DateTime<Utc>,
        project: ProjectKey,
        session: String,
    ) -> Option<Task> {
        if payload["agent"].as_str() != Some(agent) {
            return None;
        }
        Some(Task {
            id,
            text: payload["task"].as_str()?.to_owned(),
            // The floor wrote the budget; a missing one is the floor's default.
            steps: payload["budget"]["steps"]
                .as_u64()
                .map_or(Budget::default().steps, |s| s as u32),
            wall: Duration::from_millis(
                payload["budget"]["wall_ms"]
                    .as_u64()
                    .unwrap_or(Budget::default().wall_ms),
            ),
            started,
            project,
            session,
        })
    }
}

/// Everything a running task needs.
pub(crate) struct Drive {
    pub(crate) task: Task,
    pub(crate) spec: AgentSpec,
    pub(crate) term: Option<i64>,
    pub(crate) org: Arc<str>,
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) brain: Arc<OfflineBrain>,
    pub(crate) signals: mpsc::UnboundedReceiver<Signal>,
    /// Tool calls made so far (the steps budget counts these).
    pub(crate) tools_used: u32,
    /// The floor, to see how far the task got before (a replay after a restart).
    pub(crate) link: Arc<dyn FloorLink>,
    /// Stop at the first step for this reason (a stop the floor already has).
    pub(crate) stopping: Option<String>,
}

/// How a task ended, for the `Stop` event: `done`, `stopped` or `failed`, why, and the
/// summary.
struct Outcome {
    status: &'static str,
    reason: Option<String>,
    summary: String,
}

/// Runs the task to its end; returns once its `Stop` is on the floor (or could not be
/// posted, which is logged). The returned future is `Delivered` for the last event.
pub(crate) async fn run(mut d: Drive) -> Option<Delivered> {
    // Read again after a restart or a take-over: a task that ended is not driven again, and
    // one asked to stop stops at once (the stop request would otherwise be read after it).
    let progress = d
        .link
        .task_progress(d.task.project.clone(), d.spec.id.to_string(), d.task.id)
        .await;
    match progress {
        Ok(Some(p)) if p.finished => return None,
        Ok(Some(p)) => d.stopping = p.stop,
        Ok(None) => {}
        // Driving it again is safe (its steps are recognised by their ids).
        Err(e) => {
            tracing::warn!(task = %d.task.id, error = %e, "task progress unknown; driving it")
        }
    }
    let mut step: u32 = 0;
    let mut last: Option<Delivered> = None;
    let prompt = json!({"hook_event_name": "UserPromptSubmit", "prompt": d.task.text});
    last = post(&d, step, "UserPromptSubmit", prompt).await.or(last);
    let outcome = playbook(&mut d, &mut step, &mut last).await;
    let mut stop = json!({
        "hook_event_name": "Stop",
        "status": outcome.status,
        "last_assistant_message": outcome.summary,
        "steps": step,
    });
    if let Some(r) = outcome.reason {
        stop["reason"] = r.into();
    }
    post(&d, step + 1, "Stop", stop).await.or(last)
}

/// Posts one step's event (hook-shaped, from the agent, under its term).
async fn post(d: &Drive, step: u32, kind: &str, mut payload: Value) -> Option<Delivered> {
    payload["session_id"] = d.task.id.to_string().into();
    payload["task_id"] = d.task.id.to_string().into();
    payload["step"] = step.into();
    payload["persona"] = json!({"name": d.spec.shown_name(), "icon": d.spec.shown_icon()});
    let source = if kind == "message" {
        Source::Agent
    } else {
        Source::Hook
    };
    if source == Source::Agent {
        payload["type"] = "message".into();
    } else {
        payload["hook_event_name"] = kind.into();
    }
    let incoming = Incoming {
        traceparent: None,
        term: d.term,
        id: Uuid::new_v5(
            &ANSWER_NAMESPACE,
            format!("{}/task/{}/{step}/{kind}", d.spec.id, d.task.id).as_bytes(),
        ),
        timestamp: None,
        source,
        kind: kind.to_owned(),
        sender: d.spec.id.clone(),
        payload: serde_json::value::to_raw_value(&payload)
            .unwrap_or_else(|_| unreachable!("a Value serializes")),
    };
    for attempt in 0..5u32 {
        match d
            .outbox
            .post(&d.org, &d.task.project, &d.task.session, incoming.clone())
            .await
        {
            Ok(delivered) => return Some(delivered),
            Err(e) => {
                tracing::warn!(agent = %d.spec.id, task = %d.task.id, step, error = %e, attempt, "task step not posted; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    tracing::error!(agent = %d.spec.id, task = %d.task.id, step, "task step dropped after retries");
    None
}

/// Why the task must stop before its next step, if it must: a stop signal, or a spent
/// budget. Injects are applied to `skip` and acknowledged on the floor.
async fn checkpoint(
    d: &mut Drive,
    step: &mut u32,
    last: &mut Option<Delivered>,
    skip: &mut BTreeSet<String>,
) -> Option<(String, &'static str)> {
    if let Some(reason) = d.stopping.take() {
        return Some((reason, "stopped"));
    }
    while let Ok(signal) = d.signals.try_recv() {
        match signal {
            Signal::Stop(reason) => return Some((reason, "stopped")),
            Signal::Inject { sender, content } => {
                let words: Vec<String> = content
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase)
                    .collect();
                let skipped: Vec<String> = words
                    .windows(2)
                    .filter(|w| matches!(w[0].as_str(), "skip" | "ignore" | "exclude"))
                    .map(|w| w[1].clone())
                    .collect();
                let reply = if skipped.is_empty() {
                    format!("Noted from {sender}: \"{content}\". Carrying on with the plan.")
                } else {
                    skip.extend(skipped.iter().cloned());
                    format!("Noted from {sender}: leaving out {}.", skipped.join(", "))
                };
                *step += 1;
                *last = post(d, *step, "message", json!({"content": reply}))
                    .await
                    .or(last.take());
            }
        }
    }
    let used = d.tools_used;
    if used >= d.task.steps {
        return Some((
            format!("budget: {used} of {} steps used", d.task.steps),
            "stopped",
        ));
    }
    let elapsed = (Utc::now() - d.task.started).to_std().unwrap_or_default();
    if elapsed >= d.task.wall {
        return Some((
            format!("budget: {} ms of wall time used", d.task.wall.as_millis()),
            "stopped",
        ));
    }
    None
}

/// Picks the playbook the task asks for.
async fn playbook(d: &mut Drive, step: &mut u32, last: &mut Option<Delivered>) -> Outcome {
    let text = d.task.text.to_lowercase();
    let pii = [
        "pii",
        "personal data",
        "personal information",
        "mask",
        "gdpr",
    ]
    .iter()
    .any(|w| text.contains(w));
    if pii && d.brain.has_database() {
        return pii_audit(d, step, last).await;
    }
    let scan = [
        "secret",
        "credential",
        "leak",
        "scan",
        "pii",
        "personal data",
    ]
    .iter()
    .any(|w| text.contains(w));
    if scan && d.brain.files_root().is_some() {
        return files_scan(d, step, last).await;
    }
    let slow = ["slow", "index", "query performance", "explain"]
        .iter()
        .any(|w| text.contains(w));
    if slow && d.brain.has_database() {
        return slow_query_audit(d, step, last).await;
    }
    let mut can: Vec<&str> = Vec::new();
    if d.brain.has_database() {
        can.push("a PII audit of the warehouse that proposes masking policies (say \"PII audit\")");
        can.push("an audit of slow queries, quoted in backticks, that proposes indexes");
    }
    if d.brain.files_root().is_some() {
        can.push("a scan of my directory for secrets and personal data (say \"secret scan\")");
    }
    Outcome {
        status: "failed",
        reason: Some("no playbook fits".into()),
        summary: format!(
            "I have no playbook for \"{}\". With my tools I can run: {}.",
            d.task.text,
            if can.is_empty() {
                "nothing yet: I have no database or directory configured".to_owned()
            } else {
                can.join("; ")
            }
        ),
    }
}

/// One tool call: `PreToolUse`, the call, `PostToolUse` with its result.
async fn tool(
    d: &mut Drive,
    step: &mut u32,
    last: &mut Option<Delivered>,
    name: &str,
    input: Value,
    result: String,
) {
    *step += 1;
    let pre = json!({"tool_name": name, "tool_input": input});
    *last = post(d, *step, "PreToolUse", pre).await.or(last.take());
    let post_payload = json!({
        "tool_name": name,
        "tool_input": input,
        "tool_response": {"content": result},
    });
    *last = post(d, *step, "PostToolUse", post_payload)
        .await
        .or(last.take());
    d.tools_used += 1;
}

/// Dean's PII audit: the tables, the columns that look like personal data, then one masking
/// policy proposal per table (the table's DDL read first), leaving out what advisors say.
async fn pii_audit(d: &mut Drive, step: &mut u32, last: &mut Option<Delivered>) -> Outcome {
    let mut skip: BTreeSet<String> = BTreeSet::new();
    let stopped = |reason: String, status: &'static str, done: &[String]| Outcome {
        status,
        reason: Some(reason.clone()),
        summary: format!(
            "Stopped ({reason}) after {} proposal(s){}",
            done.len(),
            if done.is_empty() {
                ".".to_owned()
            } else {
                format!(": {}.", done.join(", "))
            }
        ),
    };
    let wh = match d.brain.warehouse().await {
        Ok(w) => w,
        Err(e) => {
            return Outcome {
                status: "failed",
                reason: Some("database unavailable".into()),
                summary: format!("I could not reach my database: {e}"),
            };
        }
    };
    if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
        return stopped(reason, status, &[]);
    }
    let tables = match wh.tables().await {
        Ok(t) => t,
        Err(e) => return failed(&e.to_string()),
    };
    let listing = tables
        .iter()
        .map(|t| {
            format!(
                "{} (~{} rows, {} columns)",
                t.qualified_name(),
                t.rows,
                t.columns.len()
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    tool(d, step, last, "warehouse.tables", json!({}), listing).await;

    if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
        return stopped(reason, status, &[]);
    }
    let pii = match wh.pii_columns().await {
        Ok(p) => p,
        Err(e) => return failed(&e.to_string()),
    };
    let found = pii
        .iter()
        .map(|c| format!("{}.{} — {}", c.table, c.column, c.why.as_str()))
        .collect::<Vec<_>>()
        .join("\n");
    tool(d, step, last, "warehouse.pii_columns", json!({}), found).await;

    let mut by_table: Vec<(String, Vec<(String, &'static str)>)> = Vec::new();
    for c in &pii {
        match by_table.iter_mut().find(|(t, _)| *t == c.table) {
            Some((_, cols)) => cols.push((c.column.clone(), c.why.as_str())),
            None => by_table.push((c.table.clone(), vec![(c.column.clone(), c.why.as_str())])),
        }
    }
    let mut proposals: Vec<String> = Vec::new();
    let mut policies = String::new();
    for (table, cols) in &by_table {
        if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
            return stopped(reason, status, &proposals);
        }
        if skip.contains(&table.to_lowercase()) {
            continue;
        }
        let ddl = wh.ddl(table).await.ok().flatten().unwrap_or_default();
        let policy = masking_policy(table, cols);
        let result = format!("{ddl}\n\n-- Proposed:\n{policy}");
        tool(
            d,
            step,
            last,
            "warehouse.ddl",
            json!({"table": table}),
            result,
        )
        .await;
        proposals.push(table.clone());
        policies.push_str(&policy);
        policies.push('\n');
    }
    let left_out: Vec<&String> = skip.iter().collect();
    Outcome {
        status: "done",
        reason: None,
        summary: format!(
            "PII audit done: {} column(s) in {} table(s) look like personal data. Masking policies proposed for {}{}.\n\n{}",
            pii.len(),
            by_table.len(),
            if proposals.is_empty() {
                "no table".to_owned()
            } else {
                proposals.join(", ")
            },
            if left_out.is_empty() {
                String::new()
            } else {
                format!(
                    " (left out as advised: {})",
                    left_out
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            policies.trim_end()
        ),
    }
}

/// The queries quoted in `text` (inline code spans that start with SELECT or WITH).
fn quoted_queries(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .filter(|q| {
            let l = q.to_ascii_lowercase();
            l.starts_with("select") || l.starts_with("with")
        })
        .map(str::to_owned)
        .collect()
}

/// Dean's slow-query audit: each query quoted in the task explained on the warehouse (read
/// only), what makes it slow, and the indexes that would serve it.
async fn slow_query_audit(d: &mut Drive, step: &mut u32, last: &mut Option<Delivered>) -> Outcome {
    let queries = quoted_queries(&d.task.text);
    if queries.is_empty() {
        return Outcome {
            status: "failed",
            reason: Some("no queries".into()),
            summary: "Quote the slow queries in backticks (`SELECT …`) and I will explain each \
                      and propose indexes."
                .into(),
        };
    }
    let wh = match d.brain.warehouse().await {
        Ok(w) => w,
        Err(e) => return failed(&e),
    };
    let mut skip = BTreeSet::new();
    let mut indexes: Vec<String> = Vec::new();
    let mut explained = 0;
    for q in &queries {
        if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
            return Outcome {
                status,
                reason: Some(reason.clone()),
                summary: format!(
                    "Stopped ({reason}) after {explained} of {} queries.",
                    queries.len()
                ),
            };
        }
        let result = match wh.explain(q).await {
            Ok(r) => {
                for i in &r.suggested_indexes {
                    if !indexes.contains(i) {
                        indexes.push(i.clone());
                    }
                }
                let findings = if r.findings.is_empty() {
                    "Nothing stands out.".to_owned()
                } else {
                    r.findings.join("\n")
                };
                format!("{}\n\n{findings}", r.plan)
            }
            Err(e) => format!("Not explained: {e}"),
        };
        tool(
            d,
            step,
            last,
            "warehouse.explain",
            json!({"sql": q}),
            result,
        )
        .await;
        explained += 1;
    }
    Outcome {
        status: "done",
        reason: None,
        summary: if indexes.is_empty() {
            format!("Explained {explained} queries; no index would help them.")
        } else {
            format!(
                "Explained {explained} queries. Indexes that would serve them:\n{}",
                indexes.join("\n")
            )
        },
    }
}

/// Most files a scan reads, and the largest it reads (bigger ones are listed as skipped).
const SCAN_LIMITS: (usize, u64) = (10_000, 1 << 20);

/// What a walk of the agent's directory found: text files to scan, and what was skipped.
struct Walk {
    files: Vec<std::path::PathBuf>,
    skipped: usize,
}

/// The text files under `root` (not following symbolic links, so nothing outside it is
/// read; `.git` left out), up to [`SCAN_LIMITS`].
fn walk(root: &std::path::Path) -> std::io::Result<Walk> {
    let mut out = Walk {
        files: Vec::new(),
        skipped: 0,
    };
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && e.file_name() != ".git" {
                dirs.push(e.path());
            } else if kind.is_file() {
                let big = e.metadata().map_or(true, |m| m.len() > SCAN_LIMITS.1);
                if big || out.files.len() >= SCAN_LIMITS.0 {
                    out.skipped += 1;
                } else {
                    out.files.push(e.path());
                }
            }
        }
    }
    out.files.sort();
    Ok(out)
}

/// Sage's scan of the directory it may read: every text file through the secret and
/// personal-data scanner, findings shown masked, with what to do about each kind.
async fn files_scan(d: &mut Drive, step: &mut u32, last: &mut Option<Delivered>) -> Outcome {
    let Some(root) = d.brain.files_root().map(std::path::Path::to_path_buf) else {
        return failed("no directory to read");
    };
    let mut skip = BTreeSet::new();
    if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
        return Outcome {
            status,
            reason: Some(reason.clone()),
            summary: format!("Stopped ({reason}) before reading anything."),
        };
    }
    let scan_root = root.clone();
    let found = tokio::task::spawn_blocking(
        move || -> std::io::Result<(Walk, Vec<(String, polaris_protocol::secrets::Finding)>)> {
            let walked = walk(&scan_root)?;
            let mut findings = Vec::new();
            for f in &walked.files {
                let Ok(bytes) = std::fs::read(f) else {
                    continue;
                };
                // Binary files (a NUL early on) are not text to scan.
                if bytes.iter().take(8192).any(|b| *b == 0) {
                    continue;
                }
                let text = String::from_utf8_lossy(&bytes);
                let shown = f
                    .strip_prefix(&scan_root)
                    .unwrap_or(f)
                    .display()
                    .to_string();
                for finding in polaris_protocol::secrets::scan(&text) {
                    findings.push((shown.clone(), finding));
                }
            }
            Ok((walked, findings))
        },
    )
    .await;
    let (walked, findings) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&format!("cannot read {}: {e}", root.display())),
        Err(e) => return failed(&e.to_string()),
    };
    let listing = format!(
        "{} files to scan under {}{}",
        walked.files.len(),
        root.display(),
        if walked.skipped > 0 {
            format!(
                " ({} skipped: too large, or over {} files)",
                walked.skipped, SCAN_LIMITS.0
            )
        } else {
            String::new()
        }
    );
    tool(
        d,
        step,
        last,
        "files.list",
        json!({"root": root.display().to_string()}),
        listing,
    )
    .await;
    if let Some((reason, status)) = checkpoint(d, step, last, &mut skip).await {
        return Outcome {
            status,
            reason: Some(reason.clone()),
            summary: format!("Stopped ({reason}) after listing the files."),
        };
    }
    let lines: Vec<String> = findings
        .iter()
        .map(|(file, f)| {
            format!(
                "{file}:{}:{}: {} `{}`",
                f.line,
                f.column,
                f.kind.label(),
                f.masked
            )
        })
        .collect();
    let result = if lines.is_empty() {
        "nothing found".to_owned()
    } else {
        lines.join("\n")
    };
    tool(
        d,
        step,
        last,
        "secrets.scan",
        json!({"root": root.display().to_string()}),
        result,
    )
    .await;
    let pii = findings.iter().filter(|(_, f)| f.kind.is_pii()).count();
    let secrets = findings.len() - pii;
    let mut advice: Vec<String> = Vec::new();
    for (_, f) in &findings {
        let a = format!("- {}: {}", f.kind.label(), f.kind.advice());
        if !advice.contains(&a) {
            advice.push(a);
        }
    }
    Outcome {
        status: "done",
        reason: None,
        summary: if findings.is_empty() {
            format!(
                "Scan done: no secrets or personal data in {} files.",
                walked.files.len()
            )
        } else {
            format!(
                "Scan done: {secrets} secret(s) and {pii} personal data item(s) in {} files.\n{}\n\nWhat to do:\n{}",
                walked.files.len(),
                lines.join("\n"),
                advice.join("\n")
            )
        },
    }
}

fn failed(error: &str) -> Outcome {
    Outcome {
        status: "failed",
        reason: Some("tool error".into()),
        summary: format!("The audit failed: {error}"),
    }
}

/// A masking policy for `table`'s personal columns, in PostgreSQL/Snowflake style: a
/// function that shows the value to a privileged role and a masked form to everyone else.
fn masking_policy(table: &str, cols: &[(String, &'static str)]) -> String {
    let mut out = String::new();
    for (col, why) in cols {
        let masked = match *why {
            "email" => "regexp_replace(val, '^[^@]+', '***')",
            "phone" | "payment card" => "'***' || right(val, 4)",
            _ => "'***'",
        };
        out.push_str(&format!(
            "CREATE MASKING POLICY mask_{t}_{col} AS (val text) RETURNS text -> CASE WHEN current_role() IN ('PII_READER') THEN val ELSE {masked} END;  -- {why}\nALTER TABLE {table} MODIFY COLUMN {col} SET MASKING POLICY mask_{t}_{col};\n",
            t = table.replace('.', "_"),
        ));
    }
    out
}
