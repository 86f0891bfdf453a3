//! Test support: a real server (in process, on a free loopback port) over a fresh
//! database, and clients that talk to it the way users do — HTTP, WebSocket, SSE.

#![allow(dead_code)] // each test module uses a different part

pub mod browser;
pub mod client;
pub mod openai;
pub mod otlp;
pub mod slack;

use std::time::Duration;

use polaris_config::{DatabaseUrl, Env, RateLimits, Secret};
use polaris_registry::ParticipantId;
use polaris_runtime::Store;
use polaris_runtime::api::{self, ApiConfig};
use polaris_runtime::auth::{Role, TokenKeys};
use polaris_runtime::{Runtime, Settings};
use tokio::sync::oneshot;

pub use client::Client;

/// The registry the routing dataset is labelled against.
pub fn dataset_agents() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/agents.yaml")
}

/// A JWT secret for tests that need authentication.
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to start a test server.
#[derive(Clone)]
pub struct Options {
    pub secret: bool,
    pub rate_limits: RateLimits,
    pub session_idle: Duration,
    pub subscriber_buffer: usize,
    pub sse_heartbeat: Duration,
    pub ws_ping: Duration,
    pub max_body: usize,
    /// An agents.yaml to load at start.
    pub agents_file: Option<std::path::PathBuf>,
    /// A Slack workspace to bridge.
    pub slack: Option<polaris_slack::BridgeOptions>,
    /// Passive monitoring: `Some(None)` with the first stage only, `Some(Some(model))`
    /// with the model as well.
    pub passive: Option<Option<std::sync::Arc<polaris_passive::Embedder>>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            secret: false,
            // Off by default: most tests post faster than a human would.
            rate_limits: RateLimits {
                writes_per_minute: 0,
                injects_per_minute: 0,
            },
            session_idle: Duration::from_secs(300),
            subscriber_buffer: 1024,
            sse_heartbeat: Duration::from_secs(15),
            ws_ping: Duration::from_secs(30),
            max_body: 1 << 20,
            agents_file: None,
            slack: None,
            passive: None,
        }
    }
}

impl Options {
    /// Tokens required (the server's secret is set), as in production.
    pub fn secured() -> Options {
        Options {
            secret: true,
            ..Options::default()
        }
    }
}

/// A fresh database for one test, removed when the test finishes.
pub struct TestDb {
    pub url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>, // (admin url, database name)
}

