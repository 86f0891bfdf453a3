//! The append: what a batch is, and everything of its commit that is the same on both
//! engines — which items are answered from what is stored, refused or written, the `seq`
//! each written event gets, the session effects and the per-session counters. How `seq`
//! is allocated and locked, and how the rows go in, is per engine (`sqlite`, `postgres`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::EventRow;
use crate::protocol::{Event, Redaction, Source, TraceParent};
use crate::store::agents::{FloorChange, JoinReason, LeaveReason, change_floor};
use crate::store::column::Id;
use crate::store::leases::fence_term;
use crate::store::sessions::{SessionChange, change_session};
use crate::store::{ProjectKey, StoreError, Tx};

/// An event ready to be committed: stamped, validated, with its search text.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent {
    /// Idempotency key.
    pub id: Uuid,
    /// Session name, `None` for floor-wide events.
    pub session: Option<String>,
    /// Writer's clock (milliseconds).
    pub timestamp: DateTime<Utc>,
    /// Arrival (milliseconds).
    pub received_at: DateTime<Utc>,
    /// Source.
    pub source: Source,
    /// Kind.
    pub kind: String,
    /// Sender.
    pub sender: ParticipantId,
    /// Payload JSON.
    pub payload: Box<RawValue>,
    /// What the ingest screen redacted from the payload.
    pub redactions: Vec<Redaction>,
    /// The trace context it is committed with (the floor's commit span, or what arrived).
    pub traceparent: Option<TraceParent>,
}

impl NewEvent {
    fn counts_as_prompt(&self) -> bool {
        self.source == Source::Hook && self.kind == "UserPromptSubmit"
    }

    pub(super) fn into_event(self, project: &ProjectKey, seq: i64) -> Event {
        Event {
            id: self.id,
            project: project.name.to_string(),
            session: self.session,
            seq,
            timestamp: self.timestamp,
            received_at: self.received_at,
            source: self.source,
            kind: self.kind,
            sender: self.sender,
            payload: self.payload,
            redactions: self.redactions,
            traceparent: self.traceparent,
        }
    }
}

/// A change to the session applied in the same transaction as its event, so the state
/// and the record of the change can never disagree.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    /// Compare-and-set of the driver seat: applies only if the driver is `expected`.
    Driver {
        /// What the caller saw.
        expected: Option<ParticipantId>,
        /// What it becomes.
        new: Option<ParticipantId>,
    },
    /// Sets the label.
    Label(Option<String>),
    /// A named agent joins the floor; refused if it is on it already (so two nodes
    /// syncing at once record one join).
    Join {
        /// The agent.
        agent: ParticipantId,
        /// Why.
        reason: JoinReason,
        /// The matching tag, or who invited it.
        detail: Option<String>,
    },
    /// A named agent leaves the floor; refused if it is not on it.
    Leave {
        /// The agent.
        agent: ParticipantId,
        /// Why.
        why: LeaveReason,
    },
}

/// One item of an append batch.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    /// The event.
    pub event: NewEvent,
    /// A state change that must commit with it (or reject it).
    pub effect: Option<Effect>,
    /// The lease the writer claims to hold; checked in the transaction.
    pub fence: Option<Fence>,
}

/// A writer's claim to write under a lease's term: the item is refused unless the lease
/// is at that term when the transaction reads it.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    /// The org of the lease.
    pub org: std::sync::Arc<str>,
    /// The lease (`agent:dean`).
    pub lease: String,
    /// The term claimed.
    pub term: i64,
}

/// A committed (or already stored) event.
#[derive(Debug, Clone)]
pub(crate) struct Appended {
    /// The stored event.
    pub event: Event,
    /// False when the id was already stored: nothing was written.
    pub created: bool,
}

