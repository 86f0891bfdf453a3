//! The session actor: one per live session. It owns what is the session's — the driver
//! seat, the agent identity and the label — loaded once from the store when it starts,
//! and the rules of the seat. It checks who may post what, stamps events (session, times,
//! the inject's target), passes what participants wrote through the ingest screen
//! (credentials redacted, `screen`) and hands them to its floor's group commit.
//!
//! Posts never wait on a commit: the caller's reply port travels with the event to the
//! floor, so one busy session still feeds the floor's group commit. Seat and label changes
//! are decided on the state the actor holds and committed as a compare-and-set in the same
//! transaction as their event; the actor applies a change to its state only once the floor
//! has committed it, and holds further seat requests until then, so its state is always
//! what the store says. A compare-and-set that fails means another node changed the seat:
//! the actor reloads the row and refuses the request, as if it had seen it first.
//!
//! Error policy: every refusal is an `Err` reply; the handler itself fails only when it
//! cannot reload its row after such a conflict (the floor then restarts it from the
//! store). An idle session is stopped by its floor and started again on the next request.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::Utc;
use polaris_registry::ParticipantId;
use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, MessagingErr};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::commit::{Commit, FloorError, Posted, Reply, answer};
use crate::protocol::{Redaction, Session as SessionRow, Source, TraceParent, to_ms};
use crate::screen::Screen;
use crate::store::{Append, Effect, Fence, NewEvent, ProjectKey, Rejected, Store};
use crate::validate::Incoming;

/// The floor's own identity, the sender of changes made by an anonymous caller.
pub const SYSTEM_SENDER: &str = "agent:polaris";

/// Handle to a session actor.
pub(crate) type SessionRef = ActorRef<SessionMsg>;

/// Messages of the session actor.
pub(crate) enum SessionMsg {
    /// Stamp and commit a client's event, posted by `Caller`.
    Post(Box<Incoming>, Caller, Reply),
    /// An advisor's message into this session (`sender` already decided by the API:
    /// the caller itself when authenticated).
    Inject {
        /// The message.
        content: String,
        /// The advisor.
        sender: ParticipantId,
        /// The trace context it continues, if any.
        traceparent: Option<TraceParent>,
        /// Answer.
        reply: Reply,
    },
    /// Take the driver seat, which must be empty.
    ClaimDriver {
        /// The new driver.
        driver: ParticipantId,
        /// Who seated it (`None`: anonymous), shown in the `driver` event.
        by: Option<ParticipantId>,
        /// Answer.
        reply: Reply,
    },
    /// Leave the driver seat empty.
    Handoff {
        /// Who asked (`None`: anonymous).
        by: Option<ParticipantId>,
        /// Answer.
        reply: Reply,
    },
    /// Set the free-text label (empty clears it).
    Label {
        /// The label.
        label: String,
        /// Who asked.
        by: Option<ParticipantId>,
        /// Answer.
        reply: Reply,
    },
    /// The floor's answer to a seat or label change this actor sent (internal).
    Applied {
        /// What the change was.
        change: Change,
        /// The floor's outcome.
        outcome: Result<Posted, FloorError>,
        /// The requester.
        reply: Reply,
    },
    /// What the actor holds (tests check it against the store).
    #[cfg(feature = "fault-injection")]
    Seat(ractor::RpcReplyPort<Seat>),
    /// Panic inside the session (tests of supervision only).
    #[cfg(feature = "fault-injection")]
    Crash,
}

impl SessionMsg {
    /// Refuses the request without acting on it (the session does not exist, or its actor
    /// could not take it).
    pub(crate) fn refuse(self, e: FloorError) {
        match self {
            SessionMsg::Post(_, _, reply)
            | SessionMsg::Inject { reply, .. }
            | SessionMsg::ClaimDriver { reply, .. }
            | SessionMsg::Handoff { reply, .. }
            | SessionMsg::Label { reply, .. }
            | SessionMsg::Applied { reply, .. } => answer(reply, Err(e)),
            #[cfg(feature = "fault-injection")]
            SessionMsg::Seat(_) | SessionMsg::Crash => {}
        }
    }

    /// A request whose outcome depends on the seat, so it waits for a change in flight.
    fn is_seat_change(&self) -> bool {
        matches!(
            self,
            SessionMsg::ClaimDriver { .. } | SessionMsg::Handoff { .. } | SessionMsg::Label { .. }
        )
    }
}

/// A committed change to the session's state.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The driver seat is now this.
    Driver(Option<ParticipantId>),
    /// The label is now this.
    Label(Option<String>),
}

/// What a session actor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "fault-injection"), allow(unreachable_pub))]
pub struct Seat {
    /// The driver.
    pub driver: Option<ParticipantId>,
    /// The coding agent's identity.
    pub agent: Option<ParticipantId>,
    /// The label.
    pub label: Option<String>,
}

