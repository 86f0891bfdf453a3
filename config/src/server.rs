//! `polaris serve` configuration: [`RawServerConfig`] (the YAML as written) becomes
//! [`ServerConfig`] (parsed, checked, ready to use) in [`ServerConfig::load`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::env::Env;
use crate::error::{ConfigError, Origin};
use crate::secret::{Secret, SecretRef};
use crate::telemetry::{RawTelemetry, TelemetryConfig};

/// Smallest JWT secret accepted: HS256 with a short key can be brute-forced offline.
const MIN_SECRET_LEN: usize = 32;

/// Values given on the command line (each with its environment fallback, resolved by
/// clap). They win over the file.
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    /// `--listen` / `POLARIS_LISTEN`.
    pub listen: Option<String>,
    /// `--metrics-listen` / `POLARIS_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `--database` / `DATABASE_URL`.
    pub database: Option<String>,
    /// `--data-dir` / `POLARIS_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--config` / `POLARIS_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--agents` / `POLARIS_AGENTS`.
    pub agents: Option<PathBuf>,
    /// `--model-dir` / `POLARIS_MODEL_DIR`.
    pub model_dir: Option<PathBuf>,
}

/// The YAML file as written. Every key is optional; unknown keys are errors so a typo
/// is reported rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServerConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    database: Option<String>,
    data_dir: Option<PathBuf>,
    agents: Option<PathBuf>,
    jwt_secret: Option<String>,
    rate_limits: RawRateLimits,
    sessions: RawSessions,
    streams: RawStreams,
    max_body_bytes: Option<usize>,
    log: RawLog,
    slack: Option<RawSlack>,
    passive: RawPassive,
    telemetry: RawTelemetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPassive {
    enabled: Option<bool>,
    model_dir: Option<PathBuf>,
    queue: Option<usize>,
    threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSlack {
    bot_token: Option<String>,
    signing_secret: Option<String>,
    app_token: Option<String>,
    api_url: Option<String>,
    org: Option<String>,
    post_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRateLimits {
    writes_per_minute: Option<u32>,
    injects_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSessions {
    idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStreams {
    sse_heartbeat: Option<String>,
    ws_ping: Option<String>,
    subscriber_buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
}

/// Where the floor keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (the URL may hold a password: never log it, see
    /// [`DatabaseUrl::redacted`]).
    Postgres(Secret),
}

impl DatabaseUrl {
    /// Parses `sqlite:PATH`, `sqlite://PATH` or `postgres://…` / `postgresql://…`.
    pub fn parse(s: &str) -> Result<DatabaseUrl, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            url::Url::parse(s).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            return Ok(DatabaseUrl::Postgres(Secret::new(s.to_owned())));
        }
        if let Some(rest) = s.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() || path == ":memory:" {
                return Err(
                    "SQLite needs a file path (in-memory databases lose every event on exit)"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        Err("expected sqlite:PATH or postgres://USER@HOST/DB".into())
    }

    /// A form safe to print: the SQLite path, or the PostgreSQL URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            DatabaseUrl::Postgres(s) => match url::Url::parse(s.expose()) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        // Setting a password only fails for URLs without a host, which
                        // postgres:// URLs always have.
                        let _ = u.set_password(Some("***"));
                    }
                    u.to_string()
                }
                Err(_) => "postgres://[unparsable]".into(),
            },
        }
    }
}

/// Write rate limits per caller (participant, or address when anonymous), per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Every non-GET request. 0 turns the limit off.
    pub writes_per_minute: u32,
    /// `POST …/inject` (on top of the write limit). 0 turns the limit off.
    pub injects_per_minute: u32,
}

/// Session actor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionsConfig {
    /// A session actor with no traffic for this long stops; it comes back on demand.
    pub idle_timeout: Duration,
}

/// Stream settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsConfig {
    /// SSE comment heartbeat interval.
    pub sse_heartbeat: Duration,
    /// WebSocket ping interval.
    pub ws_ping: Duration,
    /// Events a floor keeps for live subscribers; one that falls further behind resumes
    /// from the store.
    pub subscriber_buffer: usize,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `polaris_runtime=debug,info`.
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

