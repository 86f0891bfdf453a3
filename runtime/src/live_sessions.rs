//! A floor's live session actors: the floor starts, finds and stops them, and is the only
//! writer of this map; the runtime reads it to hand a request straight to a live session,
//! so a post crosses one mailbox (the session's) on its way to the floor's group commit,
//! not two.
//!
//! A request that finds no live actor here, or one that is stopping (swept while idle,
//! crashed, drained by a rename), comes back to the caller untouched, which then routes it
//! through the floor as before: the floor starts the actor, or a fresh one. The floor
//! publishes an actor here only after handing it the request that started it, so a
//! caller's later requests cannot overtake that first one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use ractor::MessagingErr;

use crate::session::{SessionMsg, SessionRef};

/// A live session actor.
pub(crate) struct LiveSession {
    /// The actor.
    pub(crate) actor: SessionRef,
    /// When the floor last saw a request for it, or found it used since the last sweep.
    pub(crate) last_used: Instant,
    /// Set by a request sent straight to the actor; the floor's sweep reads and clears it.
    used: AtomicBool,
}

impl LiveSession {
    pub(crate) fn new(actor: SessionRef) -> LiveSession {
        LiveSession {
            actor,
            last_used: Instant::now(),
            used: AtomicBool::new(false),
        }
    }

    /// Whether a request went straight to the actor since the last call (the sweep's).
    pub(crate) fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }
}

/// The live session actors of one floor, by name.
#[derive(Default)]
pub(crate) struct LiveSessions {
    map: DashMap<String, LiveSession>,
}

impl LiveSessions {
    /// Hands `msg` to the session's live actor; gives it back when there is none or the
    /// actor no longer takes messages, for the floor to route.
    pub(crate) fn send(&self, name: &str, msg: SessionMsg) -> Result<(), SessionMsg> {
        let Some(live) = self.map.get(name) else {
            return Err(msg);
        };
        live.used.store(true, Ordering::Relaxed);
        match live.actor.send_message(msg) {
            Ok(()) => Ok(()),
            Err(MessagingErr::SendErr(back)) => Err(back),
            // Only a message of the wrong type fails otherwise, which a typed reference
            // cannot send; were it to, the message would be dropped and its caller answered
            // `Unavailable` through the dropped reply port.
            Err(_) => Ok(()),
        }
    }

    /// The floor's own view, for starting, finding and stopping (the floor only).
    pub(crate) fn map(&self) -> &DashMap<String, LiveSession> {
        &self.map
    }
}
