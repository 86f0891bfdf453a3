//! The agent actor: one per named agent (or per agent and floor, for `context:
//! isolated`), with its subagents as child actors.
//!
//! It reads each floor it is on from its stored cursor (see [`crate::reader`]), so a
//! restart neither misses an event nor skips one; answers carry an id derived from
//! (agent, event), so an event handled twice is answered once. For each event: its own
//! and floor-wide ones are ignored; it acts when mentioned (the router decides, with the
//! author rule), within its hop bound and rate limits, and a parent hands a question to
//! the subagent whose skills fit. The brain runs in a task of its own and its answer
//! comes back as a message, so the mailbox never waits on a database.
//!
//! Error policy: nothing an event contains stops the actor. A failed post is retried a
//! few times, then logged; a subscription that fails is reopened from the cursor. A
//! subagent that fails is restarted by its parent.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use polaris_protocol::validate::Incoming;
use polaris_protocol::{Source, TraceParent};
use polaris_registry::{AgentSpec, ParticipantId};
use polaris_runtime::Committed;
use polaris_runtime::ProjectKey;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::brain::OfflineBrain;
use crate::driver::{self, Drive, Signal, Task};
use crate::health::Health;
use crate::intent::Intents;
use crate::link::FloorLink;
use crate::mind::{Mind, Question, RECENT};
use crate::outbox::Outbox;
use crate::passive::{Job, Passive};
use crate::reader::{Reader, Wiring};
use crate::route::Router;
use crate::text::hops;

/// How often cursors are saved.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// Attempts at posting an answer before giving up.
const POST_ATTEMPTS: u32 = 5;
/// At most one rate-limit notice per floor per this long.
const NOTICE_EVERY: Duration = Duration::from_secs(60);
/// Passive advice is rate-limited more strictly than answers: this fraction of the
/// agent's per-floor answer rate (at least one a minute).
const PASSIVE_SHARE: u32 = 4;
/// Things already advised on, kept per session, and sessions kept.
const ADVISED_KEPT: (usize, usize) = (200, 1_000);

pub use crate::text::ANSWER_NAMESPACE;

const WIRING: Wiring<AgentMsg> = Wiring {
    events: AgentMsg::Events,
    failed: AgentMsg::Reopen,
    open: AgentMsg::Open,
};

/// Handle to an agent actor.
pub type AgentRef = ActorRef<AgentMsg>;

/// What an agent needs to run.
pub struct AgentArgs {
    /// The floor, for reading (streams, cursors).
    pub link: Arc<dyn FloorLink>,
    /// Where its open streams are counted (readiness).
    pub health: Arc<Health>,
    /// Where its posts go.
    pub outbox: Arc<dyn Outbox>,
    /// Its org.
    pub org: Arc<str>,
    /// Its definition.
    pub spec: AgentSpec,
    /// The directory its knowledge paths start from.
    pub base_dir: PathBuf,
    /// The org's agents, for mention routing and hand-offs.
    pub router: Arc<Router>,
    /// The floors it reads.
    pub floors: Vec<ProjectKey>,
    /// Its subagents, each with the floors it reads.
    pub children: Vec<(AgentSpec, Vec<ProjectKey>)>,
    /// The term of the lease it runs under: every post carries it, and the floor refuses
    /// them once another instance took the lease over. `None`: it runs unleased.
    pub term: Option<i64>,
    /// Passive monitoring, if the process runs it (top-level agents only use it).
    pub passive: Option<Passive>,
    /// The offline brain's intents by meaning, when the passive model is loaded.
    pub intents: Option<Arc<Intents>>,
}

impl AgentArgs {
    /// A subagent's arguments: this agent's world, its own definition and floors.
    fn for_child(&self, spec: AgentSpec, floors: Vec<ProjectKey>) -> AgentArgs {
        AgentArgs {
            link: self.link.clone(),
            health: self.health.clone(),
            outbox: self.outbox.clone(),
            org: self.org.clone(),
            spec,
            base_dir: self.base_dir.clone(),
            router: self.router.clone(),
            floors,
            children: Vec::new(),
            term: self.term,
            // Subagents are reached through their parent: they never speak up unasked.
            passive: None,
            intents: self.intents.clone(),
        }
    }
}