impl TestDb {
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                Some(TestDb {
                    url: DatabaseUrl::Sqlite(dir.path().join("polaris.db")),
                    _dir: Some(dir),
                    pg_drop: None,
                })
            }
            Backend::Postgres => {
                let env = Env::from_process();
                let Some(admin) = env.get("DATABASE_URL").map(str::to_owned) else {
                    if env.get("POLARIS_TEST_REQUIRE_POSTGRES").is_some() {
                        panic!("POLARIS_TEST_REQUIRE_POSTGRES is set but DATABASE_URL is not");
                    }
                    eprintln!("skipped on postgres: DATABASE_URL is not set");
                    return None;
                };
                let name = format!("polaris_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("connect to DATABASE_URL");
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
                )
                .await
                .expect("create test database");
                let url = replace_db(&admin, &name);
                Some(TestDb {
                    url: DatabaseUrl::Postgres(Secret::new(url)),
                    _dir: None,
                    pg_drop: Some((admin, name)),
                })
            }
        }
    }

    pub async fn drop_db(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take()
            && let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
        {
            // Best effort: a leftover test database is harmless.
            let _ = sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            )
            .await;
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub runtime: Runtime,
    pub store: Store,
    pub backend: Backend,
    pub opts: Options,
    pub agents: Option<polaris_agents::HostHandle>,
    pub slack: Option<polaris_slack::SlackBridge>,
    db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(backend: Backend, opts: Options) -> Option<TestServer> {
        let db = TestDb::new(backend).await?;
        let store = Store::open(&db.url).await.expect("open store");
        Some(Self::start_on(backend, opts, db, store).await)
    }

    /// The URL of this server's database (for a second node on it).
    pub fn database_url(&self) -> &DatabaseUrl {
        &self.db.url
    }

    pub async fn start_on(backend: Backend, opts: Options, db: TestDb, store: Store) -> TestServer {
        Self::start_at(backend, opts, db, store, "127.0.0.1:0").await
    }

    async fn start_at(
        backend: Backend,
        opts: Options,
        db: TestDb,
        store: Store,
        addr: &str,
    ) -> TestServer {
        let runtime = Runtime::start(
            store.clone(),
            Settings {
                session_idle: opts.session_idle,
                subscriber_buffer: opts.subscriber_buffer,
            },
        )
        .await
        .expect("start runtime");
        let mut agents = None;
        if let Some(path) = &opts.agents_file {
            let file = polaris_registry::AgentFile::load(path).expect("agents file");
            runtime
                .directory()
                .load_agent_file(Some(file))
                .await
                .expect("load agents");
            let host = match &opts.passive {
                Some(model) => polaris_agents::AgentHost::start_watching(
                    runtime.clone(),
                    polaris_agents::passive::Passive::start(model.clone()),
                )
                .await
                .expect("agents"),
                None => polaris_agents::AgentHost::start(runtime.clone())
                    .await
                    .expect("agents"),
            };
            agents = Some(host);
        }
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let config = ApiConfig {
            metrics_elsewhere: false,
            jwt_secret: opts.secret.then(|| Secret::new(SECRET.into())),
            rate_limits: opts.rate_limits,
            max_body_bytes: opts.max_body,
            sse_heartbeat: opts.sse_heartbeat,
            ws_ping: opts.ws_ping,
            slack: None,
        };
        let slack = opts.slack.clone().map(|o| {
            polaris_slack::SlackBridge::start(runtime.clone(), o).expect("start the slack bridge")
        });
        let config = ApiConfig {
            metrics_elsewhere: false,
            slack: slack.as_ref().map(polaris_slack::SlackBridge::api),
            ..config
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(
            listener,
            runtime.clone(),
            config,
            None,
            async move {
                // A dropped sender also stops the server.
                let _ = stopped.await;
            },
        ));
        TestServer {
            base,
            runtime,
            store,
            backend,
            opts,
            agents,
            slack,
            db,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Another node of the same deployment: a server of its own (store pool, runtime, HTTP
    /// port) on this server's database, which it leaves in place when it finishes.
    pub async fn second_node(&self) -> TestServer {
        let store = Store::open(&self.db.url).await.expect("open store");
        let db = TestDb {
            url: self.db.url.clone(),
            _dir: None,
            pg_drop: None,
        };
        TestServer::start_on(self.backend, self.opts.clone(), db, store).await
    }

    /// Loads the agents file at `path` into the floor's directory, as `polaris serve
    /// --agents` does at start, without running any agent here (tests run them as `agent
    /// run` processes, or play them).
    pub async fn load_agents(&self, path: &std::path::Path) {
        let file = polaris_registry::AgentFile::load(path).expect("agents file");
        self.runtime
            .directory()
            .load_agent_file(Some(file))
            .await
            .expect("load agents");
    }

    /// An anonymous client (development mode).
    pub fn client(&self) -> Client {
        Client::new(&self.base, None)
    }

    /// A client with a token for `who` in `org`.
    pub fn client_as(&self, org: &str, who: &str, role: Role) -> Client {
        Client::new(&self.base, Some(token(org, who, role)))
    }

    /// Stops the HTTP server, then the runtime (as `polaris serve` does on SIGTERM).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        if let Some(h) = self.agents.take() {
            h.shutdown().await;
        }
        if let Some(s) = self.slack.take() {
            s.shutdown().await;
        }
        self.runtime.shutdown().await;
    }

    /// Stops everything and removes the database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.store.close().await;
        self.db.drop_db().await;
    }

    /// Throws the search index away, as a crash before indexing (or a lost index file)
    /// would; call it while the server is stopped.
    pub async fn wipe_search_index(&self) {
        match &self.db.url {
            DatabaseUrl::Sqlite(p) => {
                for suffix in ["", "-wal", "-shm"] {
                    let f = p.with_file_name(format!("polaris-search.db{suffix}"));
                    let _ = std::fs::remove_file(f);
                }
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url.expose())
                    .await
                    .expect("connect");
                sqlx::Executor::execute(
                    &mut conn,
                    "DELETE FROM event_search; DELETE FROM search_progress",
                )
                .await
                .expect("wipe");
            }
        }
    }

    /// Stops the server and starts a new one on the same database (a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.store.close().await;
        self.reopen().await;
    }

    /// Stops the server and starts a new one on the same database and the same address,
    /// as a floor restarted by its supervisor: clients outside the test find it again.
    pub async fn restart_in_place(&mut self) {
        self.stop().await;
        self.store.close().await;
        let addr = self.base.trim_start_matches("http://").to_owned();
        let store = Store::open(&self.db.url).await.expect("reopen store");
        let db = self.take_db();
        *self = TestServer::start_at(self.backend, self.opts.clone(), db, store, &addr).await;
    }

    fn take_db(&mut self) -> TestDb {
        let url = self.db.url.clone();
        std::mem::replace(
            &mut self.db,
            TestDb {
                url,
                _dir: None,
                pg_drop: None,
            },
        )
    }

    /// Starts a new server on the same database after [`TestServer::stop`].
    pub async fn reopen(&mut self) {
        let store = Store::open(&self.db.url).await.expect("reopen store");
        let db = self.take_db();
        *self = TestServer::start_on(self.backend, self.opts.clone(), db, store).await;
    }
}

