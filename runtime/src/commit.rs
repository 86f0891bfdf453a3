//! What a request to commit an event is, and what its answer can be: the vocabulary the
//! session and floor actors share.
//!
//! It sits below both actors so that neither imports the other's module to speak: a
//! session hands its floor a [`Commit`] through a derived actor reference, and the floor
//! answers on the [`Reply`] port the commit carries. Nothing here owns state.

use std::sync::Arc;

use ractor::RpcReplyPort;

use crate::hub::Committed;
use crate::store::{Append, Rejected, StoreError};

/// The outcome of an append that reached the store.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The committed (or previously stored) event.
    pub committed: Arc<Committed>,
    /// False when the id was already stored and nothing was written.
    pub created: bool,
}

/// Why a post (an event, a driver change, a label) failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FloorError {
    /// The store refused this event (the others of its batch were not affected).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The store failed; nothing of the batch was written.
    #[error("the store is unavailable: {0}")]
    Store(Arc<StoreError>),
    /// The caller may not post this (e.g. as another participant).
    #[error("{0}")]
    Forbidden(String),
    /// The session's state does not allow it (e.g. the driver seat is taken).
    #[error("{0}")]
    Conflict(String),
    /// The request makes no sense in this state (e.g. a handoff with no driver).
    #[error("{0}")]
    Invalid(String),
    /// The session does not exist.
    #[error("session not found")]
    NoSession,
    /// The floor or session actor stopped before it took the request (a crash or a
    /// shutdown); the request had no effect and may be retried.
    #[error("the floor is restarting; retry")]
    Unavailable,
}

/// Where a commit is answered.
pub(crate) type Reply = RpcReplyPort<Result<Posted, FloorError>>;

/// One event (with the state change that must commit with it) for the floor's next group
/// commit; the floor answers on `reply` after the transaction.
pub(crate) struct Commit {
    /// What to write.
    pub item: Append,
    /// Who hears the outcome.
    pub reply: Reply,
}

/// Answers a request. The caller may have gone (a closed connection, a timeout); the
/// outcome stands either way, and a retry with the same event id finds it.
pub(crate) fn answer(reply: Reply, result: Result<Posted, FloorError>) {
    let _ = reply.send(result);
}