/// Messages of the agent actor.
pub enum AgentMsg {
    /// Events from one of its floors, in `seq` order.
    Events(ProjectKey, Vec<Arc<Committed>>),
    /// An event its parent hands over for it to answer.
    Delegated(ProjectKey, Arc<Committed>),
    /// The brain's answer to an event is ready.
    Answered(Box<Answer>),
    /// The directory changed: new definition, floors, router or subagents.
    Update(Box<AgentArgs>),
    /// A floor's subscription failed.
    Reopen(ProjectKey),
    /// Open a floor's subscription (if the agent is still on it).
    Open(ProjectKey),
    /// Save cursors.
    Flush,
    /// The answer to the event at this seq of a floor is on the floor.
    Delivered(Uuid, i64),
    /// A task the agent drove (its `task` event at this seq) has ended, its `Stop` on the
    /// floor.
    TaskEnded(Uuid, String, i64),
    /// Passive monitoring scored unaddressed events for this agent: they are in its
    /// [`Scores`] inbox.
    Scored,
    /// Passive advice is written and ready to post.
    Advise(Box<Answer>),
}

/// An event's score, on the floor it came from.
type Scored = (ProjectKey, Arc<Committed>, Option<polaris_passive::Score>);

/// Scores passive monitoring handed back (`None`: it did not score the event, the job was
/// shed or the scorer failed), waiting for the agent. The worker (or a submit that sheds)
/// adds to it and sends [`AgentMsg::Scored`] only when it was empty, so a batch of scores
/// is one message however many events it holds.
#[derive(Default)]
struct Scores(std::sync::Mutex<Vec<Scored>>);

impl Scores {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Scored>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a score; true when the agent has to be told.
    fn add(&self, scored: Scored) -> bool {
        let mut v = self.lock();
        v.push(scored);
        v.len() == 1
    }

    fn take(&self) -> Vec<Scored> {
        std::mem::take(&mut *self.lock())
    }
}

/// A task the agent is driving, by (floor, session).
struct Driving {
    task: Uuid,
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
    run: tokio::task::JoinHandle<()>,
}

/// An answer on its way to the floor.
pub struct Answer {
    project: ProjectKey,
    event: Arc<Committed>,
    content: String,
    attempts: u32,
    /// Whether the event was counted as pending on this agent's own reader.
    tracked: bool,
    /// The answer's span (open until it is posted) and the context the answer is posted
    /// with: see [`answer_span`].
    span: tracing::Span,
    trace: Option<TraceParent>,
}

/// The span of answering (`advice`: advising on) an event, a child of the event's
/// context, and the context the answer is posted with, so the answer is in the question's
/// trace. When this process does not export traces: no span, and the answer carries the
/// question's context on.
fn answer_span(
    me: &ParticipantId,
    e: &polaris_protocol::Event,
    advice: bool,
) -> (tracing::Span, Option<TraceParent>) {
    if !polaris_telemetry::enabled() {
        return (tracing::Span::none(), e.traceparent.clone());
    }
    let span = if advice {
        tracing::info_span!(parent: None, "agent.advice", agent = %me, event = %e.id, seq = e.seq)
    } else {
        tracing::info_span!(parent: None, "agent.answer", agent = %me, event = %e.id, seq = e.seq)
    };
    let trace = polaris_telemetry::adopt(&span, e.traceparent.clone());
    (span, trace)
}

/// State of a running agent.
pub struct AgentState {
    args: AgentArgs,
    brain: Arc<OfflineBrain>,
    /// The brains answers come from (the offline one included).
    mind: Arc<Mind>,
    /// Recent events per floor, oldest first, for the LLM brain's prompt.
    recent: HashMap<Uuid, VecDeque<(String, String)>>,
    reader: Reader,
    children: HashMap<ParticipantId, AgentRef>,
    per_floor: DefaultKeyedRateLimiter<Uuid>,
    overall: DefaultDirectRateLimiter,
    noticed: HashMap<Uuid, Instant>,
    /// Floors where the stream says this agent (or its parent) has left: the floor's own
    /// `leave` event, read in order with everything else, decides — not the moment the
    /// host gets round to closing the subscription.
    left: HashMap<Uuid, bool>,
    flusher: Option<tokio::task::JoinHandle<()>>,
    /// Tasks it is driving.
    driving: HashMap<(Uuid, String), Driving>,
    /// Recent injects in sessions it does not drive (yet): advice given before a task is
    /// handed over is the first thing the task takes in.
    advice: HashMap<(Uuid, String), Vec<(String, String)>>,
    /// Passive advice per floor (stricter than answers).
    passive_rate: DefaultKeyedRateLimiter<Uuid>,
    /// What it already advised on, per (floor, session): it never repeats itself.
    advised: HashMap<(Uuid, String), Vec<String>>,
    /// Scores handed back, not yet taken.
    scores: Arc<Scores>,
    /// Jobs for passive monitoring from the events in hand, submitted together.
    watched: Vec<Job>,
}

