//! The concierge: one per org, it reads every floor and answers mentions of agents that
//! are not on that floor — with who the agent is and how to bring it in — so an `@sage`
//! on a floor Sage has not joined is never met with silence.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use polaris_protocol::Source;
use polaris_protocol::validate::Incoming;
use polaris_registry::ParticipantId;
use polaris_runtime::Committed;
use polaris_runtime::ProjectKey;
use polaris_runtime::Runtime;
use polaris_runtime::SYSTEM_SENDER;
use polaris_runtime::auth::{Caller, Role};
use polaris_runtime::{Budget, NewTask};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::json;
use uuid::Uuid;

use crate::health::Health;
use crate::link::FloorLink;
use crate::reader::{Reader, Wiring};
use crate::route::Router;
use crate::text::ANSWER_NAMESPACE;

const FLUSH_EVERY: Duration = Duration::from_secs(2);

const WIRING: Wiring<ConciergeMsg> = Wiring {
    events: ConciergeMsg::Events,
    failed: ConciergeMsg::Reopen,
    open: ConciergeMsg::Open,
};

/// Handle to a concierge.
pub type ConciergeRef = ActorRef<ConciergeMsg>;

/// What a concierge needs.
pub struct ConciergeArgs {
    /// The floor service (the concierge runs in its process and posts as the floor).
    pub runtime: Runtime,
    /// The floor, for reading.
    pub link: Arc<dyn FloorLink>,
    /// Its org.
    pub org: Arc<str>,
    /// The org's agents.
    pub router: Arc<Router>,
    /// Every floor of the org.
    pub floors: Vec<ProjectKey>,
    /// Who is on each floor (direct members; subagents count through their parent).
    pub present: HashMap<Uuid, HashSet<ParticipantId>>,
}

/// Messages of the concierge.
pub enum ConciergeMsg {
    /// Events from a floor, in `seq` order.
    Events(ProjectKey, Vec<Arc<Committed>>),
    /// Floors, agents or memberships changed.
    Update(Box<ConciergeArgs>),
    /// A floor's subscription failed.
    Reopen(ProjectKey),
    /// Open a floor's subscription.
    Open(ProjectKey),
    /// Save cursors.
    Flush,
}

/// State of a concierge.
pub struct ConciergeState {
    args: ConciergeArgs,
    reader: Reader,
    /// Subagents removed by hand from floors their parent is on.
    removed: HashMap<Uuid, HashSet<ParticipantId>>,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

/// The concierge actor.
pub struct Concierge;

impl Concierge {
    /// Starts a concierge under `supervisor`.
    pub async fn spawn_linked(
        args: ConciergeArgs,
        supervisor: ractor::ActorCell,
    ) -> Result<ConciergeRef, ractor::SpawnErr> {
        let (r, _) = Actor::spawn_linked(None, Concierge, args, supervisor).await?;
        Ok(r)
    }
}

impl Actor for Concierge {
    type Msg = ConciergeMsg;
    type State = ConciergeState;
    type Arguments = ConciergeArgs;

