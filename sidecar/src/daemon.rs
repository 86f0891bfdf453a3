//! The daemon actor: the one owner of the sidecar's state — connections (Claude Code
//! session → project/session/user/agent), the aliases learned from hook session ids, the
//! inject queues and the stream cursors. HTTP handlers ask it where an event goes; the
//! follow tasks tell it what arrived on the floor. It never does network or log I/O
//! itself (handlers and follow tasks do), and persists its state to `state.json`
//! (atomically: temporary file, fsync, rename) after every change, so a restart keeps
//! queues and cursors.
//!
//! Errors: a failed `state.json` write is logged and the actor keeps going (the state in
//! memory is still right, and the next change writes it again).
//!
//! # Which hook events are routed
//!
//! Hooks are installed for every Claude Code window, but only windows that joined a floor
//! may post to it. A hook's `session_id` is routed when:
//! 1. it is the id a connection was made under (the MCP server knew Claude's session id),
//!    or an alias already learned for one; or
//! 2. it claims a connection still waiting for its window: the event is the hook of the
//!    `polaris_connect` tool call itself (`tool_name` ending in `polaris_connect`, which
//!    only the window that ran the tool emits, right after the tool returned). If several
//!    connections wait, the one whose project matches the tool's `channel` argument wins,
//!    else the latest.
//!
//! Anything else is not routed (`{"status": "not_connected"}`) and never written anywhere:
//! there is no "the only connected session" fallback, so a window that never joined
//! cannot leak onto a floor.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use polaris_registry::ParticipantId;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::follow::{self, FollowArgs, FollowMsg, Frame};
use crate::uplink::FloorClient;
use crate::wal::SessionOpen;

/// The actor's handle.
pub type DaemonRef = ActorRef<DaemonMsg>;

/// One connection of a Claude Code session to a floor session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mapping {
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// The human (sender of prompts).
    pub user: ParticipantId,
    /// The coding agent (sender of every other hook).
    pub agent: ParticipantId,
    /// The Slack channel name, for the status line.
    #[serde(default)]
    pub slack_channel: Option<String>,
    /// No hook has come from this window yet (see the module doc).
    #[serde(default)]
    pub awaiting_claim: bool,
    /// The floor was unreachable at `/connect`; the session is created before its first
    /// event is delivered.
    #[serde(default)]
    pub floor_pending: bool,
    /// When it connected (the latest waiting connection wins a claim).
    pub connected_at: DateTime<Utc>,
}

/// One message waiting for the next prompt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inject {
    /// Who sent it.
    pub from: String,
    /// The text.
    pub content: String,
    /// When it was sent (ISO 8601).
    pub timestamp: String,
}

/// A stream cursor.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cursor {
    project: String,
    session: String,
    seq: i64,
}

/// What `state.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    #[serde(default)]
    mappings: BTreeMap<String, Mapping>,
    /// Hook session id → the key of its mapping.
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    /// Mapping key → injects not yet handed to a prompt.
    #[serde(default)]
    queues: BTreeMap<String, Vec<Inject>>,
    #[serde(default)]
    cursors: Vec<Cursor>,
    /// Claude Code sessions whose MCP server registered.
    #[serde(default)]
    registered: Vec<String>,
}

/// Where a routed event goes and who said it.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The mapping's key (for draining its queue).
    pub key: String,
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// The stamped sender.
    pub sender: ParticipantId,
    /// Session-create body for the uplink.
    pub open: SessionOpen,
}

/// The parts of a hook payload routing looks at (so the payload itself stays with the
/// request).
#[derive(Debug, Clone, Default)]
pub struct RouteQuery {
    /// `session_id`.
    pub session_id: String,
    /// `hook_event_name`.
    pub hook: Option<String>,
    /// `tool_name`.
    pub tool_name: Option<String>,
    /// `tool_input.channel` (the connect tool's argument).
    pub channel: Option<String>,
}

impl RouteQuery {
    /// Reads the fields of a hook payload; `None` without a `session_id`.
    pub fn of(payload: &Value) -> Option<RouteQuery> {
        Some(RouteQuery {
            session_id: payload["session_id"].as_str()?.to_owned(),
            hook: payload["hook_event_name"].as_str().map(str::to_owned),
            tool_name: payload["tool_name"].as_str().map(str::to_owned),
            channel: payload["tool_input"]["channel"].as_str().map(str::to_owned),
        })
    }
}

/// A `/connect` the handler has settled with the floor.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Claude Code session id (the MCP server's).
    pub cc: String,
    /// The mapping to store.
    pub mapping: Mapping,
}

