//! The Slack bridge: one per connected workspace. Each floor of the workspace's org has a
//! channel, each session a thread in it; what is committed on a floor is posted under its
//! speaker's persona, and what people write in the channel comes back to the floor: a
//! reply in a session's thread (or `@s-7a3f …`) as an inject into that session, anything
//! else as floor chat, which named agents read and answer (in the thread it came from).
//!
//! How it holds up (docs/adr/0015):
//!
//! - **Once outward.** One bridge per workspace posts at a time, the holder of the lease
//!   `slack:<team>` (the lease named agents use). Each floor's cursor moves only after
//!   Slack answered `ok`, every write fenced by the lease's term; the post under way is
//!   written down first, so after a crash exactly one post is in doubt, and it is looked
//!   for once (its event range rides in the message's `metadata`) before it is made again.
//! - **Pushed, not polled.** Floors are read through the runtime's resumable subscription;
//!   Slack history is read only for that one check.
//! - **Slack's limits.** A channel gets at most one message per `post_interval`; what
//!   waits meanwhile is packed into the next message, in order; a 429 is waited out.
//! - **Inbound, both transports, one handler.** The Events API route and the Socket Mode
//!   client hand each `event_callback` to [`inbound`]; the floor event's id comes from
//!   Slack's `event_id`, so a retry is the floor's idempotent re-post.
#![warn(missing_docs, unreachable_pub)]

mod channels;
pub mod format;
mod http;
mod inbound;
pub mod names;
mod outbound;
mod socket;
mod team;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dashmap::DashMap;
use polaris_config::{Secret, SlackConfig};
use polaris_runtime::api::SlackApi;
use polaris_runtime::{ProjectKey, Runtime, SlackFence, SlackLinks};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::web::{Identity, WebApi};

pub use crate::http::signature;

/// The session that holds a floor's chat from Slack (messages to nobody in particular,
/// questions for agents): driverless, shown as the channel itself rather than a thread.
pub const CHAT_SESSION: &str = "slack";

/// Namespace of the ids of events made from Slack: `v5(namespace, "<team>/<event_id>")`.
pub const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x5a1c_0b7e_2d4f_4c8a_9e61_7b3d_0f2a_6c95);

/// How a bridge is run.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// The workspace.
    pub config: SlackConfig,
    /// How long the lease lasts unless renewed (a dead bridge's is taken over after it).
    pub lease_ttl: Duration,
    /// This instance's name as a lease holder.
    pub holder: String,
    /// Test hooks.
    pub faults: Arc<Faults>,
}

impl BridgeOptions {
    /// The defaults for `config`.
    pub fn new(config: SlackConfig) -> BridgeOptions {
        BridgeOptions {
            config,
            lease_ttl: Duration::from_secs(15),
            holder: format!("slack-{}", Uuid::new_v4().simple()),
            faults: Arc::default(),
        }
    }
}

/// Fault points, for tests that crash the bridge at the worst moment.
#[derive(Debug, Default)]
pub struct Faults {
    /// Stop every floor's posting right after Slack accepted a post and before the cursor
    /// moves, as a crash would (nothing more is written; the lease is not released).
    pub crash_after_post: AtomicBool,
    /// Set once the crash above happened.
    pub crashed: AtomicBool,
    /// Cancelled at the crash, before `crashed` is set: the bridge stops at once, as a
    /// killed process would, without releasing its lease.
    pub crash: CancellationToken,
}

/// State every task of a bridge shares.
pub(crate) struct Shared {
    pub(crate) runtime: Runtime,
    pub(crate) web: WebApi,
    pub(crate) links: SlackLinks,
    pub(crate) org: Arc<str>,
    pub(crate) post_interval: Duration,
    pub(crate) signing_secret: Option<Secret>,
    pub(crate) app_token: Option<Secret>,
    pub(crate) api_url: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) holder: String,
    pub(crate) faults: Arc<Faults>,
    /// Set once `auth.test` answered.
    pub(crate) me: watch::Sender<Option<Identity>>,
    /// The channel of each floor, once resolved.
    pub(crate) channels: DashMap<Uuid, String>,
    /// Slack users by id, as the bridge needs them.
    pub(crate) users: DashMap<String, team::User>,
    /// The workspace's members and the aliases they are mentioned by.
    pub(crate) team: Mutex<Option<team::Cached>>,
    /// Registry personas by agent id: `(display name, icon)`.
    pub(crate) personas: DashMap<String, Option<(String, String)>>,
    pub(crate) shutdown: CancellationToken,
    /// Session threads just started and not yet stored (`ts` → project, session): a reply
    /// typed the moment the thread appears still finds its session.
    pub(crate) starting: DashMap<String, (Uuid, String)>,
    /// Slack events waiting for the floor, handled one at a time in arrival order.
    pub(crate) inbound: tokio::sync::mpsc::Sender<serde_json::Value>,
}

