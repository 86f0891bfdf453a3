//! Ingest-time redaction: a payload's credentials replaced by typed placeholders before
//! the event is committed, so a secret pasted into a prompt never rests on the floor.
//!
//! Every string in the payload (at any depth) goes through the scanner; each credential
//! it finds becomes `[redacted: <kind>]` and a [`Redaction`] naming where it was and a
//! short keyed hash of it, so a repeat of the same secret can be recognised without the
//! secret. The hash is an HMAC under a key of the org's that only the server holds: a
//! plain hash of a short password could be reversed by trying a dictionary.
//!
//! Personal data the scanner knows (card numbers, US SSNs) is left as written: the policy
//! is about credentials, and Sage's review still flags those.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::secrets::{self, Finding, SecretKind};

/// Hex digits of the keyed hash kept in a [`Redaction`]: enough to tell repeats apart,
/// too few to stand for the secret.
const HASH_HEX: usize = 10;

/// One credential taken out of an event's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// What it was (`aws-secret-key`, `github-token`, … as in the placeholder).
    pub kind: String,
    /// The JSON pointer of the string it was in (`/prompt`, `/tool_input/content`).
    pub path: String,
    /// Where its placeholder starts in that string, in characters.
    pub at: usize,
    /// The first hex digits of an HMAC-SHA256 of the secret under the org's key: equal for
    /// the same secret within an org.
    pub hash: String,
}

/// The placeholder written where a credential of `kind` was.
pub fn placeholder(kind: SecretKind) -> String {
    format!("[redacted: {}]", kind.label())
}

/// The placeholders in a text that ingest redaction left there, as findings (their
/// `masked` preview is the placeholder itself): what Sage reports when the secret itself
/// never reached the floor.
pub fn placeholders(text: &str) -> Vec<Finding> {
    const OPEN: &str = "[redacted: ";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(OPEN) {
        let start = from + i;
        let rest = &text[start + OPEN.len()..];
        from = start + OPEN.len();
        let Some(close) = rest.find(']') else { break };
        let Some(kind) = SecretKind::from_label(&rest[..close]) else {
            continue;
        };
        let end = start + OPEN.len() + close + 1;
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |n| n + 1);
        out.push(Finding {
            kind,
            start,
            end,
            line,
            column: text[line_start..start].chars().count() + 1,
            masked: text[start..end].to_owned(),
        });
        from = end;
    }
    out
}

/// `payload` with its credentials replaced, and what was replaced; `None` when it holds
/// none (the payload is then committed exactly as accepted).
pub fn redact_payload(payload: &RawValue, key: &[u8]) -> Option<(Box<RawValue>, Vec<Redaction>)> {
    // Most payloads hold no credential: find that out reading the strings where they lie
    // (borrowed unless escaped), and build a `Value` only for the few that might.
    let mut any = false;
    let mut de = serde_json::Deserializer::from_str(payload.get());
    serde::de::DeserializeSeed::deserialize(Strings(&mut any), &mut de).ok()?;
    if !any {
        return None;
    }
    let mut value: Value = serde_json::from_str(payload.get()).ok()?;
    let mut found = Vec::new();
    let mut path = String::new();
    walk(&mut value, &mut path, key, &mut found);
    if found.is_empty() {
        return None;
    }
    let raw = serde_json::value::to_raw_value(&value).ok()?;
    Some((raw, found))
}

/// Visits every string value of a JSON document (member names are not scanned, as in
/// [`walk`]) and sets the flag when one may hold a credential.
struct Strings<'f>(&'f mut bool);

impl<'de> serde::de::DeserializeSeed<'de> for Strings<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strings<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !*self.0 && secrets::may_hold_credentials(v) {
            *self.0 = true;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Strings(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(Strings(&mut *self.0))?;
        }
        Ok(())
    }
}

