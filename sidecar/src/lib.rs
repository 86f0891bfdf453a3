//! The daemon sidecar: the one way a participant's events reach a floor.
//!
//! A developer's Claude Code hooks and MCP server, and an agent in its container, hand their
//! events to a sidecar on loopback. This crate owns that loopback hook API, the write-ahead
//! log, the uplink that drains it to the floor, the inject streams and the JSONL log. It
//! never acknowledges an event before it is fsynced in the log, never listens beyond
//! loopback, and shares only `runtime::protocol` (and its checks) with the floor. See
//! `docs/sidecar.md` for the contract.

pub mod home;
pub mod mcp;
pub mod recover;
pub mod secret;
pub mod spool;
pub mod uplink;
pub mod wal;
pub mod wire;

pub use uplink::{FloorClient, SubmitError, Uplink, UplinkStatus};