impl From<&SessionRow> for Seat {
    fn from(row: &SessionRow) -> Seat {
        Seat {
            driver: row.driver.clone(),
            agent: row.agent.clone(),
            label: row.label.clone(),
        }
    }
}

/// Start-up arguments.
pub(crate) struct SessionArgs {
    /// The project.
    pub(crate) project: ProjectKey,
    /// The session's row, as the floor read it before starting the actor.
    pub(crate) row: SessionRow,
    /// The floor's group commit.
    pub(crate) floor: DerivedActorRef<Commit>,
    /// For reloading the row after another node changed the seat.
    pub(crate) store: Store,
    /// What every written event passes before the commit.
    pub(crate) screen: Arc<Screen>,
}

/// State of a live session.
pub(crate) struct SessionState {
    project: ProjectKey,
    name: String,
    floor: DerivedActorRef<Commit>,
    store: Store,
    screen: Arc<Screen>,
    seat: Seat,
    /// A seat or label change is being committed; its outcome decides the next one.
    changing: bool,
    /// Seat requests that arrived meanwhile, in order.
    waiting: VecDeque<SessionMsg>,
}

/// The session actor.
pub(crate) struct Session;

impl Session {
    /// Starts a session actor under its floor.
    pub(crate) async fn spawn_linked(
        args: SessionArgs,
        floor: ractor::ActorCell,
    ) -> Result<SessionRef, ractor::SpawnErr> {
        let (session, _) = Actor::spawn_linked(None, Session, args, floor).await?;
        Ok(session)
    }
}

impl Actor for Session {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _: SessionRef,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            project: args.project,
            seat: Seat::from(&args.row),
            name: args.row.name,
            floor: args.floor,
            store: args.store,
            screen: args.screen,
            changing: false,
            waiting: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        myself: SessionRef,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.changing && msg.is_seat_change() {
            state.waiting.push_back(msg);
            return Ok(());
        }
        state.handle(&myself, msg).await?;
        // A change settled: what waited for it goes now, until one is in flight again.
        while !state.changing
            && let Some(next) = state.waiting.pop_front()
        {
            state.handle(&myself, next).await?;
        }
        Ok(())
    }
}

fn system_sender() -> ParticipantId {
    // A constant that satisfies the grammar; parse cannot fail.
    ParticipantId::parse(SYSTEM_SENDER).unwrap_or_else(|_| unreachable!("SYSTEM_SENDER is valid"))
}