/// Injects kept per session for a task to come, and sessions kept.
const ADVICE_KEPT: (usize, usize) = (20, 1_000);

/// The agent actor.
pub struct Agent;

impl Agent {
    /// Starts an agent under `supervisor`.
    pub async fn spawn_linked(
        args: AgentArgs,
        supervisor: ractor::ActorCell,
    ) -> Result<AgentRef, ractor::SpawnErr> {
        let (r, _) = Actor::spawn_linked(None, Agent, args, supervisor).await?;
        Ok(r)
    }
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN))
}

fn passive_quota(per_floor_per_minute: u32) -> Quota {
    quota((per_floor_per_minute / PASSIVE_SHARE).max(1))
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: AgentRef,
        mut args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        let children = std::mem::take(&mut args.children);
        let rate = args.spec.rate;
        let brain = Arc::new(OfflineBrain::new(
            &args.spec,
            &args.base_dir,
            args.intents.clone(),
        ));
        let mut state = AgentState {
            mind: Arc::new(Mind::new(&args.spec, brain.clone())),
            recent: HashMap::new(),
            brain,
            reader: Reader::new(
                args.link.clone(),
                args.org.clone(),
                args.spec.id.to_string(),
                std::iter::once(args.spec.id.to_string())
                    .chain(args.spec.parent.iter().map(ToString::to_string))
                    .collect(),
                args.term,
                args.health.clone(),
            ),
            children: HashMap::new(),
            per_floor: RateLimiter::keyed(quota(rate.per_floor_per_minute)),
            overall: RateLimiter::direct(quota(rate.per_agent_per_minute)),
            noticed: HashMap::new(),
            left: HashMap::new(),
            flusher: Some(myself.send_interval(FLUSH_EVERY, || AgentMsg::Flush)),
            driving: HashMap::new(),
            advice: HashMap::new(),
            passive_rate: RateLimiter::keyed(passive_quota(rate.per_floor_per_minute)),
            advised: HashMap::new(),
            scores: Arc::default(),
            watched: Vec::new(),
            args,
        };
        for key in state.args.floors.clone() {
            state.reader.open(&myself, key, &WIRING).await;
        }
        for (spec, floors) in children {
            spawn_child(&myself, &mut state, spec, floors).await;
        }
        tracing::info!(agent = %state.args.spec.id, org = %state.args.org, floors = state.reader.len(), "agent started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: AgentRef,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(f) = state.flusher.take() {
            f.abort();
        }
        // A task cut short here runs again where the agent runs next (its `task` event is
        // read again: the read position stays below it while it runs).
        for (_, d) in state.driving.drain() {
            d.run.abort();
        }
        state.reader.close_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: AgentRef,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Events(key, events) => {
                for c in events {
                    if state.reader.arrived(&key.id, c.event.seq) {
                        on_event(&myself, state, key.clone(), c, false);
                    }
                }
                if !state.watched.is_empty()
                    && let Some(passive) = &state.args.passive
                {
                    passive.submit_all(std::mem::take(&mut state.watched));
                }
            }
            AgentMsg::Delegated(key, c) => on_event(&myself, state, key, c, true),
            AgentMsg::Answered(a) => post(&myself, state, *a, Posting::Answer).await,
            AgentMsg::Update(args) => update(&myself, state, *args).await,
            AgentMsg::Reopen(key) => state.reader.reopen(&myself, key, &WIRING).await,
            AgentMsg::Open(key) => {
                if state.args.floors.iter().any(|k| k.id == key.id) {
                    state.reader.open(&myself, key, &WIRING).await;
                }
            }
            AgentMsg::Flush => state.reader.flush().await,
            AgentMsg::Delivered(project, seq) => state.reader.done(&project, seq),
            AgentMsg::TaskEnded(project, session, seq) => {
                state.driving.remove(&(project, session));
                state.reader.done(&project, seq);
            }
            AgentMsg::Scored => {
                for (key, c, score) in state.scores.take() {
                    let (project, seq) = (key.id, c.event.seq);
                    let advising = match score {
                        Some(s) => on_scored(&myself, state, key, c, s),
                        None => false,
                    };
                    if !advising {
                        state.reader.done(&project, seq);
                    }
                }
            }
            AgentMsg::Advise(a) => post(&myself, state, *a, Posting::Advice).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: AgentRef,
        evt: SupervisionEvent,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            let failed = state
                .children
                .iter()
                .find(|(_, r)| r.get_id() == cell.get_id())
                .map(|(id, _)| id.clone());
            let Some(id) = failed else { return Ok(()) };
            state.children.remove(&id);
            tracing::error!(agent = %id, error = %err, "subagent failed; restarting it");
            metrics::counter!("polaris_actor_restarts_total", "actor" => "agent").increment(1);
            if let Some(spec) = state.args.router.agent(&id).cloned() {
                let floors = state.reader.keys();
                spawn_child(&myself, state, spec, floors).await;
            }
        }
        Ok(())
    }
}

