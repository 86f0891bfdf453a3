//! The offline brain: answers from an agent's own tools and documents, with no network
//! and no language model. Dean inspects his database (tables, DDL, personal-data columns,
//! query plans), Sage scans what was said for secrets and personal data, and every agent
//! answers from its knowledge documents, citing file and heading — or says plainly that
//! it has nothing. Which database tool a question wants is read by meaning when the
//! passive model is loaded (`intent.rs`), by whole words otherwise.
//!
//! Everything here may wait on a database or read files: the agent actor runs it in a
//! task of its own and gets the answer back as a message.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polaris_config::{Env, SecretRef};
use polaris_protocol::{redaction, secrets};
use polaris_registry::AgentSpec;
use tokio::sync::OnceCell;

use crate::intent::{self, Decision, Intent, Intents};
use crate::knowledge::KnowledgeBase;
use crate::text::contains_word;
use crate::tools::database::Warehouse;

/// Passages quoted per answer.
const QUOTES: usize = 2;
/// Longest quoted passage.
const QUOTE_CHARS: usize = 600;
/// Longest plan shown.
const PLAN_CHARS: usize = 2000;

/// A connection made on first use; a failure is kept, reported with each answer.
type WarehouseCell = OnceCell<Result<Arc<Warehouse>, String>>;

/// The offline brain of one agent.
pub struct OfflineBrain {
    name: String,
    /// `None` when the documents could not be read (reported at start).
    knowledge: Option<KnowledgeBase>,
    /// The database URL (references resolved when first used) and the pool.
    database: Option<(String, WarehouseCell)>,
    /// A script that creates a missing SQLite database (examples), and where files are.
    seed: Option<PathBuf>,
    base_dir: PathBuf,
    secrets: bool,
    /// The directory tasks may read, if any.
    files: Option<PathBuf>,
    /// Intents by meaning, when the passive model is loaded.
    intents: Option<Arc<Intents>>,
}

impl std::fmt::Debug for OfflineBrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineBrain")
            .field("name", &self.name)
            .field("knowledge", &self.passages())
            .field("database", &self.database.is_some())
            .finish()
    }
}

