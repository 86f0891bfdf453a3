//! Text of events for full-text search: what is indexed, how a web-search query becomes
//! an FTS5 query, and how snippets are cut. Shared by both backends so that results read
//! the same whichever store is behind them.

use serde_json::Value;

/// Payload fields that carry words worth finding (reference 3.9).
const TEXT_FIELDS: [&str; 4] = [
    "prompt",
    "stop_response",
    "last_assistant_message",
    "content",
];

/// Words shown in a snippet.
const SNIPPET_WORDS: usize = 35;

/// The searchable text of a payload: its text fields joined by newlines, each once
/// (the stop hook sends the same text as `stop_response` and `last_assistant_message`),
/// with NULs removed (PostgreSQL text cannot hold them).
pub(crate) fn search_text(payload: &Value) -> String {
    let mut out = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for f in TEXT_FIELDS {
        if let Some(s) = payload.get(f).and_then(Value::as_str) {
            if s.is_empty() || seen.contains(&s) {
                continue;
            }
            seen.push(s);
            if !out.is_empty() {
                out.push('\n');
            }
            out.extend(s.chars().filter(|c| *c != '\0'));
        }
    }
    out
}

/// A parsed web-search query (the syntax of PostgreSQL's `websearch_to_tsquery`).
#[derive(Debug, PartialEq)]
pub(crate) enum Term {
    Word(String),
    Phrase(Vec<String>),
    Or,
    Not(Box<Term>),
}

pub(crate) fn parse_websearch(q: &str) -> Vec<Term> {
    let mut terms = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let negate = c == '-';
        if negate {
            chars.next();
        }
        let term = if chars.peek() == Some(&'"') {
            chars.next();
            let mut phrase = String::new();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                phrase.push(c);
            }
            let words = words(&phrase);
            if words.is_empty() {
                continue;
            }
            Term::Phrase(words)
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            if !negate && word.eq_ignore_ascii_case("or") {
                Term::Or
            } else {
                match words(&word).as_slice() {
                    [] => continue,
                    [one] => Term::Word(one.clone()),
                    many => Term::Phrase(many.to_vec()),
                }
            }
        };
        terms.push(if negate {
            Term::Not(Box::new(term))
        } else {
            term
        });
    }
    terms
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Translates a web-search query into FTS5 syntax, every word quoted so no user input
/// can be read as an FTS5 operator. `None` when nothing positive is left to match.
pub(crate) fn fts5_query(q: &str) -> Option<String> {
    let quote = |t: &Term| match t {
        Term::Word(w) => format!("\"{w}\""),
        Term::Phrase(ws) => format!("\"{}\"", ws.join(" ")),
        _ => String::new(),
    };
    let mut out = String::new();
    let mut pending_or = false;
    for t in parse_websearch(q) {
        match t {
            Term::Or => pending_or = !out.is_empty(),
            Term::Not(inner) => {
                // FTS5's NOT is binary: it needs something on its left.
                if !out.is_empty() {
                    out.push_str(" NOT ");
                    out.push_str(&quote(&inner));
                }
            }
            t => {
                if !out.is_empty() {
                    out.push_str(if pending_or { " OR " } else { " AND " });
                }
                out.push_str(&quote(&t));
                pending_or = false;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The positive words of a query, for highlighting.
fn highlight_words(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in parse_websearch(q) {
        match t {
            Term::Word(w) => out.push(w),
            Term::Phrase(ws) => out.extend(ws),
            _ => {}
        }
    }
    out
}

/// Rough English stem, enough to highlight `tests` for `test` (the index itself stems
/// properly: Porter on SQLite, the `english` configuration on PostgreSQL).
fn stem(w: &str) -> String {
    if let Some(s) = w.strip_suffix("ies")
        && s.chars().count() >= 2
    {
        return format!("{s}y");
    }
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(s) = w.strip_suffix(suffix)
            && s.chars().count() >= 3
        {
            return s.to_owned();
        }
    }
    w.to_owned()
}

/// A snippet of `text` around the first match of `q`, matches wrapped in `<b>…</b>` as
/// PostgreSQL's headline does. The text is HTML-escaped first, so the snippet is safe to
/// put in a page.
pub(crate) fn snippet(text: &str, q: &str) -> String {
    let terms: Vec<String> = highlight_words(q).iter().map(|w| stem(w)).collect();
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let is_match = |tok: &str| {
        let w: String = tok
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        !w.is_empty()
            && terms
                .iter()
                .any(|t| stem(&w) == *t || w.starts_with(t.as_str()))
    };
    let first = tokens.iter().position(|t| is_match(t)).unwrap_or(0);
    let start = first.saturating_sub(5);
    let end = (start + SNIPPET_WORDS).min(tokens.len());
    let mut out = String::new();
    for tok in &tokens[start..end] {
        if !out.is_empty() {
            out.push(' ');
        }
        let escaped = html_escape(tok);
        if is_match(tok) {
            out.push_str("<b>");
            out.push_str(&escaped);
            out.push_str("</b>");
        } else {
            out.push_str(&escaped);
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn search_text_takes_each_text_once_without_nuls() {
        let p = json!({"hook_event_name": "Stop", "stop_response": "done\u{0}!", "last_assistant_message": "done\u{0}!", "prompt": 3});
        assert_eq!(search_text(&p), "done!");
        let p = json!({"prompt": "a", "content": "b"});
        assert_eq!(search_text(&p), "a\nb");
    }

    #[test]
    fn websearch_becomes_quoted_fts5() {
        assert_eq!(
            fts5_query("retry backoff").as_deref(),
            Some("\"retry\" AND \"backoff\"")
        );
        assert_eq!(
            fts5_query("\"exponential backoff\" or jitter -s3").as_deref(),
            Some("\"exponential backoff\" OR \"jitter\" NOT \"s3\"")
        );
        // Operators and FTS5 syntax in user input stay words.
        assert_eq!(
            fts5_query("NEAR(a b) AND*").as_deref(),
            Some("\"near a\" AND \"b\" AND \"and\"")
        );
        assert_eq!(fts5_query("-only"), None);
        assert_eq!(fts5_query("  "), None);
        assert_eq!(fts5_query("foo-bar").as_deref(), Some("\"foo bar\""));
    }

    #[test]
    fn snippets_highlight_and_escape() {
        let s = snippet(
            "we added <retries> and tests for the retry path",
            "retry tests",
        );
        assert_eq!(
            s,
            "we added <b>&lt;retries&gt;</b> and <b>tests</b> for the <b>retry</b> path"
        );
        assert_eq!(
            snippet("build auth with retries", "retry"),
            "build auth with <b>retries</b>"
        );
    }
}