async fn spawn_child(
    myself: &AgentRef,
    state: &mut AgentState,
    spec: AgentSpec,
    floors: Vec<ProjectKey>,
) {
    let id = spec.id.clone();
    let args = state.args.for_child(spec, floors);
    match Agent::spawn_linked(args, myself.get_cell()).await {
        Ok(r) => {
            state.children.insert(id, r);
        }
        Err(e) => tracing::error!(agent = %id, error = %e, "subagent did not start"),
    }
}

fn on_event(
    myself: &AgentRef,
    state: &mut AgentState,
    key: ProjectKey,
    c: Arc<Committed>,
    delegated: bool,
) {
    let e = &c.event;
    let me = state.args.spec.id.clone();
    if e.session.is_none() {
        track_presence(state, &key, e);
        return;
    }
    let text = c.words().to_owned();
    if !text.trim().is_empty() {
        let recent = state.recent.entry(key.id).or_default();
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back((e.sender.to_string(), text.clone()));
    }
    if e.sender == me || state.left.get(&key.id).copied().unwrap_or(false) {
        return;
    }
    if on_task_event(myself, state, &key, &c) {
        return;
    }
    // `@dean take: …` is a hand-over, which the floor makes (the concierge): the task
    // arrives as a `task` event, not as a question.
    if state.args.router.take(&text).is_some_and(|(a, _)| a == me) {
        return;
    }
    if !delegated {
        let routing = state.args.router.route(&text, Some(&e.sender), false);
        if !routing.responders.contains(&me) {
            if routing.mentions.is_empty() {
                watch(myself, state, key, c, text);
            }
            return;
        }
    }
    let h = hops(e);
    if h >= state.args.spec.max_hops {
        tracing::info!(agent = %me, event = %e.id, hops = h, "not answering: the agent chain reached its bound");
        return;
    }
    if !delegated
        && let Some(sub) = state.args.router.delegate(&me, &text)
        && let Some(child) = state.children.get(&sub.id)
    {
        // The subagent answers; a failed hand-off falls through to the parent.
        if child
            .cast(AgentMsg::Delegated(key.clone(), c.clone()))
            .is_ok()
        {
            return;
        }
    }
    if state.overall.check().is_err() || state.per_floor.check_key(&key.id).is_err() {
        rate_limited(state, &key, &c);
        return;
    }
    let tracked = !delegated;
    if tracked {
        state.reader.begin(&key.id, e.seq);
    }
    let mind = state.mind.clone();
    let me_ref = myself.clone();
    let question = Question {
        link: state.args.link.clone(),
        org: state.args.org.clone(),
        agent: me.to_string(),
        project: key.clone(),
        event: e.id,
        asker: e.sender.to_string(),
        question: strip_mentions(&text),
        recent: state
            .recent
            .get(&key.id)
            .map(|r| {
                // The question itself is the last of them: it is asked apart.
                let n = r.len().saturating_sub(1);
                r.iter().take(n).cloned().collect()
            })
            .unwrap_or_default(),
        text,
    };
    let (span, trace) = answer_span(&me, e, false);
    tokio::spawn(async move {
        let content = mind.answer(question).instrument(span.clone()).await;
        // The agent may have stopped; its saved cursor then still points before this event.
        let _ = me_ref.cast(AgentMsg::Answered(Box::new(Answer {
            project: key,
            event: c,
            content,
            attempts: 0,
            tracked,
            span,
            trace,
        })));
    });
}

