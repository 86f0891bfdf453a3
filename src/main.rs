//! The `polaris` command: parses arguments, builds the world each subcommand needs and
//! hands it over. Nothing here knows how a floor works.

mod agent_run;
mod lifecycle;
mod models;
mod remote;

use lifecycle::{bind_announced, shutdown_signal};

/// jemalloc, whose background thread returns memory unused for a few seconds to the system:
/// a burst of subscribers or writes does not leave its high-water mark in RSS.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use polaris_agents::AgentHost;
use polaris_agents::route::Router;
use polaris_config::{Env, ServeOverrides, ServerConfig};
use polaris_registry::{AgentFile, ParticipantId};
use polaris_runtime::Store;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::auth::{Role, TokenKeys};
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
    /// Make a one-time, short-lived dashboard sign-in link for a participant (needs the
    /// server's database and JWT secret); prints the URL.
    LoginLink(LoginLinkArgs),
    /// Run one named agent as a process of its own (a container, say), beside the floor.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Exit 0 if URL answers 2xx within two seconds, else 1: a container's HEALTHCHECK
    /// (the runtime image has no curl).
    Probe {
        /// E.g. http://127.0.0.1:4330/healthz
        url: String,
    },
    /// Check, list and route named agents.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Passive monitoring's model: download it for `--model-dir` (nothing downloads at
    /// run time by itself).
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// The MCP server Claude Code starts (stdio): the polaris_* tools, talking to the
    /// local sidecar.
    Mcp(McpArgs),
    /// Resend to the floor every event the sidecar's log and write-ahead log hold that the
    /// floor does not have (same ids and times, so running it twice is harmless).
    Recover(RecoverArgs),
    /// Run the local sidecar (hooks, MCP and agents post through it), or ask it how it is.
    Sidecar(SidecarArgs),
    /// The command Claude Code runs for every hook: hook JSON on stdin, to the sidecar.
    /// Always exits 0.
    Hook(HookArgs),
    /// Connect Claude Code to Polaris: hooks, status line, MCP server and /polaris skill.
    Install(InstallArgs),
    /// Remove exactly what `polaris install` added.
    Uninstall(InstallArgs),
}