pub fn token(org: &str, who: &str, role: Role) -> String {
    let keys = TokenKeys::new(&Secret::new(SECRET.into()));
    keys.mint(
        org,
        &ParticipantId::parse(who).expect("participant"),
        role,
        Duration::from_secs(3600),
    )
    .expect("mint")
}

/// Runs the body once on SQLite and once on PostgreSQL (when `DATABASE_URL` is set), each
/// on a fresh database, as `rgtest!` reruns ripgrep's tests with PCRE2.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $opts:expr, |$srv:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use $crate::support::*;

            #[allow(unused_mut)]
            async fn run(backend: Backend) {
                let Some(mut $srv) = TestServer::start(backend, $opts).await else { return };
                $body
                $srv.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
    ($name:ident, |$srv:ident| $body:block) => {
        $crate::both_stores!($name, $crate::support::Options::default(), |$srv| $body);
    };
}

/// Waits until `f` returns `Some`, polling; fails the test after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain reqwest client (see [`client::http_builder`]).
pub fn http() -> reqwest::Client {
    client::http_builder().build().expect("http client")
}

/// The `polaris` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_polaris");

/// `polaris sidecar EXTRA --home HOME --floor FLOOR`, with none of the developer's own
/// sidecar settings leaking in, its stdout piped (for the listening line) and killed with
/// the test.
pub fn sidecar_command(
    home: &std::path::Path,
    floor: &str,
    extra: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("sidecar")
        .args(extra)
        .arg("--home")
        .arg(home)
        .arg("--floor")
        .arg(floor)
        .env_remove("POLARIS_DAEMON_SECRET")
        .env_remove("POLARIS_SERVICE_URL")
        .env_remove("POLARIS_AUTH_TOKEN")
        .env_remove("POLARIS_DAEMON_PORT")
        .env_remove("POLARIS_HOME")
        .env("POLARIS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// The two addresses `polaris serve --metrics-listen` prints first (`listening on …`, then
/// `metrics on …`), from a child spawned with its stdout piped.
pub async fn api_and_metrics(child: &mut tokio::process::Child) -> (String, String) {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a line within 30 s")
            .expect("read")
            .expect("a line")
    };
    let first = next().await;
    let api = first
        .strip_prefix("listening on ")
        .expect(&first)
        .to_owned();
    let second = next().await;
    let metrics = second
        .strip_prefix("metrics on ")
        .expect(&second)
        .to_owned();
    (api, metrics)
}

/// Spawns `cmd` (`polaris serve` or `polaris sidecar` on port 0) and returns it with the
/// base URL from its first line, `listening on http://127.0.0.1:PORT`.
pub async fn spawn_listening(mut cmd: tokio::process::Command) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = cmd.spawn().expect("spawn polaris");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line within 30 s")
        .expect("read")
        .expect("polaris printed nothing");
    let base = line
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    (child, base)
}

/// Sends `child` SIGTERM (as `docker stop` or a service manager does) and returns its exit
/// status, which must come within `secs` seconds (`what` names the process if not).
pub async fn terminate(
    child: &mut tokio::process::Child,
    secs: u64,
    what: &str,
) -> std::process::ExitStatus {
    let pid = child.id().expect("pid").to_string();
    let sent = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::time::timeout(Duration::from_secs(secs), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} stops within {secs} s of SIGTERM"))
        .expect("wait")
}
