//! The `@mention` grammar: which registered agents an event text addresses.
//!
//! This module owns rules 1–6 of the mention grammar in `tests/data/README.md`: where a
//! mention may start, how a name is cut and resolved (case-insensitively, with the optional
//! `agent:` prefix and the dot-prefix fallback), and what never counts (code, e-mail
//! addresses, Slack's `<@U…>` user mentions, bare names). It must never decide who *responds*
//! — rule 7's author exclusion, passive routing and rate limits belong to the caller, which
//! knows the sender and the floor — and it must stay a pure function over text: no I/O, no
//! regex, and no allocation for a text without an `@`, because it runs on every event of
//! every floor (the target is ≥ 1,000,000 events/s on one core).

use std::collections::HashMap;

use polaris_registry::ParticipantId;

/// The registered mention handles: each agent's id without `agent:` (`dean`, `dean.dbt`).
///
/// Handles are stored lowercase; participant ids are lowercase by their grammar, and the
/// text is lowercased on lookup, which makes matching case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    by_name: HashMap<Box<str>, ParticipantId>,
    /// Length of the longest handle: a name longer than this can only resolve through the
    /// dot-prefix fallback, and the lookup buffer never needs to be larger.
    longest: usize,
}

impl Handles {
    /// The handles of `agents`. Ids that are not `agent:` ids are ignored: only agents can
    /// be mentioned (a `user:` or `slack:` id has no handle).
    pub fn new<I: IntoIterator<Item = ParticipantId>>(agents: I) -> Handles {
        let mut by_name = HashMap::new();
        let mut longest = 0;
        for id in agents.into_iter().filter(ParticipantId::is_agent) {
            longest = longest.max(id.name().len());
            by_name.insert(Box::from(id.name()), id);
        }
        Handles { by_name, longest }
    }

    /// The number of registered handles.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no agent is registered (then no text has a mention).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The agent whose handle is exactly `name` (any letter case), if registered.
    fn exact(&self, name: &[u8]) -> Option<&ParticipantId> {
        if name.len() > self.longest {
            return None;
        }
        // Lowercase into a stack buffer so that a lookup never allocates. Handles are at
        // most MAX_PARTICIPANT_LEN bytes, so `longest` always fits.
        let mut buf = [0u8; polaris_registry::MAX_PARTICIPANT_LEN];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        // The name is made of ASCII name characters only (see `name_end`), so it is UTF-8.
        let key = std::str::from_utf8(lower).ok()?;
        self.by_name.get(key)
    }

    /// Rule 3: the exact handle, or else the longest registered prefix that ends at a dot
    /// (`dean.airflow` → `dean`, `dean.spark.x` → `dean.spark`).
    fn resolve(&self, name: &[u8]) -> Option<&ParticipantId> {
        if let Some(id) = self.exact(name) {
            return Some(id);
        }
        let mut cut = name.len();
        while let Some(dot) = memchr::memrchr(b'.', &name[..cut]) {
            if let Some(id) = self.exact(&name[..dot]) {
                return Some(id);
            }
            cut = dot;
        }
        None
    }
}

/// One resolved mention in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// The agent addressed.
    pub agent: ParticipantId,
    /// Byte offset of the `@`.
    pub start: usize,
    /// Byte offset just past the name as cut by rule 2 (trailing `.`, `-`, `_` excluded).
    pub end: usize,
    /// The mention as written, `text[start..end]`: `@Dean.Spark`, `@agent:sage`.
    pub written: String,
}

