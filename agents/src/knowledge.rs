//! An agent's knowledge: its Markdown documents, split into passages and ranked with BM25.
//!
//! This module owns loading the documents an agent's `knowledge` setting names (files or
//! globs), cutting them into passages at their headings, and ranking passages against a
//! question. It must never make up an answer: a question that matches nothing well enough
//! gets no hits, so the agent can say plainly that it has nothing. It holds no I/O after
//! [`KnowledgeBase::load`], so searching is cheap and synchronous.
//!
//! Ranking is Okapi BM25 over lowercased words with English stop words removed and a light
//! suffix-stripping stemmer ([`stem`]), so `indexes`, `indexed` and `indexing` meet `index`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// BM25's term-frequency saturation.
const K1: f32 = 1.2;
/// BM25's length normalisation.
const B: f32 = 0.75;
/// A hit must score at least this share of a reference score for each word it is required
/// to share with the question (see [`MIN_MATCHED_TERMS`]). The reference is what one
/// distinctive word (found in one passage only) scores when it appears once in a passage of
/// average length: exactly its IDF, which grows with the size of the knowledge base, so
/// the bar scales with it. An everyday word scores well under the bar, and two coincidental
/// words in one passage ("moved … by hand") stay below it; on the example knowledge
/// documents, their questions clear it by 25% or more.
const MIN_SCORE_SHARE: f32 = 0.7;
/// A hit must match at least this share of the question's weight (each distinct question
/// word weighs its IDF; a word no document has weighs as much as the rarest). This keeps
/// a passage that shares only the incidental part of a long question from passing.
const MIN_COVERAGE: f32 = 0.2;
/// A hit must share at least this many distinct words with a question of that many words
/// or more: one word in common is a coincidence as often as it is an answer.
const MIN_MATCHED_TERMS: usize = 2;

/// Why a knowledge base could not be loaded. Every variant names the file or pattern.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// A document could not be read (missing, unreadable, or not UTF-8).
    #[error("knowledge document {}: {source}", file.display())]
    Read {
        /// The document.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A glob pattern is malformed.
    #[error("knowledge pattern {pattern:?}: {source}")]
    Pattern {
        /// The pattern as configured.
        pattern: String,
        /// What is wrong with it.
        source: glob::PatternError,
    },
    /// A directory could not be listed while expanding a glob.
    #[error("knowledge pattern {pattern:?}: {source}")]
    Glob {
        /// The pattern as configured.
        pattern: String,
        /// The path that failed, and why.
        source: glob::GlobError,
    },
    /// A glob matched no file: almost always a typo in the configuration.
    #[error("knowledge pattern {pattern:?} matches no file under {}", base.display())]
    NoMatch {
        /// The pattern as configured.
        pattern: String,
        /// The directory it is relative to.
        base: PathBuf,
    },
}

/// One passage that answers a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document, as configured (relative to the base directory).
    pub file: String,
    /// The heading path, outermost first: `Warehouse conventions > Naming`. Empty for text
    /// before a document's first heading.
    pub heading: String,
    /// The passage's text, without its heading line.
    pub text: String,
    /// The BM25 score; higher is better.
    pub score: f32,
}

#[derive(Debug)]
struct Passage {
    file: String,
    heading: String,
    text: String,
    /// Number of indexed terms, for BM25's length normalisation.
    len: u32,
}

/// The passages of an agent's documents with their inverted index.
#[derive(Debug, Default)]
pub struct KnowledgeBase {
    passages: Vec<Passage>,
    /// Term → (passage index, term frequency), in passage order.
    postings: HashMap<String, Vec<(u32, u32)>>,
    avg_len: f32,
}

