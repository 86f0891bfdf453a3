//! The floor runtime: floors, sessions, the store and the HTTP API.
//!
//! This crate owns the way of an event — API → session actor → floor actor → store →
//! subscribers — and everything on it: validation, stamping, group commit, ordered
//! fan-out and resumable streams. It is handed its world (a listener, a store, a shutdown
//! future) and never reads the environment or binds a socket itself. It must never let a
//! subscriber see an event before it is committed, never assign `seq` outside the
//! store's transaction, and never answer 2xx for an event it has not committed.
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod auth;
pub mod directory;
pub mod floor;
pub mod hub;
pub mod indexer;
pub mod runtime;
pub mod session;
pub mod store;
pub mod subscription;
pub mod supervisor;

// The wire types and checks live in polaris-protocol, shared with the sidecar; inside this
// crate they keep their short paths.
use polaris_protocol as protocol;
use polaris_protocol::validate;

pub use runtime::{Runtime, Settings};
