//! Who takes part in a floor, and how they are shown.
//!
//! This crate owns participant identities (the `user:` / `agent:` / `slack:` grammar),
//! personas (the name and icon a sender is shown with) and named-agent specifications
//! (`AgentSpec`, `agents.yaml` loading and its checks), and the directory's pure rules:
//! the merge of the file with the `agents` table and who belongs on which floor by tag. It holds no async code and no
//! I/O beyond reading an agents file: the runtime, the sidecar and the agents all go
//! through it, so each rule lives in exactly one place.
#![warn(missing_docs, unreachable_pub)]

mod directory;
mod file;
mod identity;
mod persona;
mod spec;

pub use directory::{
    AgentSource, Change, FileAgents, Listed, Seat, Unreadable, matching_tag, merge, plan_floor,
};
pub use file::{AgentFile, RegistryError};
pub use identity::{IdentityError, MAX_PARTICIPANT_LEN, ParticipantId, ParticipantKind};
pub use persona::{Persona, PersonaInfo};
pub use spec::{
    AgentSpec, Brain, ContextMode, DEFAULT_LLM_TIMEOUT, DEFAULT_MAX_HOPS, DEFAULT_MAX_TOKENS,
    DEFAULT_MAX_TURNS, DEFAULT_PASSIVE_THRESHOLD, DatabaseTool, Examples, Hosting, LlmBrain,
    Passive, PassiveSignal, RateSpec, SecretsTool, SpecIssue, Tools, check, check_one,
};
