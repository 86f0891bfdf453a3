//! The first stage: cheap, model-free. It finds the precise signals the tools already
//! have (the secret scanner, redaction placeholders, a failing data job in a tool's
//! output), rewrites the text so code spans, e-mail addresses and people's names do not
//! read as topic words, and discards what is too small to be anyone's domain.

use std::sync::LazyLock;

use polaris_protocol::secrets;
use polaris_registry::PassiveSignal;
use regex::Regex;

/// Fewer words than this (after cleaning) and no signal: nobody's domain.
const MIN_WORDS: usize = 3;
/// Longest text handed to the model (it reads at most 256 tokens anyway).
const MAX_CHARS: usize = 1500;

/// What the first stage made of an event's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The text to embed: code spans, addresses and names replaced.
    pub text: String,
    /// The precise signals found, each with a short reason (never a secret).
    pub signals: Vec<(PassiveSignal, String)>,
    /// Too small to be anyone's domain: no model needed.
    pub discard: bool,
}

/// `[redacted: aws-secret-key]` (ingest-time redaction) and `[REDACTED:aws-secret-key]`
/// (the sidecar's log redaction).
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\[redacted:\s*([a-z0-9-]+)\]").unwrap_or_else(|_| unreachable!())
});

/// Failing data jobs, as the tools themselves print them. Each is a tool's own output
/// format, not a topic word: a person writing "the dbt test failed" in chat is not one.
static DATA_FAILURES: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    let pats: &[(&str, &str)] = &[
        // dbt: `Failure in test …`, `Database Error in model …`, the summary line.
        (
            "dbt",
            r"(?m)\b(Failure in test|Database Error in (model|test|snapshot|seed)|Compilation Error in (model|test))\b",
        ),
        ("dbt", r"Done\. PASS=\d+ WARN=\d+ ERROR=[1-9]"),
        // Airflow task logs.
        (
            "airflow",
            r"(Marking task as FAILED|Task failed with exception|dag_id=\S+.*\bstate=failed|DagRun Finished: .*state=failed)",
        ),
        // Spark.
        (
            "spark",
            r"(Job aborted due to stage failure|org\.apache\.spark\.SparkException|ExecutorLostFailure)",
        ),
        // Great Expectations / Soda checks.
        (
            "great_expectations",
            r#"(?s)"success":\s*false.*expectation|Validation failed for suite|Checks? FAILED"#,
        ),
        // Warehouse engines' own errors.
        (
            "snowflake",
            r"SQL compilation error:|Warehouse '[^']+' cannot be resumed",
        ),
    ];
    pats.iter()
        .map(|(t, p)| {
            (
                *t,
                Regex::new(p).unwrap_or_else(|_| unreachable!("a fixed pattern")),
            )
        })
        .collect()
});

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}").unwrap_or_else(|_| unreachable!())
});
/// Slack's encoded user mentions and any remaining `@handle`.
static HANDLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<@[A-Z0-9]+(\|[^>]*)?>|(^|[\s(\[{,;:])@[A-Za-z0-9._-]+")
        .unwrap_or_else(|_| unreachable!())
});
static FENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)```([A-Za-z0-9_+-]*)[^\n]*\n?(.*?)(```|\z)").unwrap_or_else(|_| unreachable!())
});
static INLINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"`([^`\n]{1,200})`").unwrap_or_else(|_| unreachable!()));

/// Runs the first stage on `text`. `names` are people's and agents' names (matched as
/// whole words, case-sensitively) that must not count as topic words.
pub fn prepare(text: &str, tool_output: bool, names: &[String]) -> Prepared {
    let mut signals: Vec<(PassiveSignal, String)> = Vec::new();
    for f in secrets::scan(text) {
        let why = format!("{} on line {}", f.kind.label(), f.line);
        if !signals.iter().any(|(_, w)| w == &why) {
            signals.push((PassiveSignal::Secrets, why));
        }
    }
    for c in PLACEHOLDER.captures_iter(text) {
        let why = format!("{} (redacted)", c[1].to_ascii_lowercase());
        if !signals.iter().any(|(_, w)| w == &why) {
            signals.push((PassiveSignal::Secrets, why));
        }
    }
    if tool_output {
        for (tool, re) in DATA_FAILURES.iter() {
            if re.is_match(text) && !signals.iter().any(|(_, w)| w.starts_with(tool)) {
                signals.push((
                    PassiveSignal::DataJobFailure,
                    format!("{tool} reported a failure"),
                ));
            }
        }
    }
    let cleaned = clean(text, names);
    let words = cleaned
        .split_whitespace()
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count();
    Prepared {
        discard: signals.is_empty() && words < MIN_WORDS,
        text: cleaned,
        signals,
    }
}