/// Why one item of a batch was not written. The rest of the batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The id is stored already, in another project or org.
    #[error("event id {0} is already used by another event")]
    IdTaken(Uuid),
    /// The effect's precondition failed (the driver changed since it was read).
    #[error("{0}")]
    Conflict(String),
    /// The session does not exist.
    #[error("session {0:?} not found")]
    NoSession(String),
    /// The writer's lease term is not the lease's current one: another instance took
    /// over (or the claimed lease does not exist).
    #[error("{0}")]
    Fenced(String),
}

/// An event of the batch that is stored already, as the append reads it back (its
/// `project_id` after the event columns).
pub(super) struct StoredRow {
    pub(super) event: EventRow,
    pub(super) project_id: Id,
}

/// One session's share of a batch, added to its counters in the same transaction.
pub(super) struct Activity {
    pub(super) events: i64,
    pub(super) prompts: i64,
    /// The latest arrival.
    pub(super) last: DateTime<Utc>,
}

impl Activity {
    /// Adds one written event to its session's share (floor-wide events have none).
    pub(super) fn count(activity: &mut HashMap<String, Activity>, e: &NewEvent) {
        if let Some(s) = &e.session {
            let a = activity.entry(s.clone()).or_insert(Activity {
                events: 0,
                prompts: 0,
                last: e.received_at,
            });
            a.events += 1;
            a.prompts += i64::from(e.counts_as_prompt());
            a.last = a.last.max(e.received_at);
        }
    }
}

/// Whether every item of the batch is a plain write: no session effect, no lease fence,
/// no id twice. Such a batch, when none of its ids is stored and all its sessions exist
/// (the common case by far), is written whole, each event taking the next `seq`, with
/// nothing to decide item by item.
pub(super) fn is_plain(batch: &[Append]) -> bool {
    let mut ids = HashSet::with_capacity(batch.len());
    batch
        .iter()
        .all(|a| a.effect.is_none() && a.fence.is_none() && ids.insert(a.event.id))
}

/// A batch being committed: built from what the transaction read (the project's last
/// `seq`, which of the batch's sessions exist, which of its ids are stored), it decides
/// each item's fate in order and gives each written event the next `seq`.
pub(super) struct Plan<'p> {
    project: &'p ProjectKey,
    known: HashSet<String>,
    stored: HashMap<Uuid, Result<Event, Rejected>>,
    /// The `seq` of the last event written (the project's `last_seq` once committed).
    pub(super) seq: i64,
    start_seq: i64,
    results: Vec<Result<Appended, Rejected>>,
    first_in_batch: HashMap<Uuid, usize>,
    /// Per session written to.
    pub(super) activity: HashMap<String, Activity>,
}

impl<'p> Plan<'p> {
    pub(super) fn new(
        project: &'p ProjectKey,
        last_seq: i64,
        known: HashSet<String>,
        stored: Vec<StoredRow>,
        len: usize,
    ) -> Plan<'p> {
        let stored = stored
            .into_iter()
            .map(|r| {
                let id = r.event.id.0;
                let prior = if r.project_id.0 == project.id {
                    Ok(r.event.into_event(project.name.to_string()))
                } else {
                    Err(Rejected::IdTaken(id))
                };
                (id, prior)
            })
            .collect();
        Plan {
            project,
            known,
            stored,
            seq: last_seq,
            start_seq: last_seq,
            results: Vec::with_capacity(len),
            first_in_batch: HashMap::new(),
            activity: HashMap::new(),
        }
    }

    /// Decides every item in order, applying its effect (if any) on `tx` first: an item
    /// whose effect is refused is not written.
    pub(super) async fn run(
        &mut self,
        batch: Vec<Append>,
        tx: &mut Tx<'_>,
    ) -> Result<(), StoreError> {
        for item in batch {
            let id = item.event.id;
            if let Some(prior) = self.stored.get(&id) {
                self.results.push(prior.clone().map(|event| Appended {
                    event,
                    created: false,
                }));
                continue;
            }
            if let Some(&i) = self.first_in_batch.get(&id) {
                let again = self.results[i].clone().map(|mut a| {
                    a.created = false;
                    a
                });
                self.results.push(again);
                continue;
            }
            if let Some(s) = &item.event.session
                && !self.known.contains(s)
            {
                self.results.push(Err(Rejected::NoSession(s.clone())));
                continue;
            }
            if let Some(fence) = &item.fence
                && let Err(rejected) = check_fence(tx, fence).await?
            {
                self.results.push(Err(rejected));
                continue;
            }
            if let Some(effect) = &item.effect
                && let Err(rejected) =
                    apply_effect(tx, self.project.id, item.event.session.as_deref(), effect).await?
            {
                self.results.push(Err(rejected));
                continue;
            }
            self.seq += 1;
            Activity::count(&mut self.activity, &item.event);
            let event = item.event.into_event(self.project, self.seq);
            self.first_in_batch.insert(id, self.results.len());
            self.results.push(Ok(Appended {
                event,
                created: true,
            }));
        }
        Ok(())
    }

    /// Whether anything is to be written.
    pub(super) fn writes(&self) -> bool {
        self.seq != self.start_seq
    }

    /// The events to write, in `seq` order.
    pub(super) fn fresh(&self) -> impl Iterator<Item = &Event> {
        self.results
            .iter()
            .filter_map(|r| r.as_ref().ok().filter(|a| a.created).map(|a| &a.event))
    }

    pub(super) fn into_results(self) -> Vec<Result<Appended, Rejected>> {
        self.results
    }
}

