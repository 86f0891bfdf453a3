//! A floor's live fan-out: committed events, in `seq` order, to every subscriber.
//!
//! The hub outlives the floor actor (a restarted floor finds the same hub), so live
//! subscribers never notice a restart. Publishing happens only after the store commit,
//! under `commit_lock`, which one flush at a time holds from commit to publish: the order
//! subscribers see is the commit order even if a crashed floor's last flush is still
//! finishing while its successor starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::{Mutex, broadcast};

use crate::protocol::{Event, TraceParent};

/// A committed event with its JSON rendered once, shared by every subscriber, stream
/// and HTTP response that shows it.
#[derive(Debug)]
pub struct Committed {
    /// The event.
    pub event: Event,
    /// Its Event JSON.
    pub json: Bytes,
    /// The same bytes as WebSocket text (no copy).
    pub text: Utf8Bytes,
    /// When the floor rendered it (right after the commit): streams report their
    /// commit-to-socket delay against it.
    pub committed_at: std::time::Instant,
    /// Its words, once a reader asked ([`Committed::words`]).
    words: std::sync::OnceLock<Box<str>>,
}

impl Committed {
    /// Renders `event` once.
    pub fn new(event: Event) -> Committed {
        // Serializing our own types cannot fail: every field is a string, number or
        // already-valid JSON.
        let json = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let text = Utf8Bytes::try_from(json.clone()).unwrap_or_default();
        Committed {
            event,
            json,
            text,
            committed_at: std::time::Instant::now(),
            words: std::sync::OnceLock::new(),
        }
    }

    /// The event's words as agents read them ([`crate::protocol::words::event_text`]),
    /// worked out by the first reader that asks and shared with the others: every agent
    /// and the concierge read every event of their floors.
    pub fn words(&self) -> &str {
        self.words
            .get_or_init(|| crate::protocol::words::event_text(&self.event).into_boxed_str())
    }
}

/// What a floor's subscribers hear, in one channel so that a subscriber waits on one
/// thing: with a thousand subscribers, every other future polled per event (a second
/// channel's registration, taken and dropped under its lock) showed in fan-out latency.
#[derive(Debug, Clone)]
pub(crate) enum Live {
    /// An event this node committed.
    Event(Arc<Committed>),
    /// Another node committed this floor's events through this `seq`: subscribers read
    /// them from the store.
    Heard(i64),
}

/// The live side of one floor.
#[derive(Debug)]
pub(crate) struct FloorHub {
    tx: broadcast::Sender<Live>,
    last_published: AtomicI64,
    /// Held by a flush from the start of its transaction to the end of its publishing.
    pub(crate) commit_lock: Mutex<()>,
    /// The newest `seq` another node is known to have committed on this floor.
    remote: AtomicI64,
}

impl FloorHub {
    pub(crate) fn new(last_seq: i64, capacity: usize) -> FloorHub {
        FloorHub {
            tx: broadcast::channel(capacity).0,
            last_published: AtomicI64::new(last_seq),
            commit_lock: Mutex::new(()),
            remote: AtomicI64::new(last_seq),
        }
    }

    /// Sends a committed event to every live subscriber. Never waits: a subscriber that
    /// is too slow loses its place in the buffer and catches up from the store.
    pub(crate) fn publish(&self, c: Arc<Committed>) {
        let seq = c.event.seq;
        let prev = self.last_published.swap(seq, Ordering::AcqRel);
        if seq != prev + 1 {
            // Another writer (a node sharing the database, a restore) committed events
            // this process did not publish. Subscribers see the jump and read the
            // missing events from the store; nothing is lost, so this is only noted.
            tracing::debug!(
                seq,
                prev,
                "floor seq jumped; subscribers will catch up from the store"
            );
        }
        // No receivers is normal (nobody is watching this floor).
        let _ = self.tx.send(Live::Event(c));
    }

    /// How many live subscribers this node has on the floor.
    pub(crate) fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// A receiver of everything published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.tx.subscribe()
    }

    /// Another node committed this floor's events through `seq` (heard on the cluster
    /// channel, or read from the store after listening again). Tells the subscribers only
    /// if this node had neither heard of nor published them, and answers how many of them
    /// that was: how far behind it was.
    pub(crate) fn heard(&self, seq: i64) -> i64 {
        let known = self
            .remote
            .fetch_max(seq, Ordering::AcqRel)
            .max(self.head());
        if seq <= known {
            return 0;
        }
        let _ = self.tx.send(Live::Heard(seq));
        seq - known
    }

    /// The `seq` of the newest published event.
    pub(crate) fn head(&self) -> i64 {
        self.last_published.load(Ordering::Acquire)
    }
}

/// When this node exports traces and the event has a context: the span of this node
/// handing event `seq` to its subscribers (`via` `commit` on the node that committed it,
/// `notice` on a node that heard of it), a child of the context the event was committed
/// with. Else a span that records nothing.
pub(crate) fn relay_span(
    project: uuid::Uuid,
    seq: i64,
    traceparent: Option<&TraceParent>,
    node: uuid::Uuid,
    subscribers: usize,
    via: &'static str,
) -> tracing::Span {
    match traceparent {
        Some(tp) if polaris_telemetry::enabled() => {
            let span = tracing::info_span!(parent: None, "floor.relay", %project, seq, %node, subscribers, via);
            polaris_telemetry::adopt(&span, Some(tp.clone()));
            span
        }
        _ => tracing::Span::none(),
    }
}
