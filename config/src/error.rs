//! One error type that always says where the bad value came from.

use std::fmt;
use std::path::PathBuf;

/// A configuration value is missing, unreadable or invalid.
#[derive(Debug)]
pub struct ConfigError {
    /// Where the value came from: a file (with line and column when known), a flag or an
    /// environment variable.
    pub origin: Origin,
    /// The dotted key, e.g. `rate_limits.writes_per_minute`.
    pub key: String,
    /// What is wrong, in plain words.
    pub message: String,
}

/// Where a configuration value came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A YAML file, with a 1-based line and column when the parser knows them.
    File(PathBuf, Option<(usize, usize)>),
    /// A command-line flag or its environment fallback, e.g. `--listen / POLARIS_LISTEN`.
    Flag(&'static str),
    /// An environment variable without a flag.
    Env(&'static str),
    /// A value derived from others (a cross-key rule such as "non-loopback needs a secret").
    Rule,
}

impl ConfigError {
    pub(crate) fn new(origin: Origin, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            origin,
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File(path, Some((line, col))) => {
                write!(f, "{}:{line}:{col}: ", path.display())?
            }
            Origin::File(path, None) => write!(f, "{}: ", path.display())?,
            Origin::Flag(flag) => write!(f, "{flag}: ")?,
            Origin::Env(var) => write!(f, "{var}: ")?,
            Origin::Rule => {}
        }
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
