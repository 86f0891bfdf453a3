//! How a `polaris` process starts listening and stops: the same for the floor, the
//! sidecar and an agent process.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;

/// Binds `addr` and prints `listening on http://ADDR` (the port chosen, for `:0`) on
/// stdout: tests and scripts read that line.
pub(crate) async fn bind_announced(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    println!("listening on http://{bound}");
    std::io::stdout().flush()?;
    Ok(listener)
}

/// Completes on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
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

/// Logs on stderr (`POLARIS_LOG`, else `default_log`; text) and, when `--otlp-endpoint` or
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, traces exported as
/// `service`: how the processes that have flags rather than a config file (the sidecar,
/// `agent run`, `polaris mcp`) start.
pub(crate) fn telemetry_from_flag(
    otlp_endpoint: Option<&str>,
    env: &polaris_config::Env,
    service: &str,
    default_log: &str,
) -> anyhow::Result<polaris_telemetry::Telemetry> {
    let config =
        polaris_config::TelemetryConfig::from_flag(otlp_endpoint, "--otlp-endpoint", env, service)?;
    Ok(polaris_telemetry::init(
        polaris_telemetry::Logs {
            filter: env.get("POLARIS_LOG").unwrap_or(default_log),
            format: polaris_config::LogFormat::Text,
        },
        config.as_ref(),
    )?)
}