/// The agents `text` addresses by rules 1–6 of the grammar, deduplicated by agent, in order
/// of first appearance. The author of the event is not excluded here (rule 7 is the
/// caller's: it knows the sender).
pub fn mentions(text: &str, handles: &Handles) -> Vec<Mention> {
    let bytes = text.as_bytes();
    // The common case: no `@` at all. One vectorised scan, no allocation.
    let Some(first_at) = memchr::memchr(b'@', bytes) else {
        return Vec::new();
    };
    if handles.is_empty() {
        return Vec::new();
    }

    let mut found: Vec<Mention> = Vec::new();
    // Code can only start at a backtick or tilde before the `@`, so the scan starts at the
    // first of those or at the first `@`, whichever comes earlier.
    let mut pos = match memchr::memchr2(b'`', b'~', &bytes[..first_at]) {
        Some(i) => i,
        None => first_at,
    };
    while let Some(off) = memchr::memchr3(b'@', b'`', b'~', &bytes[pos..]) {
        let i = pos + off;
        match bytes[i] {
            b'@' => {
                pos = i + 1;
                if !may_start_mention(text, i) {
                    continue;
                }
                let Some((name_start, name_end, run_end)) = cut_name(bytes, i + 1) else {
                    continue;
                };
                pos = run_end;
                let Some(agent) = handles.resolve(&bytes[name_start..name_end]) else {
                    continue;
                };
                // Rule 7's first half: deduplicated, first appearance wins. A text
                // mentions few agents, so a linear scan beats a set.
                if found.iter().all(|m| &m.agent != agent) {
                    found.push(Mention {
                        agent: agent.clone(),
                        start: i,
                        end: name_end,
                        written: text[i..name_end].to_owned(),
                    });
                }
            }
            fence_char => {
                pos = skip_code(bytes, i, fence_char);
            }
        }
    }
    found
}

/// Rule 1: an `@` starts a mention at the start of the text, after whitespace (any Unicode
/// white space; a newline counts) or after one of `( [ { " ' , ; :`.
fn may_start_mention(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    let Some(&prev) = at.checked_sub(1).and_then(|p| bytes.get(p)) else {
        return true;
    };
    if prev.is_ascii() {
        return prev.is_ascii_whitespace()
            || prev == b'\x0b'
            || matches!(prev, b'(' | b'[' | b'{' | b'"' | b'\'' | b',' | b';' | b':');
    }
    // A multi-byte character: only white space (e.g. a no-break space) may precede.
    text[..at]
        .chars()
        .next_back()
        .is_some_and(char::is_whitespace)
}

/// Rule 2: the name after the `@` at `from`, with the optional `agent:` prefix skipped and
/// trailing `.`, `-`, `_` stripped. Returns (name start, name end, end of the raw run), or
/// `None` when nothing is left of the name.
fn cut_name(bytes: &[u8], from: usize) -> Option<(usize, usize, usize)> {
    let mut start = from;
    let rest = &bytes[from..];
    const PREFIX: &[u8] = b"agent:";
    if rest.len() > PREFIX.len()
        && rest[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && is_name_byte(rest[PREFIX.len()])
    {
        start += PREFIX.len();
    }
    let run_end = name_end(bytes, start);
    let mut end = run_end;
    while end > start && matches!(bytes[end - 1], b'.' | b'-' | b'_') {
        end -= 1;
    }
    (end > start).then_some((start, end, run_end))
}

/// The end of the longest run of `[A-Za-z0-9._-]` starting at `from`.
fn name_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| !is_name_byte(b))
        .map_or(bytes.len(), |n| from + n)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Rule 4: `at` is a backtick or tilde. Returns where scanning resumes: past the fenced
