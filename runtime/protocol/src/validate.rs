//! Checks of what clients send, before anything reaches an actor. Every error names the
//! field, so a 400 tells the caller exactly what to fix.

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{NewEventBody, Source, TraceParent};

/// Longest project or session name. Names are path segments and Slack channel seeds.
pub const MAX_NAME_LEN: usize = 200;

/// Kinds only the floor itself writes; clients cannot post them.
const RESERVED_KINDS: [&str; 7] = [
    "driver",
    "handoff",
    "label",
    "join",
    "leave",
    "rate_limited",
    "session",
];

/// A field that failed a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path, e.g. `payload.prompt`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A new error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An event a client posted, checked and rendered to JSON by the request's own task, so
/// the session and floor, which handle events one at a time, only stamp and order it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Client id, or a fresh one.
    pub id: Uuid,
    /// Client time, if given.
    pub timestamp: Option<DateTime<Utc>>,
    /// `hook`, `agent` or `reply`.
    pub source: Source,
    /// Hook name or message type.
    pub kind: String,
    /// Claimed sender (checked against the caller by the session).
    pub sender: ParticipantId,
    /// The payload, whole, as JSON.
    pub payload: Box<RawValue>,
    /// The lease term the sender writes under (see [`NewEventBody::term`]).
    pub term: Option<i64>,
    /// The trace context it continues, if any (see [`NewEventBody::traceparent`]).
    pub traceparent: Option<TraceParent>,
}

/// Checks a project or session name: 1 to [`MAX_NAME_LEN`] characters, no control
/// characters, not only whitespace. Anything else — spaces, `/`, `%`, Unicode — is fine:
/// paths are percent-decoded.
pub fn name(field: &str, s: &str) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if s.chars().count() > MAX_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks the body of `POST …/events`.
pub fn event(body: NewEventBody) -> Result<Incoming, FieldError> {
    let source = body.source.unwrap_or(Source::Hook);
    if let Some(term) = body.term {
        if !body.sender.is_agent() {
            return Err(FieldError::new(
                "term",
                "only agents write under a lease term",
            ));
        }
        if term < 1 {
            return Err(FieldError::new("term", "must be a positive integer"));
        }
    }
    let Value::Object(obj) = &body.payload else {
        return Err(FieldError::new("payload", "must be a JSON object"));
    };
    let kind = match source {
        Source::Hook => hook_payload(obj)?,
        Source::Agent | Source::Reply => {
            if source == Source::Agent && !body.sender.is_agent() {
                return Err(FieldError::new(
                    "sender",
                    "agent events must be sent by an agent:* participant",
                ));
            }
            message_payload(obj)?
        }
        other => {
            return Err(FieldError::new(
                "source",
                format!(
                    "{} events are written by the floor itself; post hook, agent or reply",
                    other.as_str()
                ),
            ));
        }
    };
    let payload = serde_json::value::to_raw_value(&body.payload)
        .map_err(|e| FieldError::new("payload", e.to_string()))?;
    Ok(Incoming {
        id: body.id.unwrap_or_else(Uuid::now_v7),
        timestamp: body.timestamp,
        source,
        kind,
        sender: body.sender,
        payload,
        term: body.term,
        traceparent: body.traceparent,
    })
}

fn hook_payload(p: &Map<String, Value>) -> Result<String, FieldError> {
    let name = match p.get("hook_event_name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(FieldError::new(
                "payload.hook_event_name",
                "must be a string",
            ));
        }
        None => return Err(FieldError::new("payload.hook_event_name", "is required")),
    };
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(FieldError::new(
            "payload.hook_event_name",
            "must be a hook name such as UserPromptSubmit (letters, digits, '_', at most 64)",
        ));
    }
    if RESERVED_KINDS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(FieldError::new(
            "payload.hook_event_name",
            format!("{name:?} is reserved"),
        ));
    }
    require_string(p, "session_id")?;
    for f in ["transcript_path", "cwd", "permission_mode"] {
        optional_string(p, f)?;
    }
    match name.as_str() {
        "UserPromptSubmit" => require_string(p, "prompt")?,
        "PreToolUse" | "PostToolUse" => {
            require_string(p, "tool_name")?;
            match p.get("tool_input") {
                Some(Value::Object(_)) => {}
                Some(_) => return Err(FieldError::new("payload.tool_input", "must be an object")),
                None => return Err(FieldError::new("payload.tool_input", "is required")),
            }
        }
        "Stop" | "SubagentStop" => {
            optional_string(p, "stop_response")?;
            optional_string(p, "last_assistant_message")?;
            if let Some(v) = p.get("stop_hook_active")
                && !v.is_boolean()
            {
                return Err(FieldError::new(
                    "payload.stop_hook_active",
                    "must be a boolean",
                ));
            }
            if let Some(v) = p.get("raw_turn")
                && !v.is_array()
            {
                return Err(FieldError::new("payload.raw_turn", "must be an array"));
            }
        }
        _ => {}
    }
    Ok(name)
}

