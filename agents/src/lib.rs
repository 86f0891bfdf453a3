//! Named agents: the participants defined in `agents.yaml` and the `agents` table.
//!
//! This crate owns what a named agent does with the floor's events: which agents an event
//! addresses ([`mentions`], [`route`]), the agent actors that read floors and answer
//! ([`host`], [`agent`], [`concierge`]), and the offline brain with its knowledge and
//! tools. It depends on the runtime, never the other way round; agents reach the floor
//! only through the runtime's session and subscription interfaces, and must never write
//! to a database they inspect.
#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod brain;
pub mod concierge;
mod driver;
pub mod health;
pub mod host;
pub mod intent;
pub mod knowledge;
pub mod link;
pub mod llm;
pub mod mentions;
mod mind;
pub mod outbox;
pub mod passive;
mod reader;
pub mod reload;
pub mod route;
pub mod text;
pub mod tools;

pub use health::HealthReport;
pub use host::{AgentHost, HostArgs, HostHandle, Scope};
