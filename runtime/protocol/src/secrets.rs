//! The secret and PII scanner: finds credentials and personal data in free text.
//!
//! This module owns the patterns (AWS keys, GitHub/Slack/Stripe/SendGrid/OpenAI-style
//! tokens, private key blocks, passwords in URLs, secret assignments in config files,
//! bearer tokens and JWTs, US SSNs, Luhn-checked card numbers) and two operations on them:
//! [`scan`], which reports what it found with a masked preview, and [`redact`], which
//! rewrites the text without it. The sidecar redacts its JSONL log with it and the named
//! agent Sage reviews events with it.
//!
//! It must never return or log a secret in full: a [`Finding`] carries offsets into the
//! caller's text and a `masked` preview only. Patterns are compiled once per process.
//!
//! Precision matters as much as recall: e-mail addresses, version numbers, UUIDs, git
//! SHAs, dates and prose that merely talks about tokens or passwords are not findings.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

/// What kind of secret or personal data a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// An AWS secret access key assigned to an `aws_secret_access_key`-like name.
    AwsSecretKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// A Slack token (`xoxb-`, `xoxp-`, `xapp-`, …) or incoming-webhook URL.
    SlackToken,
    /// A PEM private key block.
    PrivateKey,
    /// The password part of `scheme://user:password@host`.
    UrlPassword,
    /// A value assigned to a password/secret/token/key name in yaml, json, env or ini.
    ConfigSecret,
    /// A JSON Web Token.
    Jwt,
    /// The token of an `Authorization: Bearer …` header.
    BearerToken,
    /// A Stripe secret or restricted key (`sk_live_…`, `rk_test_…`).
    StripeKey,
    /// A SendGrid API key (`SG.xxx.yyy`).
    SendgridKey,
    /// An OpenAI/Anthropic-style key (`sk-…`, `sk-proj-…`, `sk-ant-…`).
    OpenaiKey,
    /// A Google API key (`AIza…`).
    GoogleApiKey,
    /// An npm access token (`npm_…`).
    NpmToken,
    /// A US social security number (`123-45-6789`).
    UsSsn,
    /// A payment card number that passes the Luhn check.
    PaymentCard,
}

