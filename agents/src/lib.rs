//! Named agents: the participants defined in `agents.yaml` and the `agents` table.
//!
//! This crate owns what a named agent does with the floor's events: which agents an event
//! addresses ([`mentions`]) and what an agent knows ([`knowledge`]). It depends on the
//! runtime, never the other way round.
#![warn(missing_docs, unreachable_pub)]

pub mod knowledge;
pub mod mentions;
