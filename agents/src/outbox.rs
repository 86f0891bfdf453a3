//! Where an agent's posts go.
//!
//! An agent never writes to a floor directly: it hands each post to an [`Outbox`]. In the
//! floor's own process that is [`InProcess`], which gives the event to the session actor and
//! returns once the floor has committed it. An agent running elsewhere posts through an
//! embedded sidecar ([`Sidecar`]): the event is in the sidecar's write-ahead log when `post`
//! returns, and the sidecar delivers it with retries and the same id, exactly as a
//! developer's hooks do. The agent's code is the same either way.

use std::sync::Arc;

use futures::future::BoxFuture;
use polaris_runtime::Runtime;
use polaris_runtime::auth::{Caller, Role};
use polaris_protocol::{NewEventBody, Source};
use polaris_runtime::session::SessionMsg;
use polaris_runtime::store::ProjectKey;
use polaris_protocol::validate::Incoming;

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutboxError(pub String);

/// The one way an agent posts to a floor.
pub trait Outbox: Send + Sync + 'static {
    /// Posts `incoming` (sent as `incoming.sender`, an agent of `org`) into `session` of
    /// `project`. `Ok` means the event is safe: committed on the floor, or durably queued
    /// for it. The event's id makes a repeated post harmless.
    fn post<'a>(
        &'a self,
        org: &'a str,
        project: &'a ProjectKey,
        session: &'a str,
        incoming: Incoming,
    ) -> BoxFuture<'a, Result<(), OutboxError>>;
}

/// Posts straight into the session actors of a runtime in this process.
pub struct InProcess {
    runtime: Runtime,
}

impl InProcess {
    /// An outbox over `runtime`.
    pub fn shared(runtime: Runtime) -> Arc<dyn Outbox> {
        Arc::new(InProcess { runtime })
    }
}

impl Outbox for InProcess {
    fn post<'a>(
        &'a self,
        org: &'a str,
        project: &'a ProjectKey,
        session: &'a str,
        incoming: Incoming,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async move {
            let caller = Caller::participant(org, incoming.sender.clone(), Role::Member);
            self.runtime
                .ask_session(project, session, |reply| {
                    SessionMsg::Post(Box::new(incoming.clone()), caller.clone(), reply)
                })
                .await
                .map(|_| ())
                .map_err(|e| OutboxError(e.to_string()))
        })
    }
}

/// The body an event travels in over HTTP (the sidecar's and the floor's
/// `POST …/events`). Only the floor writes `system` events and kinds such as
/// `rate_limited`, so an agent outside the floor's process posts its notices as its own
/// `agent` messages of type `notice`, with the floor's kind as their `reason`.
pub fn to_body(incoming: Incoming) -> NewEventBody {
    let mut payload: serde_json::Value = serde_json::from_str(incoming.payload.get())
        .unwrap_or_else(|_| unreachable!("a RawValue holds valid JSON"));
    let source = match incoming.source {
        Source::System => {
            if let Some(obj) = payload.as_object_mut() {
                obj.insert("reason".into(), incoming.kind.clone().into());
                obj.insert("type".into(), "notice".into());
            }
            Source::Agent
        }
        other => other,
    };
    NewEventBody {
        id: Some(incoming.id),
        timestamp: incoming.timestamp,
        source: Some(source),
        sender: incoming.sender,
        payload,
    }
}

/// An agent outside the floor's process posts through an embedded sidecar: `post` returns
/// once the event is fsynced in the sidecar's write-ahead log, and the sidecar delivers it
/// to the floor over HTTP with retries and the same id, through outages and restarts.
impl Outbox for polaris_sidecar::Uplink {
    fn post<'a>(
        &'a self,
        _org: &'a str,
        project: &'a ProjectKey,
        session: &'a str,
        incoming: Incoming,
    ) -> BoxFuture<'a, Result<(), OutboxError>> {
        // The org is the uplink's token's: a sidecar speaks for one org.
        Box::pin(async move {
            self.submit(&project.name, session, to_body(incoming))
                .await
                .map(|_| ())
                .map_err(|e| OutboxError(e.to_string()))
        })
    }
}