    async fn pre_start(
        &self,
        myself: ConciergeRef,
        args: ConciergeArgs,
    ) -> Result<ConciergeState, ActorProcessingErr> {
        let mut state = ConciergeState {
            reader: Reader::new(
                args.link.clone(),
                args.org.clone(),
                SYSTEM_SENDER.to_owned(),
                Vec::new(),
                None,
                // Not part of any agent's readiness.
                Arc::new(Health::default()),
            ),
            removed: HashMap::new(),
            flusher: Some(myself.send_interval(FLUSH_EVERY, || ConciergeMsg::Flush)),
            args,
        };
        for key in state.args.floors.clone() {
            state.reader.open(&myself, key, &WIRING).await;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ConciergeRef,
        state: &mut ConciergeState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(f) = state.flusher.take() {
            f.abort();
        }
        state.reader.close_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ConciergeRef,
        msg: ConciergeMsg,
        state: &mut ConciergeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConciergeMsg::Events(key, events) => {
                for c in events {
                    if state.reader.arrived(&key.id, c.event.seq) {
                        on_event(state, key.clone(), c);
                    }
                }
            }
            ConciergeMsg::Update(args) => {
                let wanted: Vec<Uuid> = args.floors.iter().map(|k| k.id).collect();
                state.reader.retain(|p| wanted.contains(p)).await;
                state.args = *args;
                for key in state.args.floors.clone() {
                    state.reader.open(&myself, key, &WIRING).await;
                }
            }
            ConciergeMsg::Reopen(key) => state.reader.reopen(&myself, key, &WIRING).await,
            ConciergeMsg::Open(key) => {
                if state.args.floors.iter().any(|k| k.id == key.id) {
                    state.reader.open(&myself, key, &WIRING).await;
                }
            }
            ConciergeMsg::Flush => state.reader.flush().await,
        }
        Ok(())
    }
}

/// Is `agent` on the floor: itself, or through a parent that is (unless it was removed)?
fn is_present(state: &ConciergeState, floor: &Uuid, agent: &ParticipantId) -> bool {
    let Some(set) = state.args.present.get(floor) else {
        return false;
    };
    if set.contains(agent) {
        return true;
    }
    let removed = state.removed.get(floor).is_some_and(|r| r.contains(agent));
    let parent = state
        .args
        .router
        .agent(agent)
        .and_then(|s| s.parent.clone());
    !removed && parent.is_some_and(|p| set.contains(&p))
}

/// Joins and leaves read from the stream keep the picture in seq order with the mentions.
fn track_presence(state: &mut ConciergeState, key: &ProjectKey, e: &polaris_protocol::Event) {
    let p = e.payload_value();
    let Some(agent) = p
        .get("agent")
        .and_then(serde_json::Value::as_str)
        .and_then(|a| ParticipantId::parse(a).ok())
    else {
        return;
    };
    let set = state.args.present.entry(key.id).or_default();
    match e.kind.as_str() {
        "join" => {
            set.insert(agent.clone());
            if let Some(r) = state.removed.get_mut(&key.id) {
                r.remove(&agent);
            }
        }
        "leave" => {
            set.remove(&agent);
            if p.get("reason").and_then(serde_json::Value::as_str) == Some("removed") {
                state.removed.entry(key.id).or_default().insert(agent);
            }
        }
        _ => {}
    }
}

fn on_event(state: &mut ConciergeState, key: ProjectKey, c: Arc<Committed>) {
    let e = &c.event;
    let Some(session) = e.session.clone() else {
        track_presence(state, &key, e);
        return;
    };
    if e.sender.as_str() == SYSTEM_SENDER {
        return;
    }
    if e.kind == "driver" && e.source == Source::System {
        seated(state, &key, &session, e);
        return;
    }
    let text = c.words();
    if let Some((agent, task)) = state.args.router.take(text)
        && e.sender != agent
        && is_present(state, &key.id, &agent)
    {
        hand_over(state, &key, &session, e, agent, task);
        return;
    }
    let routing = state.args.router.route(text, Some(&e.sender), false);
    for agent in routing.responders {
        if is_present(state, &key.id, &agent) {
            continue;
        }
        let Some(spec) = state.args.router.agent(&agent) else {
            continue;
        };
        let how = if spec.tags.is_empty() {
            String::new()
        } else {
            format!(
                ", or give the project one of its tags ({})",
                spec.tags.join(", ")
            )
        };
        let content = format!(
            "{} isn't on this floor, so nobody will answer that. Invite {} with `POST /projects/{}/agents {{\"agent\": \"{}\"}}`{how}.",
            spec.shown_name(),
            spec.name,
            key.name,
            spec.id
        );
        let payload =
            json!({"type": "notice", "content": content, "in_reply_to": e.id, "agent": spec.id});
        let id = format!("absent/{}/{}", spec.id, e.id);
        let runtime = state.args.runtime.clone();
        let (project, session) = (key.clone(), session.clone());
        tokio::spawn(async move { post_notice(&runtime, &project, &session, &id, payload).await });
    }
}

/// Someone seated a named agent as a session's driver (a handoff, then `POST …/driver
/// {"driver": "agent:dean"}`): the agent continues that session's work as a task. The floor
/// seating an agent for a task it hands over says `by` itself, and is not this.
fn seated(state: &ConciergeState, key: &ProjectKey, session: &str, e: &polaris_protocol::Event) {
    let p = e.payload_value();
    let Some(agent) = p["driver"]
        .as_str()
        .and_then(|d| ParticipantId::parse(d).ok())
    else {
        return;
    };
    let by = p["by"].as_str().and_then(|b| ParticipantId::parse(b).ok());
    let Some(by) = by.filter(|b| b.as_str() != SYSTEM_SENDER && *b != agent) else {
        return;
    };
    let is_agent = state
        .args
        .router
        .agent(&agent)
        .is_some_and(|s| s.parent.is_none());
    if !is_agent || !is_present(state, &key.id, &agent) {
        return;
    }
    let id = Uuid::new_v5(
        &ANSWER_NAMESPACE,
        format!("{SYSTEM_SENDER}/seated/{agent}/{}", e.id).as_bytes(),
    );
    let new = NewTask {
        id: Some(id),
        agent: agent.clone(),
        task: String::new(),
        session: Some(session.to_owned()),
        budget: Budget::default(),
        by: Some(by),
        seated: true,
    };
    let runtime = state.args.runtime.clone();
    let project = key.clone();
    tokio::spawn(async move {
        if let Err(err) = runtime.hand_task(&project, new).await {
            tracing::warn!(agent = %agent, error = %err, "the seated agent was not given the session's work");
        }
    });
}

/// `@dean take: …`: hands the task to the agent (a session of its own) and says where it
/// runs, or why it could not be handed over, in the session it was asked in. The task's id
/// comes from the asking event, so reading that event again hands nothing over twice.
fn hand_over(
    state: &ConciergeState,
    key: &ProjectKey,
    session: &str,
    e: &polaris_protocol::Event,
    agent: ParticipantId,
    task: String,
) {
    let id = Uuid::new_v5(
        &ANSWER_NAMESPACE,
        format!("{SYSTEM_SENDER}/take/{agent}/{}", e.id).as_bytes(),
    );
    let new = NewTask {
        id: Some(id),
        agent: agent.clone(),
        task,
        session: None,
        budget: Budget::default(),
        by: Some(e.sender.clone()),
        seated: false,
    };
    let shown = state
        .args
        .router
        .agent(&agent)
        .map_or_else(|| agent.to_string(), |s| s.shown_name().to_owned());
    let runtime = state.args.runtime.clone();
    let (project, session, asked) = (key.clone(), session.to_owned(), e.id);
    tokio::spawn(async move {
        let content = match runtime.hand_task(&project, new).await {
            Ok(h) => format!(
                "{shown} took the task: it runs in session {} (task {}).",
                h.session, h.id
            ),
            Err(err) => format!("{shown} could not take the task: {err}"),
        };
        let payload = json!({"type": "notice", "content": content, "in_reply_to": asked, "agent": agent, "task_id": id});
        post_notice(&runtime, &project, &session, &format!("took/{id}"), payload).await;
    });
}

/// Posts a notice as the floor (`agent:polaris`) into `session`; its id is derived from
/// `what`, so posting it again is the idempotent no-op of the first.
async fn post_notice(
    runtime: &Runtime,
    project: &ProjectKey,
    session: &str,
    what: &str,
    payload: serde_json::Value,
) {
    let Ok(sender) = ParticipantId::parse(SYSTEM_SENDER) else {
        return;
    };
    let incoming = Incoming {
        traceparent: None,
        term: None,
        id: Uuid::new_v5(
            &ANSWER_NAMESPACE,
            format!("{SYSTEM_SENDER}/{what}").as_bytes(),
        ),
        timestamp: None,
        source: Source::System,
        kind: "notice".into(),
        sender,
        payload: serde_json::value::to_raw_value(&payload)
            .unwrap_or_else(|_| unreachable!("a Value serializes")),
    };
    let caller = Caller::participant(&project.org, incoming.sender.clone(), Role::Service);
    if let Err(e) = runtime.post(project, session, incoming, &caller).await {
        tracing::warn!(error = %e, what, "notice not posted");
    }
}
