//! `polaris-agent run <agent> …`: the same command as `polaris agent run`, in a binary that
//! holds only what an agent process needs (no floor server, no sidecar daemon, no
//! installer), so a Dean container maps a third less code. `polaris agent run` hands over
//! to this binary when it is installed beside `polaris` (see `src/main.rs`).

#[path = "../agent_run.rs"]
mod agent_run;
#[path = "../lifecycle.rs"]
mod lifecycle;
#[path = "../remote.rs"]
mod remote;

use clap::{Parser, Subcommand};

/// jemalloc, whose background thread returns memory unused for a few seconds to the system:
/// a burst of subscribers or writes does not leave its high-water mark in RSS.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One named agent as a process of its own, beside a Polaris floor.
#[derive(Debug, Parser)]
#[command(name = "polaris-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Host the agent and its subagents: read its floors, answer, hold its lease (a second
    /// process of the same agent waits as a standby).
    Run(agent_run::AgentRunArgs),
}

fn main() -> std::process::ExitCode {
    let Command::Run(args) = Cli::parse().command;
    match agent_run::run(args, &polaris_config::Env::from_process()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("polaris agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
