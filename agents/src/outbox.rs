//! Where an agent's posts go.
//!
//! An agent never writes to a floor directly: it hands each post to an [`Outbox`]. In the
//! floor's own process that is [`InProcess`], which gives the event to the session actor and
//! returns once the floor has committed it. An agent running elsewhere posts through an
//! embedded sidecar (a [`Relay`] over its uplink): the event is in the sidecar's write-ahead log when `post`
//! returns, and the sidecar delivers it with retries and the same id, exactly as a
//! developer's hooks do. The agent's code is the same either way.

use std::sync::Arc;

use futures::future::BoxFuture;
use polaris_protocol::validate::Incoming;
use polaris_protocol::{NewEventBody, Source};
use polaris_runtime::ProjectKey;
use polaris_runtime::Runtime;
use polaris_runtime::auth::{Caller, Role};

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutboxError(pub String);

/// Completes once the floor has handled a posted event (committed it, or refused it for
/// good): an agent moves its read position past a question only then.
pub type Delivered = BoxFuture<'static, ()>;

/// The one way an agent posts to a floor.
pub trait Outbox: Send + Sync + 'static {
    /// Posts `incoming` (sent as `incoming.sender`, an agent of `org`) into `session` of
    /// `project`. `Ok` means the event is safe: committed on the floor, or durably queued
    /// for it; the [`Delivered`] it returns says when it is on the floor. The event's id
    /// makes a repeated post harmless.
    fn post<'a>(
        &'a self,
        org: &'a str,
        project: &'a ProjectKey,
        session: &'a str,
        incoming: Incoming,
    ) -> BoxFuture<'a, Result<Delivered, OutboxError>>;
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
    ) -> BoxFuture<'a, Result<Delivered, OutboxError>> {
        Box::pin(async move {
            let caller = Caller::participant(org, incoming.sender.clone(), Role::Member);
            self.runtime
                .post(project, session, incoming, &caller)
                .await
                .map_err(|e| OutboxError(e.to_string()))?;
            // Committed already.
            Ok(Box::pin(std::future::ready(())) as Delivered)
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
        traceparent: incoming.traceparent,
        term: incoming.term,
        id: Some(incoming.id),
        timestamp: incoming.timestamp,
        source: Some(source),
        sender: incoming.sender,
        payload,
    }
}

/// An agent outside the floor's process posts the floor's HTTP event body through
/// `submit`: `polaris agent run` hands in its embedded sidecar's uplink, whose `submit`
/// returns once the event is fsynced in the write-ahead log and then delivers it with
/// retries and the same id, through outages and restarts. The agents never link the
/// sidecar; whoever starts the agent wires the two together.
pub struct Relay<F>(F);

/// What a [`Relay`] is handed: `(project, session, body)` to a future that is `Ok` once
/// the event is safe, with the [`Delivered`] that completes once it is on the floor.
pub type Submit = dyn Fn(String, String, NewEventBody) -> BoxFuture<'static, Result<Delivered, String>>
    + Send
    + Sync;

impl Relay<Box<Submit>> {
    /// An outbox over `submit`.
    pub fn shared<F>(submit: F) -> Arc<dyn Outbox>
    where
        F: Fn(String, String, NewEventBody) -> BoxFuture<'static, Result<Delivered, String>>
            + Send
            + Sync
            + 'static,
    {
        Arc::new(Relay(Box::new(submit) as Box<Submit>))
    }
}

impl Outbox for Relay<Box<Submit>> {
    fn post<'a>(
        &'a self,
        _org: &'a str,
        project: &'a ProjectKey,
        session: &'a str,
        incoming: Incoming,
    ) -> BoxFuture<'a, Result<Delivered, OutboxError>> {
        // The org is the relay's credentials': a sidecar speaks for one org.
        let sent = (self.0)(
            project.name.to_string(),
            session.to_owned(),
            to_body(incoming),
        );
        Box::pin(async move { sent.await.map_err(OutboxError) })
    }
}