/// Passive monitoring: agents offering advice on events nobody addressed to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Whether it runs at all (`passive.enabled`, default on).
    pub enabled: bool,
    /// The sentence-embedding model's directory (all-MiniLM-L6-v2 in the
    /// sentence-transformers layout); `None`: only the first stage (precise signals) runs.
    pub model_dir: Option<PathBuf>,
    /// Events waiting to be scored at most (`passive.queue`, default 1024); beyond it the
    /// oldest is shed.
    pub queue: usize,
    /// Cores the model computes on at most (`passive.threads`, default: half the
    /// machine's, at least one), so the floor always has the rest.
    pub threads: usize,
}

/// The model's cores unless configured: half the machine's, at least one (why, with the
/// figures: ADR 0025).
pub fn default_model_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Everything `polaris serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where `/metrics` is served on its own, unauthenticated, if anywhere; the API's
    /// `/metrics` then requires a token like every other route.
    pub metrics_listen: Option<SocketAddr>,
    /// The store.
    pub database: DatabaseUrl,
    /// Directory for the embedded database and other local state.
    pub data_dir: PathBuf,
    /// The agents file (`agents.yaml`), if any; reloaded when it changes.
    pub agents: Option<PathBuf>,
    /// HS256 secret for bearer tokens. `None` means development mode: anonymous callers
    /// act in org `default`, which [`ServerConfig::load`] only allows on loopback.
    pub jwt_secret: Option<Secret>,
    /// Write rate limits.
    pub rate_limits: RateLimits,
    /// Session actors.
    pub sessions: SessionsConfig,
    /// Streams.
    pub streams: StreamsConfig,
    /// Largest request body accepted (bigger ones get 413).
    pub max_body_bytes: usize,
    /// Logging.
    pub log: LogConfig,
    /// The file the configuration was read from, if any.
    pub file: Option<PathBuf>,
    /// The connected Slack workspace, if one is.
    pub slack: Option<SlackConfig>,
    /// Passive monitoring.
    pub passive: PassiveConfig,
    /// Trace export, when an OTLP endpoint is configured.
    pub telemetry: Option<TelemetryConfig>,
}

/// A Slack workspace to bridge (`slack:` in the file, `SLACK_*` in the environment).
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`): posting, channels, users.
    pub bot_token: Secret,
    /// Verifies Events API requests at `POST /slack/events`.
    pub signing_secret: Option<Secret>,
    /// Socket Mode's app-level token (`xapp-…`).
    pub app_token: Option<Secret>,
    /// The Web API base, ending in `/`.
    pub api_url: String,
    /// The org whose floors the workspace shows.
    pub org: String,
    /// Least time between two messages to one channel (Slack allows about one a second).
    pub post_interval: Duration,
}

