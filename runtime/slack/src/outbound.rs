//! A floor's events into its channel, each once.
//!
//! The task reads the floor from its stored cursor and posts in `seq` order. Before a post
//! it writes the post down (`pending`: the event range, channel, thread, time); after Slack
//! answered `ok` it moves the cursor past the range and clears it. A crash between the two
//! leaves exactly one post in doubt, and the next holder looks for it once (the range is in
//! the message's `metadata`) before posting it again. Every write is fenced by the lease's
//! term: a bridge that lost its lease cannot move a cursor.
//!
//! A channel gets at most one message per `post_interval`; what arrives meanwhile waits in
//! order and goes out packed into the next message (by thread: a run of one session's
//! events is one message, the next session's the next).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use polaris_protocol::Event;
use polaris_registry::{ParticipantKind, Persona};
use polaris_runtime::{ProjectKey, SlackFloor, Start, SubscriptionSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::format::{self, Item};
use crate::web::{SlackError, str_of};
use crate::{CHAT_SESSION, Shared, channels, fence};

/// A floor connected with history shows this many of its latest events, not all of them.
const BACKLOG: i64 = 20;
/// Events taken from the stream per round.
const DRAIN: usize = 4096;
/// The `metadata.event_type` of the bridge's messages.
const METADATA_TYPE: &str = "polaris_events";

/// Where in the channel an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// Top level (floor chat, agents' unthreaded posts).
    Channel,
    /// A session's thread (started by its first message).
    Session(String),
    /// The thread of a Slack message (an agent answering it).
    Reply(String),
}

/// The post under way, as written down before it is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    first: i64,
    last: i64,
    channel: String,
    thread_ts: Option<String>,
    /// The session whose thread this post starts.
    session: Option<String>,
    /// When the post was made (seconds since the epoch).
    at: i64,
}

/// Why a floor's task starts over.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error("store: {0}")]
    Store(#[from] polaris_runtime::StoreError),
    #[error("the floor's stream ended")]
    StreamEnded,
}

/// Posts the floor of `key` until `stop`, starting over after a failure.
pub(crate) async fn run_floor(
    shared: Arc<Shared>,
    team: String,
    key: ProjectKey,
    mut name: watch::Receiver<Arc<str>>,
    lease: (String, i64),
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    let mut key = key;
    loop {
        let mut floor = Floor {
            shared: shared.clone(),
            team: team.clone(),
            key: key.clone(),
            lease: lease.clone(),
            cursor: 0,
            saved: 0,
            channel: String::new(),
            threads: HashMap::new(),
            last_post: None,
            stop: stop.clone(),
        };
        let span = tracing::info_span!("slack.floor", project = %key.name);
        match floor.run(&mut name, &stop).instrument(span).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(project = %key.name, error = %e, "slack posting interrupted; resuming");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
        if let Some(k) = crate::floor_by_id(&shared, key.id).await {
            key = k;
        }
    }
}

struct Floor {
    shared: Arc<Shared>,
    team: String,
    key: ProjectKey,
    lease: (String, i64),
    /// Every event through this `seq` is posted or needs no post.
    cursor: i64,
    /// The cursor as last saved.
    saved: i64,
    channel: String,
    /// Session threads known so far.
    threads: HashMap<String, String>,
    last_post: Option<Instant>,
    /// Ends waits between retries: a stopping bridge leaves the post pending (the next
    /// holder settles it) rather than hold the shutdown for a `Retry-After`.
    stop: CancellationToken,
}

/// An event ready to post, and the `seq` the cursor may move to once it is (past the
/// unposted events right after it).
struct Ready {
    target: Target,
    item: Item,
    through: i64,
}

