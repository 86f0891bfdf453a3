//! The words of an event, as agents read them: the prompt, the response, the tool call
//! and its output, the advice. One rendering, shared by mention routing, the brains and
//! `polaris agents route`, so an agent answers exactly what the router saw.

use polaris_protocol::{Event, Source};
use serde_json::Value;

/// Namespace of the ids of what agents post: `v5(namespace, "<agent>/<kind>/<event id>")`,
/// so an event handled twice is answered once.
pub const ANSWER_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8c1e_7b0a_5d2f_4e61_9a3b_2c4d_6e8f_0a1b);

/// Longest tool input or output rendered (a large file write is mostly noise).
const MAX_TOOL_TEXT: usize = 8 * 1024;

/// The text of an event. Tool events render as `[PreToolUse] Tool: <input>` and
/// `[PostToolUse] Tool: <input>\n<output>`, as the routing dataset writes them.
pub fn event_text(e: &Event) -> String {
    let p = e.payload_value();
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
    match e.source {
        Source::Hook => match e.kind.as_str() {
            "UserPromptSubmit" => s("prompt").to_owned(),
            "Stop" | "SubagentStop" => {
                let r = s("stop_response");
                if r.is_empty() {
                    s("last_assistant_message").to_owned()
                } else {
                    r.to_owned()
                }
            }
            "PreToolUse" | "PostToolUse" => {
                let mut out = format!(
                    "[{}] {}: {}",
                    e.kind,
                    s("tool_name"),
                    render(p.get("tool_input"))
                );
                if e.kind == "PostToolUse" {
                    let output = p.get("tool_response").or_else(|| p.get("tool_result"));
                    if output.is_some() {
                        out.push('\n');
                        out.push_str(&render(output));
                    }
                }
                truncate(out, MAX_TOOL_TEXT * 2)
            }
            _ => s("message").to_owned(),
        },
        _ => s("content").to_owned(),
    }
}

/// A tool input or output as text: commands and contents as they are, other JSON compact.
fn render(v: Option<&Value>) -> String {
    let out = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => {
            // The fields people read: a command, a path and what is written to it, output.
            let mut parts: Vec<String> = Vec::new();
            for k in ["command", "file_path", "path", "pattern", "query", "url"] {
                if let Some(x) = m.get(k).and_then(Value::as_str) {
                    parts.push(x.to_owned());
                }
            }
            for k in [
                "content",
                "new_string",
                "stdout",
                "stderr",
                "output",
                "result",
            ] {
                if let Some(x) = m.get(k).and_then(Value::as_str)
                    && !x.is_empty()
                {
                    parts.push(x.to_owned());
                }
            }
            if parts.is_empty() {
                Value::Object(m.clone()).to_string()
            } else {
                parts.join("\n")
            }
        }
        Some(other) => other.to_string(),
    };
    truncate(out, MAX_TOOL_TEXT)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// How many agent-to-agent answers led to this event (0 for anything a human or tool wrote).
pub fn hops(e: &Event) -> u32 {
    if e.source != Source::Agent {
        return 0;
    }
    e.payload_value()
        .get("hops")
        .and_then(Value::as_u64)
        .map_or(1, |h| h.min(u64::from(u32::MAX)) as u32)
}

/// True when `text` holds `word` (a word or a phrase) as whole words: "tables" is not in
/// "vegetables", "order" not in "order_items".
pub(crate) fn contains_word(text: &str, word: &str) -> bool {
    let b = text.as_bytes();
    text.match_indices(word).any(|(i, _)| {
        let end = i + word.len();
        (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            && (end >= b.len() || !(b[end].is_ascii_alphanumeric() || b[end] == b'_'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(source: &str, kind: &str, payload: Value) -> Event {
        serde_json::from_value(json!({
            "id": "00000000-0000-0000-0000-000000000001", "project": "p", "session": "s", "seq": 1,
            "timestamp": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
            "source": source, "kind": kind, "sender": "user:a", "payload": payload
        }))
        .unwrap()
    }

    #[test]
    fn texts_of_each_kind() {
        assert_eq!(
            event_text(&ev(
                "hook",
                "UserPromptSubmit",
                json!({"prompt": "hi @dean"})
            )),
            "hi @dean"
        );
        assert_eq!(
            event_text(&ev(
                "hook",
                "Stop",
                json!({"last_assistant_message": "done"})
            )),
            "done"
        );
        let t = event_text(&ev(
            "hook",
            "PostToolUse",
            json!({"tool_name": "Bash", "tool_input": {"command": "dbt test"}, "tool_response": {"stdout": "FAIL 1"}}),
        ));
        assert_eq!(t, "[PostToolUse] Bash: dbt test\nFAIL 1");
        assert_eq!(
            event_text(&ev("inject", "message", json!({"content": "use RS256"}))),
            "use RS256"
        );
        assert_eq!(
            hops(&ev("agent", "message", json!({"content": "x", "hops": 2}))),
            2
        );
        assert_eq!(
            hops(&ev(
                "hook",
                "UserPromptSubmit",
                json!({"prompt": "x", "hops": 9})
            )),
            0
        );
    }

    #[test]
    fn words_match_whole() {
        assert!(contains_word("ddl of orders please", "orders"));
        assert!(!contains_word("ddl of order_items", "order"));
        assert!(!contains_word("what vegetables", "tables"));
    }
}