/// Slack events that may wait for the floor; beyond, the Events API answers 503 and
/// Socket Mode leaves the envelope unacknowledged, and Slack delivers it again later.
const INBOUND_QUEUE: usize = 1024;

impl Shared {
    /// The bot's identity, once known.
    pub(crate) fn me(&self) -> Option<Identity> {
        self.me.borrow().clone()
    }
}

/// A running bridge. Dropping it does not stop it: call [`SlackBridge::shutdown`].
#[derive(Clone)]
pub struct SlackBridge {
    shared: Arc<Shared>,
    main: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for SlackBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackBridge")
            .field("org", &self.shared.org)
            .finish()
    }
}

impl SlackBridge {
    /// Starts the bridge of `options.config`'s workspace over `runtime`: it learns who it
    /// is (`auth.test`, retried until Slack answers), then posts and listens whenever it
    /// holds the workspace's lease.
    pub fn start(runtime: Runtime, options: BridgeOptions) -> Result<SlackBridge, web::SlackError> {
        let c = options.config;
        let web = WebApi::new(&c.api_url, c.bot_token.clone())?;
        let (inbound, mut queue) = tokio::sync::mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            inbound,
            links: runtime.slack_links(),
            runtime,
            web,
            org: c.org.as_str().into(),
            post_interval: c.post_interval,
            signing_secret: c.signing_secret,
            app_token: c.app_token,
            api_url: c.api_url,
            lease_ttl: options.lease_ttl,
            holder: options.holder,
            faults: options.faults,
            me: watch::Sender::new(None),
            channels: DashMap::new(),
            users: DashMap::new(),
            team: Mutex::new(None),
            personas: DashMap::new(),
            starting: DashMap::new(),
            shutdown: CancellationToken::new(),
        });
        let main = tokio::spawn(run(shared.clone()));
        // In arrival order: a reply typed after another reaches the floor after it.
        let s = Arc::downgrade(&shared);
        tokio::spawn(async move {
            while let Some(body) = queue.recv().await {
                let Some(shared) = s.upgrade() else { return };
                inbound::handle(&shared, &body).await;
            }
        });
        Ok(SlackBridge {
            shared,
            main: Arc::new(Mutex::new(Some(main))),
        })
    }

    /// What the bridge adds to the HTTP API: `POST /slack/events` (when a signing secret
    /// is configured) and the members `/team` lists.
    pub fn api(&self) -> SlackApi {
        SlackApi {
            routes: http::routes(self.shared.clone()),
            team: Arc::new(team::Team(self.shared.clone())),
        }
    }

    /// Stops posting and listening, and gives the lease up.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        if let Some(main) = self.main.lock().await.take() {
            let _ = main.await;
        }
    }
}

/// The lease's name for a workspace.
fn lease_name(team: &str) -> String {
    format!("slack:{team}")
}