impl SecretKind {
    /// A short, stable name without spaces, used in `[REDACTED:<label>]`.
    pub fn label(&self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId => "aws-access-key-id",
            SecretKind::AwsSecretKey => "aws-secret-key",
            SecretKind::GithubToken => "github-token",
            SecretKind::SlackToken => "slack-token",
            SecretKind::PrivateKey => "private-key",
            SecretKind::UrlPassword => "url-password",
            SecretKind::ConfigSecret => "config-secret",
            SecretKind::Jwt => "jwt",
            SecretKind::BearerToken => "bearer-token",
            SecretKind::StripeKey => "stripe-key",
            SecretKind::SendgridKey => "sendgrid-key",
            SecretKind::OpenaiKey => "openai-key",
            SecretKind::GoogleApiKey => "google-api-key",
            SecretKind::NpmToken => "npm-token",
            SecretKind::UsSsn => "us-ssn",
            SecretKind::PaymentCard => "payment-card",
        }
    }

    /// The kind a [`SecretKind::label`] names.
    pub fn from_label(label: &str) -> Option<SecretKind> {
        use SecretKind::*;
        [
            AwsAccessKeyId,
            AwsSecretKey,
            GithubToken,
            SlackToken,
            PrivateKey,
            UrlPassword,
            ConfigSecret,
            Jwt,
            BearerToken,
            StripeKey,
            SendgridKey,
            OpenaiKey,
            GoogleApiKey,
            NpmToken,
            UsSsn,
            PaymentCard,
        ]
        .into_iter()
        .find(|k| k.label() == label)
    }

    /// True for personal data (about a person) rather than a credential.
    pub fn is_pii(&self) -> bool {
        matches!(self, SecretKind::UsSsn | SecretKind::PaymentCard)
    }

    /// What to do about it, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            SecretKind::AwsAccessKeyId | SecretKind::AwsSecretKey => {
                "Deactivate the AWS access key in IAM, issue a new one, and load it from the environment or a role instead of code."
            }
            SecretKind::GithubToken => {
                "Revoke the GitHub token in Settings → Developer settings and use a secret store or the CI's secrets instead."
            }
            SecretKind::SlackToken => {
                "Rotate the Slack token (or webhook) in the app's settings and keep it in a secret store."
            }
            SecretKind::PrivateKey => {
                "Treat the key as compromised: generate a new key pair, replace it everywhere, and never commit key files."
            }
            SecretKind::UrlPassword => {
                "Change the password and pass it separately (environment or secret store) rather than inside the URL."
            }
            SecretKind::ConfigSecret => {
                "Rotate this credential and reference it from the environment or a secret manager instead of the config file."
            }
            SecretKind::Jwt | SecretKind::BearerToken => {
                "Treat the token as leaked: revoke the session or rotate the signing key, and keep tokens out of logs."
            }
            SecretKind::StripeKey => {
                "Roll the Stripe key in the dashboard (Developers → API keys) and load it from a secret store."
            }
            SecretKind::SendgridKey => {
                "Delete the SendGrid API key, create a new one with the least scope, and keep it in a secret store."
            }
            SecretKind::OpenaiKey => {
                "Revoke the API key in the provider's console and load a new one from the environment."
            }
            SecretKind::GoogleApiKey => {
                "Regenerate the Google API key and restrict it by API and referrer/IP."
            }
            SecretKind::NpmToken => {
                "Revoke the npm token (npm token revoke) and use a granular token from the CI's secrets."
            }
            SecretKind::UsSsn => {
                "Social security numbers are sensitive PII: remove them from logs and transcripts, mask them in output, and encrypt them at rest."
            }
            SecretKind::PaymentCard => {
                "Card numbers fall under PCI DSS: remove them, never log full numbers, and use a payment provider's tokens instead."
            }
        }
    }
}

/// One secret or piece of personal data found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is.
    pub kind: SecretKind,
    /// Byte offset of its first byte in the scanned text.
    pub start: usize,
    /// Byte offset just past its last byte.
    pub end: usize,
    /// 1-based line of `start`.
    pub line: usize,
    /// 1-based column of `start`, in characters.
    pub column: usize,
    /// A preview that never holds the secret in full, e.g. `AKIA…7XQA`.
    pub masked: String,
}