/// Follows this agent's (and its parent's) joins and leaves on a floor.
fn track_presence(state: &mut AgentState, key: &ProjectKey, e: &polaris_protocol::Event) {
    let spec = &state.args.spec;
    let about = e
        .payload_value()
        .get("agent")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let Some(about) = about else { return };
    let concerns_me =
        about == spec.id.as_str() || spec.parent.as_ref().is_some_and(|p| p.as_str() == about);
    match e.kind.as_str() {
        "leave" if concerns_me => {
            state.left.insert(key.id, true);
        }
        "join" if concerns_me => {
            state.left.insert(key.id, false);
        }
        _ => {}
    }
}

/// The question without the `@mentions` that addressed it.
fn strip_mentions(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| {
            !w.trim_start_matches(['(', '[', '{', '"', '\'', ',', ';', ':'])
                .starts_with('@')
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the agent posts in reply to `event`: the same id however often it is posted.
fn reply_to(
    spec: &AgentSpec,
    term: Option<i64>,
    event: &Committed,
    kind: &str,
    source: Source,
    content: &str,
    traceparent: Option<TraceParent>,
) -> Incoming {
    let e = &event.event;
    let payload = json!({
        "type": kind,
        "content": content,
        "in_reply_to": e.id,
        "hops": hops(e) + 1,
        "persona": {"name": spec.shown_name(), "icon": spec.shown_icon()},
    });
    Incoming {
        term,
        id: Uuid::new_v5(
            &ANSWER_NAMESPACE,
            format!("{}/{kind}/{}", spec.id, e.id).as_bytes(),
        ),
        timestamp: None,
        source,
        kind: kind.to_owned(),
        sender: spec.id.clone(),
        payload: serde_json::value::to_raw_value(&payload)
            .unwrap_or_else(|_| unreachable!("a Value serializes")),
        traceparent,
    }
}

/// What an agent posts: an answer to a question, or passive advice (an `advice` event in
/// the session, which the sidecar queues for the session's coding agent at its next
/// prompt). Both are posted and retried alike; they differ in kind, counter and log words,
/// and in the message a retry comes back as.
#[derive(Clone, Copy)]
enum Posting {
    Answer,
    Advice,
}

impl Posting {
    fn kind(self) -> &'static str {
        match self {
            Posting::Answer => "message",
            Posting::Advice => "advice",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Posting::Answer => "answer",
            Posting::Advice => "advice",
        }
    }

    fn posted(self) {
        match self {
            Posting::Answer => metrics::counter!("polaris_agent_answers_total").increment(1),
            Posting::Advice => {
                metrics::counter!("polaris_passive_advice_total", "outcome" => "posted")
                    .increment(1);
            }
        }
    }

    fn again(self, a: Answer) -> AgentMsg {
        match self {
            Posting::Answer => AgentMsg::Answered(Box::new(a)),
            Posting::Advice => AgentMsg::Advise(Box::new(a)),
        }
    }
}

/// Posts an answer or advice through the outbox, retrying with backoff; the read position
/// moves past the event once it is on the floor (or given up on).
async fn post(myself: &AgentRef, state: &mut AgentState, mut a: Answer, what: Posting) {
    let Some(session) = a.event.event.session.clone() else {
        return;
    };
    let incoming = reply_to(
        &state.args.spec,
        state.args.term,
        &a.event,
        what.kind(),
        Source::Agent,
        &a.content,
        a.trace.clone(),
    );
    let result = state
        .args
        .outbox
        .post(&state.args.org, &a.project, &session, incoming)
        .instrument(a.span.clone())
        .await;
    match result {
        Ok(delivered) => {
            what.posted();
            if a.tracked {
                // Done once it is on the floor, not when it is queued for it: an answer
                // still queued when another instance takes over is given again there.
                let (me, project, seq) = (myself.clone(), a.project.id, a.event.event.seq);
                tokio::spawn(async move {
                    delivered.await;
                    let _ = me.cast(AgentMsg::Delivered(project, seq));
                });
            }
            return;
        }
        Err(e) if a.attempts + 1 < POST_ATTEMPTS => {
            a.attempts += 1;
            tracing::warn!(agent = %state.args.spec.id, error = %e, attempt = a.attempts, "{} not posted; retrying", what.noun());
            let delay = Duration::from_millis(200 << a.attempts);
            let me = myself.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                // The agent may have stopped: the answer goes with it.
                let _ = me.cast(what.again(a));
            });
            return;
        }
        Err(e) => {
            tracing::error!(agent = %state.args.spec.id, event = %a.event.event.id, error = %e, "{} dropped after retries", what.noun())
        }
    }
    if a.tracked {
        state.reader.done(&a.project.id, a.event.event.seq);
    }
}

