//! The daemon sidecar: the one way a participant's events reach a floor.
//!
//! A developer's Claude Code hooks and MCP server, and an agent in its container, hand their
//! events to a sidecar on loopback. The sidecar stamps the sender, writes the event to a
//! write-ahead log before acknowledging it, and drains the log to the floor in order with
//! retry and the same event id every time. See `docs/sidecar.md` for the contract.

pub mod home;
pub mod mcp;
pub mod secret;
pub mod spool;
pub mod wire;
