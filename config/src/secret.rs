//! Secrets are referenced (`env:NAME`, `file:PATH`), resolved when needed, never displayed.

use std::fmt;
use std::path::PathBuf;

use crate::env::Env;

/// Where a secret lives. Configuration files hold these, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file whose contents (trailing newline trimmed) are the secret.
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`; anything else is refused so that a literal secret
    /// never sits in a configuration file or a database row.
    pub fn parse(s: &str) -> Result<SecretRef, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("{s:?} is not a valid env:NAME reference"));
            }
            Ok(SecretRef::Env(name.to_owned()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("file: reference needs a path".into());
            }
            Ok(SecretRef::File(PathBuf::from(path)))
        } else {
            Err("secrets must be references (env:NAME or file:PATH), not literal values".into())
        }
    }

    /// Reads the secret now. An unset variable or unreadable file is an error that names
    /// the reference but not any value.
    pub fn resolve(&self, env: &Env) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => env
                .get(name)
                .map(|v| Secret::new(v.to_owned()))
                .ok_or_else(|| format!("environment variable {name} is not set")),
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|v| Secret::new(v.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A secret value. `Debug` and `Display` print `[redacted]`; only [`Secret::expose`] gives
/// the bytes, so a secret cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself. Call it only where the value is used (signing, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_literals_are_refused() {
        assert_eq!(
            SecretRef::parse("env:JWT_SECRET"),
            Ok(SecretRef::Env("JWT_SECRET".into()))
        );
        assert_eq!(
            SecretRef::parse("file:/run/secrets/jwt"),
            Ok(SecretRef::File("/run/secrets/jwt".into()))
        );
        assert!(SecretRef::parse("hunter2").is_err());
        assert!(SecretRef::parse("env:").is_err());
        assert!(SecretRef::parse("env:A-B").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn resolve_reads_env_and_files() {
        let env = Env::from_pairs([("X", "from-env")]);
        assert_eq!(
            SecretRef::Env("X".into()).resolve(&env).unwrap().expose(),
            "from-env"
        );
        assert!(SecretRef::Env("Y".into()).resolve(&env).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "from-file\n").unwrap();
        assert_eq!(
            SecretRef::File(p).resolve(&env).unwrap().expose(),
            "from-file"
        );
    }
}