/// Events about tasks: a `task` for this agent starts driving it; in a session it drives, a
/// stop request or someone else in the seat stops it at its next step, and an inject is
/// advice it takes in (and does not answer as a mention). True when the event was consumed.
fn on_task_event(
    myself: &AgentRef,
    state: &mut AgentState,
    key: &ProjectKey,
    c: &Arc<Committed>,
) -> bool {
    let e = &c.event;
    let Some(session) = e.session.clone() else {
        return false;
    };
    let me = state.args.spec.id.as_str();
    if e.kind == "task" && e.source == Source::System {
        let payload = e.payload_value();
        let Some(task) = Task::from_event(
            &payload,
            me,
            e.id,
            e.timestamp,
            key.clone(),
            session.clone(),
        ) else {
            return true;
        };
        let slot = (key.id, session);
        if state.driving.get(&slot).is_some_and(|d| d.task == task.id) {
            return true;
        }
        tracing::info!(agent = %me, task = %task.id, session = %slot.1, "driving a task");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let drive = Drive {
            task,
            spec: state.args.spec.clone(),
            term: state.args.term,
            org: state.args.org.clone(),
            outbox: state.args.outbox.clone(),
            brain: state.brain.clone(),
            signals: rx,
            tools_used: 0,
            link: state.args.link.clone(),
            stopping: None,
        };
        // Advice given before the hand-over comes first.
        for (sender, content) in state.advice.remove(&slot).unwrap_or_default() {
            let _ = tx.send(Signal::Inject { sender, content });
        }
        // The read position stays below the task until it has ended.
        state.reader.begin(&key.id, e.seq);
        let (me_ref, project, session, seq) = (myself.clone(), key.id, slot.1.clone(), e.seq);
        let run = tokio::spawn(async move {
            if let Some(delivered) = driver::run(drive).await {
                delivered.await;
            }
            let _ = me_ref.cast(AgentMsg::TaskEnded(project, session, seq));
        });
        state.driving.insert(
            slot,
            Driving {
                task: e.id,
                signals: tx,
                run,
            },
        );
        return true;
    }
    let slot = (key.id, session);
    let Some(d) = state.driving.get(&slot) else {
        if e.source == Source::Inject && state.args.spec.parent.is_none() {
            let content = e.payload_value()["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state.advice.len() >= ADVICE_KEPT.1 && !state.advice.contains_key(&slot) {
                state.advice.clear();
            }
            let kept = state.advice.entry(slot).or_default();
            if kept.len() >= ADVICE_KEPT.0 {
                kept.remove(0);
            }
            kept.push((e.sender.to_string(), content));
        }
        return false;
    };
    let payload = e.payload_value();
    let signal = match (e.kind.as_str(), e.source) {
        ("task_stop", Source::System)
            if payload["task_id"].as_str() == Some(&d.task.to_string()) =>
        {
            let by = payload["by"].as_str().unwrap_or("the floor");
            Signal::Stop(format!("stop requested by {by}"))
        }
        ("handoff", Source::System) => Signal::Stop(format!("{} handed the seat back", e.sender)),
        ("driver", Source::System) if payload["driver"].as_str() != Some(me) => {
            Signal::Stop(format!(
                "{} took the seat",
                payload["driver"].as_str().unwrap_or("someone")
            ))
        }
        (_, Source::Inject) => Signal::Inject {
            sender: e.sender.to_string(),
            content: payload["content"].as_str().unwrap_or_default().to_owned(),
        },
        _ => return false,
    };
    // A task that has just ended has no receiver left: nothing to tell it.
    let _ = d.signals.send(signal);
    true
}