impl KnowledgeBase {
    /// Loads the documents `patterns` name: plain paths or globs (`*`, `?`, `[…]`, `**`),
    /// relative to `base_dir` unless absolute. A path that does not exist, a glob that
    /// matches nothing and an unreadable document are errors naming the file or pattern.
    /// A document matched twice is read once.
    pub fn load(base_dir: &Path, patterns: &[String]) -> Result<KnowledgeBase, KnowledgeError> {
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        let mut seen = HashSet::new();
        for pattern in patterns {
            let full = base_dir.join(pattern);
            let matched: Vec<PathBuf> = if is_glob(pattern) {
                // The base directory is a path, not a pattern: a `[` in it must match itself.
                let full_str = if Path::new(pattern).is_absolute() {
                    pattern.clone()
                } else {
                    let base = glob::Pattern::escape(&base_dir.to_string_lossy());
                    format!("{}/{pattern}", base.trim_end_matches('/'))
                };
                let paths = glob::glob(&full_str).map_err(|source| KnowledgeError::Pattern {
                    pattern: pattern.clone(),
                    source,
                })?;
                let mut found = Vec::new();
                for path in paths {
                    let path = path.map_err(|source| KnowledgeError::Glob {
                        pattern: pattern.clone(),
                        source,
                    })?;
                    if path.is_file() {
                        found.push(path);
                    }
                }
                if found.is_empty() {
                    return Err(KnowledgeError::NoMatch {
                        pattern: pattern.clone(),
                        base: base_dir.to_path_buf(),
                    });
                }
                found
            } else {
                vec![full]
            };
            for path in matched {
                if seen.insert(path.clone()) {
                    let shown = path
                        .strip_prefix(base_dir)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .into_owned();
                    files.push((path, shown));
                }
            }
        }

        let mut kb = KnowledgeBase::default();
        for (path, shown) in files {
            let text = std::fs::read_to_string(&path).map_err(|source| KnowledgeError::Read {
                file: path.clone(),
                source,
            })?;
            for (heading, body) in split_passages(&text) {
                kb.add(&shown, heading, body);
            }
        }
        let total: u64 = kb.passages.iter().map(|p| u64::from(p.len)).sum();
        kb.avg_len = if kb.passages.is_empty() {
            0.0
        } else {
            total as f32 / kb.passages.len() as f32
        };
        Ok(kb)
    }

    fn add(&mut self, file: &str, heading: String, text: String) {
        let index = u32::try_from(self.passages.len()).unwrap_or(u32::MAX);
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        // The heading path is part of what a passage is about ("PII handling > Masking").
        for term in terms(&heading).chain(terms(&text)) {
            *tf.entry(term).or_default() += 1;
            len += 1;
        }
        for (term, n) in tf {
            self.postings.entry(term).or_default().push((index, n));
        }
        self.passages.push(Passage {
            file: file.to_owned(),
            heading,
            text,
            len,
        });
    }

    /// True when no passage was loaded.
    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The number of passages.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    /// Every passage's text, in document order (passive monitoring reads them as part of
    /// the agent's definition).
    pub fn passages(&self) -> impl Iterator<Item = &str> {
        self.passages.iter().map(|p| p.text.as_str())
    }