impl Floor {
    fn at(&self) -> SlackFloor<'_> {
        SlackFloor {
            org: &self.shared.org,
            team: &self.team,
            project: self.key.id,
        }
    }

    async fn run(
        &mut self,
        name: &mut watch::Receiver<Arc<str>>,
        stop: &CancellationToken,
    ) -> Result<(), Stop> {
        let shared = self.shared.clone();
        let links = &shared.links;
        let stored = links.cursor(self.at()).await?;
        self.cursor = match &stored {
            Some(c) => c.seq,
            None => (shared.runtime.head(&self.key).await? - BACKLOG).max(0),
        };
        self.saved = self.cursor;
        self.channel = channels::ensure(&shared, &self.team, &self.key, &self.lease).await?;
        if let Some(p) = stored.and_then(|c| c.pending) {
            match serde_json::from_str::<Pending>(&p) {
                Ok(p) => {
                    if !self.settle(&p).await? {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable pending slack post ignored"),
            }
        }
        let spec = SubscriptionSpec {
            project: self.key.clone(),
            session: None,
            start: Start::After(self.cursor),
        };
        let mut stream = shared.runtime.subscribe(spec).await?.boxed();
        let mut ready: VecDeque<Ready> = VecDeque::new();
        loop {
            if ready.is_empty() {
                let next = tokio::select! {
                    n = stream.next() => n,
                    r = name.changed() => {
                        if r.is_ok() {
                            self.key.name = name.borrow_and_update().clone();
                            channels::rename(&shared, &self.team, &self.channel, &self.key).await;
                        }
                        continue;
                    }
                    () = tokio::time::sleep(Duration::from_secs(2)), if self.saved < self.cursor => {
                        if !self.save(None).await? { return Ok(()) }
                        continue;
                    }
                    () = stop.cancelled() => {
                        self.save(None).await?;
                        return Ok(());
                    }
                };
                let c = next.ok_or(Stop::StreamEnded)??;
                self.add(&mut ready, &c.event).await;
                continue;
            }
            // Slack's pace for one channel; what arrives meanwhile joins the message.
            if let Some(at) = self.last_post {
                let due = at + shared.post_interval;
                if due > Instant::now() {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = stop.cancelled() => {
                            self.save(None).await?;
                            return Ok(());
                        }
                    }
                }
            }
            let mut yielded = false;
            for _ in 0..DRAIN {
                match stream.next().now_or_never() {
                    Some(Some(c)) => {
                        yielded = false;
                        self.add(&mut ready, &c?.event).await;
                    }
                    Some(None) => return Err(Stop::StreamEnded),
                    // Tokio's cooperative budget makes a ready receiver look empty after
                    // a hundred or so receives: yield once to tell the two apart.
                    None if !yielded => {
                        yielded = true;
                        tokio::task::yield_now().await;
                    }
                    None => break,
                }
            }
            if !self.post_next(&mut ready).await? {
                return Ok(());
            }
        }
    }

    /// Renders `e` into `ready`, or lets the cursor pass it.
    async fn add(&mut self, ready: &mut VecDeque<Ready>, e: &Event) {
        let registered = self.persona(e).await;
        let rendered = format::render(
            e,
            registered.as_ref().map(|(n, i)| (n.as_str(), i.as_str())),
        );
        let Some((persona, mut text)) = rendered else {
            match ready.back_mut() {
                Some(r) => r.through = e.seq,
                None => self.cursor = e.seq,
            }
            return;
        };
        if e.sender.kind() == ParticipantKind::Agent {
            let aliases = crate::team::aliases(&self.shared).await;
            text = format::link_mentions(&text, &aliases);
        }
        let target = self.target(e).await;
        ready.push_back(Ready {
            target,
            item: format::item(e.seq, persona, &text),
            through: e.seq,
        });
    }

    /// The registry's persona of a named agent (subagents speak as their parent).
    async fn persona(&self, e: &Event) -> Option<(String, String)> {
        if e.sender.kind() != ParticipantKind::Agent {
            return None;
        }
        let id = e.sender.as_str().to_owned();
        if let Some(p) = self.shared.personas.get(&id) {
            return p.clone();
        }
        let directory = self.shared.runtime.directory();
        let mut found = None;
        // The agent itself, else its root (a subagent speaks as its parent).
        let root = polaris_registry::ParticipantId::parse(e.sender.root()).ok();
        for c in std::iter::once(e.sender.clone()).chain(root) {
            if let Ok(Some(listed)) = directory.agent(&self.shared.org, &c).await {
                found = Some((
                    listed.spec.shown_name().to_owned(),
                    listed.spec.shown_icon().to_owned(),
                ));
                break;
            }
        }
        self.shared.personas.insert(id, found.clone());
        found
    }

    async fn target(&self, e: &Event) -> Target {
        if let Some(s) = e.session.as_deref()
            && s != CHAT_SESSION
        {
            return Target::Session(s.to_owned());
        }
        let asked = e
            .payload_value()
            .get("in_reply_to")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok());
        if let Some(id) = asked
            && let Ok(Some(q)) = self.shared.runtime.event(&self.key, id).await
        {
            let p = q.payload_value();
            let slack = &p["slack"];
            let ts = slack["thread_ts"].as_str().or(slack["ts"].as_str());
            if let Some(ts) = ts {
                return Target::Reply(ts.to_owned());
            }
        }
        Target::Channel
    }

    /// Posts the next message: the run of ready events bound for the same thread as the
    /// first, as many as fit. False when the lease moved on or the bridge is stopping.
    async fn post_next(&mut self, ready: &mut VecDeque<Ready>) -> Result<bool, Stop> {
        let Some(head) = ready.front() else {
            return Ok(true);
        };
        let target = head.target.clone();
        let mut run = VecDeque::new();
        let mut through = HashMap::new();
        while ready.front().is_some_and(|r| r.target == target) {
            if let Some(r) = ready.pop_front() {
                through.insert(r.item.seq, r.through);
                run.push_back(r.item);
            }
        }
        let group = Persona {
            name: match &target {
                Target::Session(s) => format!("Polaris ({s})"),
                _ => "Polaris".to_owned(),
            },
            icon: "🧭".to_owned(),
        };
        let Some(message) = format::pack(&mut run, &group) else {
            return Ok(true);
        };
        // What did not fit goes back, in order, ahead of everything else.
        for item in run.into_iter().rev() {
            let t = through.get(&item.seq).copied().unwrap_or(item.seq);
            ready.push_front(Ready {
                target: target.clone(),
                item,
                through: t,
            });
        }
        let last = through.get(&message.last).copied().unwrap_or(message.last);
        let (thread_ts, starts) = match &target {
            Target::Channel => (None, None),
            Target::Reply(ts) => (Some(ts.clone()), None),
            Target::Session(s) => match self.thread(s).await? {
                Some(ts) => (Some(ts), None),
                None => (None, Some(s.clone())),
            },
        };
        let pending = Pending {
            first: message.first,
            last,
            channel: self.channel.clone(),
            thread_ts,
            session: starts,
            at: chrono::Utc::now().timestamp(),
        };
        let span = tracing::info_span!("slack.post", first = pending.first, last = pending.last);
        self.post(message, pending).instrument(span).await
    }

    async fn thread(&mut self, session: &str) -> Result<Option<String>, Stop> {
        if let Some(ts) = self.threads.get(session) {
            return Ok(Some(ts.clone()));
        }
        let ts = self.shared.links.thread(self.at(), session).await?;
        if let Some(ts) = &ts {
            self.threads.insert(session.to_owned(), ts.clone());
        }
        Ok(ts)
    }

    async fn post(&mut self, message: format::Message, mut pending: Pending) -> Result<bool, Stop> {
        let shared = self.shared.clone();
        if !self.save(Some(&pending)).await? {
            return Ok(false);
        }
        let mut body = json!({
            "channel": pending.channel,
            "text": message.text,
            "blocks": message.blocks,
            "username": message.persona.name,
            "unfurl_links": false,
            "unfurl_media": false,
            "metadata": {
                "event_type": METADATA_TYPE,
                "event_payload": {"project": self.key.id, "first": pending.first, "last": pending.last},
            },
        });
        if let Some((field, value)) = format::icon_fields(&message.persona.icon) {
            body[field] = value.into();
        }
        if let Some(ts) = &pending.thread_ts {
            body["thread_ts"] = ts.clone().into();
        }
        let mut delay = Duration::from_millis(500);
        let ts = loop {
            let err = match shared.web.post("chat.postMessage", &body).await {
                Ok(v) => break str_of(&v, "ts").to_owned(),
                Err(e) => e,
            };
            match &err {
                SlackError::RateLimited(wait) => {
                    metrics::counter!("polaris_slack_rate_limited_total").increment(1);
                    if self.pause(*wait).await {
                        return Ok(false);
                    }
                    continue;
                }
                SlackError::Api(code) if code == "not_in_channel" => {
                    if let Err(e) = shared
                        .web
                        .post("conversations.join", &json!({"channel": pending.channel}))
                        .await
                    {
                        tracing::warn!(error = %e, "could not join the channel again");
                    }
                }
                SlackError::Api(code) if code == "channel_not_found" || code == "is_archived" => {
                    channels::forget(&shared, &self.key);
                    self.channel =
                        channels::ensure(&shared, &self.team, &self.key, &self.lease).await?;
                    self.threads.clear();
                    pending.channel = self.channel.clone();
                    pending.thread_ts = None;
                    body["channel"] = self.channel.clone().into();
                    if let Some(o) = body.as_object_mut() {
                        o.remove("thread_ts");
                    }
                    if !self.save(Some(&pending)).await? {
                        return Ok(false);
                    }
                    continue;
                }
                SlackError::Api(code) if code == "thread_not_found" => {
                    pending.thread_ts = None;
                    if let Some(o) = body.as_object_mut() {
                        o.remove("thread_ts");
                    }
                    if !self.save(Some(&pending)).await? {
                        return Ok(false);
                    }
                    continue;
                }
                SlackError::Api(code)
                    if ["invalid_blocks", "msg_too_long", "invalid_arguments"]
                        .contains(&code.as_str()) =>
                {
                    // Our blocks were refused: the text alone still tells what happened.
                    tracing::warn!(error = %code, "blocks refused; posting the text alone");
                    if let Some(o) = body.as_object_mut()
                        && o.remove("blocks").is_none()
                    {
                        tracing::error!(error = %code, "slack refused a text-only post; retrying later");
                    }
                }
                SlackError::Transport(_) => {
                    // The post may have been made: look before posting again.
                    if let Some(ts) = self.find(&pending).await {
                        break ts;
                    }
                }
                SlackError::Api(_) => {}
            }
            tracing::warn!(error = %err, retry_in = ?delay, "slack post failed; retrying");
            if self.pause(delay).await {
                return Ok(false);
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        };
        metrics::counter!("polaris_slack_posts_total").increment(1);
        if shared.faults.crash_after_post.load(Ordering::SeqCst) {
            shared.faults.crash.cancel();
            shared.faults.crashed.store(true, Ordering::SeqCst);
            return Ok(false);
        }
        self.last_post = Some(Instant::now());
        self.posted(&pending, &ts).await
    }

    /// Records a post Slack has: the session's thread, then the cursor.
    async fn posted(&mut self, pending: &Pending, ts: &str) -> Result<bool, Stop> {
        if let Some(session) = &pending.session {
            self.shared
                .starting
                .insert(ts.to_owned(), (self.key.id, session.clone()));
            let linked = self
                .shared
                .links
                .link_thread(self.at(), session, &pending.channel, ts, fence(&self.lease))
                .await?;
            self.shared.starting.remove(ts);
            if !linked && self.thread(session).await?.is_none() {
                return Ok(false);
            }
            self.threads.insert(session.clone(), ts.to_owned());
        }
        self.cursor = self.cursor.max(pending.last);
        self.save(None).await
    }

    /// Settles the post left in doubt by a crash: if Slack has it, it counts as posted;
    /// otherwise it is made again from the stream. False when the lease moved on.
    async fn settle(&mut self, pending: &Pending) -> Result<bool, Stop> {
        match self.find(pending).await {
            Some(ts) => {
                tracing::info!(
                    first = pending.first,
                    last = pending.last,
                    "post in doubt was made; not posting it again"
                );
                self.posted(pending, &ts).await
            }
            None => {
                tracing::info!(
                    first = pending.first,
                    last = pending.last,
                    "post in doubt was not made; posting it"
                );
                self.save(None).await
            }
        }
    }

    /// Looks for the message carrying `pending`'s events among the messages posted since
    /// (one bounded read of the thread or channel). `None` when it is not there, or when
    /// Slack could not be asked (then the post is made again: a read that keeps failing
    /// must not hold the floor).
    async fn find(&self, pending: &Pending) -> Option<String> {
        let oldest = (pending.at - 5).max(0).to_string();
        let read = match &pending.thread_ts {
            Some(ts) => {
                self.shared
                    .web
                    .get(
                        "conversations.replies",
                        &[
                            ("channel", &pending.channel),
                            ("ts", ts),
                            ("oldest", &oldest),
                            ("limit", "200"),
                            ("include_all_metadata", "true"),
                        ],
                    )
                    .await
            }
            None => {
                self.shared
                    .web
                    .get(
                        "conversations.history",
                        &[
                            ("channel", &pending.channel),
                            ("oldest", &oldest),
                            ("limit", "200"),
                            ("include_all_metadata", "true"),
                        ],
                    )
                    .await
            }
        };
        let v = match read {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "could not check for the post in doubt");
                return None;
            }
        };
        let project = self.key.id.to_string();
        v["messages"].as_array()?.iter().find_map(|m| {
            let meta = &m["metadata"];
            let p = &meta["event_payload"];
            (str_of(meta, "event_type") == METADATA_TYPE
                && str_of(p, "project") == project
                && p["last"].as_i64() == Some(pending.last))
            .then(|| str_of(m, "ts").to_owned())
        })
    }

    /// Waits `d`; true when the bridge is stopping instead.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = self.stop.cancelled() => true,
        }
    }

    /// Saves the cursor (and the post under way). False when the lease moved on.
    async fn save(&mut self, pending: Option<&Pending>) -> Result<bool, Stop> {
        let pending = pending
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| SlackError::Transport(e.to_string()))?;
        let ok = self
            .shared
            .links
            .save_cursor(
                self.at(),
                self.cursor,
                pending.as_deref(),
                fence(&self.lease),
            )
            .await?;
        if ok {
            self.saved = self.cursor;
        } else {
            tracing::warn!("slack lease moved on; this bridge stops posting");
        }
        Ok(ok)
    }
}
