//! Polaris configuration: read once, validated once, handed to everything else.
//!
//! This crate owns where settings come from — command-line flags (parsed by the binary),
//! the environment and an optional YAML file, in that order of precedence — and turns them
//! into typed values (socket addresses, database URLs, durations, secret references).
//! Errors name the file, the key and what is wrong. It is the only crate allowed to read
//! the process environment (clippy `disallowed-methods` enforces it), and it never logs
//! or displays a secret.
#![warn(missing_docs, unreachable_pub)]

mod env;
mod error;
mod secret;
mod server;
mod telemetry;

pub use env::Env;
pub use error::ConfigError;
pub use secret::{Secret, SecretRef};
pub use server::{
    DatabaseUrl, LogConfig, LogFormat, PassiveConfig, RateLimits, ServeOverrides, ServerConfig,
    SessionsConfig, SlackConfig, StreamsConfig, default_model_threads,
};
pub use telemetry::TelemetryConfig;