    /// The `k` passages that best answer `query`, best first. Empty when nothing matches
    /// well enough: the caller should then say it has nothing, not guess.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        if k == 0 || self.passages.is_empty() {
            return Vec::new();
        }
        let n = self.passages.len() as f32;
        let idf = |df: usize| (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln();
        // A word that no passage has is as specific as a word only one passage has: asking
        // about something the documents never mention must lower the coverage.
        let unseen_weight = idf(1);

        let mut query_terms: Vec<String> = terms(query).collect();
        query_terms.sort_unstable();
        query_terms.dedup();
        let total_weight: f32 = query_terms
            .iter()
            .map(|t| self.postings.get(t).map_or(unseen_weight, |p| idf(p.len())))
            .sum();
        if total_weight <= 0.0 {
            return Vec::new();
        }

        let min_matched = MIN_MATCHED_TERMS.min(query_terms.len());
        let min_score = MIN_SCORE_SHARE * unseen_weight * min_matched as f32;
        // passage → (score, matched weight, matched terms)
        let mut acc: HashMap<u32, (f32, f32, usize)> = HashMap::new();
        for term in &query_terms {
            let Some(postings) = self.postings.get(term) else {
                continue;
            };
            let w = idf(postings.len());
            for &(p, tf) in postings {
                let len = self.passages[p as usize].len as f32;
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * len / self.avg_len.max(1.0));
                let e = acc.entry(p).or_default();
                e.0 += w * tf * (K1 + 1.0) / (tf + norm);
                e.1 += w;
                e.2 += 1;
            }
        }

        let mut ranked: Vec<(u32, f32)> = acc
            .into_iter()
            .filter(|&(_, (score, weight, terms))| {
                score >= min_score && weight / total_weight >= MIN_COVERAGE && terms >= min_matched
            })
            .map(|(p, (score, _, _))| (p, score))
            .collect();
        // Best first; ties in document order, so results are stable.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(k)
            .map(|(p, score)| {
                let passage = &self.passages[p as usize];
                Hit {
                    file: passage.file.clone(),
                    heading: passage.heading.clone(),
                    text: passage.text.clone(),
                    score,
                }
            })
            .collect()
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Splits a Markdown document at its ATX headings (`#` … `######`, outside fenced code)
/// into (heading path, body) passages. Sections with no text of their own are dropped.
/// Setext headings (underlined with `===`) are read as text.
fn split_passages(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut body = String::new();
    let mut fence: Option<&str> = None;

    let flush = |path: &[(usize, String)], body: &mut String, out: &mut Vec<(String, String)>| {
        let text = body.trim();
        if !text.is_empty() {
            let heading = path
                .iter()
                .map(|(_, h)| h.as_str())
                .collect::<Vec<_>>()
                .join(" > ");
            out.push((heading, text.to_owned()));
        }
        body.clear();
    };

    for line in doc.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
            body.push_str(line);
            body.push('\n');
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
            body.push_str(line);
            body.push('\n');
            continue;
        }
        if let Some((level, title)) = atx_heading(line) {
            flush(&path, &mut body, &mut out);
            while path.last().is_some_and(|(l, _)| *l >= level) {
                path.pop();
            }
            path.push((level, title.to_owned()));
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
    flush(&path, &mut body, &mut out);
    out
}

/// `## Title ##` → (2, "Title"); `None` for anything that is not an ATX heading.
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None; // `#hashtag`
    }
    let title = after.trim().trim_end_matches('#').trim_end();
    (!title.is_empty()).then_some((level, title))
}

/// The indexed terms of `text`: lowercased words (letters and digits), stop words and
/// one-letter words removed, stemmed.
fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 1 || w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !is_stop_word(w))
        .map(|w| stem(&w))
}

// Sorted, for binary search. Function words and chat filler ("make", "thanks") only:
// domain words such as "data" or "table" stay, because in a knowledge base they carry
// meaning.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "already",
    "also",
    "am",
    "an",
    "and",
    "any",
    "anyone",
    "anything",
    "are",
    "as",
    "ask",
    "asked",
    "at",
    "away",
    "back",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "cannot",
    "come",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "etc",
    "ever",
    "every",
    "everyone",
    "everything",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "getting",
    "go",
    "goes",
    "going",
    "gone",
    "good",
    "got",
    "great",
    "guess",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "hey",
    "hi",
    "him",
    "his",
    "how",
    "however",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "know",
    "let",
    "like",
    "look",
    "looking",
    "lot",
    "made",
    "make",
    "makes",
    "making",
    "maybe",
    "me",
    "might",
    "more",
    "most",
    "much",
    "must",
    "my",
    "need",
    "needs",
    "new",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "ok",
    "okay",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "please",
    "quick",
    "quickly",
    "really",
    "right",
    "said",
    "same",
    "say",
    "see",
    "seems",
    "shall",
    "she",
    "should",
    "so",
    "some",
    "someone",
    "something",
    "still",
    "such",
    "sure",
    "take",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "through",
    "to",
    "today",
    "tomorrow",
    "too",
    "try",
    "trying",
    "under",
    "until",
    "up",
    "us",
    "very",
    "want",
    "wants",
    "was",
    "way",
    "we",
    "well",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "yeah",
    "yes",
    "yesterday",
    "yet",
    "you",
    "your",
    "yours",
];

