//! The floor runtime: floors, sessions, the store and the HTTP API.
//!
//! This crate owns the way of an event — API → session actor → floor actor → store →
//! subscribers — and everything on it: validation, stamping, group commit, ordered
//! fan-out and resumable streams. It is handed its world (a listener, a store, a shutdown
//! future) and never reads the environment or binds a socket itself. It must never let a
//! subscriber see an event before it is committed, never assign `seq` outside the
//! store's transaction, and never answer 2xx for an event it has not committed.
#![warn(missing_docs, unreachable_pub)]

// The facade: what the binary, the agents and the tests may use. Everything else is
// crate-private, so the actors' messages and maps can change without touching callers.
pub mod api;
pub mod auth;
mod cluster;

mod commit;
mod directory;
mod floor;
mod hub;
mod indexer;
mod leases;
mod live;
mod live_sessions;
mod roster;
mod runtime;
mod screen;
mod session;
mod store;
mod subscription;
mod supervisor;
mod tasks;

pub use commit::{FloorError, Posted};
pub use directory::{Directory, DirectoryError, FloorAgent};
pub use hub::Committed;
pub use leases::Leases;
pub use runtime::{Runtime, Settings};
pub use session::SYSTEM_SENDER;
#[cfg(feature = "fault-injection")]
pub use session::Seat;
pub use store::{
    AgentMemory, Backend, Lease, MAX_FACT_CHARS, MemoryFact, NewFact, ProjectKey, SlackCursor,
    SlackFence, SlackFloor, SlackLinks, SlackTarget, Store, StoreError,
};
pub use subscription::{Start, SubscriptionSpec};
pub use tasks::{Budget, HandedTask, NewTask, TaskView};

// The wire types and checks live in polaris-protocol, shared with the sidecar; inside this
// crate they keep their short paths.
use polaris_protocol as protocol;
use polaris_protocol::validate;