async fn run(shared: Arc<Shared>) {
    let me = tokio::select! {
        me = identify(&shared) => me,
        () = shared.shutdown.cancelled() => return,
    };
    tracing::info!(team = %me.team, bot = %me.user, org = %shared.org, "slack bridge connected");
    let name = lease_name(&me.team);
    let leases = shared.runtime.leases();
    let ttl = shared.lease_ttl;
    loop {
        let acquired = tokio::select! {
            a = leases.acquire(&shared.org, &name, &shared.holder, ttl, ttl) => a,
            () = shared.shutdown.cancelled() => return,
        };
        let lease = match acquired {
            Ok(Ok(lease)) => lease,
            Ok(Err(_held)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "slack lease not taken; retrying");
                if sleep_or_stop(&shared, ttl / 3).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(term = lease.term, "slack bridge leading");
        let lead = shared.shutdown.child_token();
        let work = tokio::spawn(lead_workspace(
            shared.clone(),
            me.team.clone(),
            lease.term,
            lead.clone(),
        ));
        let mut renewed = tokio::time::Instant::now();
        let stopping = loop {
            tokio::select! {
                biased;
                () = shared.faults.crash.cancelled() => {
                    // A simulated crash: everything stops, nothing is released.
                    lead.cancel();
                    let _ = work.await;
                    return;
                }
                () = tokio::time::sleep(ttl / 3) => {}
                () = shared.shutdown.cancelled() => break true,
            }
            match leases
                .renew(&shared.org, &name, &shared.holder, lease.term, ttl)
                .await
            {
                Ok(Some(_)) => renewed = tokio::time::Instant::now(),
                Ok(None) => break false,
                Err(e) if renewed.elapsed() < ttl => {
                    tracing::warn!(error = %e, "slack lease not renewed; retrying");
                }
                Err(_) => break false,
            }
        };
        lead.cancel();
        let _ = work.await;
        if stopping {
            if let Err(e) = leases
                .release(&shared.org, &name, &shared.holder, lease.term)
                .await
            {
                tracing::warn!(error = %e, "slack lease not released; it expires by itself");
            }
            return;
        }
        tracing::warn!(
            term = lease.term,
            "slack lease lost; waiting to take it again"
        );
    }
}

/// `auth.test`, until Slack answers.
async fn identify(shared: &Shared) -> Identity {
    let mut delay = Duration::from_millis(250);
    loop {
        match shared.web.auth_test().await {
            Ok(me) => {
                shared.me.send_replace(Some(me.clone()));
                return me;
            }
            Err(e) => {
                tracing::warn!(error = %e, "slack auth.test failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// True when the bridge is stopping.
async fn sleep_or_stop(shared: &Shared, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shared.shutdown.cancelled() => true,
    }
}

/// What the lease holder does: a posting task per floor (started and stopped as floors
/// come and go) and, with an app token, the Socket Mode connection.
async fn lead_workspace(shared: Arc<Shared>, team: String, term: i64, stop: CancellationToken) {
    let mut tasks = JoinSet::new();
    if shared.app_token.is_some() {
        tasks.spawn(socket::run(shared.clone(), stop.clone()));
    }
    let name = lease_name(&team);
    // Each floor's task, and the name it is told (a rename renames the channel).
    let mut floors: HashMap<Uuid, (watch::Sender<Arc<str>>, CancellationToken)> = HashMap::new();
    let mut changes = shared.runtime.directory().subscribe();
    loop {
        match shared.runtime.directory().floors(&shared.org).await {
            Ok(keys) => {
                floors.retain(|id, (_, t)| {
                    let keep = keys.iter().any(|k| k.id == *id);
                    if !keep {
                        t.cancel();
                    }
                    keep
                });
                for key in keys {
                    if key.name.starts_with('_') {
                        continue;
                    }
                    if let Some((name, _)) = floors.get(&key.id) {
                        name.send_if_modified(|n| {
                            let changed = *n != key.name;
                            *n = key.name.clone();
                            changed
                        });
                        continue;
                    }
                    let t = stop.child_token();
                    let (name_tx, name_rx) = watch::channel(key.name.clone());
                    floors.insert(key.id, (name_tx, t.clone()));
                    let fence = (name.clone(), term);
                    tasks.spawn(outbound::run_floor(
                        shared.clone(),
                        team.clone(),
                        key,
                        name_rx,
                        fence,
                        t,
                    ));
                }
            }
            Err(e) => tracing::warn!(error = %e, "slack bridge: floors not listed"),
        }
        // A change anywhere in the directory, or every half minute: floors come, go and
        // are renamed on other nodes too.
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = stop.cancelled() => break,
        }
        shared.personas.clear();
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// The fence a floor task writes under.
pub(crate) fn fence(f: &(String, i64)) -> SlackFence<'_> {
    SlackFence {
        name: &f.0,
        term: f.1,
    }
}

/// The floor of `project` in the bridge's org, under its current name.
pub(crate) async fn floor_by_id(shared: &Shared, project: Uuid) -> Option<ProjectKey> {
    match shared.runtime.directory().floors(&shared.org).await {
        Ok(keys) => keys.into_iter().find(|k| k.id == project),
        Err(e) => {
            tracing::warn!(error = %e, "floors not listed");
            None
        }
    }
}