fn is_stop_word(w: &str) -> bool {
    STOP_WORDS.binary_search(&w).is_ok()
}

/// A light English stemmer: folds plurals, `-ing`, `-ed` and `-ly`, then a final `e`, so
/// that the forms of one word meet (`policies`/`policy`, `naming`/`named`/`name`,
/// `indexes`/`index`, `running`/`run`). It is not Porter: it never rewrites derivational
/// suffixes (`-ation`, `-ize`), which keeps it predictable for short technical words.
pub fn stem(word: &str) -> String {
    if word.len() <= 3 || !word.is_ascii() {
        return word.to_owned();
    }
    let mut w = word.to_owned();
    // Plurals and third person.
    if let Some(base) = w.strip_suffix("ies").filter(|b| b.len() >= 2) {
        w = format!("{base}y");
    } else if ["sses", "xes", "ches", "shes", "zes"]
        .iter()
        .any(|s| w.ends_with(s))
    {
        // addresses → address, indexes → index, batches → batch
        w.truncate(w.len() - 2);
    } else if w.ends_with('s') && !["ss", "us", "is"].iter().any(|s| w.ends_with(s)) {
        w.truncate(w.len() - 1);
    }
    // Verb and adverb endings, only when a real stem (three letters with a vowel) is left.
    for suffix in ["ingly", "edly", "ing", "ed", "ly"] {
        // `-ly` needs a longer stem, or "apply" would become "app".
        let min = if suffix.ends_with("ly") { 4 } else { 3 };
        if let Some(base) = w.strip_suffix(suffix)
            && base.len() >= min
            && base.bytes().any(|b| b"aeiouy".contains(&b))
        {
            let mut base = base.to_owned();
            if suffix == "ed" && base.ends_with('i') {
                base.pop();
                base.push('y'); // copied → copy
            }
            let b = base.as_bytes();
            let n = b.len();
            if suffix != "ly" && b[n - 1] == b[n - 2] && !b"aeioulsz".contains(&b[n - 1]) {
                base.pop(); // running → run, stopped → stop
            }
            w = base;
            break;
        }
    }
    if w.len() > 3 && w.ends_with('e') {
        w.pop();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stemmer_folds_word_forms() {
        for (a, b) in [
            ("policies", "policy"),
            ("naming", "name"),
            ("named", "names"),
            ("indexes", "index"),
            ("indexed", "indexing"),
            ("running", "run"),
            ("stopped", "stop"),
            ("tables", "table"),
            ("queries", "query"),
            ("copied", "copy"),
            ("addresses", "address"),
            ("masking", "masked"),
            ("partitions", "partitioning"),
            ("quickly", "quick"),
            ("applied", "apply"),
            ("applies", "apply"),
        ] {
            assert_eq!(stem(a), stem(b), "{a} / {b}");
        }
        // Words that must stay apart or intact.
        assert_ne!(stem("string"), stem("str"));
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("analysis"), "analysis");
        assert_eq!(stem("pii"), "pii");
        assert_ne!(stem("user"), stem("us"));
    }

    #[test]
    fn stop_words_are_sorted_and_dropped() {
        assert!(
            STOP_WORDS.windows(2).all(|w| w[0] < w[1]),
            "STOP_WORDS must stay sorted"
        );
        let t: Vec<String> = terms("What is the naming convention for our dbt models?").collect();
        assert_eq!(t, ["name", "convention", "dbt", "model"].map(stem));
        assert!(terms("the of and").next().is_none());
        // Digits survive alone ("SOC 2"), other single letters do not.
        assert_eq!(terms("SOC 2 a").collect::<Vec<_>>(), ["soc", "2"]);
    }

    #[test]
    fn passages_follow_heading_paths() {
        let doc = "intro line\n# Guide\n\n## Naming\nuse snake_case\n### Keys\nid columns\n\
                   ## Empty\n## Code\n```sql\n# not a heading\nselect 1\n```\n#hashtag stays text\n";
        let p = split_passages(doc);
        let headings: Vec<&str> = p.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(
            headings,
            [
                "",
                "Guide > Naming",
                "Guide > Naming > Keys",
                "Guide > Code"
            ]
        );
        assert_eq!(p[1].1, "use snake_case");
        assert!(p[3].1.contains("# not a heading"));
        assert!(p[3].1.contains("#hashtag stays text"));
        assert_eq!(atx_heading("## Title ##"), Some((2, "Title")));
        assert_eq!(atx_heading("    # indented code"), None);
        assert_eq!(atx_heading("####### seven"), None);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn ranks_the_passage_that_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "docs/a.md",
            "# Warehouse\n## Naming\nTables are named in snake_case with a layer prefix: \
             stg_, int_, fct_, dim_.\n## Backfills\nRun backfills in daily batches off-peak.\n",
        );
        write(
            dir.path(),
            "docs/b.md",
            "# Security\n## Secrets\nSecrets live in the vault and are rotated every 90 days.\n",
        );
        let kb = KnowledgeBase::load(dir.path(), &["docs/*.md".to_owned()]).expect("load");
        assert_eq!(kb.len(), 3);
        let hits = kb.search("how should I name a new table?", 3);
        assert_eq!(hits[0].heading, "Warehouse > Naming", "{hits:?}");
        assert_eq!(hits[0].file, "docs/a.md");
        let hits = kb.search("when are secrets rotated", 3);
        assert_eq!(hits[0].heading, "Security > Secrets");
        assert!(kb.search("favourite pizza topping in Naples", 3).is_empty());
        assert!(kb.search("", 3).is_empty());
        assert!(kb.search("secrets", 0).is_empty());
    }

    /// The example knowledge documents shipped in `examples/knowledge/<agent>/`.
    fn example(agent: &str) -> KnowledgeBase {
        let base = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/knowledge"
        ));
        let kb = KnowledgeBase::load(base, &[format!("{agent}/*.md")]).expect("load examples");
        assert!(!kb.is_empty(), "{agent} has knowledge documents");
        kb
    }

    /// The top hit for `question` comes from `file`, and the passage under a heading that
    /// ends with `heading` is one of the first two hits (an answer cites a few passages;
    /// the one that answers must be among the first it cites).
    fn assert_answers(kb: &KnowledgeBase, question: &str, file: &str, heading: &str) {
        let hits = kb.search(question, 3);
        let shown: Vec<String> = hits
            .iter()
            .map(|h| format!("{} # {} ({:.2})", h.file, h.heading, h.score))
            .collect();
        let top = hits
            .first()
            .unwrap_or_else(|| panic!("no hit for {question:?}"));
        assert!(
            top.file.ends_with(file)
                && hits
                    .iter()
                    .take(2)
                    .any(|h| h.file.ends_with(file) && h.heading.ends_with(heading)),
            "{question:?}: want {file} # …{heading}, got {shown:#?}"
        );
    }

    #[test]
    fn example_documents_answer_each_agents_questions() {
        let dean = example("dean");
        assert_answers(
            &dean,
            "@dean which columns count as PII and how should we mask them?",
            "warehouse-conventions.md",
            "PII handling",
        );
        assert_answers(
            &dean,
            "should int_subscriptions be incremental or a table? a full rebuild takes 40 min",
            "dbt-style.md",
            "Materializations",
        );
        assert_answers(
            &dean,
            "should the customer_id foreign key on orders get its own index?",
            "query-performance.md",
            "Indexes",
        );
        assert_answers(
            &dean,
            "how do we name timestamp and boolean columns?",
            "warehouse-conventions.md",
            "Naming",
        );

        let martha = example("martha");
        assert_answers(
            &martha,
            "is 'Start building free' or 'Try it free' the approved CTA?",
            "brand-voice.md",
            "Calls to action",
        );
        assert_answers(
            &martha,
            "rewrite this error toast so it sounds like us: 'Operation failed. Retry.'",
            "brand-voice.md",
            "Error messages and toasts",
        );
        assert_answers(
            &martha,
            "what has to happen in launch week before the newsletter send?",
            "launch-checklist.md",
            "Launch week",
        );

        let sean = example("sean");
        assert_answers(
            &sean,
            "the assignment rule routes every inbound demo request to Jake and he is out of office, fix the round robin",
            "lead-routing.md",
            "Round robin and availability",
        );
        assert_answers(
            &sean,
            "how is quota attainment calculated for multi-year deals?",
            "quotas.md",
            "Attainment",
        );
        assert_answers(
            &sean,
            "which score threshold counts as an MQL?",
            "lead-routing.md",
            "Scoring and MQLs",
        );

        let sage = example("sage");
        assert_answers(
            &sage,
            "I committed an AWS access key to git by mistake, what now?",
            "secrets-policy.md",
            "When a secret leaks",
        );
        assert_answers(
            &sage,
            "how soon do we have to notify the authority after a data breach?",
            "incident-response.md",
            "Notification",
        );
        assert_answers(
            &sage,
            "is a marketing_opt_in boolean enough of a consent record for GDPR?",
            "gdpr-basics.md",
            "Lawful basis and consent",
        );
    }

    /// Chat that no agent's documents cover gets no hit. Domain traps ("our CI pipeline"
    /// against Sean's sales pipeline) are not here: words alone cannot tell those apart,
    /// and deciding who should answer at all is routing's job, not retrieval's.
    #[test]
    fn example_documents_say_nothing_about_what_they_do_not_cover() {
        for agent in ["dean", "martha", "sean", "sage"] {
            let kb = example(agent);
            for question in [
                "what's the best pizza place near the office for the team lunch?",
                "anyone else's laptop fan going crazy since the macOS update?",
                "make the sidebar collapsible and remember the state per user",
                "@everyone the all-hands moved to Friday 4pm, same zoom link",
                "the coffee machine on the third floor is broken again, who do we call?",
            ] {
                let hits = kb.search(question, 3);
                assert!(
                    hits.is_empty(),
                    "{agent} answered {question:?} with {hits:#?}"
                );
            }
        }
    }

    #[test]
    fn load_errors_name_the_file_or_pattern() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.md", "# A\ntext\n");
        let err =
            KnowledgeBase::load(dir.path(), &["missing.md".to_owned()]).expect_err("missing file");
        assert!(matches!(err, KnowledgeError::Read { .. }));
        assert!(err.to_string().contains("missing.md"), "{err}");

        let err =
            KnowledgeBase::load(dir.path(), &["nothing/*.md".to_owned()]).expect_err("empty glob");
        assert!(err.to_string().contains("nothing/*.md"), "{err}");

        let err = KnowledgeBase::load(dir.path(), &["[.md".to_owned()]).expect_err("bad pattern");
        assert!(matches!(err, KnowledgeError::Pattern { .. }), "{err}");

        std::fs::write(dir.path().join("bin.md"), [0xff, 0xfe, 0x00]).expect("write");
        let err = KnowledgeBase::load(dir.path(), &["bin.md".to_owned()]).expect_err("not utf-8");
        assert!(err.to_string().contains("bin.md"), "{err}");
    }

    #[test]
    fn glob_characters_in_the_base_directory_are_literal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("kb [v2]");
        write(&base, "notes/a.md", "# A\nalpha beta gamma\n");
        let kb = KnowledgeBase::load(&base, &["notes/*.md".to_owned()]).expect("load");
        assert_eq!(kb.len(), 1);
        assert_eq!(kb.search("alpha beta", 1)[0].file, "notes/a.md");
    }

    #[test]
    fn a_file_matched_twice_is_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.md", "# A\nalpha text\n");
        let kb =
            KnowledgeBase::load(dir.path(), &["a.md".to_owned(), "*.md".to_owned()]).expect("load");
        assert_eq!(kb.len(), 1);
        let empty = KnowledgeBase::load(dir.path(), &[]).expect("load nothing");
        assert!(empty.is_empty());
        assert!(empty.search("alpha", 3).is_empty());
    }
}
