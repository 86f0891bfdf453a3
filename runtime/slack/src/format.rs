//! Floor events as Slack messages (reference 7.3, with its ⚠ fixed): which events are
//! posted, under which persona, with which text; floor text escaped so it can never ping
//! a channel; long texts cut into sections Slack accepts; and several waiting events packed
//! into one message when a channel is busier than Slack lets it be. Pure functions, no I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::LazyLock;

use polaris_protocol::{Event, Source};
use polaris_registry::{ParticipantKind, Persona};
use regex::Regex;
use serde_json::{Value, json};

/// Slack refuses a section whose text is longer.
pub const SECTION_MAX: usize = 3000;
/// Blocks in one message (Slack allows 50; the rest is room for context lines).
const BLOCKS_MAX: usize = 45;
/// Characters in one packed message: well under Slack's 40,000, and about what a reader
/// takes in at once.
const MESSAGE_CHARS: usize = 12_000;
/// The notification text (`text` beside the blocks) is a preview.
const PREVIEW_CHARS: usize = 300;

/// One event ready to post.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Its floor `seq`.
    pub seq: i64,
    /// Who is shown.
    pub persona: Persona,
    /// The body (escaped mrkdwn), split into sections of at most [`SECTION_MAX`].
    pub sections: Vec<String>,
}

/// The text and persona of `e`, or `None` when it is not posted: tool calls, what came
/// from Slack, floor bookkeeping (joins, driver changes, labels) and empty texts.
/// `registered` is the sender's registry entry (display name, icon) if it is a named
/// agent.
pub fn render(e: &Event, registered: Option<(&str, &str)>) -> Option<(Persona, String)> {
    if e.sender.kind() == ParticipantKind::Slack || e.source == Source::Slack {
        return None;
    }
    let p = e.payload_value();
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let info = registered.map(|(name, icon)| polaris_registry::PersonaInfo {
        display_name: name,
        icon,
    });
    let session = e.session.as_deref();
    let (persona, text) = match e.source {
        Source::Hook => {
            let text = match e.kind.as_str() {
                "UserPromptSubmit" => s("prompt"),
                "Stop" | "SubagentStop" => {
                    let r = s("stop_response");
                    if r.is_empty() {
                        s("last_assistant_message")
                    } else {
                        r
                    }
                }
                _ => return None,
            };
            (Persona::of(&e.sender, info, session), convert(&text))
        }
        Source::Inject => {
            let content = s("content");
            if content.is_empty() {
                return None;
            }
            let target = p
                .get("target")
                .and_then(Value::as_str)
                .or(session)
                .unwrap_or("");
            let body = format!("→ _{}_:  {}", escape(target), convert(&content));
            (Persona::of(&e.sender, info, None), body)
        }
        Source::Reply | Source::Agent => {
            (Persona::of(&e.sender, info, None), convert(&s("content")))
        }
        Source::Slack | Source::System => return None,
    };
    (!text.trim().is_empty()).then_some((persona, text))
}

/// Markdown as Slack's mrkdwn, escaped: `&`, `<` and `>` become entities, so `<!channel>`,
/// `<!here>` or a copied `<@U…>` in a prompt shows as text and pings nobody; fences lose
/// their language tag; `**x**` and `__x__` become `*x*`.
pub fn convert(text: &str) -> String {
    static FENCE_LANG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^(\s*)```[A-Za-z0-9_+.-]+[ \t]*$").expect("regex"));
    static BOLD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\*\*([^*\n]+?)\*\*|__([^_\n]+?)__").expect("regex"));
    let text = escape(text);
    let text = FENCE_LANG.replace_all(&text, "$1```");
    BOLD.replace_all(&text, |c: &regex::Captures<'_>| {
        let inner = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        format!("*{inner}*")
    })
    .into_owned()
}

