//! Keeping the agents file live: a change to `agents.yaml` (or `SIGHUP`) reloads it
//! without a restart. A file that no longer checks out is reported — file, line, column —
//! and the agents keep running as they were.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use polaris_registry::AgentFile;
use polaris_runtime::Runtime;
use tokio::sync::mpsc;

/// Editors write in bursts (truncate, write, rename): wait for quiet before reading.
const SETTLE: Duration = Duration::from_millis(250);

/// Loads `path` into the runtime now and again whenever it changes. The returned task
/// runs until aborted.
pub fn watch(
    runtime: Runtime,
    path: PathBuf,
) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(ToOwned::to_owned);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    // Watch the directory, not the file: editors replace files by renaming over them.
    let mut watcher =
        notify::recommended_watcher(move |res: Result<notify::Event, notify::Error>| {
            if let Ok(ev) = res
                && ev.paths.iter().any(|p| p.file_name() == name.as_deref())
            {
                // The reload task is gone only at shutdown.
                let _ = tx.send(());
            }
        })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let sighup = hangups();
    Ok(tokio::spawn(async move {
        let _keep = watcher; // dropping the watcher stops the notifications
        let mut sighup = sighup;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = next_hangup(&mut sighup) => {}
            }
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            reload(&runtime, &path).await;
        }
    }))
}

async fn reload(runtime: &Runtime, path: &Path) {
    match AgentFile::load(path) {
        Ok(f) => {
            let n = f.agents.len();
            match runtime.directory().load_agent_file(Some(f)).await {
                Ok(()) => tracing::info!(file = %path.display(), agents = n, "agents reloaded"),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "agents reloaded but floors not synced; retried on the next change")
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "agents file not reloaded; the previous agents keep running")
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangups() -> Hangups {}

#[cfg(unix)]
async fn next_hangup(h: &mut Hangups) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending::<()>().await
}
