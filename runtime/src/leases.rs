//! Leases, as the runtime offers them: work that must run once in a deployment (each named
//! agent, each Slack bridge) runs only in the instance that holds its lease.
//!
//! The store decides who holds what in one statement (see `store::leases`); this facade
//! adds the waiting. A contender that finds the lease held waits until the holder's expiry
//! or until the lease is released, whichever comes first, and tries again, so a clean
//! hand-over is taken at once rather than at the next poll. Releases made through this
//! runtime wake it directly; on PostgreSQL every node's releases reach it by NOTIFY.
//!
//! The term a holder gets is its fencing token: an agent's events carry it
//! (`NewEventBody::term`) and the floor refuses them once the lease has passed to a newer
//! term.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::cluster::{Cluster, Notice};
use crate::store::{Lease, Store, StoreError};

/// A release, as announced to waiting contenders: (org, lease name).
type Released = (Arc<str>, String);

/// What the runtime keeps for its leases: the releases made through it (and, on
/// PostgreSQL, on every node: see `crate::cluster`), for contenders waiting on them, and
/// how many wait.
pub(crate) struct LeaseBoard {
    released: broadcast::Sender<Released>,
    waiting: AtomicUsize,
    /// Leases taken through this runtime, with their expiry as last renewed (for
    /// `/metrics`: which node does the work that must run once).
    held: DashMap<(Arc<str>, String), DateTime<Utc>>,
}

impl LeaseBoard {
    pub(crate) fn new() -> LeaseBoard {
        LeaseBoard {
            released: broadcast::channel(64).0,
            waiting: AtomicUsize::new(0),
            held: DashMap::new(),
        }
    }

    /// Wakes the contenders waiting here for `name` of `org`.
    pub(crate) fn wake(&self, org: Arc<str>, name: String) {
        // Nobody waiting is fine.
        let _ = self.released.send((org, name));
    }
}

/// Counts a contender as waiting for as long as it lives (a request whose client went
/// away is dropped mid-wait).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long after the holder's expiry a contender tries again: the holder's clock and ours
/// may differ by a little, and the database compares with the contender's.
const EXPIRY_SLACK: Duration = Duration::from_millis(5);

/// The leases of a runtime's store (`Runtime::leases`).
#[derive(Clone)]
pub struct Leases {
    store: Store,
    board: Arc<LeaseBoard>,
    cluster: Arc<Cluster>,
}

impl Leases {
    pub(crate) fn new(store: Store, board: Arc<LeaseBoard>, cluster: Arc<Cluster>) -> Leases {
        Leases {
            store,
            board,
            cluster,
        }
    }

    /// Takes the lease `name` of `org` for `holder`, for `ttl`: `Ok` with the lease when
    /// `holder` has it (the same term if it already held it, else a new one), `Err` with
    /// the holder's lease if someone else still has it after waiting up to `wait`.
    pub async fn acquire(
        &self,
        org: &Arc<str>,
        name: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Result<Lease, Lease>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first try, so a release between a refusal and the wait
        // is not missed.
        let board = &self.board;
        let mut released = board.released.subscribe();
        let mut waiting = None;
        loop {
            let held = match self
                .store
                .acquire_lease(org, name, holder, ttl, Utc::now())
                .await?
            {
                Ok(lease) => {
                    board
                        .held
                        .insert((org.clone(), name.to_owned()), lease.expires_at);
                    return Ok(Ok(lease));
                }
                Err(held) => held,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Err(held));
            }
            waiting.get_or_insert_with(|| Waiting::new(&board.waiting));
            let to_expiry = (held.expires_at - Utc::now()).to_std().unwrap_or_default();
            let wake = deadline.min(now + to_expiry + EXPIRY_SLACK);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = wait_release(&mut released, org, name) => {}
            }
        }
    }

    /// Extends a lease `holder` holds under `term`; `None` when it no longer does (it must
    /// stop the leased work and take the lease again).
    pub async fn renew(
        &self,
        org: &str,
        name: &str,
        holder: &str,
        term: i64,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let renewed = self
            .store
            .renew_lease(org, name, holder, term, ttl, Utc::now())
            .await?;
        let key = (Arc::<str>::from(org), name.to_owned());
        match &renewed {
            Some(lease) => {
                self.board.held.insert(key, lease.expires_at);
            }
            // Lapsed: shown as 0 once, then forgotten.
            None => {
                self.board.held.insert(key, DateTime::<Utc>::MIN_UTC);
            }
        }
        Ok(renewed)
    }

    /// Gives a lease up and tells waiting contenders at once. False when `holder` did not
    /// hold it under `term`.
    pub async fn release(
        &self,
        org: &Arc<str>,
        name: &str,
        holder: &str,
        term: i64,
    ) -> Result<bool, StoreError> {
        let released = self
            .store
            .release_lease(org, name, holder, term, Utc::now())
            .await?;
        if released {
            self.board
                .held
                .insert((org.clone(), name.to_owned()), DateTime::<Utc>::MIN_UTC);
            self.board.wake(org.clone(), name.to_owned());
            let notice = Notice::Released {
                org: org.to_string(),
                name: name.to_owned(),
            };
            self.cluster.announce(notice).await;
        }
        Ok(released)
    }

    /// Contenders waiting in this runtime for a lease someone else holds (for `/metrics`
    /// and tests).
    pub fn waiting(&self) -> usize {
        self.board.waiting.load(Ordering::Relaxed)
    }

    /// Sets `polaris_lease_held{lease}` to 1 for each lease held through this runtime
    /// and 0 for one that lapsed or was released since, and `polaris_leases_held` to
    /// their number.
    pub(crate) fn export_holdings(&self) {
        let now = Utc::now();
        let mut n = 0;
        self.board.held.retain(|(_, name), expires| {
            let live = *expires > now;
            metrics::gauge!("polaris_lease_held", "lease" => name.clone()).set(if live {
                1.0
            } else {
                0.0
            });
            n += usize::from(live);
            live
        });
        metrics::gauge!("polaris_leases_held").set(n as f64);
    }

    /// The lease as stored (held or expired), if it was ever taken.
    pub async fn get(&self, org: &str, name: &str) -> Result<Option<Lease>, StoreError> {
        self.store.lease(org, name).await
    }
}

/// Returns when `name` of `org` is released, or when releases may have been missed (the
/// receiver lagged): either way the caller tries again.
async fn wait_release(rx: &mut broadcast::Receiver<Released>, org: &str, name: &str) {
    loop {
        match rx.recv().await {
            Ok((o, n)) if &*o == org && n == name => return,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            // The runtime is going away; the deadline or the expiry ends the wait.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