/// Slack's three control characters as entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack's entities back to text (for what people typed in Slack).
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `@alias` in an agent's text as a real Slack mention (`<@U…>`), when the alias names
/// exactly one member (`aliases`: alias → Slack id). Code is left alone.
pub fn link_mentions(text: &str, aliases: &HashMap<String, String>) -> String {
    static MENTION: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(^|[\s(\[,;:])@([A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]|[A-Za-z])").expect("regex")
    });
    if aliases.is_empty() || !text.contains('@') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split("```").enumerate() {
        if i > 0 {
            out.push_str("```");
        }
        if i % 2 == 1 {
            out.push_str(part);
            continue;
        }
        for (j, span) in part.split('`').enumerate() {
            if j > 0 {
                out.push('`');
            }
            if j % 2 == 1 {
                out.push_str(span);
                continue;
            }
            let replaced = MENTION.replace_all(span, |c: &regex::Captures<'_>| {
                let name = c[2].to_ascii_lowercase();
                match aliases.get(&name) {
                    Some(id) => format!("{}<@{id}>", &c[1]),
                    None => c[0].to_owned(),
                }
            });
            out.push_str(&replaced);
        }
    }
    out
}

/// Cuts `text` into pieces of at most `max` characters, at a paragraph, line or word break
/// when there is one in the second half of the piece. A code fence open at a cut is closed
/// there and opened again in the next piece, so each section renders on its own.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_end();
    let mut reopen = false;
    while !rest.is_empty() {
        let budget = max
            .saturating_sub(if reopen { 8 } else { 0 })
            .saturating_sub(4)
            .max(16);
        let mut piece = take_chars(rest, budget);
        if piece.len() < rest.len() {
            let mut min = piece.len() / 2;
            while !piece.is_char_boundary(min) {
                min -= 1;
            }
            let cut = ["\n\n", "\n", " "]
                .iter()
                .find_map(|sep| piece[min..].rfind(sep).map(|i| min + i + sep.len()));
            if let Some(cut) = cut {
                piece = &piece[..cut];
            }
        }
        rest = &rest[piece.len()..];
        let mut section = String::new();
        if reopen {
            section.push_str("```\n");
        }
        section.push_str(piece.trim_end());
        let open = (section.matches("```").count() % 2) == 1;
        if open && !rest.trim().is_empty() {
            section.push_str("\n```");
        }
        reopen = open;
        if !section.trim().is_empty() {
            out.push(section);
        }
        rest = rest.trim_start_matches('\n');
    }
    out
}

/// The longest prefix of `s` with at most `n` characters.
fn take_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// An event as an [`Item`], cut to fit one message.
pub fn item(seq: i64, persona: Persona, text: &str) -> Item {
    let mut sections = split(text, SECTION_MAX);
    let mut total = 0;
    let mut keep = 0;
    for s in &sections {
        let n = s.chars().count();
        if keep >= BLOCKS_MAX - 2 || total + n > MESSAGE_CHARS * 3 {
            break;
        }
        total += n;
        keep += 1;
    }
    if keep < sections.len() {
        let cut: usize = sections[keep..].iter().map(|s| s.chars().count()).sum();
        sections.truncate(keep);
        sections.push(format!(
            "_… {cut} more characters: the full text is on the floor (event {seq})._"
        ));
    }
    Item {
        seq,
        persona,
        sections,
    }
}

/// One Slack message: what `chat.postMessage` gets, and which events it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Notification text (a preview of the blocks).
    pub text: String,
    /// Section (and, when several people speak, context) blocks.
    pub blocks: Vec<Value>,
    /// Who it is shown as.
    pub persona: Persona,
    /// The first and last `seq` it carries.
    pub first: i64,
    /// See `first`.
    pub last: i64,
}

