//! The lookup of live floors: project → floor actor (with its live sessions), and
//! project → hub.
//!
//! One owner, one writer per map. Only the supervisor inserts and removes floors (it
//! starts them, and hears when they stop); everyone else reads. Hubs are only ever added,
//! through [`Floors::hub`], and outlive floor restarts so that live subscribers stay
//! connected. Each floor owns its sessions and is the only writer of their map
//! ([`LiveSessions`]), which this lookup hands out beside the floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use uuid::Uuid;

use crate::floor::FloorRef;
use crate::hub::FloorHub;
use crate::live_sessions::LiveSessions;
use crate::store::{ProjectKey, Store, StoreError};

/// A running floor and its live sessions.
#[derive(Clone)]
pub(crate) struct LiveFloor {
    /// The floor actor.
    pub(crate) floor: FloorRef,
    /// Its live session actors (written by the floor only).
    pub(crate) sessions: Arc<LiveSessions>,
}

/// The live floors and their hubs.
pub(crate) struct Floors {
    floors: DashMap<Uuid, LiveFloor>,
    hubs: DashMap<Uuid, Arc<FloorHub>>,
    subscriber_buffer: usize,
    /// Live session actors of every floor, counted by the floors.
    pub(crate) live_sessions: Arc<AtomicUsize>,
}

impl Floors {
    pub(crate) fn new(subscriber_buffer: usize) -> Floors {
        Floors {
            floors: DashMap::new(),
            hubs: DashMap::new(),
            subscriber_buffer,
            live_sessions: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The running floor of a project.
    pub(crate) fn get(&self, project: Uuid) -> Option<LiveFloor> {
        self.floors.get(&project).map(|f| f.clone())
    }

    /// Records a started floor (the supervisor only).
    pub(crate) fn insert(&self, project: Uuid, floor: LiveFloor) {
        self.floors.insert(project, floor);
    }

    /// Forgets a floor if it is still the one recorded (the supervisor only).
    pub(crate) fn remove(&self, project: Uuid, floor: &ractor::ActorId) {
        self.floors
            .remove_if(&project, |_, f| f.floor.get_id() == *floor);
    }

    /// Forgets a project's floor whatever it is (the supervisor only); returns it.
    pub(crate) fn take(&self, project: Uuid) -> Option<FloorRef> {
        self.floors.remove(&project).map(|(_, f)| f.floor)
    }

    /// The hub of a project, created on first use from the store's newest `seq`.
    pub(crate) async fn hub(
        &self,
        store: &Store,
        project: &ProjectKey,
    ) -> Result<Arc<FloorHub>, StoreError> {
        if let Some(h) = self.hubs.get(&project.id) {
            return Ok(h.clone());
        }
        let last = store.last_seq(project.id).await?;
        Ok(self
            .hubs
            .entry(project.id)
            .or_insert_with(|| Arc::new(FloorHub::new(last, self.subscriber_buffer)))
            .clone())
    }

    /// The hub of a project if this node has one (someone here subscribed or posted).
    pub(crate) fn live_hub(&self, project: Uuid) -> Option<Arc<FloorHub>> {
        self.hubs.get(&project).map(|h| h.clone())
    }

    /// The projects this node has a hub for.
    pub(crate) fn hub_ids(&self) -> Vec<Uuid> {
        self.hubs.iter().map(|h| *h.key()).collect()
    }

    /// Live floor and session actors.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (
            self.floors.len(),
            self.live_sessions.load(Ordering::Relaxed),
        )
    }
}
