//! Named agents: the participants defined in `agents.yaml` and the `agents` table.
//!
//! This crate owns what a named agent does with the floor's events: which agents an event
//! addresses ([`mentions`]), what an agent knows ([`knowledge`]) and the tools its offline
//! brain uses ([`tools`]). It depends on the runtime, never the other way round, and it must
//! never write to a database it inspects for an agent.
#![warn(missing_docs, unreachable_pub)]

pub mod knowledge;
pub mod mentions;
pub mod tools;