/// block or inline code span that starts there, or past the run itself when it opens
/// nothing (an unmatched backtick, a lone `~`).
fn skip_code(bytes: &[u8], at: usize, ch: u8) -> usize {
    let run = bytes[at..].iter().take_while(|&&b| b == ch).count();
    let after_run = at + run;
    if run >= 3 && at_line_start(bytes, at) {
        // CommonMark: an opening fence's info string may not contain a backtick; such a
        // line is not a fence, and its backticks are read as an inline code span below.
        let line_end =
            memchr::memchr(b'\n', &bytes[after_run..]).map_or(bytes.len(), |n| after_run + n);
        if ch == b'~' || memchr::memchr(b'`', &bytes[after_run..line_end]).is_none() {
            return skip_fenced_block(bytes, line_end, ch, run);
        }
    }
    if ch == b'~' {
        return after_run;
    }
    // Inline code: closed by the next run of exactly the same number of backticks, within
    // the same paragraph. Without a closer the backticks are plain text.
    let mut search = after_run;
    while let Some(off) = memchr::memchr(b'`', &bytes[search..]) {
        let close = search + off;
        let close_run = bytes[close..].iter().take_while(|&&b| b == b'`').count();
        if close_run == run {
            if memchr::memmem::find(&bytes[after_run..close], b"\n\n").is_some() {
                break;
            }
            return close + close_run;
        }
        search = close + close_run;
    }
    after_run
}

/// True when only up to three spaces stand between the previous newline (or the start of
/// the text) and `at`: where CommonMark allows a code fence.
fn at_line_start(bytes: &[u8], at: usize) -> bool {
    let line_start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |n| n + 1);
    let indent = &bytes[line_start..at];
    indent.len() <= 3 && indent.iter().all(|&b| b == b' ')
}