/// Takes from the front of `queue` as many items as fit one message (at least one), in
/// order. One speaker: the message is theirs. Several: it is shown as `group` and a
/// context line names the speaker wherever the speaker changes. Consecutive short texts of
/// one speaker share a section (a line each), so a burst of prompts is a few blocks.
pub fn pack(queue: &mut VecDeque<Item>, group: &Persona) -> Option<Message> {
    enum Part {
        Speaker(Persona),
        Text(String),
    }
    let mut parts: Vec<Part> = Vec::new();
    let mut chars = 0;
    let (mut first, mut last) = (None, 0);
    let mut speakers: Vec<Persona> = Vec::new();
    while let Some(next) = queue.front() {
        let same = speakers.last() == Some(&next.persona);
        let merge = same
            && matches!(parts.last(), Some(Part::Text(t))
                if next.sections.first().is_some_and(|s| t.chars().count() + 1 + s.chars().count() <= SECTION_MAX));
        let added = usize::from(!same) + next.sections.len() - usize::from(merge);
        let c: usize = next.sections.iter().map(|s| s.chars().count()).sum();
        if first.is_some() && (parts.len() + added > BLOCKS_MAX || chars + c > MESSAGE_CHARS) {
            break;
        }
        let Some(item) = queue.pop_front() else { break };
        if !same {
            parts.push(Part::Speaker(item.persona.clone()));
            speakers.push(item.persona.clone());
        }
        for (k, section) in item.sections.into_iter().enumerate() {
            match parts.last_mut() {
                Some(Part::Text(t)) if k == 0 && merge => {
                    t.push('\n');
                    t.push_str(&section);
                }
                _ => parts.push(Part::Text(section)),
            }
        }
        chars += c;
        first.get_or_insert(item.seq);
        last = item.seq;
    }
    let first = first?;
    let single = speakers.iter().all(|p| *p == speakers[0]);
    let mut blocks = Vec::with_capacity(parts.len());
    let mut preview = String::new();
    for part in &parts {
        match part {
            Part::Speaker(_) if single => {}
            Part::Speaker(p) => blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": format!("{} *{}*", p.icon, escape(&p.name))}]
            })),
            Part::Text(t) => {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": t}}));
                if preview.chars().count() < PREVIEW_CHARS {
                    if !preview.is_empty() {
                        preview.push('\n');
                    }
                    preview.push_str(t);
                }
            }
        }
    }
    if preview.chars().count() > PREVIEW_CHARS {
        preview = format!("{}…", take_chars(&preview, PREVIEW_CHARS));
    }
    let persona = if single {
        speakers[0].clone()
    } else {
        group.clone()
    };
    Some(Message {
        text: preview,
        blocks,
        persona,
        first,
        last,
    })
}

