//! What a question to the offline brain asks of the database, by whole words and, with
//! the passive model loaded, by meaning: the question's embedding is compared with each
//! tool's description (embedded once per process).
//!
//! The rule, in order: a precise word ("pii", "ddl", "columns") decides; else the model
//! decides when the nearest tool is near enough and clearly nearer than the next ("which
//! datasets do we keep in the warehouse?" names no table and lists them); else an everyday
//! word ("table", "describe") decides, unless the model finds the question near no tool at
//! all — then only a table of the warehouse named in it keeps it a database question
//! ("can you book a table for Friday's dinner?" is not; "describe products" is). Without
//! a model the words decide alone, as before; "what vegetables…" is never about tables.

use std::sync::{Arc, OnceLock};

use polaris_passive::{Embedder, ModelError};

use crate::text::contains_word;

/// What a question asks the offline brain for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Which tables there are (`list_tables`).
    Tables,
    /// One table's definition (`describe_table`).
    Schema,
    /// Columns that hold personal data (`find_pii_columns`).
    Pii,
    /// The team's conventions and notes (`search_knowledge`): no database tool.
    Knowledge,
}

/// A tool the offline brain answers with, and what it is for: `description` is what the
/// LLM brain is told too; `more` says the same in other words, so a question can meet it
/// however it is put.
pub(crate) struct ToolMeaning {
    pub(crate) tool: &'static str,
    pub(crate) intent: Intent,
    pub(crate) description: &'static str,
    more: &'static [&'static str],
}

/// The offline brain's tools by meaning (the EXPLAIN tool is not here: it needs the SQL
/// quoted in backticks, which is a precise signal of its own).
pub(crate) const TOOLS: [ToolMeaning; 4] = [
    ToolMeaning {
        tool: "list_tables",
        intent: Intent::Tables,
        description: "List the database's tables with row counts and columns.",
        more: &[
            "An inventory of the tables and datasets the database or data warehouse holds: what data we store and how big each table is.",
            "The catalog of relations in the schema: every table and view we have, with its size.",
        ],
    },
    ToolMeaning {
        tool: "describe_table",
        intent: Intent::Schema,
        description: "The DDL (CREATE TABLE) of one table.",
        more: &[
            "The definition of one database table: its columns, their data types, keys and constraints.",
            "The structure of a table: which fields it has and how each is typed.",
        ],
    },
    ToolMeaning {
        tool: "find_pii_columns",
        intent: Intent::Pii,
        description: "Columns that look like personal data, with why.",
        more: &[
            "Which database columns hold personally identifiable information such as names, e-mail addresses, phone numbers, birth dates or home addresses.",
            "Sensitive customer data in the database that privacy law such as GDPR covers.",
        ],
    },
    ToolMeaning {
        tool: "search_knowledge",
        intent: Intent::Knowledge,
        description: "Search your knowledge documents; returns passages with file and heading.",
        more: &[
            "The team's written conventions, policies and how-to notes: naming rules, retention periods, processes and best practices.",
        ],
    },
];

/// The description of `tool` (for the LLM brain's function list).
pub(crate) fn description(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|t| t.tool == tool)
        .map_or("", |t| t.description)
}

/// The nearest tool wins over the words at this similarity or more…
pub(crate) const THRESHOLD: f32 = 0.4;
/// …when it is this much nearer than the next one.
pub(crate) const MARGIN: f32 = 0.08;
/// Below this similarity to every tool, an everyday word alone does not make a database
/// question.
pub(crate) const NEAR_NONE: f32 = 0.35;

/// Words that ask about personal data (whole words: "pii" is not in "piing"), each with
/// whether it is precise (means this and nothing else).
const PII_WORDS: &[(&str, bool)] = &[
    ("pii", true),
    ("personal data", true),
    ("personal information", true),
    ("gdpr", true),
    ("sensitive", false),
];
/// Words that ask for a table's definition.
const SCHEMA_WORDS: &[(&str, bool)] = &[
    ("ddl", true),
    ("schema", true),
    ("schemas", true),
    ("create table", true),
    ("column", true),
    ("columns", true),
    ("describe", false),
    ("definition", false),
];
/// Words that ask which tables there are ("tables", never "vegetables"); all everyday
/// words (a table for dinner, tabling a discussion).
const TABLE_WORDS: &[(&str, bool)] = &[
    ("table", false),
    ("tables", false),
    ("what data", false),
    ("which data", false),
];

/// What the words say: the first kind of question (personal data, a table's definition,
/// the list of tables) whose words `lower` (the question lowercased) holds, and whether
/// one of them is precise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Words {
    pub(crate) intent: Intent,
    pub(crate) precise: bool,
}

