//! The tools an agent's offline brain uses to find things out for real.
//!
//! This module owns tools that inspect the world and report what they found: Dean's
//! read-only database inspection ([`database`]). Tools must never change what they inspect,
//! and they know nothing of floors, events or personas: the brain decides what to ask them
//! and how to phrase the answer.

pub mod database;
pub mod kit;
mod sql;