/// One pattern. When the regex has a group named `s`, that group is the secret (the
/// rest is context such as the key name); otherwise the whole match is.
struct Pattern {
    kind: SecretKind,
    re: Regex,
    /// Extra check on the secret's text; `false` drops the candidate.
    accept: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// Specific patterns come first: when two candidates overlap, the earlier pattern wins
/// (a Stripe key assigned to `STRIPE_SECRET_KEY` is a Stripe key, not a config secret).
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |kind, re: &str, accept: fn(&str) -> bool| Pattern {
        kind,
        // The patterns are constants; a typo is caught by every test in this module.
        re: Regex::new(re).unwrap_or_else(|e| panic!("secret pattern {re:?}: {e}")),
        accept,
    };
    vec![
        p(
            SecretKind::PrivateKey,
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?:\r?\n[A-Za-z0-9+/=:\- ]*)*)",
            always,
        ),
        p(
            SecretKind::AwsAccessKeyId,
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
            always,
        ),
        p(
            SecretKind::AwsSecretKey,
            r#"(?i)aws_?secret_?(?:access_?)?key\w*["']?[ \t]*(?:=|:|=>)[ \t]*["']?(?P<s>[A-Za-z0-9/+=]{40})\b"#,
            always,
        ),
        p(
            SecretKind::GithubToken,
            r"\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
            always,
        ),
        p(
            SecretKind::SlackToken,
            r"\b(?:xox[abposr]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,})|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
            always,
        ),
        p(
            SecretKind::StripeKey,
            r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b",
            always,
        ),
        p(
            SecretKind::SendgridKey,
            r"\bSG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{8,}",
            always,
        ),
        p(
            SecretKind::OpenaiKey,
            r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}",
            has_digit_and_letter,
        ),
        p(
            SecretKind::GoogleApiKey,
            r"\bAIza[0-9A-Za-z_-]{35}\b",
            always,
        ),
        p(SecretKind::NpmToken, r"\bnpm_[A-Za-z0-9]{16,}\b", always),
        p(
            SecretKind::Jwt,
            r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            always,
        ),
        p(
            SecretKind::BearerToken,
            r"(?i)\bbearer[ \t]+(?P<s>[A-Za-z0-9._~+/-]{16,}=*)",
            has_digit_and_letter,
        ),
        p(
            SecretKind::UrlPassword,
            r#"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@"'<>]+:(?P<s>[^\s@/"'<>]+)@[A-Za-z0-9.\-\[]"#,
            not_placeholder,
        ),
        p(
            SecretKind::ConfigSecret,
            // A name ending in a secret word, an assignment (yaml `:`, env/ini `=`, json
            // `":`), then a quoted value or an unquoted one up to a separator. Only
            // spaces and tabs may stand around the assignment: a yaml key with a nested
            // block (`token:\n  …`) assigns nothing.
            r#"(?i)\b[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|secret[_-]?key|signing[_-]?key|auth[_-]?key|encryption[_-]?key|client[_-]?secret|credentials?)["']?[ \t]*(?::|=|=>)[ \t]*(?:"(?P<dq>[^"\n]{1,512})"|'(?P<sq>[^'\n]{1,512})'|(?P<s>[^\s"'`,;=][^\s"'`,;]*))"#,
            always,
        ),
        p(SecretKind::UsSsn, r"\b\d{3}-\d{2}-\d{4}\b", valid_ssn),
        p(
            SecretKind::PaymentCard,
            r"\b\d(?:[ -]?\d){12,18}\b",
            valid_card,
        ),
    ]
});

/// One pass over the text tells which patterns can match at all; most texts have none.
static PREFILTER: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(PATTERNS.iter().map(|p| loose(p.re.as_str())))
        .unwrap_or_else(|e| panic!("secret pattern set: {e}"))
});

/// As [`PREFILTER`], credentials only (no personal data): what ingest redaction asks.
static CREDENTIALS: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(
        PATTERNS
            .iter()
            .filter(|p| !p.kind.is_pii())
            .map(|p| loose(p.re.as_str())),
    )
    .unwrap_or_else(|e| panic!("credential pattern set: {e}"))
});

/// A pattern for the sets above: without its word boundaries, so it matches wherever the
/// pattern does and a little more (the pattern itself decides afterwards). A Unicode `\b`
/// makes the set's fast automaton give up on any text with a non-ASCII character and fall
/// back to the slow one: on the routing texts 24.6 µs a text with them, 0.42 without.
fn loose(re: &str) -> String {
    re.replace(r"\b", "")
}

/// Whether a credential pattern matches anywhere in `text`: `false` means [`scan`] finds
/// no credential in it (it may still find personal data). One pass, no allocation.
pub fn may_hold_credentials(text: &str) -> bool {
    CREDENTIALS.is_match(text)
}