impl ServerConfig {
    /// Loads the configuration: `overrides` (flags and their env fallbacks) over the
    /// environment over the YAML file (`overrides.config`) over defaults.
    pub fn load(overrides: &ServeOverrides, env: &Env) -> Result<ServerConfig, ConfigError> {
        let (raw, file) = match &overrides.config {
            Some(path) => (read_yaml(path)?, Some(path.clone())),
            None => (RawServerConfig::default(), None),
        };
        // Semantic errors (a bad duration, an unknown log format) have no parser position;
        // they name the file and the key.
        let from_file = |_key: &str| -> Origin {
            match &file {
                Some(p) => Origin::File(p.clone(), None),
                None => Origin::Rule,
            }
        };

        let (listen_src, listen_origin) = match (&overrides.listen, &raw.listen) {
            (Some(l), _) => (l.clone(), Origin::Flag("--listen / POLARIS_LISTEN")),
            (None, Some(l)) => (l.clone(), from_file("listen")),
            (None, None) => ("127.0.0.1:4321".to_owned(), Origin::Rule),
        };
        let listen: SocketAddr = listen_src.parse().map_err(|_| {
            ConfigError::new(
                listen_origin,
                "listen",
                format!("{listen_src:?} is not an address such as 127.0.0.1:4321"),
            )
        })?;

        let metrics_listen = match (&overrides.metrics_listen, &raw.metrics_listen) {
            (Some(l), _) => Some((
                l.clone(),
                Origin::Flag("--metrics-listen / POLARIS_METRICS_LISTEN"),
            )),
            (None, Some(l)) => Some((l.clone(), from_file("metrics_listen"))),
            (None, None) => None,
        };
        let metrics_listen = match metrics_listen {
            Some((src, origin)) => Some(src.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    origin,
                    "metrics_listen",
                    format!("{src:?} is not an address such as 127.0.0.1:9464"),
                )
            })?),
            None => None,
        };

        let data_dir = overrides
            .data_dir
            .clone()
            .or(raw.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".polaris"));

        let database = match (&overrides.database, &raw.database) {
            (Some(d), _) => DatabaseUrl::parse(d).map_err(|m| {
                ConfigError::new(Origin::Flag("--database / DATABASE_URL"), "database", m)
            })?,
            (None, Some(d)) => {
                let value = if d.starts_with("env:") || d.starts_with("file:") {
                    let r = SecretRef::parse(d)
                        .map_err(|m| ConfigError::new(from_file("database"), "database", m))?;
                    r.resolve(env)
                        .map_err(|m| ConfigError::new(from_file("database"), "database", m))?
                        .expose()
                        .to_owned()
                } else {
                    d.clone()
                };
                DatabaseUrl::parse(&value)
                    .map_err(|m| ConfigError::new(from_file("database"), "database", m))?
            }
            (None, None) => DatabaseUrl::Sqlite(data_dir.join("polaris.db")),
        };

        let jwt_secret = match (env.get("POLARIS_JWT_SECRET"), &raw.jwt_secret) {
            (Some(v), _) => Some(check_secret(
                Secret::new(v.to_owned()),
                Origin::Env("POLARIS_JWT_SECRET"),
            )?),
            (None, Some(r)) => {
                let secret = SecretRef::parse(r)
                    .and_then(|r| r.resolve(env))
                    .map_err(|m| ConfigError::new(from_file("jwt_secret"), "jwt_secret", m))?;
                Some(check_secret(secret, from_file("jwt_secret"))?)
            }
            (None, None) => None,
        };

        if jwt_secret.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError::new(
                Origin::Rule,
                "",
                format!(
                    "refusing to listen on {listen} without authentication: anonymous development mode is \
                     only allowed on a loopback address. Set POLARIS_JWT_SECRET (or jwt_secret: env:NAME / \
                     file:PATH in the config file), or listen on 127.0.0.1"
                ),
            ));
        }

        let duration = |v: &Option<String>, key: &str, default: Duration| match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s)
                .map_err(|e| ConfigError::new(from_file(key), key, format!("{s:?}: {e}")))
                .and_then(|d| {
                    if d.is_zero() {
                        Err(ConfigError::new(
                            from_file(key),
                            key,
                            "must be longer than 0s",
                        ))
                    } else {
                        Ok(d)
                    }
                }),
        };

        let format = match env
            .get("POLARIS_LOG_FORMAT")
            .map(|v| (v.to_owned(), Origin::Env("POLARIS_LOG_FORMAT")))
            .or_else(|| raw.log.format.clone().map(|v| (v, from_file("log.format"))))
        {
            None => LogFormat::Text,
            Some((v, _)) if v == "text" => LogFormat::Text,
            Some((v, _)) if v == "json" => LogFormat::Json,
            Some((v, origin)) => {
                return Err(ConfigError::new(
                    origin,
                    "log.format",
                    format!("{v:?} is not one of text, json"),
                ));
            }
        };
        let level = env
            .get("POLARIS_LOG")
            .map(str::to_owned)
            .or(raw.log.level.clone())
            .unwrap_or_else(|| "info".to_owned());

        let subscriber_buffer = raw.streams.subscriber_buffer.unwrap_or(1024);
        if !(16..=1 << 20).contains(&subscriber_buffer) {
            return Err(ConfigError::new(
                from_file("streams.subscriber_buffer"),
                "streams.subscriber_buffer",
                "must be between 16 and 1048576",
            ));
        }
        let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 20);
        if max_body_bytes < 1024 {
            return Err(ConfigError::new(
                from_file("max_body_bytes"),
                "max_body_bytes",
                "must be at least 1024",
            ));
        }

        // A path in the file is relative to the file; a flag's, to the working directory.
        let agents = overrides.agents.clone().or_else(|| {
            raw.agents
                .as_ref()
                .map(|a| match file.as_ref().and_then(|f| f.parent()) {
                    Some(dir) if a.is_relative() => dir.join(a),
                    _ => a.clone(),
                })
        });

        let slack = slack_config(raw.slack.as_ref(), env, &from_file("slack"))?;
        let model_dir = overrides.model_dir.clone().or_else(|| {
            raw.passive
                .model_dir
                .as_ref()
                .map(|m| match file.as_ref().and_then(|f| f.parent()) {
                    Some(dir) if m.is_relative() => dir.join(m),
                    _ => m.clone(),
                })
        });
        let queue = raw.passive.queue.unwrap_or(1024);
        if !(1..=1 << 20).contains(&queue) {
            return Err(ConfigError::new(
                from_file("passive.queue"),
                "passive.queue",
                "must be between 1 and 1048576",
            ));
        }
        let threads = raw.passive.threads.unwrap_or_else(default_model_threads);
        if !(1..=1024).contains(&threads) {
            return Err(ConfigError::new(
                from_file("passive.threads"),
                "passive.threads",
                "must be between 1 and 1024",
            ));
        }
        let passive = PassiveConfig {
            enabled: raw.passive.enabled.unwrap_or(true),
            model_dir,
            queue,
            threads,
        };
        let telemetry = raw
            .telemetry
            .resolve(None, env, "polaris", &from_file("telemetry"))?;

        Ok(ServerConfig {
            listen,
            metrics_listen,
            database,
            data_dir,
            agents,
            jwt_secret,
            rate_limits: RateLimits {
                writes_per_minute: raw.rate_limits.writes_per_minute.unwrap_or(600),
                injects_per_minute: raw.rate_limits.injects_per_minute.unwrap_or(60),
            },
            sessions: SessionsConfig {
                idle_timeout: duration(
                    &raw.sessions.idle_timeout,
                    "sessions.idle_timeout",
                    Duration::from_secs(300),
                )?,
            },
            streams: StreamsConfig {
                sse_heartbeat: duration(
                    &raw.streams.sse_heartbeat,
                    "streams.sse_heartbeat",
                    Duration::from_secs(15),
                )?,
                ws_ping: duration(
                    &raw.streams.ws_ping,
                    "streams.ws_ping",
                    Duration::from_secs(30),
                )?,
                subscriber_buffer,
            },
            max_body_bytes,
            log: LogConfig { level, format },
            file,
            slack,
            passive,
            telemetry,
        })
    }

    /// True when anonymous callers are allowed (no secret; loopback only).
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none()
    }
}