impl SessionState {
    async fn handle(
        &mut self,
        myself: &SessionRef,
        msg: SessionMsg,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Post(incoming, caller, reply) => {
                let incoming = *incoming;
                if !caller.may_post_as(&incoming.sender) {
                    let who = caller
                        .participant
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    answer(
                        reply,
                        Err(FloorError::Forbidden(format!(
                            "{who} may not post as {}: post as yourself or as an agent working for you",
                            incoming.sender
                        ))),
                    );
                    return Ok(());
                }
                // An agent's lease is its top-level agent's: subagents run in its process.
                let fence = incoming.term.map(|term| Fence {
                    org: self.project.org.clone(),
                    lease: incoming.sender.root().to_owned(),
                    term,
                });
                let (payload, redactions) = match self.screened(incoming.payload).await {
                    Ok(p) => p,
                    Err(e) => {
                        answer(reply, Err(e));
                        return Ok(());
                    }
                };
                let now = to_ms(Utc::now());
                let event = NewEvent {
                    id: incoming.id,
                    session: Some(self.name.clone()),
                    timestamp: incoming.timestamp.unwrap_or(now),
                    received_at: now,
                    source: incoming.source,
                    kind: incoming.kind,
                    sender: incoming.sender,
                    payload,
                    redactions,
                    traceparent: incoming.traceparent,
                };
                self.commit_fenced(event, None, fence, reply);
            }
            SessionMsg::Inject {
                content,
                sender,
                traceparent,
                reply,
            } => {
                let payload = json!({"type": "inject", "content": content, "sender": sender, "target": self.name});
                let mut event = self.event(Source::Inject, "message", sender, &payload);
                event.traceparent = traceparent;
                match self.screened(event.payload).await {
                    Ok((payload, redactions)) => {
                        event.payload = payload;
                        event.redactions = redactions;
                        self.commit(event, None, reply);
                    }
                    Err(e) => answer(reply, Err(e)),
                }
            }
            SessionMsg::ClaimDriver { driver, by, reply } => match &self.seat.driver {
                Some(current) => answer(
                    reply,
                    Err(FloorError::Conflict(format!(
                        "session already has a driver: {current}"
                    ))),
                ),
                None => {
                    let payload =
                        json!({"type": "driver", "driver": driver, "previous": null, "by": by});
                    let event = self.event(Source::System, "driver", driver.clone(), &payload);
                    let effect = Effect::Driver {
                        expected: None,
                        new: Some(driver.clone()),
                    };
                    self.change(myself, event, effect, Change::Driver(Some(driver)), reply);
                }
            },
            SessionMsg::Handoff { by, reply } => match self.seat.driver.clone() {
                None => answer(
                    reply,
                    Err(FloorError::Invalid(
                        "session has no driver to hand off".into(),
                    )),
                ),
                Some(current) => {
                    let sender = by.unwrap_or_else(|| current.clone());
                    let payload = json!({"type": "handoff", "from": current});
                    let event = self.event(Source::System, "handoff", sender, &payload);
                    let effect = Effect::Driver {
                        expected: Some(current),
                        new: None,
                    };
                    self.change(myself, event, effect, Change::Driver(None), reply);
                }
            },
            SessionMsg::Label { label, by, reply } => {
                let sender = by.unwrap_or_else(system_sender);
                let payload = json!({"type": "label", "label": label});
                let event = self.event(Source::System, "label", sender, &payload);
                let value = (!label.is_empty()).then_some(label);
                let effect = Effect::Label(value.clone());
                self.change(myself, event, effect, Change::Label(value), reply);
            }
            SessionMsg::Applied {
                change,
                outcome,
                reply,
            } => {
                self.changing = false;
                match &outcome {
                    Ok(_) => match change {
                        Change::Driver(d) => self.seat.driver = d,
                        Change::Label(l) => self.seat.label = l,
                    },
                    // The compare-and-set failed: another node changed the seat. Learn
                    // what it is now; the requester is told to read and try again.
                    // Boxed: a store read's future is large, and the actor's task would
                    // otherwise carry its size for as long as the session is live.
                    Err(FloorError::Rejected(Rejected::Conflict(_))) => {
                        Box::pin(self.reload()).await?
                    }
                    Err(_) => {}
                }
                answer(reply, outcome);
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::Seat(reply) => {
                // The test may have given up waiting.
                let _ = reply.send(self.seat.clone());
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::Crash => {
                panic!("fault injection: session {} crashed on request", self.name)
            }
        }
        Ok(())
    }

    /// An event the session itself writes (inject, driver, label).
    fn event(
        &self,
        source: Source,
        kind: &str,
        sender: ParticipantId,
        payload: &Value,
    ) -> NewEvent {
        let now = to_ms(Utc::now());
        NewEvent {
            id: Uuid::now_v7(),
            session: Some(self.name.clone()),
            timestamp: now,
            received_at: now,
            source,
            kind: kind.to_owned(),
            sender,
            // A Value always serializes; RawValue accepts what serde_json wrote.
            payload: serde_json::value::to_raw_value(payload)
                .unwrap_or_else(|_| unreachable!("serialized JSON is valid JSON")),
            redactions: Vec::new(),
            traceparent: None,
        }
    }

    /// A participant's payload as the project's policy lets it be committed.
    async fn screened(
        &self,
        payload: Box<RawValue>,
    ) -> Result<(Box<RawValue>, Vec<Redaction>), FloorError> {
        self.screen
            .payload(&self.project, payload)
            .await
            .map_err(|e| FloorError::Store(Arc::new(e)))
    }

    /// Hands an event to the floor's group commit; the floor answers `reply`.
    fn commit(&self, event: NewEvent, effect: Option<Effect>, reply: Reply) {
        self.commit_fenced(event, effect, None, reply);
    }

    /// As [`SessionState::commit`], refused unless the writer's lease is at its term.
    fn commit_fenced(
        &self,
        event: NewEvent,
        effect: Option<Effect>,
        fence: Option<Fence>,
        reply: Reply,
    ) {
        let item = Append {
            event,
            effect,
            fence,
        };
        if let Err(MessagingErr::SendErr(c)) = self.floor.send_message(Commit { item, reply }) {
            answer(c.reply, Err(FloorError::Unavailable));
        }
    }

    /// Commits a seat or label change; the outcome comes back as [`SessionMsg::Applied`],
    /// and until then further seat requests wait.
    fn change(
        &mut self,
        myself: &SessionRef,
        event: NewEvent,
        effect: Effect,
        change: Change,
        reply: Reply,
    ) {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.commit(event, Some(effect), tx.into());
        self.changing = true;
        let me = myself.clone();
        tokio::spawn(async move {
            // A dropped port means the floor stopped before answering.
            let outcome = rx.await.unwrap_or(Err(FloorError::Unavailable));
            let back = SessionMsg::Applied {
                change,
                outcome,
                reply,
            };
            // This actor stopped meanwhile (idle, crash, shutdown): its successor loads
            // the committed state from the store, so the requester just hears the outcome.
            if let Err(MessagingErr::SendErr(SessionMsg::Applied { outcome, reply, .. })) =
                me.send_message(back)
            {
                answer(reply, outcome);
            }
        });
    }

    async fn reload(&mut self) -> Result<(), ActorProcessingErr> {
        match self.store.get_session(&self.project, &self.name).await? {
            Some(row) => self.seat = Seat::from(&row),
            None => return Err(format!("session {} vanished from the store", self.name).into()),
        }
        Ok(())
    }
}
