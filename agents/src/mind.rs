//! How an agent answers a mention: memory commands (`@dean remember …`, `@dean forget …`),
//! then its brain — the LLM brain with the agent's tools when it has one, falling back to
//! the offline brain with a note when the model cannot answer — with remembered facts
//! recalled into the answer, each citing where it came from.
//!
//! Memory is scoped by the context model: an isolated agent's facts belong to the floor it
//! runs for (nothing crosses floors), a shared agent's to the agent on every floor.

use std::sync::Arc;

use futures::future::BoxFuture;
use polaris_registry::{AgentSpec, Brain, ContextMode};
use polaris_runtime::{MemoryFact, ProjectKey};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::brain::OfflineBrain;
use crate::intent;
use crate::link::{FloorLink, Remember};
use crate::llm::{Context, LlmBrain};
use crate::text::contains_word;
use crate::tools::kit::{ToolSpec, Toolkit, string_arg};

/// Facts read from memory per answer.
const RECALL: i64 = 200;
/// Facts quoted in an offline answer.
const QUOTED: usize = 3;
/// Recent floor events kept per floor for the prompt.
pub(crate) const RECENT: usize = 20;

/// An agent's brains.
pub(crate) struct Mind {
    pub(crate) offline: Arc<OfflineBrain>,
    llm: Option<Result<LlmBrain, String>>,
    context: ContextMode,
}

/// A question, with where it was asked.
pub(crate) struct Question {
    pub(crate) link: Arc<dyn FloorLink>,
    pub(crate) org: Arc<str>,
    pub(crate) agent: String,
    pub(crate) project: ProjectKey,
    pub(crate) event: Uuid,
    pub(crate) asker: String,
    /// Without its mentions.
    pub(crate) question: String,
    /// The event's whole text.
    pub(crate) text: String,
    /// Recent events on the floor, oldest first.
    pub(crate) recent: Vec<(String, String)>,
}

impl Question {
    /// The memory scope: the floor for an isolated agent, none for a shared one.
    fn scope(&self, context: ContextMode) -> Option<ProjectKey> {
        (context == ContextMode::Isolated).then(|| self.project.clone())
    }
}

impl Mind {
    pub(crate) fn new(spec: &AgentSpec, offline: Arc<OfflineBrain>) -> Mind {
        let llm = match &spec.brain {
            Brain::Offline => None,
            Brain::Llm(l) => Some(LlmBrain::new(spec, l).map_err(|e| {
                tracing::error!(agent = %spec.id, error = %e, "llm brain not built; answering offline");
                e.to_string()
            })),
        };
        Mind {
            offline,
            llm,
            context: spec.context,
        }
    }

