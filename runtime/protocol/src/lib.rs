//! What the floor, the sidecar and remote agents say to each other.
//!
//! This crate owns the wire types (the original's JSON shapes plus `seq`, `received_at`,
//! `kind` and the session list), the checks every event passes before it reaches an
//! actor ([`validate`]), and the secret and PII scanner ([`secrets`]) that the sidecar's
//! log and Sage share. It is serde types and pure functions: it must never pull in a
//! server, a database or an async runtime, so anything that speaks to a floor can link
//! it without linking the floor.
#![warn(missing_docs, unreachable_pub)]

pub mod redaction;
pub mod secrets;
pub mod team;
pub mod trace;
pub mod validate;
mod wire;
pub mod words;

pub use redaction::Redaction;
pub use trace::TraceParent;
pub use wire::{
    Annotation, Event, Member, NewEventBody, Project, Session, Source, Visibility, format_ms,
    iso_ms, iso_ms_opt, to_ms,
};