fn walk(value: &mut Value, path: &mut String, key: &[u8], found: &mut Vec<Redaction>) {
    match value {
        Value::String(s) => {
            if let Some(new) = redact_text(s, path, key, found) {
                *s = new;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(item, path, key, found);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (name, item) in map.iter_mut() {
                let len = path.len();
                path.push('/');
                // RFC 6901: `~` and `/` in a member name are escaped.
                path.push_str(&name.replace('~', "~0").replace('/', "~1"));
                walk(item, path, key, found);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The text with its credentials replaced, or `None` if it has none.
fn redact_text(text: &str, path: &str, key: &[u8], found: &mut Vec<Redaction>) -> Option<String> {
    let hits: Vec<_> = secrets::scan(text)
        .into_iter()
        .filter(|f| !f.kind.is_pii())
        .collect();
    if hits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = 0;
    let mut pos = 0;
    for f in hits {
        let before = &text[pos..f.start];
        out.push_str(before);
        chars += before.chars().count();
        found.push(Redaction {
            kind: f.kind.label().to_owned(),
            path: path.to_owned(),
            at: chars,
            hash: keyed_hash(key, &text[f.start..f.end]),
        });
        let mark = placeholder(f.kind);
        chars += mark.chars().count();
        out.push_str(&mark);
        pos = f.end;
    }
    out.push_str(&text[pos..]);
    Some(out)
}

fn keyed_hash(key: &[u8], secret: &str) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot fail.
        Err(_) => return String::new(),
    };
    mac.update(secret.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = hex::encode(digest);
    hex.truncate(HASH_HEX);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: Value) -> Box<RawValue> {
        serde_json::value::to_raw_value(&v).expect("raw")
    }

    const KEY: &[u8] = b"org-key";

    #[test]
    fn a_secret_in_a_nested_string_becomes_a_typed_placeholder() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let p = raw(serde_json::json!({
            "prompt": format!("deploy with aws_secret_access_key = {secret} please"),
            "tool_input": {"files": ["ok", "token: ghp_abcdefghijklmnopqrstuvwxyz0123456789"]},
            "n": 3
        }));
        let (out, found) = redact_payload(&p, KEY).expect("redacted");
        let text = out.get();
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("ghp_abcdefghijklmnopqrstuvwxyz0123456789"));
        let v: Value = serde_json::from_str(text).expect("json");
        let prompt = v["prompt"].as_str().expect("prompt");
        assert_eq!(
            prompt,
            "deploy with aws_secret_access_key = [redacted: aws-secret-key] please"
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].kind, "aws-secret-key");
        assert_eq!(found[0].path, "/prompt");
        assert_eq!(
            prompt.chars().skip(found[0].at).take(9).collect::<String>(),
            "[redacted"
        );
        assert_eq!(found[1].kind, "github-token");
        assert_eq!(found[1].path, "/tool_input/files/1");
        assert_eq!(found[0].hash.len(), HASH_HEX);
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn the_same_secret_hashes_alike_under_one_key_and_apart_under_another() {
        let p = raw(serde_json::json!({"a": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}));
        let q = raw(serde_json::json!({"b": "x ghp_abcdefghijklmnopqrstuvwxyz0123456789"}));
        let h = |p: &RawValue, k: &[u8]| redact_payload(p, k).expect("found").1[0].hash.clone();
        assert_eq!(h(&p, KEY), h(&q, KEY));
        assert_ne!(h(&p, KEY), h(&p, b"another org"));
    }

    #[test]
    fn payloads_without_credentials_are_left_as_accepted() {
        for v in [
            serde_json::json!({"prompt": "fix the failing test in src/lib.rs"}),
            serde_json::json!({"sha": "9fceb02d0ae598e95dc970b74767f19372d61af8", "id": "3f2504e0-4f89-11d3-9a0c-0305e82c3301"}),
            serde_json::json!({"card": "4242 4242 4242 4242", "note": "password reset flow"}),
            serde_json::json!({"data": "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgdGVzdCBkYXRh"}),
        ] {
            assert!(redact_payload(&raw(v.clone()), KEY).is_none(), "{v}");
        }
    }

    #[test]
    fn placeholders_are_found_again_with_their_kind_and_place() {
        let text =
            "ok\n  key = [redacted: aws-secret-key] and [redacted: nonsense] [redacted: jwt]";
        let found = placeholders(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].kind, SecretKind::AwsSecretKey);
        assert_eq!((found[0].line, found[0].column), (2, 9));
        assert_eq!(found[0].masked, "[redacted: aws-secret-key]");
        assert_eq!(found[1].kind, SecretKind::Jwt);
        assert!(placeholders("[redacted: jwt").is_empty());
    }

    /// The first look reads strings as JSON spells them: escapes (a newline, a quote, a
    /// `\u` letter) must not hide a credential from it, at any depth.
    #[test]
    fn escaped_strings_are_read_decoded() {
        let text =
            r#"{"n": 1, "deep": [{"x": ["line one\nkey \u0041KIAZ3MBKQ7XJ2LRWN4P \"quoted\""]}]}"#;
        let p = RawValue::from_string(text.to_owned()).expect("raw");
        let (out, found) = redact_payload(&p, KEY).expect("found through the escapes");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "aws-access-key-id");
        assert_eq!(found[0].path, "/deep/0/x/0");
        assert!(
            out.get().contains("[redacted: aws-access-key-id]"),
            "{}",
            out.get()
        );
        // A member name is not a value: nothing to redact there.
        let name =
            RawValue::from_string(r#"{"AKIAZ3MBKQ7XJ2LRWN4P": "fine", "m": null}"#.to_owned())
                .expect("raw");
        assert!(redact_payload(&name, KEY).is_none());
    }

    #[test]
    fn member_names_are_escaped_in_the_pointer() {
        let p = raw(serde_json::json!({"a/b~c": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}));
        let (_, found) = redact_payload(&p, KEY).expect("found");
        assert_eq!(found[0].path, "/a~1b~0c");
    }

    /// False positives: every routing case and knowledge document, as a hook payload.
    /// Only the cases that carry a credential (the scanner's own test lists them) may lose
    /// anything; commit hashes, UUIDs, base64 data and prose about secrets must not.
    #[test]
    fn no_false_positives_on_the_routing_cases_and_knowledge_documents() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let data = std::fs::read_to_string(format!("{root}/tests/data/routing-dev.jsonl"))
            .expect("read tests/data/routing-dev.jsonl");
        let with_credentials = ["dev-004", "dev-010", "dev-036", "dev-104", "dev-106"];
        let (mut texts, mut redacted, mut false_positives) = (0, 0, Vec::new());
        for line in data.lines() {
            let case: Value = serde_json::from_str(line).expect("case");
            let id = case["id"].as_str().expect("id");
            let p = raw(serde_json::json!({"prompt": case["text"]}));
            texts += 1;
            match redact_payload(&p, KEY) {
                Some((out, _)) if with_credentials.contains(&id) => {
                    redacted += 1;
                    assert!(out.get().contains("[redacted: "), "{id}");
                }
                Some((_, found)) => false_positives.push(format!("{id}: {found:?}")),
                None if with_credentials.contains(&id) => panic!("{id}: credential missed"),
                None => {}
            }
        }
        let mut docs = 0;
        let mut stack = vec![std::path::PathBuf::from(format!(
            "{root}/examples/knowledge"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read knowledge dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "md") {
                    let text = std::fs::read_to_string(&path).expect("read document");
                    docs += 1;
                    if let Some((_, found)) =
                        redact_payload(&raw(serde_json::json!({"text": text})), KEY)
                    {
                        false_positives.push(format!("{}: {found:?}", path.display()));
                    }
                }
            }
        }
        println!(
            "redaction: {texts} routing cases ({redacted} with credentials redacted), {docs} knowledge documents, {} false positives",
            false_positives.len()
        );
        assert!(docs > 0, "no knowledge documents found");
        assert_eq!(redacted, with_credentials.len());
        assert!(false_positives.is_empty(), "{false_positives:#?}");
    }
}