    /// The answer to `q`.
    pub(crate) async fn answer(&self, q: Question) -> String {
        let scope = q.scope(self.context);
        if let Some(fact) = command(&q.question, "remember") {
            return self.remember(&q, scope, fact).await;
        }
        if let Some(what) = command(&q.question, "forget") {
            return self.forget(&q, scope, what).await;
        }
        let memory = match q
            .link
            .recall(q.org.clone(), q.agent.clone(), scope.clone(), RECALL)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(agent = %q.agent, error = %e, "memory not read; answering without it");
                Vec::new()
            }
        };
        let note = match &self.llm {
            None => None,
            Some(Err(e)) => Some(format!("my model is not set up ({e})")),
            Some(Ok(llm)) => {
                let ctx = Context {
                    asker: q.asker.clone(),
                    text: q.text.clone(),
                    recent: q.recent.clone(),
                    memory: memory
                        .iter()
                        .map(|m| {
                            (
                                m.id.to_string(),
                                m.fact.clone(),
                                m.source_events.iter().map(Uuid::to_string).collect(),
                            )
                        })
                        .collect(),
                };
                let tools = AgentTools {
                    offline: self.offline.clone(),
                    q: &q,
                    scope: scope.clone(),
                };
                match llm.answer(&q.question, &ctx, &tools).await {
                    Ok(a) => return a,
                    Err(e) => {
                        tracing::warn!(agent = %q.agent, model = %llm.describe(), error = %e, "llm brain failed; answering offline");
                        metrics::counter!("polaris_agent_llm_fallbacks_total").increment(1);
                        Some(format!("my model ({}) did not answer: {e}", llm.describe()))
                    }
                }
            }
        };
        let mut out = String::new();
        if let Some(n) = note {
            out.push_str(&format!("_Answering from my offline brain: {n}._\n\n"));
        }
        let recalled = relevant(&memory, &q.question);
        if !recalled.is_empty() {
            out.push_str("From memory:\n");
            for m in &recalled {
                out.push_str(&format!("- {} — {}\n", m.fact, cite(m)));
            }
        }
        match self.offline.answer_found(&q.question, &q.text).await {
            Some(a) => {
                if !recalled.is_empty() {
                    out.push('\n');
                }
                out.push_str(&a);
            }
            None if recalled.is_empty() => out.push_str(&self.offline.nothing()),
            None => {}
        }
        out
    }

    async fn remember(&self, q: &Question, scope: Option<ProjectKey>, fact: &str) -> String {
        let fact = fact
            .strip_prefix("that ")
            .or_else(|| fact.strip_prefix("That "))
            .unwrap_or(fact)
            .trim();
        if fact.is_empty() {
            return "What should I remember? Write it after `remember`.".into();
        }
        let kept = q
            .link
            .remember(
                q.org.clone(),
                Remember {
                    agent: q.agent.clone(),
                    project_id: scope.as_ref().map(|k| k.id),
                    fact: fact.to_owned(),
                    source_events: vec![q.event],
                    origin: "remember",
                    author: Some(q.asker.clone()),
                },
            )
            .await;
        match kept {
            Ok(m) => format!(
                "I'll remember that{}: {} — {}",
                match &scope {
                    Some(k) => format!(" on {}", k.name),
                    None => String::new(),
                },
                m.fact,
                cite(&m)
            ),
            Err(e) => format!("I could not keep that in memory: {e}"),
        }
    }

    async fn forget(&self, q: &Question, scope: Option<ProjectKey>, what: &str) -> String {
        let what = what.trim().trim_start_matches("about ").trim();
        if what.is_empty() {
            return "What should I forget? Write it after `forget`.".into();
        }
        let facts = match q
            .link
            .recall(q.org.clone(), q.agent.clone(), scope, RECALL)
            .await
        {
            Ok(f) => f,
            Err(e) => return format!("I could not read my memory: {e}"),
        };
        let lower = what.to_lowercase();
        let by_id = Uuid::parse_str(what).ok();
        let doomed: Vec<&MemoryFact> = facts
            .iter()
            .filter(|m| Some(m.id) == by_id || contains_word(&m.fact.to_lowercase(), &lower))
            .collect();
        if doomed.is_empty() {
            return format!("I had nothing about “{what}” to forget.");
        }
        let mut out = String::from("Forgotten:\n");
        for m in doomed {
            match q.link.forget(q.org.clone(), q.agent.clone(), m.id).await {
                Ok(_) => out.push_str(&format!("- {}\n", m.fact)),
                Err(e) => out.push_str(&format!("- (kept, could not delete: {e}) {}\n", m.fact)),
            }
        }
        out
    }
}

/// `remember: x`, `remember x` → `x` (the command word first, any case).
fn command<'a>(question: &'a str, word: &str) -> Option<&'a str> {
    let q = question.trim_start();
    let head = q.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &q[word.len()..];
    if !(rest.is_empty() || rest.starts_with([' ', ':', ',', '\n'])) {
        return None;
    }
    Some(rest.trim_start_matches([':', ',']).trim())
}

/// `memory 0193…, from event 4f2a…`.
fn cite(m: &MemoryFact) -> String {
    match m.source_events.first() {
        Some(e) => format!("*memory `{}`, from event `{e}`*", m.id),
        None => format!("*memory `{}`*", m.id),
    }
}

