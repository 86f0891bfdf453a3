//! What agents need of an event's text beyond its words ([`event_text`], which lives with
//! the event in `polaris-protocol`): answer ids, hops, whole-word matching.

pub use polaris_protocol::words::event_text;
use polaris_protocol::{Event, Source};
use serde_json::Value;

/// Namespace of the ids of what agents post: `v5(namespace, "<agent>/<kind>/<event id>")`,
/// so an event handled twice is answered once.
pub const ANSWER_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8c1e_7b0a_5d2f_4e61_9a3b_2c4d_6e8f_0a1b);

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