/// Hands an event nobody addressed to passive monitoring, when this agent watches: a
/// top-level agent with passive advice on, on a floor whose admins left it on, and the
/// event written by a person or a tool (never by an agent, so agents do not advise each
/// other in circles).
fn watch(
    myself: &AgentRef,
    state: &mut AgentState,
    key: ProjectKey,
    c: Arc<Committed>,
    text: String,
) {
    let spec = &state.args.spec;
    let Some(passive) = state.args.passive.clone() else {
        return;
    };
    let e = &c.event;
    if spec.parent.is_some()
        || !spec.passive.enabled
        || !matches!(e.source, Source::Hook | Source::Slack | Source::Reply)
        || e.sender.is_agent()
        || text.trim().is_empty()
    {
        return;
    }
    // The floor's switch, read for this event: a change holds from the next event on.
    // The link answers from a cache, so this is normally ready at once.
    let mut floor_on = state.args.link.passive_advice(key.clone());
    let ready = (&mut floor_on).now_or_never();
    match &ready {
        Some(Ok(false)) => return,
        Some(Err(err)) => {
            tracing::warn!(agent = %spec.id, event = %e.id, error = %err, "passive: the floor's switch could not be read; no advice on this event");
            return;
        }
        _ => {}
    }
    let tool_output = e.kind == "PreToolUse" || e.kind == "PostToolUse";
    let (me, scores) = (myself.clone(), state.scores.clone());
    let (event, c2, key2) = (e.id, c.clone(), key.clone());
    // The read position stays below the event until its advice is on the floor (or none
    // is to be given), so a restart scores it again rather than losing it.
    state.reader.begin(&key.id, e.seq);
    let job = Job {
        org: state.args.org.clone(),
        router: state.args.router.clone(),
        base_dir: state.args.base_dir.clone(),
        event,
        text,
        tool_output,
        agent: spec.id.to_string(),
        reply: Box::new(move |score| {
            // The agent may have stopped: its saved cursor then still points before this
            // event.
            if scores.add((key2, c2, score)) {
                let _ = me.cast(AgentMsg::Scored);
            }
        }),
    };
    if ready.is_some() {
        // Queued with the rest of the message's events: one lock for all of them.
        state.watched.push(job);
        return;
    }
    let agent = spec.id.clone();
    tokio::spawn(async move {
        match floor_on.await {
            Ok(true) => passive.submit(job),
            Ok(false) => (job.reply)(None),
            Err(err) => {
                tracing::warn!(agent = %agent, event = %event, error = %err, "passive: the floor's switch could not be read; no advice on this event");
                (job.reply)(None);
            }
        }
    });
}