/// Words too common to make a fact relevant.
const STOP: &[&str] = &[
    "a", "an", "and", "are", "about", "as", "at", "be", "by", "do", "does", "did", "for", "from",
    "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the",
    "this", "to", "was", "we", "what", "when", "where", "which", "who", "why", "with", "you",
    "your", "know", "remember", "tell", "any", "there", "have", "has",
];

/// The remembered facts that share a meaningful word with the question, best first.
fn relevant<'m>(memory: &'m [MemoryFact], question: &str) -> Vec<&'m MemoryFact> {
    let words: Vec<String> = question
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(str::to_lowercase)
        .filter(|w| w.len() > 1 && !STOP.contains(&w.as_str()))
        .collect();
    let mut scored: Vec<(usize, &MemoryFact)> = memory
        .iter()
        .map(|m| {
            let lower = m.fact.to_lowercase();
            (words.iter().filter(|w| contains_word(&lower, w)).count(), m)
        })
        .filter(|(n, _)| *n > 0)
        .collect();
    // Stable: among equals, the newest (memory comes newest first) leads.
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored.into_iter().take(QUOTED).map(|(_, m)| m).collect()
}

/// The agent's tools, for the LLM brain: knowledge, memory, and whichever of the database
/// and the secret scanner it has.
struct AgentTools<'q> {
    offline: Arc<OfflineBrain>,
    q: &'q Question,
    scope: Option<ProjectKey>,
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

fn one_string(name: &str, what: &str) -> Value {
    json!({
        "type": "object",
        "properties": {name: {"type": "string", "description": what}},
        "required": [name],
        "additionalProperties": false,
    })
}

