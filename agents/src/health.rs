//! How a host's agents are doing, for an orchestrator's `/readyz`: the leases the host
//! wants and holds, and the floor streams its running agents want and have open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How the agents of a host are doing, for `/readyz`: the leases it wants and holds, and
/// the floor streams its running agents want and have open.
#[derive(Debug, Default)]
pub struct Health {
    pub(crate) leases_wanted: AtomicUsize,
    pub(crate) leases_held: AtomicUsize,
    pub(crate) streams_wanted: AtomicUsize,
    streams_open: AtomicUsize,
}

/// A snapshot of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// Agents whose lease this host wants.
    pub leases_wanted: usize,
    /// Of those, the leases it holds.
    pub leases_held: usize,
    /// Floor streams its running agents read.
    pub streams_wanted: usize,
    /// Of those, the streams that are open.
    pub streams_open: usize,
}

impl HealthReport {
    /// Every lease held and every stream open (and at least one lease wanted).
    pub fn ready(&self) -> bool {
        self.leases_wanted > 0
            && self.leases_held >= self.leases_wanted
            && self.streams_open >= self.streams_wanted
    }
}

/// Counts one open stream while it lives.
pub(crate) struct OpenStream(Arc<Health>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Health {
    /// Counts a stream as open until the guard drops.
    pub(crate) fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// The counts now.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            leases_wanted: self.leases_wanted.load(Ordering::Relaxed),
            leases_held: self.leases_held.load(Ordering::Relaxed),
            streams_wanted: self.streams_wanted.load(Ordering::Relaxed),
            streams_open: self.streams_open.load(Ordering::Relaxed),
        }
    }
}