/// The Slack section: each key from its `SLACK_*` variable (the value itself) or from the
/// file (an `env:`/`file:` reference: a token is never written in the file).
fn slack_config(
    raw: Option<&RawSlack>,
    env: &Env,
    file: &Origin,
) -> Result<Option<SlackConfig>, ConfigError> {
    let empty = RawSlack::default();
    let raw = raw.unwrap_or(&empty);
    let secret = |var: &'static str,
                  key: &str,
                  value: &Option<String>|
     -> Result<Option<Secret>, ConfigError> {
        if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
            return Ok(Some(Secret::new(v.to_owned())));
        }
        let Some(r) = value else { return Ok(None) };
        let key = format!("slack.{key}");
        SecretRef::parse(r)
            .and_then(|r| r.resolve(env))
            .map(Some)
            .map_err(|m| ConfigError::new(file.clone(), key, m))
    };
    let Some(bot_token) = secret("SLACK_BOT_TOKEN", "bot_token", &raw.bot_token)? else {
        if raw.signing_secret.is_some() || raw.app_token.is_some() || env.is_set("SLACK_APP_TOKEN")
        {
            return Err(ConfigError::new(
                Origin::Rule,
                "slack.bot_token",
                "Slack is half configured: set SLACK_BOT_TOKEN (or slack.bot_token: env:NAME / file:PATH)",
            ));
        }
        return Ok(None);
    };
    let signing_secret = secret(
        "SLACK_SIGNING_SECRET",
        "signing_secret",
        &raw.signing_secret,
    )?;
    let app_token = secret("SLACK_APP_TOKEN", "app_token", &raw.app_token)?;
    if signing_secret.is_none() && app_token.is_none() {
        return Err(ConfigError::new(
            Origin::Rule,
            "slack",
            "Slack needs a way to hear messages: SLACK_SIGNING_SECRET for the Events API \
             (POST /slack/events) or SLACK_APP_TOKEN for Socket Mode",
        ));
    }
    let mut api_url = env
        .get("SLACK_API_URL")
        .map(str::to_owned)
        .or(raw.api_url.clone())
        .unwrap_or_else(|| "https://slack.com/api/".to_owned());
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ConfigError::new(
            file.clone(),
            "slack.api_url",
            format!("{api_url:?} is not an http(s) URL"),
        ));
    }
    if !api_url.ends_with('/') {
        api_url.push('/');
    }
    let post_interval = match &raw.post_interval {
        None => Duration::from_secs(1),
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ConfigError::new(file.clone(), "slack.post_interval", format!("{s:?}: {e}"))
        })?,
    };
    Ok(Some(SlackConfig {
        bot_token,
        signing_secret,
        app_token,
        api_url,
        org: raw.org.clone().unwrap_or_else(|| "default".to_owned()),
        post_interval,
    }))
}