/// A persona's icon as `chat.postMessage` fields: an emoji's `:shortcode:` as
/// `icon_emoji`, an URL as `icon_url`.
pub fn icon_fields(icon: &str) -> Option<(&'static str, String)> {
    let icon = icon.trim();
    if icon.starts_with("https://") || icon.starts_with("http://") {
        return Some(("icon_url", icon.to_owned()));
    }
    if icon.len() > 2 && icon.starts_with(':') && icon.ends_with(':') {
        return Some(("icon_emoji", icon.to_owned()));
    }
    emojis::get(icon)
        .and_then(emojis::Emoji::shortcode)
        .map(|s| ("icon_emoji", format!(":{s}:")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persona(name: &str) -> Persona {
        Persona {
            name: name.into(),
            icon: "👤".into(),
        }
    }

    #[test]
    fn escaping_keeps_anyone_from_being_pinged() {
        assert_eq!(
            convert("hey <!channel> and <@U123> & <!here|here>"),
            "hey &lt;!channel&gt; and &lt;@U123&gt; &amp; &lt;!here|here&gt;"
        );
        assert_eq!(unescape(&escape("a <b> & c")), "a <b> & c");
    }

    #[test]
    fn markdown_becomes_mrkdwn() {
        assert_eq!(
            convert("```rust\nfn x() {}\n```\n**bold** and __this__"),
            "```\nfn x() {}\n```\n*bold* and *this*"
        );
    }

    #[test]
    fn mentions_link_outside_code_only() {
        let aliases: HashMap<String, String> = [("krishna".to_owned(), "U1".to_owned())].into();
        assert_eq!(
            link_mentions("ask @krishna, not `@krishna` or @krishnamurthy", &aliases),
            "ask <@U1>, not `@krishna` or @krishnamurthy"
        );
        assert_eq!(
            link_mentions("```\n@krishna\n``` (@Krishna)", &aliases),
            "```\n@krishna\n``` (<@U1>)"
        );
        assert_eq!(
            link_mentions("mail a@krishna.io", &aliases),
            "mail a@krishna.io"
        );
    }

    #[test]
    fn long_texts_split_under_the_section_limit_with_fences_balanced() {
        let code: String = (0..400).map(|i| format!("line {i} of code\n")).collect();
        let text = format!("intro\n```\n{code}```\nafter");
        let parts = split(&text, SECTION_MAX);
        assert!(parts.len() >= 3, "{}", parts.len());
        for p in &parts {
            assert!(p.chars().count() <= SECTION_MAX, "{}", p.chars().count());
            assert_eq!(p.matches("```").count() % 2, 0, "unbalanced: {p}");
        }
        let joined: String = parts.concat();
        assert!(joined.contains("line 399 of code"));
        // A text without breaks is cut by characters, never inside one.
        let wide = "é".repeat(7000);
        let parts = split(&wide, SECTION_MAX);
        assert_eq!(parts.iter().map(|p| p.chars().count()).sum::<usize>(), 7000);
    }

    #[test]
    fn packing_keeps_order_and_names_each_speaker() {
        let mut q: VecDeque<Item> = (1..=5)
            .map(|i| {
                item(
                    i,
                    persona(if i % 2 == 0 { "A" } else { "B" }),
                    &format!("m{i}"),
                )
            })
            .collect();
        let m = pack(&mut q, &persona("Polaris")).expect("a message");
        assert_eq!((m.first, m.last), (1, 5));
        assert_eq!(m.persona.name, "Polaris");
        let texts: Vec<&str> = m
            .blocks
            .iter()
            .filter(|b| b["type"] == "section")
            .filter_map(|b| b["text"]["text"].as_str())
            .collect();
        assert_eq!(texts, ["m1", "m2", "m3", "m4", "m5"]);
        assert!(q.is_empty());

        let big = "x".repeat(SECTION_MAX * 3);
        let mut q: VecDeque<Item> = (1..=10).map(|i| item(i, persona("A"), &big)).collect();
        let m = pack(&mut q, &persona("Polaris")).expect("a message");
        assert_eq!(m.persona.name, "A");
        assert!(m.last < 10 && !q.is_empty());
        assert!(m.blocks.len() <= 50);
    }

    #[test]
    fn one_speakers_short_texts_share_a_section() {
        let mut q: VecDeque<Item> = (1..=1000)
            .map(|i| item(i, persona("A"), &format!("p{i}")))
            .collect();
        let m = pack(&mut q, &persona("Polaris")).expect("a message");
        let texts: Vec<&str> = m
            .blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .collect();
        assert!(texts.iter().all(|t| t.chars().count() <= SECTION_MAX));
        let lines: Vec<String> = texts
            .iter()
            .flat_map(|t| t.lines())
            .map(str::to_owned)
            .collect();
        let expected: Vec<String> = (1..=m.last).map(|i| format!("p{i}")).collect();
        assert_eq!(lines, expected);
        assert!(m.last > 900, "{}", m.last);
    }

    #[test]
    fn icons_are_shortcodes() {
        assert_eq!(
            icon_fields("📊"),
            Some(("icon_emoji", ":bar_chart:".to_owned()))
        );
        assert_eq!(
            icon_fields(":robot_face:"),
            Some(("icon_emoji", ":robot_face:".to_owned()))
        );
    }
}