/// The word rules.
pub(crate) fn by_words(lower: &str) -> Option<Words> {
    [
        (Intent::Pii, PII_WORDS),
        (Intent::Schema, SCHEMA_WORDS),
        (Intent::Tables, TABLE_WORDS),
    ]
    .into_iter()
    .find_map(|(intent, words)| {
        let hits: Vec<bool> = words
            .iter()
            .filter(|(w, _)| contains_word(lower, w))
            .map(|(_, precise)| *precise)
            .collect();
        (!hits.is_empty()).then(|| Words {
            intent,
            precise: hits.contains(&true),
        })
    })
}

/// What the brain does with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This tool, or none.
    Use(Option<Intent>),
    /// This tool if the question names one of the warehouse's tables, else none.
    IfTableNamed(Intent),
}

/// The rule of this module over the words' answer and, with a model, each intent's
/// similarity to the question (best first).
pub(crate) fn decide(words: Option<Words>, sims: Option<&[(Intent, f32)]>) -> Decision {
    if let Some(w) = words.filter(|w| w.precise) {
        return Decision::Use(Some(w.intent));
    }
    let Some(sims) = sims else {
        return Decision::Use(words.map(|w| w.intent));
    };
    let (best, top) = sims.first().copied().unwrap_or((Intent::Knowledge, 0.0));
    let next = sims.get(1).map_or(0.0, |s| s.1);
    if top >= THRESHOLD && top - next >= MARGIN {
        // The knowledge documents are no database tool.
        return Decision::Use(Some(best).filter(|i| *i != Intent::Knowledge));
    }
    match words {
        Some(w) if top < NEAR_NONE => Decision::IfTableNamed(w.intent),
        Some(w) => Decision::Use(Some(w.intent)),
        None => Decision::Use(None),
    }
}

/// One description's embedding, with the intent it describes.
type Described = (Intent, Vec<f32>);

/// The tools' descriptions embedded with the passive model, for the offline brain.
pub struct Intents {
    embedder: Arc<Embedder>,
    /// Each description's embedding with its intent, made when first needed.
    tools: OnceLock<Result<Vec<Described>, String>>,
}

impl std::fmt::Debug for Intents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intents")
            .field("embedded", &self.tools.get().is_some())
            .finish()
    }
}

impl Intents {
    /// Intents over `embedder`; nothing is embedded until the first question.
    pub fn new(embedder: Arc<Embedder>) -> Intents {
        Intents {
            embedder,
            tools: OnceLock::new(),
        }
    }

    fn tools(&self) -> Result<&[Described], ModelError> {
        let made = self.tools.get_or_init(|| {
            let texts: Vec<(Intent, &str)> = TOOLS
                .iter()
                .flat_map(|t| {
                    std::iter::once((t.intent, t.description))
                        .chain(t.more.iter().map(|m| (t.intent, *m)))
                })
                .collect();
            let batch: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
            self.embedder
                .embed(&batch)
                .map(|v| texts.iter().map(|(i, _)| *i).zip(v).collect())
                .map_err(|e| e.to_string())
        });
        made.as_deref().map_err(|e| ModelError::Run(e.clone()))
    }