/// Checks a writer's lease term inside the append transaction (see [`Fence`]).
async fn check_fence(tx: &mut Tx<'_>, fence: &Fence) -> Result<Result<(), Rejected>, StoreError> {
    let current = fence_term(tx, &fence.org, &fence.lease).await?;
    Ok(match current {
        Some(t) if t == fence.term => Ok(()),
        Some(t) => Err(Rejected::Fenced(format!(
            "the lease of {} is at term {t}, not {}: another instance took over",
            fence.lease, fence.term
        ))),
        None => Err(Rejected::Fenced(format!(
            "{} holds no lease; take it before writing under a term",
            fence.lease
        ))),
    })
}

/// Applies a session effect inside the append transaction. `Ok(Err(_))` rejects this
/// item only; `Err(_)` is a database failure that aborts the batch.
async fn apply_effect(
    tx: &mut Tx<'_>,
    project: Uuid,
    session: Option<&str>,
    effect: &Effect,
) -> Result<Result<(), Rejected>, StoreError> {
    fn text(p: &Option<ParticipantId>) -> Option<&str> {
        p.as_ref().map(ParticipantId::as_str)
    }
    let changed = match (effect, session) {
        (
            Effect::Join {
                agent,
                reason,
                detail,
            },
            _,
        ) => {
            let join = FloorChange::Join(*reason, detail.as_deref());
            change_floor(tx, project, agent, join).await?
        }
        (Effect::Leave { agent, why }, _) => {
            change_floor(tx, project, agent, FloorChange::Leave(why)).await?
        }
        (_, None) => {
            return Ok(Err(Rejected::Conflict(
                "a session change needs a session".into(),
            )));
        }
        (Effect::Driver { expected, new }, Some(session)) => {
            let driver = SessionChange::Driver {
                expected: text(expected),
                new: text(new),
            };
            change_session(tx, project, session, driver).await?
        }
        (Effect::Label(label), Some(session)) => {
            change_session(tx, project, session, SessionChange::Label(label.as_deref())).await?
        }
    };
    Ok(if changed == 0 {
        Err(refusal(effect))
    } else {
        Ok(())
    })
}

/// Why an effect's precondition failed, in words for the caller.
fn refusal(effect: &Effect) -> Rejected {
    Rejected::Conflict(match effect {
        Effect::Driver { .. } => {
            "the driver seat changed meanwhile; read the session and try again".into()
        }
        Effect::Label(_) => "session not found".into(),
        Effect::Join { agent, .. } => format!("{agent} is already on this floor"),
        Effect::Leave { agent, .. } => format!("{agent} is not on this floor"),
    })
}