impl Toolkit for AgentTools<'_> {
    fn specs(&self) -> Vec<ToolSpec> {
        let mut out = vec![
            ToolSpec {
                name: "search_knowledge",
                description: intent::description("search_knowledge"),
                parameters: one_string("query", "What to look for"),
            },
            ToolSpec {
                name: "remember",
                description: "Keep a fact in your memory for later questions (one sentence).",
                parameters: one_string("fact", "The fact to keep"),
            },
            ToolSpec {
                name: "recall",
                description: "Search your memory; returns facts with their ids and source events.",
                parameters: one_string("query", "What to look for"),
            },
        ];
        if self.offline.has_database() {
            out.extend([
                ToolSpec {
                    name: "list_tables",
                    description: intent::description("list_tables"),
                    parameters: no_args(),
                },
                ToolSpec {
                    name: "describe_table",
                    description: intent::description("describe_table"),
                    parameters: one_string("table", "The table's name"),
                },
                ToolSpec {
                    name: "find_pii_columns",
                    description: intent::description("find_pii_columns"),
                    parameters: no_args(),
                },
                ToolSpec {
                    name: "explain_query",
                    description: "EXPLAIN one read-only SQL query: its plan, slow spots and index suggestions.",
                    parameters: one_string("sql", "One SELECT statement"),
                },
            ]);
        }
        if self.offline.has_secrets() {
            out.push(ToolSpec {
                name: "scan_for_secrets",
                description: "Scan text for secrets and personal data (values are masked).",
                parameters: one_string("text", "The text to scan"),
            });
        }
        out
    }

    fn call<'a>(&'a self, name: &'a str, args: &'a Value) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match name {
                "search_knowledge" => {
                    let hits = self.offline.search(string_arg(args, "query")?, 3);
                    if hits.is_empty() {
                        return Ok("no passage matches".into());
                    }
                    Ok(hits
                        .iter()
                        .map(|h| format!("[{} › {}]\n{}", h.file, h.heading, h.text.trim()))
                        .collect::<Vec<_>>()
                        .join("\n\n"))
                }
                "remember" => {
                    let fact = string_arg(args, "fact")?;
                    let m = self
                        .q
                        .link
                        .remember(
                            self.q.org.clone(),
                            Remember {
                                agent: self.q.agent.clone(),
                                project_id: self.scope.as_ref().map(|k| k.id),
                                fact: fact.to_owned(),
                                source_events: vec![self.q.event],
                                origin: "tool",
                                author: None,
                            },
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(format!("kept as memory {}", m.id))
                }
                "recall" => {
                    let query = string_arg(args, "query")?;
                    let facts = self
                        .q
                        .link
                        .recall(
                            self.q.org.clone(),
                            self.q.agent.clone(),
                            self.scope.clone(),
                            RECALL,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    let found = relevant(&facts, query);
                    if found.is_empty() {
                        return Ok("nothing remembered about that".into());
                    }
                    Ok(found
                        .iter()
                        .map(|m| {
                            format!(
                                "[memory {}] {} (from events: {})",
                                m.id,
                                m.fact,
                                m.source_events
                                    .iter()
                                    .map(Uuid::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
                "list_tables" => {
                    let w = self.offline.warehouse().await?;
                    let tables = w.tables().await.map_err(|e| e.to_string())?;
                    Ok(tables
                        .iter()
                        .map(|t| {
                            format!(
                                "{} (~{} rows): {}",
                                t.qualified_name(),
                                t.rows,
                                t.columns
                                    .iter()
                                    .map(|c| c.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
                "describe_table" => {
                    let table = string_arg(args, "table")?;
                    let w = self.offline.warehouse().await?;
                    match w.ddl(table).await.map_err(|e| e.to_string())? {
                        Some(ddl) => Ok(ddl),
                        None => Err(format!("no table named {table:?}")),
                    }
                }
                "find_pii_columns" => {
                    let w = self.offline.warehouse().await?;
                    let cols = w.pii_columns().await.map_err(|e| e.to_string())?;
                    if cols.is_empty() {
                        return Ok("no column looks like personal data".into());
                    }
                    Ok(cols
                        .iter()
                        .map(|c| format!("{}.{}: {}", c.table, c.column, c.why))
                        .collect::<Vec<_>>()
                        .join("\n"))
                }
                "explain_query" => {
                    let sql = string_arg(args, "sql")?;
                    let w = self.offline.warehouse().await?;
                    let r = w.explain(sql).await.map_err(|e| e.to_string())?;
                    let mut out = format!("plan:\n{}\n", r.plan);
                    for f in &r.findings {
                        out.push_str(&format!("finding: {f}\n"));
                    }
                    for i in &r.suggested_indexes {
                        out.push_str(&format!("suggested index: {i}\n"));
                    }
                    Ok(out)
                }
                "scan_for_secrets" => {
                    let text = string_arg(args, "text")?;
                    Ok(self
                        .offline
                        .scan(text)
                        .unwrap_or_else(|| "nothing found".into()))
                }
                other => Err(format!("no tool named {other:?}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_start_the_question() {
        assert_eq!(
            command("remember: orders is append-only", "remember"),
            Some("orders is append-only")
        );
        assert_eq!(command("Remember that x", "remember"), Some("that x"));
        assert_eq!(command("remembering things", "remember"), None);
        assert_eq!(command("do you remember x", "remember"), None);
        assert_eq!(command("forget", "forget"), Some(""));
    }

    #[test]
    fn relevance_is_by_meaningful_whole_words() {
        let fact = |f: &str| MemoryFact {
            id: Uuid::nil(),
            agent: "agent:dean".into(),
            project_id: None,
            fact: f.into(),
            source_events: vec![],
            origin: "remember".into(),
            author: None,
            created_at: chrono::Utc::now(),
        };
        let m = vec![
            fact("the orders table is partitioned by month"),
            fact("vegetables are green"),
        ];
        let r = relevant(&m, "how is orders partitioned?");
        assert_eq!(r.len(), 1);
        assert!(r[0].fact.contains("orders"));
        assert!(relevant(&m, "what tables do you know?").is_empty());
    }
}
