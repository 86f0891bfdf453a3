//! Wire types shared by the floor, the sidecar and remote agents.
//!
//! Plain serde types with no server code behind them: the JSON shapes of the original's
//! API (reference, section 2.3) plus `seq`, `received_at`, `kind` and the session list.
//! Timestamps go out as ISO-8601 UTC with milliseconds (`2026-06-05T10:00:00.000Z`).

use chrono::{DateTime, SubsecRound, Utc};
use polaris_registry::ParticipantId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::redaction::Redaction;
use crate::trace::{TraceParent, lenient};

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A coding tool's hook (prompt, response, tool call).
    Hook,
    /// An advisor's message into a session.
    Inject,
    /// A reply to another event.
    Reply,
    /// A named agent's post.
    Agent,
    /// A message from Slack.
    Slack,
    /// The floor itself: driver changes, labels, joins.
    System,
}

impl Source {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hook => "hook",
            Source::Inject => "inject",
            Source::Reply => "reply",
            Source::Agent => "agent",
            Source::Slack => "slack",
            Source::System => "system",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Source> {
        Some(match s {
            "hook" => Source::Hook,
            "inject" => Source::Inject,
            "reply" => Source::Reply,
            "agent" => Source::Agent,
            "slack" => Source::Slack,
            "system" => Source::System,
            _ => return None,
        })
    }
}

/// One event of a floor, as every API, stream and subscriber sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Chosen by the first writer; a retry with the same id is a no-op.
    pub id: Uuid,
    /// The project's name.
    pub project: String,
    /// The session's name, or `null` for floor-wide events.
    pub session: Option<String>,
    /// Position in the floor: gap-free, starting at 1, in commit order.
    pub seq: i64,
    /// The writer's clock.
    #[serde(with = "iso_ms")]
    pub timestamp: DateTime<Utc>,
    /// The server's clock when the event arrived.
    #[serde(with = "iso_ms")]
    pub received_at: DateTime<Utc>,
    /// Where it came from.
    pub source: Source,
    /// The hook name (`UserPromptSubmit`, `Stop`, …) or `message`, `advice`, `driver`,
    /// `handoff`, `label`, `join`, `leave`.
    pub kind: String,
    /// Who said it.
    pub sender: ParticipantId,
    /// The payload as accepted, but for credentials the project's `redact_secrets` policy
    /// replaced with `[redacted: <kind>]` before the commit.
    pub payload: Box<RawValue>,
    /// What was redacted from the payload, if anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<Redaction>,
    /// The event's trace context (W3C `traceparent`): the floor's commit span when the
    /// floor traces, else what the client sent; absent when neither did.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub traceparent: Option<TraceParent>,
}

impl Event {
    /// The payload parsed as a JSON value (`Null` if it is somehow not JSON).
    pub fn payload_value(&self) -> serde_json::Value {
        serde_json::from_str(self.payload.get()).unwrap_or(serde_json::Value::Null)
    }
}

/// A project (reference 2.3, plus `tags`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    /// Stable id; names can change.
    pub id: Uuid,
    /// Unique within the org.
    pub name: String,
    /// Linked Slack channel, if any.
    pub slack_channel_id: Option<String>,
    /// Its name.
    pub slack_channel_name: Option<String>,
    /// `org` (everyone in the org) or `members`.
    pub visibility: Visibility,
    /// Tags that named agents join by.
    pub tags: Vec<String>,
    /// Whether credentials in events are replaced by placeholders before they are
    /// committed (on unless an admin turned it off for this project).
    #[serde(default = "redact_by_default")]
    pub redact_secrets: bool,
    /// Whether agents on the floor offer advice unasked on the events nobody addressed to
    /// them (on unless an admin turned it off for this project).
    #[serde(default = "advise_by_default")]
    pub passive_advice: bool,
    /// Creation time.
    #[serde(with = "iso_ms")]
    pub created_at: DateTime<Utc>,
}

fn redact_by_default() -> bool {
    true
}

fn advise_by_default() -> bool {
    true
}

/// Who may see a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Everyone in the org.
    Org,
    /// Listed members only.
    Members,
}

impl Visibility {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Org => "org",
            Visibility::Members => "members",
        }
    }
}

/// A session (reference 2.3, plus the agent identity and activity counters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Unique within the project.
    pub name: String,
    /// The project's name.
    pub project: String,
    /// Who is at the keyboard, if anyone.
    pub driver: Option<ParticipantId>,
    /// The coding tool or named agent answering the driver.
    pub agent: Option<ParticipantId>,
    /// Free-text label.
    pub label: Option<String>,
    /// Creation time.
    #[serde(with = "iso_ms")]
    pub created_at: DateTime<Utc>,
    /// `UserPromptSubmit` events so far.
    pub prompt_count: i64,
    /// All events so far.
    pub event_count: i64,
    /// Arrival time of the newest event.
    #[serde(with = "iso_ms_opt")]
    pub last_activity: Option<DateTime<Utc>>,
}

/// A project member (reference 2.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// Who.
    pub participant_id: String,
    /// Free-text role; `admin` may change visibility and members.
    pub role: Option<String>,
}