fn message_payload(p: &Map<String, Value>) -> Result<String, FieldError> {
    let kind = match p.get("type") {
        None => "message".to_owned(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        Some(_) => {
            return Err(FieldError::new(
                "payload.type",
                "must be a string of 1 to 64 characters",
            ));
        }
    };
    if RESERVED_KINDS.contains(&kind.as_str()) {
        return Err(FieldError::new(
            "payload.type",
            format!("{kind:?} is reserved for the floor"),
        ));
    }
    match p.get("content") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        Some(Value::String(_)) => {
            return Err(FieldError::new("payload.content", "must not be empty"));
        }
        Some(_) => return Err(FieldError::new("payload.content", "must be a string")),
        None => return Err(FieldError::new("payload.content", "is required")),
    }
    if let Some(v) = p.get("in_reply_to") {
        let ok = v.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok());
        if !ok {
            return Err(FieldError::new(
                "payload.in_reply_to",
                "must be an event id (UUID)",
            ));
        }
    }
    Ok(kind)
}

fn require_string(p: &Map<String, Value>, f: &str) -> Result<(), FieldError> {
    match p.get(f) {
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(FieldError::new(format!("payload.{f}"), "must be a string")),
        None => Err(FieldError::new(format!("payload.{f}"), "is required")),
    }
}

fn optional_string(p: &Map<String, Value>, f: &str) -> Result<(), FieldError> {
    match p.get(f) {
        None | Some(Value::String(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(FieldError::new(format!("payload.{f}"), "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(sender: &str, payload: Value) -> NewEventBody {
        NewEventBody {
            traceparent: None,
            term: None,
            id: None,
            timestamp: None,
            source: None,
            sender: ParticipantId::parse(sender).unwrap(),
            payload,
        }
    }

    #[test]
    fn any_hook_name_is_accepted_and_undeclared_fields_kept() {
        let p = json!({"hook_event_name": "Notification", "session_id": "cc", "message": "hi", "tool_use_id": "t1"});
        let e = event(body("agent:claude", p.clone())).unwrap();
        assert_eq!(e.kind, "Notification");
        assert_eq!(serde_json::from_str::<Value>(e.payload.get()).unwrap(), p);
    }

    #[test]
    fn required_fields_are_named() {
        let e = event(body(
            "user:a",
            json!({"hook_event_name": "UserPromptSubmit", "session_id": "cc"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "payload.prompt");
        let e = event(body("agent:c", json!({"hook_event_name": "PreToolUse", "session_id": "cc", "tool_name": "Bash", "tool_input": "ls"}))).unwrap_err();
        assert_eq!(e.field, "payload.tool_input");
        let e = event(body("agent:c", json!({"session_id": "cc"}))).unwrap_err();
        assert_eq!(e.field, "payload.hook_event_name");
        let e = event(body("agent:c", json!([1]))).unwrap_err();
        assert_eq!(e.field, "payload");
        let e = event(body("agent:c", json!({"hook_event_name": "Stop"}))).unwrap_err();
        assert_eq!(e.field, "payload.session_id");
    }

    #[test]
    fn reserved_and_silly_kinds_are_refused() {
        let e = event(body(
            "agent:c",
            json!({"hook_event_name": "Driver", "session_id": "c"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "payload.hook_event_name");
        let e = event(body(
            "agent:c",
            json!({"hook_event_name": "a b", "session_id": "c"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "payload.hook_event_name");
        let mut b = body("agent:dean", json!({"type": "label", "content": "x"}));
        b.source = Some(Source::Agent);
        assert_eq!(event(b).unwrap_err().field, "payload.type");
    }

    #[test]
    fn agent_messages() {
        let mut b = body(
            "agent:dean",
            json!({"type": "advice", "content": "use an index", "in_reply_to": Uuid::nil().to_string()}),
        );
        b.source = Some(Source::Agent);
        assert_eq!(event(b).unwrap().kind, "advice");
        let mut b = body("user:x", json!({"content": "hi"}));
        b.source = Some(Source::Agent);
        assert_eq!(event(b).unwrap_err().field, "sender");
        let mut b = body("user:x", json!({"content": "hi"}));
        b.source = Some(Source::System);
        assert_eq!(event(b).unwrap_err().field, "source");
    }

    #[test]
    fn names() {
        assert!(name("name", "pj").is_ok());
        assert!(name("name", "my project/ü %2F").is_ok());
        assert_eq!(name("name", " ").unwrap_err().message, "must not be empty");
        assert!(name("name", &"x".repeat(201)).is_err());
        assert!(name("name", "a\nb").is_err());
    }
}
