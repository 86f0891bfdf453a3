//! The `polaris` command: parses arguments, builds the world each subcommand needs and
//! hands it over. Nothing here knows how a floor works.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use polaris_config::{Env, LogFormat, ServeOverrides, ServerConfig};
use polaris_registry::ParticipantId;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::auth::{Role, TokenKeys};
use polaris_runtime::store::Store;
use polaris_runtime::{Runtime, Settings};

/// Polaris: a shared, ordered floor for every session and named agent of a project.
#[derive(Debug, Parser)]
#[command(name = "polaris", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the floor service (HTTP API, WebSocket and SSE streams).
    Serve(ServeArgs),
    /// Mint a bearer token for a participant (needs the server's JWT secret).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "POLARIS_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Database URL: sqlite:PATH or postgres://… [default: sqlite in --data-dir]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// Directory for the embedded database [default: ./.polaris]
    #[arg(long, env = "POLARIS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML configuration file (flags and environment win over it).
    #[arg(long, env = "POLARIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Member,
    Admin,
    Service,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The org the token acts in.
    #[arg(long)]
    org: String,
    /// The participant it acts as, e.g. user:manu.bansal or agent:dean.
    #[arg(long, value_parser = parse_participant)]
    participant: ParticipantId,
    /// How long it is valid, e.g. 30d, 12h.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Extra rights: admin may change project visibility and members; service may post
    /// as any participant.
    #[arg(long, value_enum, default_value = "member")]
    role: RoleArg,
    /// YAML configuration file holding `jwt_secret` (POLARIS_JWT_SECRET wins).
    #[arg(long, env = "POLARIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

fn parse_participant(s: &str) -> Result<ParticipantId, String> {
    ParticipantId::parse(s).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let result = match cli.command {
        Command::Serve(args) => serve(args, &env),
        Command::Token(args) => token(args, &env),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polaris: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs, env: &Env) -> anyhow::Result<()> {
    let overrides = ServeOverrides {
        listen: args.listen,
        database: args.database,
        data_dir: args.data_dir,
        config: args.config,
    };
    let config = ServerConfig::load(&overrides, env)?;
    init_tracing(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_server(config))
}

async fn run_server(config: ServerConfig) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    let store = Store::open(&config.database)
        .await
        .with_context(|| format!("opening the store at {}", config.database.redacted()))?;
    let runtime = Runtime::start(
        store.clone(),
        Settings {
            session_idle: config.sessions.idle_timeout,
            subscriber_buffer: config.streams.subscriber_buffer,
        },
    )
    .await
    .context("starting the supervisor")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, store = %config.database.redacted(), dev_mode = config.dev_mode(), "polaris serving");
    api::serve(
        listener,
        runtime.clone(),
        ApiConfig::from_server(&config),
        metrics,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped accepting; committing what was accepted");
    runtime.shutdown().await;
    store.close().await;
    tracing::info!("bye");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn init_tracing(config: &ServerConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn token(args: TokenArgs, env: &Env) -> anyhow::Result<()> {
    let overrides = ServeOverrides {
        config: args.config,
        ..Default::default()
    };
    let config = ServerConfig::load(&overrides, env)?;
    let Some(secret) = &config.jwt_secret else {
        bail!(
            "no JWT secret: set POLARIS_JWT_SECRET (or jwt_secret in the config file) to the server's secret"
        );
    };
    if args.org.is_empty() {
        bail!("--org must not be empty");
    }
    let role = match args.role {
        RoleArg::Member => Role::Member,
        RoleArg::Admin => Role::Admin,
        RoleArg::Service => Role::Service,
    };
    let token = TokenKeys::new(secret).mint(&args.org, &args.participant, role, args.ttl)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from([
            "polaris",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(a.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(a.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn token_flags_parse_and_validate() {
        let cli = Cli::try_parse_from([
            "polaris",
            "token",
            "--org",
            "acme",
            "--participant",
            "user:manu",
            "--ttl",
            "12h",
            "--role",
            "admin",
        ])
        .unwrap();
        let Command::Token(a) = cli.command else {
            panic!("not token")
        };
        assert_eq!(a.ttl, Duration::from_secs(12 * 3600));
        assert!(matches!(a.role, RoleArg::Admin));
        let err =
            Cli::try_parse_from(["polaris", "token", "--org", "acme", "--participant", "Manu"])
                .unwrap_err();
        assert!(err.to_string().contains("user:, agent: or slack:"), "{err}");
    }
}