fn has_digit_and_letter(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit()) && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Values that stand for a secret without being one.
fn is_placeholder(v: &str) -> bool {
    let l = v.trim().to_ascii_lowercase();
    const WORDS: [&str; 22] = [
        "null",
        "none",
        "nil",
        "true",
        "false",
        "undefined",
        "string",
        "password",
        "secret",
        "token",
        "changeme",
        "example",
        "redacted",
        "required",
        "optional",
        "empty",
        "xxx",
        "xxxx",
        "****",
        "***",
        "...",
        "…",
    ];
    l.len() < 4
        || WORDS.contains(&l.as_str())
        || l.starts_with("your")
        || l.starts_with('<')
        || l.starts_with("${")
        || l.starts_with("{{")
        || l.starts_with('$')
        || l.starts_with('%')
        || l.contains("redacted")
        || l.chars().all(|c| c == l.chars().next().unwrap_or('x'))
}

fn not_placeholder(v: &str) -> bool {
    !is_placeholder(v)
}

/// An unquoted value is only a secret when it looks like one: code such as
/// `token = request.headers.get(…)` or prose such as `Secret: keep it safe` is not.
fn unquoted_secret(v: &str) -> bool {
    // A word at the end of a sentence is prose (`Token: expired.`), not a password.
    let v = v.trim_end_matches(['.', '!', '?']);
    if v.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    if is_placeholder(v) || v.contains(['(', ')', '[', ']', '{', '}']) {
        return false;
    }
    // A dotted identifier is an expression (`settings.SECRET_KEY`, `self.token`).
    let ident_path = v.split('.').all(|part| {
        !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    if ident_path && (v.contains('.') || !v.bytes().any(|b| b.is_ascii_digit())) {
        return false;
    }
    let classes = [
        v.bytes().any(|b| b.is_ascii_lowercase()),
        v.bytes().any(|b| b.is_ascii_uppercase()),
        v.bytes().any(|b| b.is_ascii_digit()),
        v.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    // Pure numbers are ports, counts and durations.
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    (v.len() >= 6 && classes >= 2) || v.len() >= 20
}

fn quoted_secret(v: &str) -> bool {
    !is_placeholder(v) && !v.trim().is_empty() && !v.contains(' ')
}

fn valid_ssn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 9 {
        return false;
    }
    let area = digits[0] * 100 + digits[1] * 10 + digits[2];
    let group = digits[3] * 10 + digits[4];
    let serial = digits[5..].iter().fold(0, |a, d| a * 10 + d);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn valid_card(s: &str) -> bool {
    let groups: Vec<&str> = s.split([' ', '-']).collect();
    // Separators must group the digits the way cards are printed: 4-4-4-4(-3),
    // 4-6-5 or 4-6-4. Anything else (UUID fragments, phone numbers) is not a card.
    if groups.len() > 1 {
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        let fours = lens[..lens.len() - 1].iter().all(|l| *l == 4)
            && (1..=4).contains(&lens[lens.len() - 1]);
        let amex = lens == [4, 6, 5] || lens == [4, 6, 4];
        if !(fours || amex) {
            return false;
        }
        let sep = s.contains(' ');
        if sep && s.contains('-') {
            return false;
        }
    }
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let prefix = |n: usize| digits[..n].iter().fold(0u32, |a, d| a * 10 + d);
    let network = digits[0] == 4
        || (51..=55).contains(&prefix(2))
        || (2221..=2720).contains(&prefix(4))
        || matches!(prefix(2), 34 | 37 | 36 | 38 | 35 | 65)
        || prefix(4) == 6011
        || (644..=649).contains(&prefix(3))
        || (300..=305).contains(&prefix(3));
    if !network {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A preview that shows at most a little of each end.
fn mask(kind: SecretKind, secret: &str) -> String {
    if kind == SecretKind::PrivateKey {
        let first = secret.lines().next().unwrap_or("");
        return format!("{first}… ({} lines)", secret.lines().count());
    }
    let chars: Vec<char> = secret.chars().collect();
    let n = chars.len();
    if kind.is_pii() {
        let digits: String = chars.iter().filter(|c| c.is_ascii_digit()).collect();
        let last4 = &digits[digits.len().saturating_sub(4)..];
        return format!("…{last4}");
    }
    let (head, tail) = match n {
        0..=7 => (0, 0),
        8..=15 => (2, 2),
        _ => (4, 4),
    };
    let h: String = chars[..head].iter().collect();
    let t: String = chars[n - tail..].iter().collect();
    format!("{h}…{t}")
}

/// Finds every secret and piece of personal data in `text`, ordered by position, with no
/// two findings overlapping.
pub fn scan(text: &str) -> Vec<Finding> {
    let hits = PREFILTER.matches(text);
    if !hits.matched_any() {
        return Vec::new();
    }
    // (pattern index, start, end): patterns in priority order.
    let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
    for i in hits.iter() {
        let pat = &PATTERNS[i];
        for caps in pat.re.captures_iter(text) {
            let (m, ok) = if pat.kind == SecretKind::ConfigSecret {
                if let Some(m) = caps.name("dq").or_else(|| caps.name("sq")) {
                    (m, quoted_secret(m.as_str()))
                } else if let Some(m) = caps.name("s") {
                    (m, unquoted_secret(m.as_str()))
                } else {
                    continue;
                }
            } else {
                let Some(m) = caps.name("s").or_else(|| caps.get(0)) else {
                    continue;
                };
                (m, (pat.accept)(m.as_str()))
            };
            if ok && !m.is_empty() && !glued(text, m.start(), m.end(), pat.kind) {
                candidates.push((i, m.start(), m.end()));
            }
        }
    }
    // Most specific first; a later candidate that overlaps a kept one is dropped.
    candidates.sort_by_key(|&(i, s, e)| (i, s, usize::MAX - e));
    let mut kept: Vec<(usize, usize, usize)> = Vec::new();
    for c in candidates {
        if kept.iter().all(|k| c.2 <= k.1 || c.1 >= k.2) {
            kept.push(c);
        }
    }
    kept.sort_by_key(|&(_, s, _)| s);
    let mut out = Vec::with_capacity(kept.len());
    let (mut line, mut line_start, mut pos) = (1usize, 0usize, 0usize);
    for (i, start, end) in kept {
        for (off, b) in text[pos..start].bytes().enumerate() {
            if b == b'\n' {
                line += 1;
                line_start = pos + off + 1;
            }
        }
        pos = start;
        let kind = PATTERNS[i].kind;
        out.push(Finding {
            kind,
            start,
            end,
            line,
            column: text[line_start..start].chars().count() + 1,
            masked: mask(kind, &text[start..end]),
        });
    }
    out
}

/// Numbers glued to a neighbouring `-` or digit are parts of something longer (an id, a
/// range, a phone number), not an SSN or a card.
fn glued(text: &str, start: usize, end: usize, kind: SecretKind) -> bool {
    if !kind.is_pii() {
        return false;
    }
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    matches!(before, Some('-' | '.' | '/'))
        || matches!(after, Some('-' | '/'))
        || matches!(after, Some('.') if text[end..].chars().nth(1).is_some_and(|c| c.is_ascii_digit()))
}

/// `text` with every finding replaced by `[REDACTED:<label>]`.
pub fn redact(text: &str) -> String {
    let findings = scan(text);
    if findings.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for f in findings {
        out.push_str(&text[pos..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind.label());
        out.push(']');
        pos = f.end;
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<SecretKind> {
        scan(text).into_iter().map(|f| f.kind).collect()
    }

    /// The sets run without word boundaries: they must still let through every text a
    /// pattern matches, non-ASCII neighbours included, and the patterns still decide.
    #[test]
    fn the_loose_first_look_lets_every_credential_through() {
        for text in [
            "clé d'accès — AKIAZ3MBKQ7XJ2LRWN4P « ici »",
            "ünïcödé password: hunter2hunter2",
            "token→ ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        ] {
            assert!(may_hold_credentials(text), "{text}");
            assert!(!kinds(text).is_empty(), "{text}");
        }
        assert!(!may_hold_credentials(
            "ünïcödé prose — nothing secret « here »"
        ));
        // Glued to a longer token: the set lets it through, the pattern refuses it.
        let glued = "xAKIAZ3MBKQ7XJ2LRWN4Px";
        assert!(may_hold_credentials(glued));
        assert!(kinds(glued).is_empty());
    }

    /// The credential and PII cases of the routing dataset (the passive and tricky cases
    /// Sage answers), with what the scanner must find in each.
    #[test]
    fn routing_dataset_credential_cases() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/routing-dev.jsonl"
        );
        let data = std::fs::read_to_string(path).expect("read tests/data/routing-dev.jsonl");
        let cases: std::collections::HashMap<String, String> = data
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                (
                    v["id"].as_str().unwrap().to_owned(),
                    v["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        use SecretKind::*;
        let expect: &[(&str, &[SecretKind])] = &[
            ("dev-004", &[SlackToken, SendgridKey, ConfigSecret]),
            ("dev-010", &[AwsAccessKeyId, AwsSecretKey]),
            (
                "dev-036",
                &[UrlPassword, StripeKey, AwsAccessKeyId, AwsSecretKey],
            ),
            ("dev-091", &[UsSsn, UsSsn, UsSsn]),
            ("dev-104", &[ConfigSecret, ConfigSecret]),
            ("dev-106", &[GithubToken, NpmToken]),
        ];
        for (id, want) in expect {
            let text = &cases[*id];
            let found = scan(text);
            assert_eq!(
                found.iter().map(|f| f.kind).collect::<Vec<_>>(),
                *want,
                "{id}: {found:#?}"
            );
            let red = redact(text);
            for f in &found {
                let secret = &text[f.start..f.end];
                assert!(!red.contains(secret), "{id}: {secret} survived redaction");
                assert!(!f.masked.contains(secret), "{id}: masked shows {secret}");
            }
        }
        // Sage's other cases talk about security without containing a secret.
        for (id, v) in &cases {
            if expect.iter().any(|(e, _)| e == id) {
                continue;
            }
            assert!(scan(v).is_empty(), "{id}: unexpected {:#?}", scan(v));
        }
    }

    #[test]
    fn near_misses_are_not_findings() {
        for text in [
            "please forward the signed invoice to ops@dean.io and cc billing@sage-partners.com",
            "bumped serde to 1.0.219 and tokio to 1.45.1; node v20.11.0",
            "request id 6c1f7e5e-8b1a-4c35-9d0e-1f2a3b4c5d6e failed",
            "id 12345678-1234-1234-1234-123456789012",
            "fixed in 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 and a1b2c3d",
            "the session token should live in an httpOnly cookie, not localStorage",
            "Secret: keep it safe. Token: expired.",
            "password_hash: bcrypt",
            "token_ttl: 3600",
            "token = request.headers.get(\"x-token\")",
            "password = os.environ[\"DB_PASSWORD\"]",
            "api_key: ${OPENAI_API_KEY}",
            "password: \"<your password>\"",
            "born 1987-03-14, call 555-123-4567",
            "order 4111-1111-1111 and ticket 12345",
            "git@github.com:polaris/polaris.git",
            "https://example.com:8080/path?a=b",
            "sk-learn is a library; risk-based auth",
            "the tokens: 512 and the secret sauce",
        ] {
            assert!(scan(text).is_empty(), "{text:?}: {:#?}", scan(text));
        }
    }

    #[test]
    fn each_kind_is_found_and_masked() {
        use SecretKind::*;
        let cases: &[(&str, SecretKind, &str)] = &[
            ("key AKIAIOSFODNN7EXAMPLE here", AwsAccessKeyId, "AKIA…MPLE"),
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                GithubToken,
                "ghp_…6789",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                GithubToken,
                "gith…mnop",
            ),
            ("xoxp-1234567890-abcdefghij", SlackToken, "xoxp…ghij"),
            ("xapp-1-A0123456789-abcdef", SlackToken, "xapp…cdef"),
            (
                "url https://hooks.slack.com/services/T000/B000/XXXXabcd",
                SlackToken,
                "http…abcd",
            ),
            (
                "curl -H 'Authorization: Bearer abc123def456ghi789jkl'",
                BearerToken,
                "abc1…9jkl",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sflKxwRJSMeKKF2QT4fwpM",
                Jwt,
                "eyJh…fwpM",
            ),
            ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", StripeKey, "sk_t…p7dc"),
            (
                "OPENAI_API_KEY=sk-proj-abc123DEF456ghi789JKL0",
                OpenaiKey,
                "sk-p…JKL0",
            ),
            (
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                GoogleApiKey,
                "AIza…stuv",
            ),
            ("mysql://root:s3cr3t!@localhost/db", UrlPassword, "…"),
            ("card 4111 1111 1111 1111 exp 12/29", PaymentCard, "…1111"),
            ("amex 378282246310005", PaymentCard, "…0005"),
            ("ssn: 123-45-6789", UsSsn, "…6789"),
            (
                "{\"client_secret\": \"q8Zr-2xT!pL\"}",
                ConfigSecret,
                "q8…pL",
            ),
            ("DB_PASSWORD=hunter22", ConfigSecret, "hu…22"),
            ("[db]\npassword = Sup3rS3cret", ConfigSecret, "Su…et"),
        ];
        for (text, kind, masked) in cases {
            let f = scan(text);
            assert_eq!(f.len(), 1, "{text:?}: {f:#?}");
            assert_eq!(f[0].kind, *kind, "{text:?}");
            assert_eq!(f[0].masked, *masked, "{text:?}");
            let red = redact(text);
            assert!(
                red.contains(&format!("[REDACTED:{}]", kind.label())),
                "{red}"
            );
        }
    }

    #[test]
    fn private_key_blocks_with_and_without_end() {
        let pem = "cfg:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234\nabcd==\n-----END RSA PRIVATE KEY-----\nnext";
        let f = scan(pem);
        assert_eq!(kinds(pem), vec![SecretKind::PrivateKey]);
        assert_eq!(f[0].line, 2);
        assert_eq!(f[0].column, 1);
        assert!(f[0].masked.starts_with("-----BEGIN RSA PRIVATE KEY-----…"));
        assert_eq!(redact(pem), "cfg:\n[REDACTED:private-key]\nnext");
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAABG5vbmU";
        assert_eq!(redact(cut), "[REDACTED:private-key]");
    }

    #[test]
    fn positions_are_lines_and_character_columns() {
        let text = "héllo\n  key=AKIAIOSFODNN7EXAMPLE";
        let f = scan(text);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].line, f[0].column), (2, 7));
        assert_eq!(&text[f[0].start..f[0].end], "AKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn findings_are_ordered_and_never_overlap() {
        let text = "STRIPE_SECRET_KEY=sk_live_abcdefghij0123\nAuthorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc";
        let f = scan(text);
        assert_eq!(
            f.iter().map(|f| f.kind).collect::<Vec<_>>(),
            vec![SecretKind::StripeKey, SecretKind::Jwt]
        );
        for w in f.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
    }

    #[test]
    fn luhn_and_ssn_rules() {
        assert!(valid_card("4111111111111111"));
        assert!(!valid_card("4111111111111112"));
        assert!(!valid_card("1234567812345670")); // Luhn-valid, no network
        assert!(valid_ssn("123-45-6789"));
        assert!(!valid_ssn("000-45-6789"));
        assert!(!valid_ssn("666-45-6789"));
        assert!(!valid_ssn("912-45-6789"));
        assert!(!valid_ssn("123-00-6789"));
        assert!(!valid_ssn("123-45-0000"));
    }
}