    /// Each intent's similarity to `question` (its nearest description), best first.
    /// CPU-bound (milliseconds): call it off the async runtime's threads.
    pub(crate) fn similarities(&self, question: &str) -> Result<Vec<(Intent, f32)>, ModelError> {
        let tools = self.tools()?;
        let cleaned = polaris_passive::stage1::clean(question, &[]);
        let q = self.embedder.embed(&[cleaned.as_str()])?;
        let Some(q) = q.first() else {
            return Ok(Vec::new());
        };
        let mut best: Vec<(Intent, f32)> = Vec::new();
        for (intent, v) in tools {
            let sim: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            match best.iter_mut().find(|(i, _)| i == intent) {
                Some((_, s)) => *s = s.max(sim),
                None => best.push((*intent, sim)),
            }
        }
        best.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(best)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The test model (`polaris_passive::testing`), shared.
    pub(crate) fn model() -> Option<Arc<Embedder>> {
        polaris_passive::testing::model().map(Arc::new)
    }

    fn words(intent: Intent, precise: bool) -> Option<Words> {
        Some(Words { intent, precise })
    }

    #[test]
    fn intents_are_whole_words_some_precise() {
        use Intent::*;
        assert_eq!(by_words("what vegetables do we grow?"), None);
        assert_eq!(by_words("which tables hold orders?"), words(Tables, false));
        assert_eq!(
            by_words("what is in the orders table"),
            words(Tables, false)
        );
        assert_eq!(by_words("the stablecoin ledger"), None);
        assert_eq!(by_words("insensitive matching"), None);
        assert_eq!(by_words("is it sensitive?"), words(Pii, false));
        assert_eq!(by_words("the columnist wrote"), None);
        assert_eq!(by_words("show the ddl of orders"), words(Schema, true));
        assert_eq!(by_words("the piiano rolled"), None);
        assert_eq!(
            by_words("is there pii in the orders table?"),
            words(Pii, true)
        );
        assert_eq!(by_words("describe products"), words(Schema, false));
    }

    #[test]
    fn precise_words_then_a_sure_model_then_everyday_words() {
        use Intent::*;
        let sure = [(Tables, 0.6), (Schema, 0.3)];
        let close = [(Schema, 0.47), (Tables, 0.42)];
        let far = [(Schema, 0.3), (Tables, 0.2)];
        // Without a model: the words.
        assert_eq!(
            decide(words(Tables, false), None),
            Decision::Use(Some(Tables))
        );
        // A precise word wins over a sure model.
        assert_eq!(
            decide(words(Pii, true), Some(&sure)),
            Decision::Use(Some(Pii))
        );
        // A sure model wins over everyday words, and fills in when there are none.
        assert_eq!(
            decide(words(Schema, false), Some(&sure)),
            Decision::Use(Some(Tables))
        );
        assert_eq!(decide(None, Some(&sure)), Decision::Use(Some(Tables)));
        assert_eq!(
            decide(None, Some(&[(Knowledge, 0.6), (Tables, 0.2)])),
            Decision::Use(None)
        );
        // Unsure (too close): everyday words decide.
        assert_eq!(
            decide(words(Tables, false), Some(&close)),
            Decision::Use(Some(Tables))
        );
        assert_eq!(decide(None, Some(&close)), Decision::Use(None));
        // Near nothing: an everyday word needs a table named.
        assert_eq!(
            decide(words(Tables, false), Some(&far)),
            Decision::IfTableNamed(Tables)
        );
        assert_eq!(decide(None, Some(&[])), Decision::Use(None));
    }

    #[test]
    fn every_tool_has_a_description() {
        for t in &TOOLS {
            assert_eq!(description(t.tool), t.description);
        }
        assert_eq!(description("nope"), "");
    }

    /// Phrasings written for this test (none is from the routing dev set): paraphrases
    /// that name no keyword, questions the words already got right, and traps whose
    /// words point at a table. `named` stands for "a table of the warehouse is named".
    #[test]
    fn questions_are_read_by_meaning() {
        let Some(m) = model() else { return };
        let ix = Intents::new(m);
        use Intent::*;
        let tables = ["orders", "payments", "products", "customers"];
        let cases: &[(&str, Option<Intent>)] = &[
            // No keyword, yet about the database.
            ("which datasets do we keep in the warehouse?", Some(Tables)),
            (
                "give me an inventory of everything stored in our database",
                Some(Tables),
            ),
            (
                "where do we store people's phone numbers and home addresses?",
                Some(Pii),
            ),
            (
                "does any field hold customers' e-mails or birthdays?",
                Some(Pii),
            ),
            (
                "what fields does the orders relation have, and how is each typed?",
                Some(Schema),
            ),
            // The words were right already; the model must not undo it.
            ("which tables hold orders?", Some(Tables)),
            ("show the ddl of payments", Some(Schema)),
            ("is there any pii?", Some(Pii)),
            ("what columns does customers have?", Some(Schema)),
            ("describe products", Some(Schema)),
            // Traps: words that point at a table, meanings that do not.
            ("what vegetables should we plant on the roof terrace?", None),
            ("can you book a table for the team dinner on Friday?", None),
            ("let's table the migration discussion until Monday", None),
            (
                "what data should I put in my slides for the all-hands?",
                None,
            ),
            ("how do we name staging models in dbt?", None),
        ];
        let mut wrong = Vec::new();
        for (q, want) in cases {
            let lower = q.to_lowercase();
            let sims = ix.similarities(q).unwrap();
            let got = match decide(by_words(&lower), Some(&sims)) {
                Decision::Use(i) => i,
                Decision::IfTableNamed(i) => {
                    tables.iter().any(|t| contains_word(&lower, t)).then_some(i)
                }
            };
            eprintln!("{q:?} → {got:?} {sims:?}");
            if got != *want {
                wrong.push(format!("{q:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