/// The end of a fenced block whose opening line ends at `from`: just past its closing fence
/// (at least `run` × `ch` after up to three spaces, then only blanks), or the end of the
/// text when it is never closed — CommonMark runs an unclosed fence to the end.
fn skip_fenced_block(bytes: &[u8], from: usize, ch: u8, run: usize) -> usize {
    let mut line = from;
    while line < bytes.len() {
        let start = line + 1; // past the '\n'
        let end = memchr::memchr(b'\n', &bytes[start..]).map_or(bytes.len(), |n| start + n);
        let text = &bytes[start..end];
        let indent = text.iter().take_while(|&&b| b == b' ').count();
        let fence = text[indent..].iter().take_while(|&&b| b == ch).count();
        if indent <= 3
            && fence >= run
            && text[indent + fence..]
                .iter()
                .all(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        {
            return end;
        }
        line = end;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handles() -> Handles {
        Handles::new(
            [
                "agent:dean",
                "agent:dean.snowflake",
                "agent:dean.spark",
                "agent:dean.dbt",
                "agent:dean.quality",
                "agent:martha",
                "agent:sean",
                "agent:sage",
            ]
            .into_iter()
            .map(|s| ParticipantId::parse(s).expect("valid id")),
        )
    }

    /// The mentioned ids, in order.
    fn ids(text: &str) -> Vec<String> {
        mentions(text, &handles())
            .into_iter()
            .map(|m| m.agent.to_string())
            .collect()
    }

    #[test]
    fn plain_mentions_in_order_and_deduplicated() {
        assert_eq!(
            ids("@dean and @sage, then @dean again"),
            ["agent:dean", "agent:sage"]
        );
        assert_eq!(ids("no mention here"), Vec::<String>::new());
        assert_eq!(ids(""), Vec::<String>::new());
    }

    #[test]
    fn positions_and_written_form() {
        let text = "thanks @Dean.Spark!";
        let found = mentions(text, &handles());
        assert_eq!(found.len(), 1);
        let m = &found[0];
        assert_eq!(m.agent.as_str(), "agent:dean.spark");
        assert_eq!((m.start, m.end), (7, 18));
        assert_eq!(m.written, "@Dean.Spark");
        assert_eq!(&text[m.start..m.end], m.written);
    }

    #[test]
    fn rule1_what_may_precede_the_at() {
        for text in [
            "@dean",
            " @dean",
            "\t@dean",
            "x\n@dean",
            "(@dean)",
            "[@dean]",
            "{@dean}",
            "\"@dean\"",
            "'@dean'",
            "a,@dean",
            "a;@dean",
            "cc:@dean",
            "a\u{a0}@dean",
        ] {
            assert_eq!(ids(text), ["agent:dean"], "{text:?}");
        }
        for text in [
            "ops@dean.io",
            "x@dean",
            "1@dean",
            "-@dean",
            "<@dean>",
            ".@dean",
            "é@dean",
            "—@dean",
            "/@dean",
            "!@dean",
        ] {
            assert_eq!(ids(text), Vec::<String>::new(), "{text:?}");
        }
    }

    #[test]
    fn rule2_trailing_punctuation_is_stripped() {
        assert_eq!(ids("ask @dean."), ["agent:dean"]);
        assert_eq!(ids("@dean_ what's the grain?"), ["agent:dean"]);
        assert_eq!(ids("@sean- quick q"), ["agent:sean"]);
        assert_eq!(ids("@dean._-"), ["agent:dean"]);
        assert_eq!(ids("@sage?"), ["agent:sage"]);
        let m = &mentions("ask @dean.", &handles())[0];
        assert_eq!(m.written, "@dean");
        // Nothing left after stripping: no mention.
        assert_eq!(ids("@. @_ @- @"), Vec::<String>::new());
    }

    #[test]
    fn rule2_case_insensitive_and_agent_prefix() {
        assert_eq!(ids("@SAGE is it ok?"), ["agent:sage"]);
        assert_eq!(ids("@Dean.Spark"), ["agent:dean.spark"]);
        assert_eq!(ids("@agent:dean"), ["agent:dean"]);
        assert_eq!(ids("@Agent:Martha"), ["agent:martha"]);
        assert_eq!(ids("@agent:dean.snowflake"), ["agent:dean.snowflake"]);
        let m = &mentions("@agent:dean.", &handles())[0];
        assert_eq!(m.written, "@agent:dean");
        // The prefix without a name is just the name "agent", which nobody has.
        assert_eq!(ids("@agent: hello"), Vec::<String>::new());
        // The same agent written two ways is one mention.
        assert_eq!(ids("@agent:dean @DEAN"), ["agent:dean"]);
    }

    #[test]
    fn rule3_dot_prefix_fallback() {
        assert_eq!(ids("@dean.airflow why"), ["agent:dean"]);
        assert_eq!(ids("@martha.k can you"), ["agent:martha"]);
        assert_eq!(ids("@dean.spark.executors"), ["agent:dean.spark"]);
        // No dot, not registered: not a mention.
        assert_eq!(ids("@dean_smith can you"), Vec::<String>::new());
        assert_eq!(ids("@sagemaker endpoint"), Vec::<String>::new());
        assert_eq!(ids("@everyone @channel"), Vec::<String>::new());
        assert_eq!(ids("@deanna"), Vec::<String>::new());
        // A dot in the wrong place resolves nothing.
        assert_eq!(ids("@deanx.dbt"), Vec::<String>::new());
        // A name longer than any handle still falls back at its dots.
        let long = format!("@dean.{}", "x".repeat(300));
        assert_eq!(ids(&long), ["agent:dean"]);
    }

    #[test]
    fn rule4_inline_code_and_fences() {
        assert_eq!(ids("type `@dean` to ask"), Vec::<String>::new());
        assert_eq!(ids("``a ` @dean`` and @sage"), ["agent:sage"]);
        assert_eq!(ids("`x` @dean `y`"), ["agent:dean"]);
        // An unmatched backtick is plain text.
        assert_eq!(ids("it's a ` stray @dean"), ["agent:dean"]);
        // A code span does not cross a blank line.
        assert_eq!(ids("`open\n\n@dean `close"), ["agent:dean"]);
        let fenced = "@sage look:\n```python\nlog(token)  # ask @dean\n```\nthanks";
        assert_eq!(ids(fenced), ["agent:sage"]);
        let tilde = "~~~\n@dean\n~~~\n@martha";
        assert_eq!(ids(tilde), ["agent:martha"]);
        // A closing fence needs at least as many backticks as the opener.
        let long_fence = "````\n```\n@dean\n````\n@sean";
        assert_eq!(ids(long_fence), ["agent:sean"]);
        // An unclosed fence runs to the end of the text.
        assert_eq!(ids("```\n@dean"), Vec::<String>::new());
        // Tildes in prose are not fences.
        assert_eq!(ids("~5 min gap, ~~struck~~ @dean"), ["agent:dean"]);
        // Indented up to three spaces is still a fence; mid-line ``` is inline code.
        assert_eq!(ids("   ```\n@dean\n   ```\n@sage"), ["agent:sage"]);
        assert_eq!(ids("see ```@dean``` or @sage"), ["agent:sage"]);
    }

    #[test]
    fn rule5_slack_users_and_bare_names() {
        assert_eq!(ids("<@U012AB3CD> and @martha"), ["agent:martha"]);
        assert_eq!(
            ids("<@U012AB3CD> can you take the Sean Parker call?"),
            Vec::<String>::new()
        );
        assert_eq!(ids("Dean's List, ask Sean"), Vec::<String>::new());
    }

    #[test]
    fn rule6_subagents_stand_alone() {
        assert_eq!(ids("@dean.dbt help"), ["agent:dean.dbt"]);
        assert_eq!(
            ids("@dean.snowflake and @dean, I'm guessing @dean.snowflake"),
            ["agent:dean.snowflake", "agent:dean"]
        );
    }

    #[test]
    fn non_agent_ids_have_no_handle() {
        let h = Handles::new(
            ["user:dean", "agent:sage"]
                .into_iter()
                .map(|s| ParticipantId::parse(s).expect("valid id")),
        );
        assert_eq!(h.len(), 1);
        assert!(
            mentions("@dean @sage", &h)
                .iter()
                .all(|m| m.agent.as_str() == "agent:sage")
        );
        assert!(mentions("@dean", &Handles::default()).is_empty());
    }

    /// `tests/data/`: the routing cases and their registry, kept in the repository.
    fn dataset(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/");
        let path = format!("{path}{name}");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    /// The registry the dataset is labelled against: every `id` in agents.yaml.
    fn dataset_handles() -> Handles {
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&dataset("agents.yaml")).expect("agents.yaml parses");
        let agents = yaml["agents"].as_sequence().expect("agents: is a list");
        let ids: Vec<ParticipantId> = agents
            .iter()
            .map(|a| ParticipantId::parse(a["id"].as_str().expect("id")).expect("valid id"))
            .collect();
        assert_eq!(ids.len(), 8, "the dataset registry has eight agents");
        Handles::new(ids)
    }

    /// Every labelled case of routing-dev.jsonl: the ordered mentions equal the label.
    #[test]
    fn routing_dev_dataset_mentions_exact_match() {
        let handles = dataset_handles();
        let mut cases = 0;
        let mut failures = Vec::new();
        for line in dataset("routing-dev.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let case: serde_json::Value = serde_json::from_str(line).expect("case is JSON");
            let text = case["text"].as_str().expect("text");
            let want: Vec<&str> = case["mentions"]
                .as_array()
                .expect("mentions")
                .iter()
                .map(|v| v.as_str().expect("mention id"))
                .collect();
            let got: Vec<String> = mentions(text, &handles)
                .into_iter()
                .map(|m| m.agent.to_string())
                .collect();
            if got != want {
                failures.push(format!(
                    "{}: want {want:?}, got {got:?}\n  text: {text:?}\n  note: {}",
                    case["id"], case["note"]
                ));
            }
            cases += 1;
        }
        assert_eq!(cases, 120, "routing-dev.jsonl has 120 cases");
        assert!(
            failures.is_empty(),
            "{} of {cases} cases differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn multibyte_text_around_mentions() {
        assert_eq!(ids("📊 Dean: 👋 @sage — ok? «@dean»"), ["agent:sage"]);
        assert_eq!(ids("é\n@dean"), ["agent:dean"]);
    }
}
