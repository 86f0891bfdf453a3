//! Who takes part in a floor, and how they are shown.
//!
//! This crate owns participant identities (the `user:` / `agent:` / `slack:` grammar) and
//! personas (the name and icon a sender is shown with). It holds no I/O and no async code:
//! the runtime, the sidecar and the agents all validate and display identities through it,
//! so the grammar lives in exactly one place.
#![warn(missing_docs, unreachable_pub)]

mod identity;
mod persona;

pub use identity::{IdentityError, MAX_PARTICIPANT_LEN, ParticipantId, ParticipantKind};
pub use persona::{Persona, PersonaInfo};