/// What an advice is about, for "never the same thing twice in a session": the signal
/// (a secret's kind, the failing tool) or the written example the event is nearest to.
fn advice_topic(score: &polaris_passive::Score) -> String {
    match score.stage {
        polaris_passive::Stage::Signal => score
            .why
            .split(" on line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
        _ => score.why.clone(),
    }
}

/// A score came back: above the threshold, new for the session and within the passive
/// rate, the brain writes the advice. True when advice is on its way (the event is done
/// once it is on the floor).
fn on_scored(
    myself: &AgentRef,
    state: &mut AgentState,
    key: ProjectKey,
    c: Arc<Committed>,
    score: polaris_passive::Score,
) -> bool {
    let me = &state.args.spec.id;
    if !score.fires || state.left.get(&key.id).copied().unwrap_or(false) {
        return false;
    }
    let Some(session) = c.event.session.clone() else {
        return false;
    };
    let topic = advice_topic(&score);
    let slot = (key.id, session);
    if state.advised.get(&slot).is_some_and(|t| t.contains(&topic)) {
        metrics::counter!("polaris_passive_advice_total", "outcome" => "repeat").increment(1);
        tracing::debug!(agent = %me, event = %c.event.id, "passive: already advised on this in the session");
        return false;
    }
    if state.passive_rate.check_key(&key.id).is_err() {
        metrics::counter!("polaris_passive_advice_total", "outcome" => "rate_limited").increment(1);
        tracing::info!(agent = %me, event = %c.event.id, "passive: advice held back by its rate limit");
        return false;
    }
    if state.advised.len() >= ADVISED_KEPT.1 && !state.advised.contains_key(&slot) {
        state.advised.clear();
    }
    let topics = state.advised.entry(slot).or_default();
    if topics.len() >= ADVISED_KEPT.0 {
        topics.remove(0);
    }
    topics.push(topic);
    tracing::info!(agent = %me, event = %c.event.id, score = score.score, stage = ?score.stage, "passive: offering advice");
    let brain = state.brain.clone();
    let me_ref = myself.clone();
    let name = state.args.spec.shown_name().to_owned();
    let text = c.words().to_owned();
    let (span, trace) = answer_span(me, &c.event, true);
    tokio::spawn(async move {
        let body = brain.answer(&text, &text).instrument(span.clone()).await;
        let content = format!(
            "{name}, unasked: this looks like my area ({why}, score {score:.2}).\n\n{body}",
            why = score.why,
            score = score.score,
        );
        // The agent may have stopped: the advice goes with it.
        let _ = me_ref.cast(AgentMsg::Advise(Box::new(Answer {
            project: key,
            event: c,
            content,
            attempts: 0,
            tracked: true,
            span,
            trace,
        })));
    });
    true
}

/// Tells the session, at most once a minute per floor, that the agent is holding back.
fn rate_limited(state: &mut AgentState, key: &ProjectKey, c: &Arc<Committed>) {
    let now = Instant::now();
    if state
        .noticed
        .get(&key.id)
        .is_some_and(|t| now.duration_since(*t) < NOTICE_EVERY)
    {
        return;
    }
    state.noticed.insert(key.id, now);
    let Some(session) = c.event.session.clone() else {
        return;
    };
    let spec = &state.args.spec;
    let content = format!(
        "{} is answering too many questions right now (limits: {} a minute on this floor, {} overall) and skipped this one. Ask again in a minute.",
        spec.shown_name(),
        spec.rate.per_floor_per_minute,
        spec.rate.per_agent_per_minute
    );
    let incoming = reply_to(
        spec,
        state.args.term,
        c,
        "rate_limited",
        Source::System,
        &content,
        c.event.traceparent.clone(),
    );
    let outbox = state.args.outbox.clone();
    let org = state.args.org.clone();
    let project = key.clone();
    tokio::spawn(async move {
        if let Err(e) = outbox.post(&org, &project, &session, incoming).await {
            tracing::warn!(error = %e, "rate-limit notice not posted");
        }
    });
}

async fn update(myself: &AgentRef, state: &mut AgentState, mut args: AgentArgs) {
    let children = std::mem::take(&mut args.children);
    let wanted: Vec<Uuid> = args.floors.iter().map(|k| k.id).collect();
    state.reader.retain(|p| wanted.contains(p)).await;
    if args.spec != state.args.spec {
        state.brain = Arc::new(OfflineBrain::new(
            &args.spec,
            &args.base_dir,
            args.intents.clone(),
        ));
        state.mind = Arc::new(Mind::new(&args.spec, state.brain.clone()));
        state.per_floor = RateLimiter::keyed(quota(args.spec.rate.per_floor_per_minute));
        state.passive_rate = RateLimiter::keyed(passive_quota(args.spec.rate.per_floor_per_minute));
        state.overall = RateLimiter::direct(quota(args.spec.rate.per_agent_per_minute));
    }
    state.args = args;
    for key in state.args.floors.clone() {
        state.reader.open(myself, key, &WIRING).await;
    }
    // Subagents: update those that stay, stop the others, start the new ones.
    let keep: Vec<ParticipantId> = children.iter().map(|(s, _)| s.id.clone()).collect();
    let stale: Vec<ParticipantId> = state
        .children
        .keys()
        .filter(|id| !keep.contains(id))
        .cloned()
        .collect();
    for id in stale {
        if let Some(r) = state.children.remove(&id) {
            r.stop(Some("removed from the registry".into()));
        }
    }
    for (spec, floors) in children {
        match state.children.get(&spec.id) {
            Some(r) => {
                let args = state.args.for_child(spec, floors);
                // A stopping child is replaced on the next update.
                let _ = r.cast(AgentMsg::Update(Box::new(args)));
            }
            None => spawn_child(myself, state, spec, floors).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_stripped_from_questions() {
        assert_eq!(
            strip_mentions("@dean which tables hold PII?"),
            "which tables hold PII?"
        );
        assert_eq!(strip_mentions("(@sage, what about keys"), "what about keys");
    }
}