/// One status row.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Key.
    #[serde(rename = "ccSessionId")]
    pub cc: String,
    /// Project.
    pub project: String,
    /// Session.
    pub session: String,
    /// User.
    pub user: String,
    /// Agent.
    pub agent: String,
    /// Slack channel.
    #[serde(rename = "slackChannel")]
    pub slack_channel: Option<String>,
    /// The floor has not yet confirmed the session.
    pub pending: bool,
}

/// Messages.
pub enum DaemonMsg {
    /// An MCP server started for this Claude Code session.
    Register(String, RpcReplyPort<()>),
    /// Store a settled connection (replacing any earlier one of the same key).
    Connect(Connect, RpcReplyPort<()>),
    /// Forget a connection and every alias of it; answers whether it was connected.
    Disconnect(String, RpcReplyPort<Option<Mapping>>),
    /// Forget everything.
    DisconnectAll(RpcReplyPort<()>),
    /// Where does this hook event go?
    Route(RouteQuery, RpcReplyPort<Option<Routed>>),
    /// The mapping of a Claude Code session id (exact or alias).
    Lookup(String, RpcReplyPort<Option<(String, Mapping)>>),
    /// Every key and alias that leads to the mapping of this id.
    KeysOf(String, RpcReplyPort<Vec<String>>),
    /// How many injects wait in a mapping's queue.
    QueueLen(String, RpcReplyPort<usize>),
    /// Drain a mapping's inject queue.
    TakeInjects(String, RpcReplyPort<Vec<Inject>>),
    /// Connected mappings (aliases included).
    Status(RpcReplyPort<Vec<StatusRow>>),
    /// A project was renamed on the floor.
    Renamed {
        /// Old name.
        old: String,
        /// New name.
        new: String,
        /// Done.
        reply: RpcReplyPort<()>,
    },
    /// A project's Slack channel changed.
    ChannelUpdate {
        /// Project.
        project: String,
        /// Channel name.
        channel: String,
        /// Done.
        reply: RpcReplyPort<()>,
    },
    /// A follow task's request or frame.
    Follow(FollowMsg),
}

impl From<FollowMsg> for DaemonMsg {
    fn from(m: FollowMsg) -> DaemonMsg {
        DaemonMsg::Follow(m)
    }
}

impl TryFrom<DaemonMsg> for FollowMsg {
    type Error = DaemonMsg;

    fn try_from(m: DaemonMsg) -> Result<FollowMsg, DaemonMsg> {
        match m {
            DaemonMsg::Follow(f) => Ok(f),
            other => Err(other),
        }
    }
}

/// Start-up arguments.
pub struct DaemonArgs {
    /// Where `state.json` lives.
    pub state_file: PathBuf,
    /// The floor, for the follow tasks.
    pub floor: FloorClient,
}

/// The actor's state.
pub struct DaemonState {
    state_file: PathBuf,
    floor: FloorClient,
    p: Persisted,
    follows: HashMap<(String, String), CancellationToken>,
}

/// The daemon actor.
pub struct Daemon;

