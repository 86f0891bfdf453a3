//! Participant ids: `^(user|agent|slack):[a-z0-9][a-z0-9._-]*$`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest participant id accepted. The grammar has no bound of its own; this one keeps
/// ids usable as keys, log fields and Slack usernames.
pub const MAX_PARTICIPANT_LEN: usize = 128;

/// The three kinds of participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParticipantKind {
    /// A human with a Polaris account.
    User,
    /// An AI: a coding tool (`agent:claude`) or a named agent (`agent:dean`).
    Agent,
    /// A Slack user acting as an advisor, usually without a Polaris account.
    Slack,
}

impl ParticipantKind {
    /// The prefix before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantKind::User => "user",
            ParticipantKind::Agent => "agent",
            ParticipantKind::Slack => "slack",
        }
    }
}

/// Why a string is not a participant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Empty input.
    #[error("participant id is empty")]
    Empty,
    /// Longer than [`MAX_PARTICIPANT_LEN`].
    #[error("participant id is longer than {MAX_PARTICIPANT_LEN} characters")]
    TooLong,
    /// No `user:`, `agent:` or `slack:` prefix.
    #[error("participant id {0:?} must start with user:, agent: or slack:")]
    Kind(String),
    /// The part after the colon breaks the grammar.
    #[error(
        "participant id {0:?} must be lowercase letters, digits, '.', '_' or '-' after the colon, starting with a letter or digit"
    )]
    Name(String),
}

/// A validated participant id such as `user:manu.bansal` or `agent:dean.dbt`.
///
/// Construction always validates, so holding one is proof of the grammar.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId {
    raw: Box<str>,
    kind: ParticipantKind,
}

impl ParticipantId {
    /// Parses and validates `s`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        if s.is_empty() {
            return Err(IdentityError::Empty);
        }
        if s.len() > MAX_PARTICIPANT_LEN {
            return Err(IdentityError::TooLong);
        }
        let (kind, name) = match s.split_once(':') {
            Some(("user", n)) => (ParticipantKind::User, n),
            Some(("agent", n)) => (ParticipantKind::Agent, n),
            Some(("slack", n)) => (ParticipantKind::Slack, n),
            _ => return Err(IdentityError::Kind(s.to_owned())),
        };
        if !valid_name(name) {
            return Err(IdentityError::Name(s.to_owned()));
        }
        Ok(Self {
            raw: s.into(),
            kind,
        })
    }

    /// Builds `kind:name`, validating `name`.
    pub fn new(kind: ParticipantKind, name: &str) -> Result<Self, IdentityError> {
        Self::parse(&format!("{}:{name}", kind.as_str()))
    }

    /// The whole id, e.g. `agent:dean`.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The kind before the colon.
    pub fn kind(&self) -> ParticipantKind {
        self.kind
    }

    /// The name after the colon, e.g. `dean.dbt`.
    pub fn name(&self) -> &str {
        &self.raw[self.kind.as_str().len() + 1..]
    }

    /// An agent named as a user writes it: `agent:dean`, or just `dean` (a mention's
    /// handle). `None` for anything that is not an agent id.
    pub fn agent_named(raw: &str) -> Option<ParticipantId> {
        let id = if raw.contains(':') {
            ParticipantId::parse(raw)
        } else {
            ParticipantId::parse(&format!("agent:{raw}"))
        };
        id.ok().filter(ParticipantId::is_agent)
    }

    /// True for `agent:*`.
    pub fn is_agent(&self) -> bool {
        self.kind == ParticipantKind::Agent
    }

    /// The top-level participant: `agent:dean` for `agent:dean.dbt.models`, itself for
    /// anything without a dot.
    pub fn root(&self) -> &str {
        let prefix = self.kind.as_str().len() + 1;
        match self.raw[prefix..].find('.') {
            Some(dot) => &self.raw[..prefix + dot],
            None => &self.raw,
        }
    }

    /// True when `self` is `other` or one of its subagents (`agent:dean.dbt` is within
    /// `agent:dean`; `agent:deanna` is not).
    pub fn is_within(&self, other: &ParticipantId) -> bool {
        self.kind == other.kind
            && (self.raw == other.raw
                || (self.raw.starts_with(&*other.raw)
                    && self.raw.as_bytes().get(other.raw.len()) == Some(&b'.')))
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.raw, f)
    }
}

impl FromStr for ParticipantId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for ParticipantId {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ParticipantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_named_with_or_without_their_kind() {
        let named = |s| ParticipantId::agent_named(s).map(|p| p.to_string());
        assert_eq!(named("dean").as_deref(), Some("agent:dean"));
        assert_eq!(named("agent:dean.dbt").as_deref(), Some("agent:dean.dbt"));
        assert_eq!(named("user:manu"), None);
        assert_eq!(named("Dean!"), None);
    }

    // The original's accepted and rejected examples (reference, section 1.1).
    #[test]
    fn grammar_matches_the_original() {
        for ok in [
            "user:manu",
            "user:krishna",
            "user:a1",
            "user:some-user.name_1",
            "agent:test-writer",
            "agent:security-reviewer",
            "agent:dq_checker.v2",
            "slack:manu.bansal",
            "slack:krishna",
            "agent:dean.snowflake",
        ] {
            assert!(ParticipantId::parse(ok).is_ok(), "{ok} should parse");
        }
        for bad in [
            "manu",
            "",
            "foo:bar",
            "user:",
            "user:CAPS",
            "agent:has spaces",
            "user:-lead",
            "user:a:b",
            "slack:U0123ABC",
        ] {
            assert!(
                ParticipantId::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn long_ids_are_rejected() {
        let long = format!("user:{}", "a".repeat(MAX_PARTICIPANT_LEN));
        assert_eq!(ParticipantId::parse(&long), Err(IdentityError::TooLong));
    }

    #[test]
    fn parts_and_subagents() {
        let dbt = ParticipantId::parse("agent:dean.dbt").unwrap();
        let dean = ParticipantId::parse("agent:dean").unwrap();
        let deanna = ParticipantId::parse("agent:deanna").unwrap();
        assert_eq!(dbt.name(), "dean.dbt");
        assert_eq!(dbt.kind(), ParticipantKind::Agent);
        assert!(dbt.is_within(&dean));
        assert!(dean.is_within(&dean));
        assert!(!deanna.is_within(&dean));
        assert!(!dean.is_within(&dbt));
        assert_eq!(dbt.root(), "agent:dean");
        assert_eq!(dean.root(), "agent:dean");
        let deep = ParticipantId::parse("agent:dean.dbt.models").unwrap();
        assert_eq!(deep.root(), "agent:dean");
        assert_eq!(ParticipantId::parse("user:a.b").unwrap().root(), "user:a");
    }

    #[test]
    fn serde_validates() {
        let ok: ParticipantId = serde_json::from_str("\"user:manu\"").unwrap();
        assert_eq!(ok.as_str(), "user:manu");
        assert!(serde_json::from_str::<ParticipantId>("\"User:manu\"").is_err());
    }
}
