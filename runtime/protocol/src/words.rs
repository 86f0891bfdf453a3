//! The words of an event, as agents read them: the prompt, the response, the tool call
//! and its output, the advice. One rendering, shared by mention routing, the brains and
//! `polaris agents route`, so an agent answers exactly what the router saw. The floor keeps
//! it with each committed event once someone has asked (every agent on a floor reads every
//! event: the payload is parsed once, not once per agent).

use serde_json::Value;

use crate::{Event, Source};

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