impl Daemon {
    /// Spawns the actor, loading `state.json` if there is one.
    pub async fn spawn(
        args: DaemonArgs,
    ) -> anyhow::Result<(DaemonRef, tokio::task::JoinHandle<()>)> {
        let (r, h) = Actor::spawn(None, Daemon, args).await?;
        Ok((r, h))
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Persisted> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| anyhow::anyhow!("{}: {e} (move it away to start afresh)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = crate::home::private_file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn is_connect_tool(q: &RouteQuery) -> bool {
    q.tool_name
        .as_deref()
        .is_some_and(|t| t.ends_with("polaris_connect"))
}

impl DaemonState {
    async fn persist(&self) {
        let bytes = match serde_json::to_vec_pretty(&self.p) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise the state");
                return;
            }
        };
        let path = self.state_file.clone();
        match tokio::task::spawn_blocking(move || save(&path, &bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write state.json"),
            Err(e) => tracing::error!(error = %e, "the state write task failed"),
        }
    }

    fn key_of(&self, id: &str) -> Option<String> {
        if self.p.mappings.contains_key(id) {
            return Some(id.to_owned());
        }
        self.p
            .aliases
            .get(id)
            .filter(|k| self.p.mappings.contains_key(*k))
            .cloned()
    }

    fn cursor(&self, project: &str, session: &str) -> Option<i64> {
        self.p
            .cursors
            .iter()
            .find(|c| c.project == project && c.session == session)
            .map(|c| c.seq)
    }

    /// Starts a follow task for every followed session without one, stops the rest: one
    /// stream per session, however many windows follow it.
    fn reconcile(&mut self, myself: &DaemonRef) {
        let wanted: HashSet<(String, String)> = self
            .p
            .mappings
            .values()
            .map(|m| (m.project.clone(), m.session.clone()))
            .collect();
        self.follows.retain(|k, stop| {
            let keep = wanted.contains(k);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for k in wanted {
            if self.follows.contains_key(&k) {
                continue;
            }
            let stop = CancellationToken::new();
            follow::spawn(FollowArgs {
                daemon: myself.get_derived(),
                floor: self.floor.clone(),
                project: k.0.clone(),
                session: k.1.clone(),
                stop: stop.clone(),
            });
            self.follows.insert(k, stop);
        }
        // Cursors of sessions nobody follows any more are dropped with them.
        self.p.cursors.retain(|c| {
            self.follows
                .contains_key(&(c.project.clone(), c.session.clone()))
        });
    }

    fn route(&mut self, q: &RouteQuery) -> (Option<Routed>, bool) {
        let id = q.session_id.as_str();
        let mut changed = false;
        let key = match self.key_of(id) {
            Some(k) => Some(k),
            None if is_connect_tool(q) => {
                let channel = q
                    .channel
                    .as_deref()
                    .map(|c| c.trim_start_matches('#').to_owned());
                let waiting = self
                    .p
                    .mappings
                    .iter()
                    .filter(|(_, m)| m.awaiting_claim)
                    .max_by_key(|(_, m)| (Some(&m.project) == channel.as_ref(), m.connected_at))
                    .map(|(k, _)| k.clone());
                if let Some(k) = &waiting {
                    self.p.aliases.insert(id.to_owned(), k.clone());
                    changed = true;
                }
                waiting
            }
            None => None,
        };
        let Some(key) = key else {
            return (None, changed);
        };
        let Some(m) = self.p.mappings.get_mut(&key) else {
            return (None, changed);
        };
        if m.awaiting_claim {
            m.awaiting_claim = false;
            changed = true;
        }
        let sender = if q.hook.as_deref() == Some("UserPromptSubmit") {
            m.user.clone()
        } else {
            m.agent.clone()
        };
        let routed = Routed {
            key,
            project: m.project.clone(),
            session: m.session.clone(),
            sender,
            open: SessionOpen {
                driver: Some(m.user.clone()),
                agent: Some(m.agent.clone()),
            },
        };
        (Some(routed), changed)
    }

    fn disconnect(&mut self, key: &str) -> Option<Mapping> {
        let m = self.p.mappings.remove(key)?;
        self.p.aliases.retain(|_, k| k != key);
        self.p.queues.remove(key);
        Some(m)
    }
}

impl Actor for Daemon {
    type Msg = DaemonMsg;
    type State = DaemonState;
    type Arguments = DaemonArgs;

    async fn pre_start(
        &self,
        myself: DaemonRef,
        args: DaemonArgs,
    ) -> Result<DaemonState, ActorProcessingErr> {
        let p = load(&args.state_file)?;
        let mut st = DaemonState {
            state_file: args.state_file,
            floor: args.floor,
            p,
            follows: HashMap::new(),
        };
        st.reconcile(&myself);
        Ok(st)
    }

    async fn post_stop(
        &self,
        _: DaemonRef,
        st: &mut DaemonState,
    ) -> Result<(), ActorProcessingErr> {
        for stop in st.follows.values() {
            stop.cancel();
        }
        st.persist().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: DaemonRef,
        msg: DaemonMsg,
        st: &mut DaemonState,
    ) -> Result<(), ActorProcessingErr> {
        // A caller that went away is no error: its answer simply has no taker.
        match msg {
            DaemonMsg::Register(cc, reply) => {
                if !st.p.registered.contains(&cc) {
                    st.p.registered.push(cc);
                    st.persist().await;
                }
                let _ = reply.send(());
            }
            DaemonMsg::Connect(c, reply) => {
                // A new connection of the same window replaces the old one, its aliases
                // and its stream (no second socket enqueueing the same injects).
                st.disconnect(&c.cc);
                st.p.mappings.insert(c.cc, c.mapping);
                st.reconcile(&myself);
                st.persist().await;
                let _ = reply.send(());
            }
            DaemonMsg::Disconnect(id, reply) => {
                let out = match st.key_of(&id) {
                    Some(k) => st.disconnect(&k),
                    None => None,
                };
                st.p.registered.retain(|r| *r != id);
                st.reconcile(&myself);
                st.persist().await;
                let _ = reply.send(out);
            }
            DaemonMsg::DisconnectAll(reply) => {
                st.p = Persisted::default();
                st.reconcile(&myself);
                st.persist().await;
                let _ = reply.send(());
            }
            DaemonMsg::Route(q, reply) => {
                let (routed, changed) = st.route(&q);
                if changed {
                    st.persist().await;
                }
                let _ = reply.send(routed);
            }
            DaemonMsg::Lookup(id, reply) => {
                let out = st
                    .key_of(&id)
                    .and_then(|k| st.p.mappings.get(&k).map(|m| (k, m.clone())));
                let _ = reply.send(out);
            }
            DaemonMsg::KeysOf(id, reply) => {
                let out = match st.key_of(&id) {
                    Some(k) => {
                        let mut v: Vec<String> =
                            st.p.aliases
                                .iter()
                                .filter(|(_, t)| **t == k)
                                .map(|(a, _)| a.clone())
                                .collect();
                        v.push(k);
                        v
                    }
                    None => Vec::new(),
                };
                let _ = reply.send(out);
            }
            DaemonMsg::QueueLen(key, reply) => {
                let _ = reply.send(st.p.queues.get(&key).map_or(0, Vec::len));
            }
            DaemonMsg::TakeInjects(key, reply) => {
                let out = st.p.queues.remove(&key).unwrap_or_default();
                if !out.is_empty() {
                    st.persist().await;
                }
                let _ = reply.send(out);
            }
            DaemonMsg::Status(reply) => {
                let mut rows = Vec::new();
                let row = |cc: &str, m: &Mapping| StatusRow {
                    cc: cc.to_owned(),
                    project: m.project.clone(),
                    session: m.session.clone(),
                    user: m.user.to_string(),
                    agent: m.agent.to_string(),
                    slack_channel: m.slack_channel.clone(),
                    pending: m.floor_pending,
                };
                for (k, m) in &st.p.mappings {
                    rows.push(row(k, m));
                }
                for (a, k) in &st.p.aliases {
                    if let Some(m) = st.p.mappings.get(k) {
                        rows.push(row(a, m));
                    }
                }
                let _ = reply.send(rows);
            }
            DaemonMsg::Renamed { old, new, reply } => {
                for m in st.p.mappings.values_mut() {
                    if m.project == old {
                        m.project = new.clone();
                        m.slack_channel = Some(new.clone());
                    }
                }
                for c in st.p.cursors.iter_mut() {
                    if c.project == old {
                        c.project = new.clone();
                    }
                }
                // The stream follows the new name (its cursor kept, so nothing is missed
                // or repeated).
                let moved: Vec<(String, String)> =
                    st.follows.keys().filter(|k| k.0 == old).cloned().collect();
                for k in moved {
                    if let Some(stop) = st.follows.remove(&k) {
                        stop.cancel();
                    }
                }
                st.reconcile(&myself);
                st.persist().await;
                let _ = reply.send(());
            }
            DaemonMsg::ChannelUpdate {
                project,
                channel,
                reply,
            } => {
                for m in st.p.mappings.values_mut() {
                    if m.project == project {
                        m.slack_channel = Some(channel.clone());
                    }
                }
                st.persist().await;
                let _ = reply.send(());
            }
            DaemonMsg::Follow(FollowMsg::CursorOf(p, s, reply)) => {
                let _ = reply.send(st.cursor(&p, &s));
            }
            DaemonMsg::Follow(FollowMsg::Frame(Frame {
                project,
                session,
                seq,
                source,
                sender,
                payload,
                timestamp,
            })) => {
                if !st.follows.contains_key(&(project.clone(), session.clone())) {
                    return Ok(());
                }
                // The stream only opens on a session the floor has: it exists now.
                for m in st.p.mappings.values_mut() {
                    if m.floor_pending && m.project == project && m.session == session {
                        m.floor_pending = false;
                    }
                }
                // A replayed frame (after a reconnect) is not queued twice.
                if st.cursor(&project, &session).is_some_and(|c| seq <= c) {
                    return Ok(());
                }
                match st
                    .p
                    .cursors
                    .iter_mut()
                    .find(|c| c.project == project && c.session == session)
                {
                    Some(c) => c.seq = seq,
                    None => st.p.cursors.push(Cursor {
                        project: project.clone(),
                        session: session.clone(),
                        seq,
                    }),
                }
                let content = payload["content"].as_str().unwrap_or_default().to_owned();
                let targets: Vec<String> =
                    st.p.mappings
                        .iter()
                        .filter(|(_, m)| m.project == project && m.session == session)
                        .filter(|(_, m)| match source.as_str() {
                            "inject" => true,
                            // Advice from a named agent; never the session's own agent.
                            "agent" => m.agent.as_str() != sender,
                            _ => false,
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                let queued = !targets.is_empty();
                for k in targets {
                    st.p.queues.entry(k).or_default().push(Inject {
                        from: sender.clone(),
                        content: content.clone(),
                        timestamp: timestamp.clone(),
                    });
                }
                // A frame that queued an inject is saved with its cursor at once, so a
                // restart neither loses nor repeats it. Other frames only move the cursor:
                // replaying them after a crash queues nothing, so they are saved with the
                // next change (or at shutdown) instead of costing an fsync each.
                if queued {
                    st.persist().await;
                }
            }
        }
        Ok(())
    }
}