/// An annotation: a star, tag or decision on a session (reference 2.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Annotation {
    /// Id.
    pub id: Uuid,
    /// The event annotated, if any.
    pub event_id: Option<Uuid>,
    /// Project name.
    pub project: String,
    /// Session name.
    pub session: String,
    /// Who annotated (`null` when anonymous).
    pub participant_id: Option<String>,
    /// `star`, `tag` or `decision`.
    pub kind: String,
    /// The tag or decision text.
    pub value: Option<String>,
    /// Creation time.
    #[serde(with = "iso_ms")]
    pub created_at: DateTime<Utc>,
}

/// Body of `POST …/events`. Unknown top-level keys are ignored; the payload is kept whole.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewEventBody {
    /// Optional client-chosen id (UUID) for idempotent retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Optional client timestamp; the server's arrival time is kept as `received_at`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "iso_opt_de",
        serialize_with = "iso_ms_opt::serialize"
    )]
    pub timestamp: Option<DateTime<Utc>>,
    /// `hook` (default), `agent` or `reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Who said it.
    pub sender: ParticipantId,
    /// The hook payload, or `{"type", "content", …}` for agent posts and replies.
    pub payload: serde_json::Value,
    /// For an agent that runs under a lease (one active instance in the deployment): the
    /// term of the lease it writes under. The floor refuses the event (409) when the lease
    /// of the sender's top-level agent has passed to a newer term, so an old holder that
    /// was paused, or whose answers waited in its sidecar, cannot write after a takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// The trace context the event continues (W3C `traceparent`); it wins over the
    /// request's `traceparent` header, so each event of a batch has its own. One that does
    /// not parse is ignored.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub traceparent: Option<TraceParent>,
}

/// Truncates to milliseconds, the precision every API shows.
pub fn to_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

/// Formats a time the way the API does: `2026-06-05T10:00:00.123Z`. Every event shown
/// carries two of these, so this writes digits directly instead of interpreting a
/// strftime pattern each time.
pub fn format_ms(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    }
    fn put(out: &mut String, v: u32, width: u32) {
        for i in (0..width).rev() {
            out.push(char::from(b'0' + ((v / 10u32.pow(i)) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(24);
    put(&mut out, year as u32, 4);
    out.push('-');
    put(&mut out, t.month(), 2);
    out.push('-');
    put(&mut out, t.day(), 2);
    out.push('T');
    put(&mut out, t.hour(), 2);
    out.push(':');
    put(&mut out, t.minute(), 2);
    out.push(':');
    put(&mut out, t.second(), 2);
    out.push('.');
    // A leap second shows as 60.999 rather than overflowing the field.
    put(&mut out, t.timestamp_subsec_millis().min(999), 3);
    out.push('Z');
    out
}

fn iso_opt_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| to_ms(t.with_timezone(&Utc)))
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 timestamp")))
    })
    .transpose()
}

/// `#[serde(with)]` for required timestamps.
pub mod iso_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes with millisecond precision and a `Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ms(t))
    }

    /// Accepts any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with)]` for optional timestamps.
pub mod iso_ms_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` like [`super::iso_ms`], `None` as `null`.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_ms(t)),
            None => s.serialize_none(),
        }
    }

    /// Accepts an RFC 3339 time or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_ms_timestamps() {
        let json = r#"{"id":"6c1f7e5e-8b1a-4c35-9d0e-1f2a3b4c5d6e","project":"pj","session":"fxm","seq":7,
            "timestamp":"2026-06-05T10:00:00.123456Z","received_at":"2026-06-05T10:00:01Z",
            "source":"hook","kind":"UserPromptSubmit","sender":"user:manu",
            "payload":{"hook_event_name":"UserPromptSubmit","session_id":"cc-1","prompt":"build auth"}}"#;
        let e: Event = serde_json::from_str(json).unwrap();
        let out = serde_json::to_value(&e).unwrap();
        assert_eq!(out["timestamp"], "2026-06-05T10:00:00.123Z");
        assert_eq!(out["received_at"], "2026-06-05T10:00:01.000Z");
        assert_eq!(out["payload"]["prompt"], "build auth");
        assert_eq!(out["seq"], 7);
    }

    #[test]
    fn fast_format_matches_chrono() {
        for s in [
            "2026-06-05T10:00:00.123Z",
            "0001-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2026-11-24T09:05:07.004Z",
        ] {
            let t = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(format_ms(&t), s);
            assert_eq!(
                format_ms(&t),
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            );
        }
    }

    #[test]
    fn new_event_body_names_bad_fields() {
        let bad = r#"{"sender":"User:x","payload":{}}"#;
        let err = serde_path_to_error::deserialize::<_, NewEventBody>(
            &mut serde_json::Deserializer::from_str(bad),
        )
        .unwrap_err();
        assert_eq!(err.path().to_string(), "sender");
        let bad = r#"{"sender":"user:x","payload":{},"timestamp":"yesterday"}"#;
        let err = serde_path_to_error::deserialize::<_, NewEventBody>(
            &mut serde_json::Deserializer::from_str(bad),
        )
        .unwrap_err();
        assert_eq!(err.path().to_string(), "timestamp");
    }
}
