//! The daemon sidecar: the one way a participant's events reach a floor.
//!
//! A developer's Claude Code hooks and MCP server, and an agent in its container, hand their
//! events to a sidecar on loopback. This crate owns that loopback hook API, the write-ahead
//! log, the uplink that drains it to the floor, the inject streams and the JSONL log. It
//! never acknowledges an event before it is fsynced in the log, never listens beyond
//! loopback, and shares only `polaris-protocol` (the wire types and their checks) with the floor. See
//! `docs/sidecar.md` for the contract.

#![warn(missing_docs, unreachable_pub)]

pub mod config;
pub mod daemon;
pub mod follow;
pub mod home;
pub mod hook;
pub mod http;
pub mod install;
pub mod log;
pub mod mcp;
pub mod recover;
pub mod secret;
pub mod spool;
pub mod status;
pub mod transcript;
pub mod uplink;
pub mod wal;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

pub use uplink::{FloorClient, SubmitError, Uplink, UplinkStatus};

use crate::daemon::{Daemon, DaemonArgs};
use crate::home::Home;

/// Everything `run` needs, built by the binary.
pub struct SidecarWorld {
    /// The home (state, WAL, logs, spool).
    pub home: Home,
    /// The floor.
    pub floor: FloorClient,
    /// The local secret every route but `/healthz` requires.
    pub secret: String,
}

/// Serves the sidecar on `listener` until `shutdown` completes, then stops taking
/// requests, stops draining after the current batch and saves its state. Events accepted
/// and not yet delivered stay in the WAL for the next start.
pub async fn run(
    listener: tokio::net::TcpListener,
    world: SidecarWorld,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let home = world.home;
    home.ensure_dir(None)?;
    let uplink = Uplink::open_home(&home, world.floor.clone()).await?;
    let log = log::Log::start(&home)?;
    let (daemon, daemon_task) = Daemon::spawn(DaemonArgs {
        state_file: home.state_file(),
        floor: world.floor,
    })
    .await?;
    let state = http::AppState {
        daemon: daemon.clone(),
        uplink: uplink.clone(),
        log,
        secret: Arc::new(world.secret),
        home,
    };
    let taken = http::take_in_spool(&state).await;
    if taken > 0 {
        tracing::info!(taken, "took in spooled events");
    }
    let app = http::router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    daemon.stop(None);
    if let Err(e) = daemon_task.await {
        tracing::warn!(error = %e, "the daemon actor ended badly");
    }
    uplink.shutdown().await;
    served?;
    Ok(())
}