#[derive(Debug, Args)]
struct HookArgs {
    /// The sidecar's home (secret and spool) [default: POLARIS_HOME, else ~/.polaris]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print the status line for the session on stdin instead of forwarding a hook.
    #[arg(long)]
    statusline: bool,
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// Claude Code's settings file [default: ~/.claude/settings.json]
    #[arg(long, value_name = "PATH")]
    settings: Option<PathBuf>,
    /// Claude Code's user config holding the MCP servers [default: ~/.claude.json]
    #[arg(long, value_name = "PATH")]
    claude_json: Option<PathBuf>,
    /// The sidecar's home [default: POLARIS_HOME, else ~/.polaris]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    /// The sidecar's home [default: POLARIS_HOME, else ~/.polaris]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The floor's URL [default: POLARIS_SERVICE_URL, else the active profile of config.json]
    #[arg(long, value_name = "URL")]
    floor: Option<String>,
    /// Bearer token for the floor [default: POLARIS_AUTH_TOKEN, else the active profile's]
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct McpArgs {
    /// The sidecar's home, for its secret file [default: POLARIS_HOME, else ~/.polaris]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Export traces of the tool calls to this OpenTelemetry collector (OTLP/HTTP base URL)
    /// [default: $OTEL_EXPORTER_OTLP_ENDPOINT, else none]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Args)]
struct SidecarArgs {
    #[command(subcommand)]
    command: Option<SidecarCommand>,
    /// Loopback address to listen on [default: 127.0.0.1:$POLARIS_DAEMON_PORT or :4322]
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<String>,
    /// The sidecar's home [default: $POLARIS_HOME or ~/.polaris]
    #[arg(long, value_name = "DIR", global = true)]
    home: Option<PathBuf>,
    /// The floor's URL [default: $POLARIS_SERVICE_URL, else config.json's active profile]
    #[arg(long, value_name = "URL", global = true)]
    floor: Option<String>,
    /// Bearer token for the floor [default: $POLARIS_AUTH_TOKEN, else config.json]
    #[arg(long, value_name = "TOKEN", hide = true)]
    token: Option<String>,
    /// Export traces to this OpenTelemetry collector (OTLP/HTTP base URL, e.g.
    /// http://127.0.0.1:4318) [default: $OTEL_EXPORTER_OTLP_ENDPOINT, else none]
    #[arg(long, value_name = "URL", global = true)]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SidecarCommand {
    /// Pending events, dead letters, the floor and whether it is reachable.
    Status,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Host the agent and its subagents: read its floors, answer, hold its lease (a second
    /// process of the same agent waits as a standby).
    Run(agent_run::AgentRunArgs),
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Check an agents file; exits non-zero with file:line:column on the first problem.
    Validate {
        /// The agents file.
        file: PathBuf,
    },
    /// List agents with where each comes from (file, table, or both in conflict).
    List {
        /// The agents file.
        #[arg(long, env = "POLARIS_AGENTS", value_name = "FILE")]
        agents: Option<PathBuf>,
        /// Also read the agents table of this database.
        #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
        database: Option<String>,
        /// The org whose table agents to list.
        #[arg(long, default_value = "default")]
        org: String,
    },
    /// Route events read as JSON lines `{"text", "source", "sender"?}` on stdin; prints
    /// `{"mentions", "responders", "passive"}` per line, decided as the live floor decides:
    /// with no mention, the responders are the agents passive monitoring would have speak
    /// up, and `passive` holds every top-level agent's score.
    Route {
        /// The agents file.
        #[arg(long, env = "POLARIS_AGENTS", value_name = "FILE")]
        agents: PathBuf,
        /// Also print the rules behind each decision.
        #[arg(long)]
        explain: bool,
        /// The passive-monitoring model (all-MiniLM-L6-v2, sentence-transformers layout);
        /// without it only the first stage (precise signals) runs.
        #[arg(long, env = "POLARIS_MODEL_DIR", value_name = "DIR")]
        model_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "POLARIS_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Serve /metrics on this address too, without authentication (the API's /metrics
    /// then needs a token).
    #[arg(long, env = "POLARIS_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Database URL: sqlite:PATH or postgres://… [default: sqlite in --data-dir]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// Directory for the embedded database [default: ./.polaris]
    #[arg(long, env = "POLARIS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML configuration file (flags and environment win over it).
    #[arg(long, env = "POLARIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Named agents (agents.yaml); reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "POLARIS_AGENTS", value_name = "FILE")]
    agents: Option<PathBuf>,
    /// Passive monitoring's model (all-MiniLM-L6-v2, sentence-transformers layout);
    /// without it only the first stage (precise signals) runs.
    #[arg(long, env = "POLARIS_MODEL_DIR", value_name = "DIR")]
    model_dir: Option<PathBuf>,
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

#[derive(Debug, Args)]
struct LoginLinkArgs {
    /// The org the person signs in to.
    #[arg(long)]
    org: String,
    /// Who signs in, e.g. user:manu.
    #[arg(long, value_parser = parse_participant)]
    participant: ParticipantId,
    /// How long the link can be used (once), e.g. 10m, 1h.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Extra rights: admin may change project visibility and members.
    #[arg(long, value_enum, default_value = "member")]
    role: RoleArg,
    /// The dashboard's address as browsers reach it [default: http://<listen address>]
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Database URL: sqlite:PATH or postgres://… [default: sqlite in --data-dir]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// Directory for the embedded database [default: ./.polaris]
    #[arg(long, env = "POLARIS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML configuration file (flags and environment win over it).
    #[arg(long, env = "POLARIS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address the server listens on (for the default --base-url).
    #[arg(long, env = "POLARIS_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
}

fn parse_participant(s: &str) -> Result<ParticipantId, String> {
    ParticipantId::parse(s).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    // `polaris hook` runs for every prompt and tool call of every Claude Code window, so its
    // usual forms skip building the whole CLI; anything unusual (`--help`, a typo) goes to
    // clap below.
    if let Some(opts) = hook_fast_path(std::env::args_os().skip(1)) {
        return hook(&opts);
    }
    #[cfg(unix)]
    if let Some(e) = hand_to_polaris_agent() {
        eprintln!("polaris: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run_command(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polaris: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `polaris agent run …` becomes `polaris-agent run …` (the same process, by `exec`) when
/// that binary sits beside this one: an agent process then maps only an agent's code
/// (docs/benchmarks.md). Returns only if the hand-over failed; without the binary nothing
/// happens and the command runs here.
#[cfg(unix)]
fn hand_to_polaris_agent() -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.len() < 2 || args[0] != "agent" || args[1] != "run" {
        return None;
    }
    let beside = std::env::current_exe()
        .ok()?
        .with_file_name("polaris-agent");
    if !beside.is_file() {
        return None;
    }
    Some(std::process::Command::new(beside).args(&args[1..]).exec())
}

/// `polaris hook [--statusline] [--home DIR]` read without clap; `None` for anything else.
fn hook_fast_path(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<polaris_sidecar::hook::HookOptions> {
    if args.next()? != "hook" {
        return None;
    }
    let mut opts = polaris_sidecar::hook::HookOptions::default();
    while let Some(a) = args.next() {
        if a == "--statusline" && !opts.statusline {
            opts.statusline = true;
        } else if a == "--home" && opts.home.is_none() {
            opts.home = Some(PathBuf::from(args.next()?));
        } else if let Some(dir) = a.to_str()?.strip_prefix("--home=")
            && opts.home.is_none()
        {
            opts.home = Some(PathBuf::from(dir));
        } else {
            return None;
        }
    }
    Some(opts)
}

/// Runs the hook: no async runtime, no logging, and always exit status 0, because Claude
/// Code waits for it on every prompt.
fn hook(opts: &polaris_sidecar::hook::HookOptions) -> std::process::ExitCode {
    polaris_sidecar::hook::run(
        opts,
        &Env::from_process(),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::ExitCode::SUCCESS
}

fn run_command(command: Command) -> anyhow::Result<()> {
    let env = Env::from_process();
    match command {
        Command::Hook(args) => {
            hook(&polaris_sidecar::hook::HookOptions {
                home: args.home,
                statusline: args.statusline,
            });
            Ok(())
        }
        Command::Install(args) => install(args, &env, false),
        Command::Uninstall(args) => install(args, &env, true),
        Command::Serve(args) => serve(args, &env),
        Command::Token(args) => token(args, &env),
        Command::LoginLink(args) => login_link(args, &env),
        Command::Agents(cmd) => agents_command(cmd),
        Command::Models(cmd) => models::run(cmd),
        Command::Agent(AgentCommand::Run(args)) => agent_run::run(args, &env),
        Command::Sidecar(args) => sidecar(args, &env),
        Command::Mcp(args) => mcp(args, &env),
        Command::Recover(args) => recover(args, &env),
        Command::Probe { url } => probe(&url),
    }
}

fn serve(args: ServeArgs, env: &Env) -> anyhow::Result<()> {
    let overrides = ServeOverrides {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        database: args.database,
        data_dir: args.data_dir,
        config: args.config,
        agents: args.agents,
        model_dir: args.model_dir,
    };
    let config = ServerConfig::load(&overrides, env)?;
    // A broken agents file stops the start, with its file:line:column.
    let agent_file = config.agents.as_deref().map(AgentFile::load).transpose()?;
    let telemetry = polaris_telemetry::init(
        polaris_telemetry::Logs {
            filter: &config.log.level,
            format: config.log.format,
        },
        config.telemetry.as_ref(),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(run_server(config, agent_file));
    // Outside the runtime: the last spans are sent from the exporter's own thread.
    drop(rt);
    telemetry.shutdown();
    served
}

async fn run_server(config: ServerConfig, agent_file: Option<AgentFile>) -> anyhow::Result<()> {
    // Request durations as a histogram with buckets, not a summary: buckets add up across
    // nodes behind a load balancer (quantiles do not), and a sample costs a bucket search
    // instead of a quantile sketch's insert, on every request.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(api::REQUEST_DURATION.into()),
            api::REQUEST_DURATION_BUCKETS,
        )
        .expect("the bucket list is not empty")
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics disabled"))
        .ok();
    if let Some(handle) = metrics.clone() {
        // The recorder keeps every histogram sample until its upkeep folds them into the
        // summaries; without it memory grows with events × subscribers whenever nobody
        // scrapes /metrics (fan-out to 1,000 subscribers kept ~130 MiB).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }
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
    let agent_count = agent_file.as_ref().map_or(0, |f| f.agents.len());
    runtime
        .directory()
        .load_agent_file(agent_file)
        .await
        .context("joining agents to their floors")?;
    let reloader = match &config.agents {
        Some(path) => Some(
            polaris_agents::reload::watch(runtime.clone(), path.clone())
                .context("watching the agents file")?,
        ),
        None => None,
    };
    // Passive monitoring: the model loads (and its hash is checked) before anything
    // serves; a bad model directory stops the start with the file it names. The agents'
    // heads are fitted in the background once the host plans them (`polaris_passive_ready`
    // says when): the floor serves at once.
    let passive = if config.passive.enabled {
        let embedder = match &config.passive.model_dir {
            Some(dir) => {
                polaris_agents::passive::model_threads_in_the_background(config.passive.threads);
                Some(std::sync::Arc::new(
                    polaris_passive::Embedder::load(dir).context("loading passive.model_dir")?,
                ))
            }
            None => None,
        };
        tracing::info!(
            model = embedder.is_some(),
            queue = config.passive.queue,
            "passive monitoring on"
        );
        Some(polaris_agents::passive::Passive::start_tuned(
            embedder,
            polaris_agents::passive::Tuning {
                capacity: config.passive.queue,
                ..Default::default()
            },
        ))
    } else {
        None
    };
    let host = match &passive {
        Some(p) => AgentHost::start_watching(runtime.clone(), p.clone()).await,
        None => AgentHost::start(runtime.clone()).await,
    }
    .context("starting the agents")?;
    let slack = match &config.slack {
        Some(c) => Some(
            polaris_slack::SlackBridge::start(
                runtime.clone(),
                polaris_slack::BridgeOptions::new(c.clone()),
            )
            .context("starting the Slack bridge")?,
        ),
        None => None,
    };
    let mut api_config = ApiConfig::from_server(&config);
    api_config.slack = slack.as_ref().map(polaris_slack::SlackBridge::api);
    let listener = bind_announced(config.listen).await?;
    let addr = listener.local_addr()?;
    // A scraper's own address, unauthenticated; the API's `/metrics` then needs a token.
    let metrics_server = match config.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics address {at}"))?;
            println!("metrics on http://{}", l.local_addr()?);
            std::io::Write::flush(&mut std::io::stdout())?;
            Some(tokio::spawn(api::serve_metrics(
                l,
                runtime.clone(),
                metrics.clone(),
                std::future::pending(),
            )))
        }
        None => None,
    };
    tracing::info!(%addr, store = %config.database.redacted(), dev_mode = config.dev_mode(), agents = agent_count, slack = slack.is_some(), "polaris serving");
    api::serve(
        listener,
        runtime.clone(),
        api_config,
        metrics,
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped accepting; committing what was accepted");
    if let Some(m) = metrics_server {
        m.abort();
    }
    if let Some(s) = slack {
        s.shutdown().await;
    }
    if let Some(r) = reloader {
        r.abort();
    }
    host.shutdown().await;
    if let Some(p) = passive {
        p.stop();
    }
    runtime.shutdown().await;
    store.close().await;
    tracing::info!("bye");
    Ok(())
}

fn mcp(args: McpArgs, env: &Env) -> anyhow::Result<()> {
    // Stdout carries the protocol: logs go to stderr, quiet unless POLARIS_LOG asks.
    let telemetry = crate::lifecycle::telemetry_from_flag(
        args.otlp_endpoint.as_deref(),
        env,
        "polaris-mcp",
        "warn",
    )?;
    let settings = polaris_sidecar::mcp::McpSettings::from_env(args.home.as_deref(), env)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(polaris_sidecar::mcp::serve_stdio(settings));
    drop(rt);
    // The client closed stdin: send the last spans before going.
    telemetry.shutdown();
    Ok(served?)
}

fn probe(url: &str) -> anyhow::Result<()> {
    polaris_sidecar::uplink::install_tls_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let status = rt.block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?
            .get(url)
            .send()
            .await
            .map(|r| r.status())
    });
    match status {
        Ok(s) if s.is_success() => Ok(()),
        Ok(s) => bail!("{url} answered {s}"),
        Err(e) => bail!("{url}: {e}"),
    }
}

fn recover(args: RecoverArgs, env: &Env) -> anyhow::Result<()> {
    let home = polaris_sidecar::home::Home::resolve(args.home.as_deref(), env)?;
    let floor = polaris_sidecar::config::floor_settings(
        args.floor.as_deref(),
        args.token.as_deref(),
        &home,
        env,
    )?;
    let floor = polaris_sidecar::FloorClient::new(&floor.url, floor.token)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(polaris_sidecar::recover::run(&home, &floor))?;
    println!("polaris recover: {report}");
    if report.failed > 0 {
        bail!(
            "{} events could not be checked or resent; run it again once the floor answers",
            report.failed
        );
    }
    Ok(())
}

fn sidecar(args: SidecarArgs, env: &Env) -> anyhow::Result<()> {
    use polaris_sidecar::{config, home::Home};
    let home = Home::resolve(args.home.as_deref(), env)?;
    let addr = config::listen_addr(args.listen.as_deref(), env)?;
    let floor = config::floor_settings(args.floor.as_deref(), args.token.as_deref(), &home, env)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(SidecarCommand::Status) = args.command {
        return rt.block_on(polaris_sidecar::status::print(&home, addr, &floor, env));
    }
    let telemetry = crate::lifecycle::telemetry_from_flag(
        args.otlp_endpoint.as_deref(),
        env,
        "polaris-sidecar",
        "info",
    )?;
    let secret = polaris_sidecar::secret::load_or_create(&home, env)
        .with_context(|| format!("the local secret in {}", home.root().display()))?;
    let client = polaris_sidecar::FloorClient::new(&floor.url, floor.token)?;
    let served = rt.block_on(async move {
        let listener = bind_announced(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, floor = %client.base(), home = %home.root().display(), "polaris sidecar serving");
        let world = polaris_sidecar::SidecarWorld {
            home,
            floor: client,
            secret,
        };
        polaris_sidecar::run(listener, world, shutdown_signal()).await
    });
    drop(rt);
    telemetry.shutdown();
    served
}

fn install(args: InstallArgs, env: &Env, undo: bool) -> anyhow::Result<()> {
    use polaris_sidecar::install::{self, InstallOptions};
    let exe = std::env::current_exe().context("finding the polaris binary")?;
    let opts = InstallOptions::resolve(
        exe,
        args.settings,
        args.claude_json,
        args.home.as_deref(),
        env,
    )?;
    let lines = if undo {
        install::uninstall(&opts)?
    } else {
        install::install(&opts, env)?
    };
    for l in lines {
        println!("{l}");
    }
    Ok(())
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

fn login_link(args: LoginLinkArgs, env: &Env) -> anyhow::Result<()> {
    let overrides = ServeOverrides {
        listen: args.listen,
        database: args.database,
        data_dir: args.data_dir,
        config: args.config,
        agents: None,
        metrics_listen: None,
        model_dir: None,
    };
    let config = ServerConfig::load(&overrides, env)?;
    if config.jwt_secret.is_none() {
        bail!(
            "no JWT secret: this server runs in development mode, where the dashboard needs no \
             sign-in (open http://{}/); set POLARIS_JWT_SECRET (or jwt_secret in the config file) \
             as the server does",
            config.listen
        );
    }
    if args.org.trim().is_empty() {
        bail!("--org must not be empty");
    }
    let base = match args.base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None if config.listen.port() == 0 => {
            bail!("--base-url is required when the listen address has port 0")
        }
        None => format!("http://{}", config.listen),
    };
    let role = match args.role {
        RoleArg::Member => Role::Member,
        RoleArg::Admin => Role::Admin,
        RoleArg::Service => Role::Service,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let token = rt.block_on(async {
        let store = Store::open(&config.database)
            .await
            .with_context(|| format!("opening the store at {}", config.database.redacted()))?;
        let token = polaris_runtime::api::login_link(
            &store,
            args.org.trim(),
            &args.participant,
            role,
            args.ttl,
        )
        .await
        .context("recording the login link")?;
        store.close().await;
        anyhow::Ok(token)
    })?;
    println!("{base}/ui/login/{token}");
    Ok(())
}

fn agents_command(cmd: AgentsCommand) -> anyhow::Result<()> {
    match cmd {
        AgentsCommand::Validate { file } => {
            let f = AgentFile::load(&file)?;
            println!("{}: {} agents, all valid", file.display(), f.agents.len());
            for a in &f.agents {
                println!("  {:<24} {}", a.id.as_str(), a.shown_name());
            }
            Ok(())
        }
        AgentsCommand::List {
            agents,
            database,
            org,
        } => {
            let file = agents.as_deref().map(AgentFile::load).transpose()?;
            let file_agents = file.map(|f| f.agents).unwrap_or_default();
            let table = match database {
                None => Vec::new(),
                Some(url) => {
                    let url = polaris_config::DatabaseUrl::parse(&url)
                        .map_err(|e| anyhow::anyhow!("--database: {e}"))?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let store = Store::open(&url).await?;
                        let rows = store.table_agents(&org).await;
                        store.close().await;
                        anyhow::Ok(rows?)
                    })?
                }
            };
            let (listed, unreadable) = polaris_registry::merge(&file_agents, table);
            for u in &unreadable {
                eprintln!(
                    "warning: agent {} in the agents table of org {org} does not parse ({}); skipped",
                    u.id.as_deref().unwrap_or("(no id)"),
                    u.error
                );
            }
            println!(
                "{:<24} {:<24} {:<9} {:<24} PARENT",
                "ID", "NAME", "SOURCE", "TAGS"
            );
            for l in listed {
                let source = l.source.as_str();
                println!(
                    "{:<24} {:<24} {:<9} {:<24} {}",
                    l.spec.id.as_str(),
                    l.spec.shown_name(),
                    source,
                    l.spec.tags.join(","),
                    l.spec
                        .parent
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        AgentsCommand::Route {
            agents,
            explain,
            model_dir,
        } => {
            let file = AgentFile::load(&agents)?;
            let router = Router::new(&file.agents);
            let embedder = match &model_dir {
                Some(dir) => Some(std::sync::Arc::new(polaris_passive::Embedder::load(dir)?)),
                None => None,
            };
            let scorer = polaris_agents::passive::scorer(&file.agents, &file.base_dir, embedder)?;
            let stdin = std::io::stdin();
            let mut out = std::io::stdout().lock();
            let mut bad = 0usize;
            for (n, line) in std::io::BufRead::lines(stdin.lock()).enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let answer = match route_line(&router, &scorer, &line, explain) {
                    Ok(v) => v,
                    Err(e) => {
                        bad += 1;
                        serde_json::json!({"error": format!("stdin line {}: {e}", n + 1)})
                    }
                };
                writeln!(out, "{answer}")?;
            }
            if bad > 0 {
                bail!("{bad} input line(s) could not be routed");
            }
            Ok(())
        }
    }
}

/// One `polaris agents route` input line: `{"text", "source", "sender"?}`.
fn route_line(
    router: &Router,
    scorer: &polaris_passive::Scorer,
    line: &str,
    explain: bool,
) -> Result<serde_json::Value, String> {
    #[derive(serde::Deserialize)]
    struct Input {
        text: String,
        /// `tool` marks a tool call or its output (failing-job signals read only those).
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        sender: Option<ParticipantId>,
    }
    let input: Input = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let mut r = router.route(&input.text, input.sender.as_ref(), explain);
    // As on the floor: nobody speaks up unasked on an event that addresses someone, nor on
    // an agent's own post.
    let watched = r.mentions.is_empty() && !input.sender.as_ref().is_some_and(|s| s.is_agent());
    let scores = if watched {
        let one = polaris_passive::Input {
            text: &input.text,
            tool_output: input.source.as_deref() == Some("tool"),
        };
        scorer
            .score(&[one])
            .map_err(|e| e.to_string())?
            .pop()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    for s in scores.iter().filter(|s| s.fires) {
        if let Ok(id) = ParticipantId::parse(&s.agent) {
            r.responders.push(id);
        }
    }
    if explain && watched {
        r.explain.push(if scorer.has_model() {
            "nobody is addressed: passive monitoring scored it (first stage, then the model)".into()
        } else {
            "nobody is addressed: passive monitoring scored it (first stage only: no --model-dir)"
                .into()
        });
    }
    let mut v = serde_json::to_value(&r).map_err(|e| e.to_string())?;
    v["passive"] = serde_json::to_value(&scores).map_err(|e| e.to_string())?;
    Ok(v)
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
    fn sidecar_flags_parse() {
        let cli = Cli::try_parse_from([
            "polaris",
            "sidecar",
            "--listen",
            "127.0.0.1:0",
            "--home",
            "/tmp/h",
            "--floor",
            "http://127.0.0.1:4321",
        ])
        .unwrap();
        let Command::Sidecar(a) = cli.command else {
            panic!("not sidecar")
        };
        assert!(a.command.is_none());
        assert_eq!(a.listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(a.floor.as_deref(), Some("http://127.0.0.1:4321"));
        let cli =
            Cli::try_parse_from(["polaris", "sidecar", "status", "--home", "/tmp/h"]).unwrap();
        let Command::Sidecar(a) = cli.command else {
            panic!("not sidecar")
        };
        assert!(matches!(a.command, Some(SidecarCommand::Status)));
        assert_eq!(a.home, Some(PathBuf::from("/tmp/h")));
        let cli = Cli::try_parse_from([
            "polaris",
            "sidecar",
            "--otlp-endpoint",
            "http://127.0.0.1:4318",
        ])
        .unwrap();
        let Command::Sidecar(a) = cli.command else {
            panic!("not sidecar")
        };
        assert_eq!(a.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
    }

    #[test]
    fn the_hook_fast_path_reads_what_clap_reads_and_leaves_the_rest_to_it() {
        let fast = |args: &[&str]| hook_fast_path(args.iter().map(std::ffi::OsString::from));
        for args in [
            &["hook"][..],
            &["hook", "--statusline"],
            &["hook", "--home", "/h"],
            &["hook", "--home=/h", "--statusline"],
            &["hook", "--statusline", "--home", "/h d"],
        ] {
            let f = fast(args).expect("fast path");
            let cli = Cli::try_parse_from(std::iter::once("polaris").chain(args.iter().copied()))
                .unwrap();
            let Command::Hook(c) = cli.command else {
                panic!("not hook")
            };
            assert_eq!((f.home, f.statusline), (c.home, c.statusline), "{args:?}");
        }
        for args in [
            &["serve"][..],
            &[],
            &["hook", "--help"],
            &["hook", "--home"],
            &["hook", "--statusline", "--statusline"],
            &["hook", "--home", "a", "--home", "b"],
            &["hook", "extra"],
        ] {
            assert!(fast(args).is_none(), "{args:?}");
        }
    }

    #[test]
    fn mcp_flags_parse() {
        let cli = Cli::try_parse_from(["polaris", "mcp", "--home", "/tmp/h"]).unwrap();
        let Command::Mcp(a) = cli.command else {
            panic!("not mcp")
        };
        assert_eq!(a.home, Some(PathBuf::from("/tmp/h")));
        assert!(Cli::try_parse_from(["polaris", "mcp", "extra"]).is_err());
    }

    #[test]
    fn recover_flags_parse() {
        let cli = Cli::try_parse_from([
            "polaris",
            "recover",
            "--home",
            "/tmp/h",
            "--floor",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ])
        .unwrap();
        let Command::Recover(a) = cli.command else {
            panic!("not recover")
        };
        assert_eq!(a.home, Some(PathBuf::from("/tmp/h")));
        assert_eq!(a.floor.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(a.token.as_deref(), Some("t"));
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