fn check_secret(secret: Secret, origin: Origin) -> Result<Secret, ConfigError> {
    if secret.expose().len() < MIN_SECRET_LEN {
        return Err(ConfigError::new(
            origin,
            "jwt_secret",
            format!(
                "the JWT secret must be at least {MIN_SECRET_LEN} bytes (try `openssl rand -hex 32`)"
            ),
        ));
    }
    Ok(secret)
}

fn read_yaml(path: &Path) -> Result<RawServerConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            Origin::File(path.to_owned(), None),
            "",
            format!("cannot read the config file: {e}"),
        )
    })?;
    if text.trim().is_empty() {
        return Ok(RawServerConfig::default());
    }
    let de = serde_yaml::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let pos = inner.location().map(|l| (l.line(), l.column()));
        // serde_yaml prefixes its message with the key path and position; keep the cause.
        let message = inner.to_string();
        let message = message
            .split_once(": ")
            .filter(|(head, _)| head.contains(" at line "))
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(message);
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ConfigError::new(
            Origin::File(path.to_owned(), pos),
            if key == "." { String::new() } else { key },
            message,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        yaml: Option<&str>,
        o: ServeOverrides,
        env: &[(&str, &str)],
    ) -> Result<ServerConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut o = o;
        if let Some(y) = yaml {
            let p = dir.path().join("polaris.yaml");
            std::fs::write(&p, y).unwrap();
            o.config = Some(p);
        }
        ServerConfig::load(&o, &Env::from_pairs(env.iter().copied()))
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn defaults_are_embedded_and_loopback() {
        let c = load(None, ServeOverrides::default(), &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4321");
        assert_eq!(
            c.database,
            DatabaseUrl::Sqlite(".polaris/polaris.db".into())
        );
        assert!(c.dev_mode());
        assert_eq!(c.rate_limits.writes_per_minute, 600);
        assert_eq!(c.streams.sse_heartbeat, Duration::from_secs(15));
        assert_eq!(c.max_body_bytes, 1 << 20);
    }

    #[test]
    fn slack_from_the_environment_or_references_in_the_file() {
        assert!(load(None, Default::default(), &[]).unwrap().slack.is_none());
        let c = load(
            None,
            Default::default(),
            &[
                ("SLACK_BOT_TOKEN", "xoxb-1"),
                ("SLACK_SIGNING_SECRET", "s3"),
            ],
        )
        .unwrap();
        let s = c.slack.expect("slack");
        assert_eq!(s.bot_token.expose(), "xoxb-1");
        assert_eq!(s.api_url, "https://slack.com/api/");
        assert_eq!(
            (s.org.as_str(), s.post_interval),
            ("default", Duration::from_secs(1))
        );

        let yaml = "slack:\n  bot_token: env:BOT\n  app_token: env:APP\n  api_url: http://127.0.0.1:9/api\n  post_interval: 250ms\n";
        let c = load(
            Some(yaml),
            Default::default(),
            &[("BOT", "xoxb-2"), ("APP", "xapp-2")],
        )
        .unwrap();
        let s = c.slack.expect("slack");
        assert_eq!(
            (
                s.bot_token.expose(),
                s.app_token.as_ref().map(Secret::expose)
            ),
            ("xoxb-2", Some("xapp-2"))
        );
        assert_eq!(s.api_url, "http://127.0.0.1:9/api/");
        assert_eq!(s.post_interval, Duration::from_millis(250));

        // A token written in the file is refused: references only.
        let e = load(
            Some("slack:\n  bot_token: xoxb-raw\n  signing_secret: env:S\n"),
            Default::default(),
            &[("S", "x")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("slack.bot_token"), "{e}");
        // Neither transport: no way to hear Slack.
        let e = load(None, Default::default(), &[("SLACK_BOT_TOKEN", "xoxb-1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SLACK_SIGNING_SECRET") && e.contains("SLACK_APP_TOKEN"),
            "{e}"
        );
    }

    #[test]
    fn passive_model_dir_is_relative_to_the_file_and_the_flag_wins() {
        let c = load(None, Default::default(), &[]).unwrap();
        assert_eq!(
            c.passive,
            PassiveConfig {
                enabled: true,
                model_dir: None,
                queue: 1024,
                threads: default_model_threads(),
            }
        );
        let c = load(
            Some("passive:\n  enabled: false\n  model_dir: models/minilm\n"),
            Default::default(),
            &[],
        )
        .unwrap();
        assert!(!c.passive.enabled);
        let dir = c.passive.model_dir.unwrap();
        assert!(
            dir.is_absolute() && dir.ends_with("models/minilm"),
            "{dir:?}"
        );
        let c = load(
            Some("passive:\n  model_dir: models/minilm\n"),
            ServeOverrides {
                model_dir: Some("/opt/m".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(c.passive.model_dir, Some(PathBuf::from("/opt/m")));
        let c = load(Some("passive:\n  queue: 2\n"), Default::default(), &[]).unwrap();
        assert_eq!(c.passive.queue, 2);
        let c = load(Some("passive:\n  threads: 3\n"), Default::default(), &[]).unwrap();
        assert_eq!(c.passive.threads, 3);
        // Each bad value is refused with an error naming its key.
        for (yaml, key) in [
            ("passive:\n  queue: 0\n", "passive.queue"),
            ("passive:\n  threads: 0\n", "passive.threads"),
            ("passive:\n  modeldir: x\n", "modeldir"),
        ] {
            let e = load(Some(yaml), Default::default(), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn flags_beat_the_file() {
        let c = load(
            Some("listen: 127.0.0.1:9000\ndata_dir: /srv/p\n"),
            ServeOverrides {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.database, DatabaseUrl::Sqlite("/srv/p/polaris.db".into()));
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e = load(
            Some("listen: 127.0.0.1:1\nrate_limits:\n  writes_per_minit: 5\n"),
            Default::default(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("polaris.yaml:3:"), "{e}");
        assert!(e.contains("rate_limits"), "{e}");
        assert!(e.contains("writes_per_minit"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = load(
            Some("rate_limits:\n  writes_per_minute: lots\n"),
            Default::default(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rate_limits.writes_per_minute"), "{e}");
        assert!(e.contains("polaris.yaml:2:"), "{e}");
    }

    #[test]
    fn bad_durations_and_addresses() {
        let e = load(
            Some("sessions:\n  idle_timeout: soon\n"),
            Default::default(),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "sessions.idle_timeout");
        let e = load(
            None,
            ServeOverrides {
                listen: Some("localhost".into()),
                ..Default::default()
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--listen / POLARIS_LISTEN: key `listen`"),
            "{e}"
        );
    }

    #[test]
    fn public_listen_needs_a_secret() {
        let o = ServeOverrides {
            listen: Some("0.0.0.0:4321".into()),
            ..Default::default()
        };
        let e = load(None, o.clone(), &[]).unwrap_err().to_string();
        assert!(e.contains("POLARIS_JWT_SECRET"), "{e}");
        let c = load(None, o, &[("POLARIS_JWT_SECRET", SECRET)]).unwrap();
        assert!(!c.dev_mode());
    }

    #[test]
    fn secrets_are_references_in_files_and_long_enough() {
        let e = load(Some("jwt_secret: hunter2\n"), Default::default(), &[]).unwrap_err();
        assert_eq!(e.key, "jwt_secret");
        let c = load(
            Some("jwt_secret: env:MY_JWT\n"),
            Default::default(),
            &[("MY_JWT", SECRET)],
        )
        .unwrap();
        assert_eq!(c.jwt_secret.unwrap().expose(), SECRET);
        let e = load(None, Default::default(), &[("POLARIS_JWT_SECRET", "short")]).unwrap_err();
        assert!(e.to_string().contains("at least 32 bytes"));
    }

    #[test]
    fn database_urls() {
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:pw@127.0.0.1/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db"),
            Ok(DatabaseUrl::Sqlite("/tmp/x.db".into()))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:x.db?mode=rwc"),
            Ok(DatabaseUrl::Sqlite("x.db".into()))
        );
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        let r = DatabaseUrl::parse("postgres://u:pw@127.0.0.1/db")
            .unwrap()
            .redacted();
        assert!(!r.contains("pw") && r.contains("***"), "{r}");
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/polaris.yaml");
        let o = ServeOverrides {
            config: Some(path),
            ..Default::default()
        };
        let c = ServerConfig::load(&o, &Env::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4321");
        assert_eq!(c.rate_limits.injects_per_minute, 60);
        assert_eq!(c.streams.subscriber_buffer, 1024);
    }

    #[test]
    fn telemetry_is_off_unless_an_endpoint_is_configured() {
        assert!(
            load(None, Default::default(), &[])
                .unwrap()
                .telemetry
                .is_none()
        );
        let yaml = "telemetry:\n  otlp_endpoint: http://127.0.0.1:4318\n  service_name: node-a\n  sample_ratio: 0.5\n";
        let t = load(Some(yaml), Default::default(), &[])
            .unwrap()
            .telemetry
            .unwrap();
        assert_eq!(
            (
                t.traces_url().as_str(),
                t.service_name.as_str(),
                t.sample_ratio
            ),
            ("http://127.0.0.1:4318/v1/traces", "node-a", 0.5)
        );
        // The standard variables win over the file.
        let t = load(
            Some(yaml),
            Default::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318"),
                ("OTEL_SERVICE_NAME", "n"),
            ],
        )
        .unwrap()
        .telemetry
        .unwrap();
        assert_eq!(
            (t.otlp_endpoint.as_str(), t.service_name.as_str()),
            ("http://tempo:4318", "n")
        );
        let t = load(
            None,
            Default::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
        )
        .unwrap()
        .telemetry
        .unwrap();
        assert_eq!((t.service_name.as_str(), t.sample_ratio), ("polaris", 1.0));
        let e = load(
            Some("telemetry:\n  otlp_endpoint: http://c:4318\n  sample_ratio: 2\n"),
            Default::default(),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "telemetry.sample_ratio");
        assert!(e.to_string().contains("polaris.yaml"), "{e}");
        let e = load(Some("telemetry:\n  endpoint: x\n"), Default::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("telemetry") && e.contains("endpoint"), "{e}");
    }

    #[test]
    fn log_settings() {
        let c = load(
            Some("log:\n  level: debug\n  format: json\n"),
            Default::default(),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.log,
            LogConfig {
                level: "debug".into(),
                format: LogFormat::Json
            }
        );
        let e = load(None, Default::default(), &[("POLARIS_LOG_FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("POLARIS_LOG_FORMAT"), "{e}");
    }
}
