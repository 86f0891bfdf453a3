//! Resumable subscriptions: a floor's (or one session's) events from a `seq` cursor,
//! first from the store, then live, with no gap and no duplicate at the switch.
//!
//! The live receiver is taken *before* the store is read, so every event committed after
//! that moment is in the receiver and every event before it is in the store; the cursor
//! drops whatever both return. A subscriber that falls behind the floor's buffer is never
//! waited for: it is told (`Lagged`), reads what it missed from the store at its own pace
//! and rejoins the live stream. WebSocket and SSE clients, named agents and (later) the
//! Slack bridge all read a floor through this one type.

use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::hub::{Committed, FloorHub, Live};
use crate::store::{ProjectKey, Store, StoreError};

/// Events read from the store per round trip while catching up.
const CATCH_UP_PAGE: i64 = 500;

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every event with `seq` greater than this (0 = from the beginning).
    After(i64),
    /// Only events committed from now on.
    Now,
}

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    /// The floor.
    pub project: ProjectKey,
    /// One session only, or the whole floor.
    pub session: Option<String>,
    /// Where to start.
    pub start: Start,
}

/// The events of `spec`, in `seq` order, forever (until the consumer drops the stream).
/// An `Err` item means the store failed during a catch-up; the stream ends after it and
/// the consumer resumes from its own cursor.
pub(crate) fn subscribe(
    hub: Arc<FloorHub>,
    store: Store,
    spec: SubscriptionSpec,
) -> impl Stream<Item = Result<Arc<Committed>, StoreError>> + Send + 'static {
    async_stream::try_stream! {
        let SubscriptionSpec { project, session, start } = spec;
        // Events committed here, and commits of other nodes on this floor (heard, then
        // read from the store).
        let mut rx = hub.subscribe();
        let (mut cursor, mut catch_up) = match start {
            Start::After(n) => (n, true),
            Start::Now => (hub.head(), false),
        };
        // The newest floor seq this subscription has observed live; for a session
        // subscription it differs from `cursor`, which only moves on that session's events.
        let mut seen: Option<i64> = (!catch_up).then_some(cursor);
        loop {
            if catch_up {
                // A session's pages do not say where the floor is: its head, read first,
                // is what the live stream must continue from without a gap (an event of
                // this session committed on another node and not yet heard of must not be
                // skipped when a later one arrives live).
                let floor_head = match session {
                    Some(_) => Some(store.last_seq(project.id).await?),
                    None => None,
                };
                loop {
                    let page = store.events_after(&project, session.as_deref(), cursor, CATCH_UP_PAGE).await?;
                    let full = page.len() as i64 == CATCH_UP_PAGE;
                    for e in page {
                        cursor = e.seq;
                        yield Arc::new(Committed::new(e));
                    }
                    if !full {
                        break;
                    }
                }
                catch_up = false;
                seen = Some(floor_head.map_or(cursor, |h| h.max(cursor)));
            }
            match rx.recv().await {
                Ok(Live::Heard(heard)) => {
                    if heard > seen.unwrap_or(cursor) {
                        catch_up = true;
                    }
                }
                Ok(Live::Event(c)) => {
                    let seq = c.event.seq;
                    if let Some(s) = seen {
                        if seq <= s {
                            continue; // already read from the store
                        }
                        if seq > s + 1 {
                            // Missed something (published by another writer): read it.
                            tracing::debug!(seq, seen = s, "subscription gap, catching up");
                            catch_up = true;
                            continue;
                        }
                    }
                    seen = Some(seq);
                    if seq <= cursor {
                        continue;
                    }
                    if session.is_some() && c.event.session.as_deref() != session.as_deref() {
                        continue;
                    }
                    cursor = seq;
                    yield c;
                }
                Err(RecvError::Lagged(n)) => {
                    metrics::counter!("polaris_subscriber_lagged_total").increment(1);
                    tracing::debug!(missed = n, cursor, "subscriber lagged; catching up from the store");
                    catch_up = true;
                }
                Err(RecvError::Closed) => break,
            }
        }
    }
}