impl OfflineBrain {
    /// The brain of `spec`; knowledge paths are relative to `base_dir`. A knowledge
    /// document that cannot be read is reported and left out: the agent still answers
    /// from its tools. With `intents`, what a question asks for is read by meaning first.
    pub fn new(spec: &AgentSpec, base_dir: &Path, intents: Option<Arc<Intents>>) -> OfflineBrain {
        let knowledge = match KnowledgeBase::load(base_dir, &spec.knowledge) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::error!(agent = %spec.id, error = %e, "knowledge documents not loaded");
                None
            }
        };
        OfflineBrain {
            name: spec.name.clone(),
            knowledge,
            database: spec
                .tools
                .database
                .as_ref()
                .map(|d| (d.url.clone(), OnceCell::new())),
            seed: spec
                .tools
                .database
                .as_ref()
                .and_then(|d| d.seed.as_ref())
                .map(|s| base_dir.join(s)),
            base_dir: base_dir.to_path_buf(),
            secrets: spec.tools.secrets.is_some(),
            files: spec.tools.files.as_ref().map(|f| base_dir.join(&f.root)),
            intents,
        }
    }

    /// Answers `question` (the event's text without the mention), asked in an event whose
    /// whole text is `event_text`.
    pub async fn answer(&self, question: &str, event_text: &str) -> String {
        match self.answer_found(question, event_text).await {
            Some(a) => a,
            None => self.nothing(),
        }
    }

    /// Like [`answer`](Self::answer), but `None` where it would say it has nothing.
    pub async fn answer_found(&self, question: &str, event_text: &str) -> Option<String> {
        if self.secrets
            && let Some(a) = self.scan(event_text)
        {
            return Some(a);
        }
        if self.database.is_some() {
            match self.database_answer(question).await {
                Ok(Some(a)) => return Some(a),
                Ok(None) => {}
                Err(e) => return Some(format!("I could not reach my database: {e}")),
            }
        }
        self.quote_knowledge(question)
    }

    /// The knowledge base's passages for `query`, best first.
    pub(crate) fn search(&self, query: &str, k: usize) -> Vec<crate::knowledge::Hit> {
        self.knowledge
            .as_ref()
            .map(|kb| kb.search(query, k))
            .unwrap_or_default()
    }

    /// True when the agent has the secret scanner.
    pub(crate) fn has_secrets(&self) -> bool {
        self.secrets
    }

    fn passages(&self) -> usize {
        self.knowledge.as_ref().map_or(0, KnowledgeBase::len)
    }

    pub(crate) fn nothing(&self) -> String {
        let mut tools = Vec::new();
        if self.database.is_some() {
            tools.push("list the tables, show a table's DDL, find columns that hold personal data, or EXPLAIN a query you put in backticks");
        }
        if self.secrets {
            tools.push("scan what you paste for secrets and personal data");
        }
        let mut out = format!(
            "I don't have anything on that in my notes ({} passages).",
            self.passages()
        );
        if !tools.is_empty() {
            out.push_str(" I can ");
            out.push_str(&tools.join("; I can also "));
            out.push('.');
        }
        out
    }

    fn quote_knowledge(&self, question: &str) -> Option<String> {
        let hits = self.knowledge.as_ref()?.search(question, QUOTES);
        if hits.is_empty() {
            return None;
        }
        let mut out = String::from("From my notes:\n");
        for h in hits {
            let mut text: String = h.text.trim().chars().take(QUOTE_CHARS).collect();
            if h.text.trim().chars().count() > QUOTE_CHARS {
                text.push('…');
            }
            out.push('\n');
            for line in text.lines() {
                out.push_str("> ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("— *{} › {}*\n", h.file, h.heading));
        }
        Some(out)
    }

    /// Sage: secrets and personal data in the event, never echoed in full — and the
    /// credentials the floor redacted before it stored the event, which were exposed all
    /// the same on their way there.
    pub(crate) fn scan(&self, event_text: &str) -> Option<String> {
        let mut found = secrets::scan(event_text);
        found.extend(redaction::placeholders(event_text));
        found.sort_by_key(|f| f.start);
        if found.is_empty() {
            return None;
        }
        let pii = found.iter().filter(|f| f.kind.is_pii()).count();
        let mut out = format!(
            "**I found {} item{} to deal with** ({} secret{}, {} personal data):\n",
            found.len(),
            plural(found.len()),
            found.len() - pii,
            plural(found.len() - pii),
            pii
        );
        for f in &found {
            out.push_str(&format!(
                "- line {}, column {}: {} `{}` — {}\n",
                f.line,
                f.column,
                f.kind.label(),
                f.masked,
                f.kind.advice()
            ));
        }
        let redacted = found
            .iter()
            .filter(|f| f.masked.starts_with("[redacted"))
            .count();
        if found.len() - pii > redacted {
            out.push_str("\nThis text is on the floor now: treat every secret above as exposed and rotate it; move it to a secret store and reference it (env or file), never commit it.");
        } else if redacted > 0 {
            out.push_str("\nThe floor redacted these before storing the message, but they left the machine they were typed on: rotate them anyway, and keep them in a secret store referenced by env or file.");
        }
        Some(out)
    }

    /// The directory the agent may read, if it has one.
    pub(crate) fn files_root(&self) -> Option<&Path> {
        self.files.as_deref()
    }

    /// True when the agent has a database tool.
    pub(crate) fn has_database(&self) -> bool {
        self.database.is_some()
    }

    pub(crate) async fn warehouse(&self) -> Result<Arc<Warehouse>, String> {
        let Some((url, cell)) = &self.database else {
            return Err("no database configured".into());
        };
        cell.get_or_init(|| async {
            let resolved = if url.starts_with("env:") || url.starts_with("file:") {
                SecretRef::parse(url)
                    .and_then(|r| r.resolve(&Env::from_process()))
                    .map(|s| s.expose().to_owned())?
            } else {
                url.clone()
            };
            let resolved = match resolved.strip_prefix("sqlite:") {
                Some(p) => {
                    let path = self.base_dir.join(p.strip_prefix("//").unwrap_or(p));
                    if let Some(seed) = &self.seed {
                        seed_sqlite(&path, seed).await?;
                    }
                    format!("sqlite:{}", path.display())
                }
                None => resolved,
            };
            Warehouse::connect(&resolved)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await
        .clone()
    }

    /// Dean: what the database itself says. `Ok(None)`: the question is not about it.
    async fn database_answer(&self, question: &str) -> Result<Option<String>, String> {
        let lower = question.to_lowercase();
        if let Some(sql) = extract_sql(question) {
            let w = self.warehouse().await?;
            return Ok(Some(match w.explain(&sql).await {
                Ok(report) => {
                    let mut out = String::from("**Plan for your query:**\n```\n");
                    out.push_str(&report.plan.chars().take(PLAN_CHARS).collect::<String>());
                    out.push_str("\n```\n");
                    if report.findings.is_empty() {
                        out.push_str("Nothing slow stands out: every table is reached through an index or is small.\n");
                    } else {
                        for f in &report.findings {
                            out.push_str(&format!("- {f}\n"));
                        }
                    }
                    if !report.suggested_indexes.is_empty() {
                        out.push_str("\nAn index would help:\n```sql\n");
                        out.push_str(&report.suggested_indexes.join("\n"));
                        out.push_str("\n```\n");
                    }
                    out
                }
                Err(e) => format!("I did not run that: {e}"),
            }));
        }
        let intent = self.intent(question, &lower).await?;
        if intent == Some(Intent::Pii) {
            let w = self.warehouse().await?;
            let cols = w.pii_columns().await.map_err(|e| e.to_string())?;
            if cols.is_empty() {
                return Ok(Some(
                    "No column in my database looks like personal data.".into(),
                ));
            }
            let mut tables: Vec<&str> = cols.iter().map(|c| c.table.as_str()).collect();
            tables.dedup();
            let mut out = format!(
                "**Columns that look like personal data** ({} column{} in {} table{}):\n",
                cols.len(),
                plural(cols.len()),
                tables.len(),
                plural(tables.len())
            );
            for c in &cols {
                out.push_str(&format!("- `{}.{}` — {}\n", c.table, c.column, c.why));
            }
            out.push_str(
                "\nKeep them out of logs and exports, and mask them in non-production copies.",
            );
            return Ok(Some(out));
        }
        let wants_schema = intent == Some(Intent::Schema);
        if !(wants_schema || intent == Some(Intent::Tables)) {
            return Ok(None);
        }
        let w = self.warehouse().await?;
        let tables = w.tables().await.map_err(|e| e.to_string())?;
        if wants_schema {
            let named: Vec<_> = tables
                .iter()
                .filter(|t| contains_word(&lower, &t.name.to_lowercase()))
                .collect();
            if !named.is_empty() {
                let mut out = String::new();
                for t in named {
                    if let Some(ddl) = w.ddl(&t.name).await.map_err(|e| e.to_string())? {
                        out.push_str(&format!("```sql\n{}\n```\n", ddl.trim()));
                    }
                }
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            }
        }
        let mut out = format!("**Tables** ({}):\n", tables.len());
        for t in &tables {
            let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            out.push_str(&format!(
                "- `{}` — ~{} rows: {}\n",
                t.name,
                t.rows,
                cols.join(", ")
            ));
        }
        Ok(Some(out))
    }

    /// What `question` asks of the database, by words and, with the model, by meaning
    /// (the rule is `intent.rs`'s; `lower` is the question lowercased).
    async fn intent(&self, question: &str, lower: &str) -> Result<Option<Intent>, String> {
        let words = intent::by_words(lower);
        let sims = match self.intents.clone() {
            None => None,
            Some(intents) => {
                let q = question.to_owned();
                // Embedding is CPU work (milliseconds): not on the runtime's threads.
                match tokio::task::spawn_blocking(move || intents.similarities(&q)).await {
                    Ok(Ok(sims)) => Some(sims),
                    Ok(Err(e)) => {
                        tracing::warn!(agent = %self.name, error = %e, "intent by meaning failed; reading the words");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(agent = %self.name, error = %e, "intent by meaning failed; reading the words");
                        None
                    }
                }
            }
        };
        match intent::decide(words, sims.as_deref()) {
            Decision::Use(i) => Ok(i),
            Decision::IfTableNamed(i) => {
                let w = self.warehouse().await?;
                let tables = w.tables().await.map_err(|e| e.to_string())?;
                let named = tables
                    .iter()
                    .any(|t| contains_word(lower, &t.name.to_lowercase()));
                Ok(named.then_some(i))
            }
        }
    }
}

/// Creates an example SQLite database from its script, once: an existing file is left as
/// it is. Written to a temporary file first, so a half-built database never appears.
async fn seed_sqlite(path: &Path, script: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let sql = tokio::fs::read_to_string(script)
        .await
        .map_err(|e| format!("cannot read the seed script {}: {e}", script.display()))?;
    let tmp = path.with_extension("seeding");
    // A leftover from an interrupted seed, or nothing.
    let _ = tokio::fs::remove_file(&tmp).await;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&tmp)
        .create_if_missing(true);
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("the seed script {} failed: {e}", script.display()))?;
    sqlx::Connection::close(conn)
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| format!("cannot move the seeded database into place: {e}"))?;
    tracing::info!(database = %path.display(), seed = %script.display(), "example database created");
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The SQL quoted in a message: a fenced block, or an inline code span, that starts with
/// SELECT or WITH.
pub fn extract_sql(text: &str) -> Option<String> {
    let starts_sql = |s: &str| {
        let t = s.trim_start().to_ascii_lowercase();
        t.starts_with("select") || t.starts_with("with")
    };
    let mut rest = text;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let body_start = after.find('\n').map_or(0, |n| n + 1);
        let Some(end) = after[body_start..].find("```") else {
            break;
        };
        let body = after[body_start..body_start + end].trim();
        if starts_sql(body) {
            return Some(body.to_owned());
        }
        rest = &after[body_start + end + 3..];
    }
    let mut parts = text.split('`');
    parts.next();
    while let Some(code) = parts.next() {
        if starts_sql(code) && code.len() > 12 {
            return Some(code.trim().to_owned());
        }
        parts.next();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_found_in_fences_and_inline_code() {
        assert_eq!(
            extract_sql("why slow?\n```sql\nSELECT * FROM orders WHERE customer_id = 4\n```")
                .as_deref(),
            Some("SELECT * FROM orders WHERE customer_id = 4")
        );
        assert_eq!(
            extract_sql("is `select count(*) from events where kind = 'x'` ok?").as_deref(),
            Some("select count(*) from events where kind = 'x'")
        );
        assert_eq!(extract_sql("use `int_subscriptions` please"), None);
        assert_eq!(extract_sql("no code here"), None);
    }

    /// Dean with the example warehouse (created from its script in a temporary
    /// directory on first use).
    fn dean(intents: Option<Arc<Intents>>) -> (tempfile::TempDir, OfflineBrain) {
        let dir = tempfile::tempdir().unwrap();
        let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/warehouse.sql");
        let spec: AgentSpec = serde_json::from_value(serde_json::json!({
            "id": "agent:dean", "name": "Dean",
            "tools": {"database": {"url": "sqlite:wh.db", "seed": seed.to_str().unwrap()}}
        }))
        .unwrap();
        let brain = OfflineBrain::new(&spec, dir.path(), intents);
        (dir, brain)
    }

    #[tokio::test]
    async fn without_a_model_the_words_decide() {
        let (_dir, dean) = dean(None);
        let a = dean.answer("which tables hold orders?", "").await;
        assert!(a.starts_with("**Tables**"), "{a}");
        let a = dean.answer("what vegetables do we grow?", "").await;
        assert!(!a.contains("**Tables**"), "{a}");
        let a = dean
            .answer("can you book a table for the team dinner on Friday?", "")
            .await;
        assert!(
            a.starts_with("**Tables**"),
            "the words alone are fooled: {a}"
        );
        // No keyword: the words cannot tell this is about tables.
        let a = dean
            .answer("which datasets do we keep in the warehouse?", "")
            .await;
        assert!(!a.contains("**Tables**"), "{a}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_the_model_the_meaning_decides() {
        let Some(m) = crate::intent::tests::model() else {
            return;
        };
        let (_dir, dean) = dean(Some(Arc::new(Intents::new(m))));
        let a = dean
            .answer("which datasets do we keep in the warehouse?", "")
            .await;
        assert!(a.starts_with("**Tables**"), "{a}");
        let a = dean
            .answer(
                "where do we store people's phone numbers and home addresses?",
                "",
            )
            .await;
        assert!(a.contains("personal data"), "{a}");
        let a = dean
            .answer("what vegetables should we plant on the roof terrace?", "")
            .await;
        assert!(!a.contains("**Tables**"), "{a}");
        // An everyday word the words alone would take for a table question.
        let a = dean
            .answer("can you book a table for the team dinner on Friday?", "")
            .await;
        assert!(!a.contains("**Tables**"), "{a}");
        // …while a table of the warehouse named keeps it one.
        let a = dean.answer("describe products", "").await;
        assert!(a.contains("CREATE TABLE products"), "{a}");
    }
}