/// The text as the model should read it.
pub fn clean(text: &str, names: &[String]) -> String {
    let t = PLACEHOLDER.replace_all(text, "a secret");
    // A code block reads as its language only: identifiers in it (a `campaigns` table,
    // a `pipeline` variable) are not what the event is about.
    let t = FENCE.replace_all(&t, |c: &regex::Captures<'_>| {
        let lang = &c[1];
        if lang.is_empty() {
            " (code) ".to_owned()
        } else {
            format!(" ({lang} code) ")
        }
    });
    let t = INLINE.replace_all(&t, "code");
    let t = EMAIL.replace_all(&t, "someone");
    let t = HANDLE.replace_all(&t, "$2");
    let mut out = String::with_capacity(t.len());
    for w in t.split_inclusive(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '_')) {
        let word = w.trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '_'));
        let bare = word.strip_suffix("'s").unwrap_or(word);
        if !bare.is_empty() && names.iter().any(|n| n == bare) {
            out.push_str("someone");
            out.push_str(&w[bare.len()..]);
        } else {
            out.push_str(w);
        }
    }
    let mut out: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > MAX_CHARS {
        let cut = (0..=MAX_CHARS)
            .rev()
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(0);
        out.truncate(cut);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["Dean".into(), "Sean".into()]
    }

    #[test]
    fn secrets_and_placeholders_are_signals() {
        let p = prepare(
            "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
            false,
            &names(),
        );
        assert_eq!(p.signals[0].0, PassiveSignal::Secrets);
        assert!(!p.signals[0].1.contains("AKIA"), "never the secret itself");
        let p = prepare("token is [redacted: github-token] ok", false, &names());
        assert_eq!(
            p.signals,
            [(PassiveSignal::Secrets, "github-token (redacted)".to_owned())]
        );
        assert!(p.text.contains("a secret"));
    }

    #[test]
    fn data_job_failures_count_in_tool_output_only() {
        let out = "[PostToolUse] Bash: dbt build\n14:02:11  Failure in test not_null_orders_id (models/schema.yml)\n14:02:11  Done. PASS=40 WARN=0 ERROR=1 SKIP=2 TOTAL=43";
        let p = prepare(out, true, &names());
        assert_eq!(p.signals.len(), 1, "{:?}", p.signals);
        assert_eq!(p.signals[0].0, PassiveSignal::DataJobFailure);
        assert!(prepare(out, false, &names()).signals.is_empty());
        let ok = "[PostToolUse] Bash: dbt build\nDone. PASS=43 WARN=0 ERROR=0 SKIP=0 TOTAL=43";
        assert!(prepare(ok, true, &names()).signals.is_empty());
    }

    #[test]
    fn code_addresses_and_names_are_not_topic_words() {
        let c = clean(
            "ask Dean and <@U02ABC> (ops@example.com) why `campaigns` is slow:\n```sql\nselect * from campaigns\n```",
            &names(),
        );
        assert_eq!(c, "ask someone and (someone) why code is slow: (sql code)");
        assert_eq!(clean("Sean's deck, @everyone", &names()), "someone's deck,");
    }

    #[test]
    fn tiny_events_are_discarded() {
        assert!(prepare("thanks!", false, &names()).discard);
        assert!(prepare("ok `x`", false, &names()).discard);
        assert!(!prepare("the nightly load is late again", false, &names()).discard);
    }
}
