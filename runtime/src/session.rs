//! The session actor: one per live session. It checks who may post what, stamps events
//! (source, kind, times, search text, the inject's target) and hands them to its floor,
//! and serialises the session's state changes (driver seat, label) so that each is
//! recorded on the floor in the same transaction that makes it.
//!
//! The session never waits on a commit: it passes the caller's reply port along to the
//! floor, so one busy session still feeds the floor's group commit. Driver changes read
//! the current driver from the store first and commit as a compare-and-set, which also
//! holds when several nodes share the database.
//!
//! Error policy: every refusal is an `Err` reply; the handler itself never fails. An idle
//! session is stopped by its floor's sweep and started again on the next request.

use std::sync::Arc;

use chrono::Utc;
use polaris_registry::ParticipantId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::floor::{FloorError, FloorMsg, FloorRef, Posted};
use crate::protocol::{Source, to_ms};
use crate::runtime::Shared;
use crate::store::{Append, Effect, NewEvent, ProjectKey};
use crate::validate::Incoming;

/// The floor's own identity, the sender of changes made by an anonymous caller.
pub const SYSTEM_SENDER: &str = "agent:polaris";

/// Handle to a session actor.
pub type SessionRef = ActorRef<SessionMsg>;

/// Where a session answers.
pub type Reply = RpcReplyPort<Result<Posted, FloorError>>;

/// Messages of the session actor.
pub enum SessionMsg {
    /// Stamp and commit a client's event, posted by `Caller`.
    Post(Box<Incoming>, Caller, Reply),
    /// An advisor's message into this session (`sender` already decided by the API:
    /// the caller itself when authenticated).
    Inject {
        /// The message.
        content: String,
        /// The advisor.
        sender: ParticipantId,
        /// Answer.
        reply: Reply,
    },
    /// Take the driver seat, which must be empty.
    ClaimDriver {
        /// The new driver.
        driver: ParticipantId,
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
    /// Panic inside the session (tests of supervision only).
    #[cfg(feature = "fault-injection")]
    Crash,
}

/// Start-up arguments.
pub struct SessionArgs {
    /// The project.
    pub project: ProjectKey,
    /// The session's name.
    pub name: String,
    /// The floor to commit through.
    pub floor: FloorRef,
    /// Runtime services.
    pub shared: Arc<Shared>,
}

/// State of a live session.
pub struct SessionState {
    project: ProjectKey,
    name: String,
    floor: FloorRef,
    shared: Arc<Shared>,
}

/// The session actor.
pub struct Session;

impl Session {
    /// Starts a session actor under its floor.
    pub async fn spawn_linked(
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
            name: args.name,
            floor: args.floor,
            shared: args.shared,
        })
    }

    async fn handle(
        &self,
        _: SessionRef,
        msg: SessionMsg,
        state: &mut SessionState,
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
                let now = to_ms(Utc::now());
                let event = NewEvent {
                    id: incoming.id,
                    session: Some(state.name.clone()),
                    timestamp: incoming.timestamp.unwrap_or(now),
                    received_at: now,
                    source: incoming.source,
                    kind: incoming.kind,
                    sender: incoming.sender,
                    payload: incoming.payload,
                };
                state.commit(event, None, reply);
            }
            SessionMsg::Inject {
                content,
                sender,
                reply,
            } => {
                let payload = json!({"type": "inject", "content": content, "sender": sender, "target": state.name});
                let event = state.event(Source::Inject, "message", sender, &payload);
                state.commit(event, None, reply);
            }
            SessionMsg::ClaimDriver { driver, reply } => {
                match Box::pin(state.current_driver()).await {
                    Err(e) => answer(reply, Err(e)),
                    Ok(Some(current)) => answer(
                        reply,
                        Err(FloorError::Conflict(format!(
                            "session already has a driver: {current}"
                        ))),
                    ),
                    Ok(None) => {
                        let payload = json!({"type": "driver", "driver": driver, "previous": null});
                        let event = state.event(Source::System, "driver", driver.clone(), &payload);
                        let effect = Effect::Driver {
                            expected: None,
                            new: Some(driver),
                        };
                        state.commit(event, Some(effect), reply);
                    }
                }
            }
            SessionMsg::Handoff { by, reply } => match Box::pin(state.current_driver()).await {
                Err(e) => answer(reply, Err(e)),
                Ok(None) => answer(
                    reply,
                    Err(FloorError::Invalid(
                        "session has no driver to hand off".into(),
                    )),
                ),
                Ok(Some(current)) => {
                    let sender = by.unwrap_or_else(|| current.clone());
                    let payload = json!({"type": "handoff", "from": current});
                    let event = state.event(Source::System, "handoff", sender, &payload);
                    let effect = Effect::Driver {
                        expected: Some(current),
                        new: None,
                    };
                    state.commit(event, Some(effect), reply);
                }
            },
            SessionMsg::Label { label, by, reply } => {
                let sender = by.unwrap_or_else(system_sender);
                let payload = json!({"type": "label", "label": label});
                let event = state.event(Source::System, "label", sender, &payload);
                let value = (!label.is_empty()).then_some(label);
                state.commit(event, Some(Effect::Label(value)), reply);
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::Crash => {
                panic!("fault injection: session {} crashed on request", state.name)
            }
        }
        Ok(())
    }
}

fn system_sender() -> ParticipantId {
    // A constant that satisfies the grammar; parse cannot fail.
    ParticipantId::parse(SYSTEM_SENDER).unwrap_or_else(|_| unreachable!("SYSTEM_SENDER is valid"))
}

fn answer(reply: Reply, result: Result<Posted, FloorError>) {
    // The caller may have gone (connection closed); the outcome stands either way.
    let _ = reply.send(result);
}

impl SessionState {
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
        }
    }

    fn commit(&self, event: NewEvent, effect: Option<Effect>, reply: Reply) {
        let item = Box::new(Append { event, effect });
        if let Err(ractor::MessagingErr::SendErr(FloorMsg::Append(_, reply))) =
            self.floor.cast(FloorMsg::Append(item, reply))
        {
            answer(reply, Err(FloorError::Unavailable));
        }
    }

    async fn current_driver(&self) -> Result<Option<ParticipantId>, FloorError> {
        match self
            .shared
            .store
            .get_session(&self.project, &self.name)
            .await
        {
            Ok(Some(s)) => Ok(s.driver),
            Ok(None) => Err(FloorError::Invalid("session not found".into())),
            Err(e) => Err(FloorError::Store(Arc::new(e))),
        }
    }
}
