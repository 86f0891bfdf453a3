//! The trace context an event carries across processes: a W3C `traceparent`
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>).
//!
//! A hop that traces (the sidecar's acknowledgement, the floor's commit, an agent's answer)
//! makes its span a child of the context the event arrived with and passes its own on; a
//! hop that does not passes the context through unchanged. A context that does not parse
//! is ignored, as the W3C recommendation asks: tracing never makes a request fail.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A valid `traceparent`, kept in its version-00 text form
/// (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// The length of a version-00 `traceparent`.
const LEN: usize = 55;

impl TraceParent {
    /// Parses a header or field value; `None` for anything the recommendation says to
    /// ignore (bad length or characters, upper-case hex, all-zero ids, version `ff`). A
    /// later version is read by its version-00 prefix and kept as version 00.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim_matches([' ', '\t']);
        let b = s.as_bytes();
        if b.len() < LEN || (b.len() > LEN && b[LEN] != b'-') {
            return None;
        }
        let hex =
            |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let zero = |r: std::ops::Range<usize>| b[r].iter().all(|&c| c == b'0');
        let version_ok = hex(0..2) && &s[..2] != "ff" && (b.len() == LEN || &s[..2] != "00");
        let shape_ok = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
        if !version_ok || !shape_ok || !hex(3..35) || !hex(36..52) || !hex(53..55) {
            return None;
        }
        if zero(3..35) || zero(36..52) {
            return None;
        }
        Some(TraceParent(format!("00{}", &s[2..LEN])))
    }

    /// Builds one from a span's ids and flags (the `sampled` bit is `0x01`).
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<TraceParent> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let mut s = String::with_capacity(LEN);
        s.push_str("00-");
        push_hex(&mut s, &trace_id);
        s.push('-');
        push_hex(&mut s, &span_id);
        s.push('-');
        push_hex(&mut s, &[flags]);
        Some(TraceParent(s))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }

    /// The id of the span this context continues from, 16 lower-case hex digits.
    pub fn parent_id(&self) -> &str {
        &self.0[36..52]
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(&self.0[53..55], 16).unwrap_or(0)
    }

    /// The trace id as bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        let mut out = [0; 16];
        decode_hex(self.trace_id(), &mut out);
        out
    }

    /// The parent id as bytes.
    pub fn parent_id_bytes(&self) -> [u8; 8] {
        let mut out = [0; 8];
        decode_hex(self.parent_id(), &mut out);
        out
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

fn decode_hex(s: &str, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = s
            .get(2 * i..2 * i + 2)
            .and_then(|d| u8::from_str_radix(d, 16).ok())
            .unwrap_or(0);
    }
}

impl std::fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Strict: a value that is not a valid `traceparent` is an error. Fields that clients
/// fill use [`lenient`] instead.
impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TraceParent, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceParent::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a W3C traceparent")))
    }
}

/// `#[serde(deserialize_with)]` for an optional `traceparent` a client sends: anything
/// that is not a valid one (a malformed string, a number) reads as absent, never as an
/// error.
pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceParent>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Any>::deserialize(d)? {
        Some(Any::Text(s)) => TraceParent::parse(&s),
        Some(Any::Other(_)) | None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_recommendations_example_and_refuses_what_it_says_to_ignore() {
        let t = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(t.as_str(), GOOD);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id(), "00f067aa0ba902b7");
        assert_eq!(t.flags(), 1);
        assert_eq!(
            TraceParent::from_parts(t.trace_id_bytes(), t.parent_id_bytes(), 1),
            Some(t)
        );
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its version-00 part.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(TraceParent::parse(later).expect("later").as_str(), GOOD);
        assert!(TraceParent::from_parts([0; 16], [1; 8], 1).is_none());
    }

    #[test]
    fn a_clients_field_is_read_leniently() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default, deserialize_with = "lenient")]
            traceparent: Option<TraceParent>,
        }
        let read = |j: &str| {
            serde_json::from_str::<Body>(j)
                .expect("never an error")
                .traceparent
        };
        assert_eq!(
            read(&format!(r#"{{"traceparent":"{GOOD}"}}"#))
                .unwrap()
                .as_str(),
            GOOD
        );
        assert_eq!(read(r#"{"traceparent":"nope"}"#), None);
        assert_eq!(read(r#"{"traceparent":42}"#), None);
        assert_eq!(read(r#"{"traceparent":null}"#), None);
        assert_eq!(read("{}"), None);
        assert!(serde_json::from_str::<TraceParent>(r#""nope""#).is_err());
    }
}
