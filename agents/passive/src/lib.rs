//! Passive monitoring's scorer: how much an event on a floor is each named agent's
//! domain, when nobody addressed it.
//!
//! It owns the two stages and nothing else: [`stage1`] (no model: precise signals such as
//! the secret scanner and failing data jobs, and the cleaning that keeps code, addresses
//! and names from reading as topic words), [`embed`] (all-MiniLM-L6-v2 in process with
//! candle, loaded from a local directory and checked against a recorded sha256), and
//! [`Scorer`], which fits a small head per agent over the embeddings of the agent's
//! definition and written `examples:`. It never downloads, never reads a floor and never
//! posts: the agents crate decides what to do with a score.
#![warn(missing_docs, unreachable_pub)]

pub mod embed;
mod head;
mod scorer;
pub mod stage1;
#[doc(hidden)]
pub mod testing;

pub use embed::{Embedder, MINILM_SHA256, MODEL_FILES, ModelError, start_model_threads};
pub use head::Head;
pub use scorer::{Input, Profile, Score, Scorer, Stage};
