//! The floors page's 14-day activity chart, counted incrementally.
//!
//! Counting a busy floor's last 14 days on every page view scanned all of them (there is no
//! index on `received_at`, and adding one would cost every append). Instead each node keeps,
//! per project, the events per day up to a `seq` it has counted: a view counts only the
//! events committed since (`seq` above that mark, on the `(project_id, seq)` index), and the
//! first view of a project finds where the window starts by bisecting `seq`. Past days never
//! change once counted, so nodes need not agree on anything: each counts from the shared
//! store. The map holds at most `DAYS` numbers per project this node has shown.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Days the chart covers, today included.
const DAYS: i64 = 14;
/// How much earlier than the window the first count starts: arrival times are stamped
/// just before the commit, so around a boundary they may be out of `seq` order by the time
/// one group commit takes. Rows before the window are still filtered out by time.
const SLACK_MS: i64 = 60_000;

#[derive(Default)]
pub(crate) struct Activity(DashMap<Uuid, Counted>);

struct Counted {
    /// Every event with `seq <= upto` is in `days`.
    upto: i64,
    /// Events per UTC day (days since the epoch).
    days: BTreeMap<i64, i64>,
}

impl Activity {
    /// Events per day of `project` for the `DAYS` days ending with `today` (days since the
    /// epoch), oldest first.
    pub(super) async fn days(
        &self,
        store: &Store,
        project: Uuid,
        today: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let first_day = today - DAYS + 1;
        let since = DateTime::<Utc>::from_timestamp(first_day * 86_400, 0).unwrap_or_default();
        // Two views may count at once; a count is merged only onto the mark it started
        // from, so nothing is counted twice. The loser retries from the newer mark.
        for _ in 0..3 {
            let head = store.last_seq(project).await?;
            let after = match self.0.get(&project).map(|c| c.upto) {
                Some(upto) => upto,
                None => {
                    let early = since - chrono::Duration::milliseconds(SLACK_MS);
                    store.first_seq_since(project, head, early).await? - 1
                }
            };
            if head > after {
                let counted = store.events_per_day(project, after, head, since).await?;
                let mut entry = self.0.entry(project).or_insert_with(|| Counted {
                    upto: after,
                    days: BTreeMap::new(),
                });
                if entry.upto != after {
                    continue;
                }
                for (day, n) in counted {
                    *entry.days.entry(day).or_default() += n;
                }
                entry.upto = head;
            } else {
                self.0.entry(project).or_insert_with(|| Counted {
                    upto: after,
                    days: BTreeMap::new(),
                });
            }
            break;
        }
        let mut out = vec![0; DAYS as usize];
        if let Some(mut c) = self.0.get_mut(&project) {
            c.days = c.days.split_off(&first_day);
            for (day, n) in &c.days {
                if let Some(slot) = out.get_mut((day - first_day) as usize) {
                    *slot = *n;
                }
            }
        }
        Ok(out)
    }
}
