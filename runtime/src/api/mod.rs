//! The HTTP API: the original's routes (reference, section 3.5) with their methods, paths,
//! status codes and JSON shapes, plus resumable streams, `/healthz` and `/metrics`.
//!
//! Requests go through one authentication layer, which resolves the [`Caller`] once
//! (a bearer token, or the anonymous development caller when no secret is configured),
//! applies the write rate limit and records the caller for the handlers. Every handler
//! resolves its project within the caller's org, so nothing crosses orgs.

mod agents;
mod dashboard;
mod error;
mod extract;
mod hosting;
mod leases;
mod memory;
mod misc;
mod projects;
mod sessions;
mod streams;
mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use polaris_config::{RateLimits, Secret, ServerConfig};
use polaris_registry::ParticipantId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use dashboard::login_link;
pub use error::ApiError;

use crate::auth::{Caller, DEFAULT_ORG, TokenKeys};
use crate::commit::Posted;
use crate::protocol::{Project, Visibility};
use crate::runtime::Runtime;
use crate::store::ProjectKey;

/// What the API needs from the configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Token secret; `None` is development mode (anonymous callers in org `default`).
    pub jwt_secret: Option<Secret>,
    /// Write rate limits.
    pub rate_limits: RateLimits,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// SSE heartbeat.
    pub sse_heartbeat: Duration,
    /// WebSocket ping.
    pub ws_ping: Duration,
    /// What a connected Slack workspace adds, if one is.
    pub slack: Option<SlackApi>,
    /// `/metrics` is served on a listener of its own ([`serve_metrics`]): here it then
    /// needs a token like every other route.
    pub metrics_elsewhere: bool,
}

/// What a Slack bridge adds to the API.
#[derive(Clone)]
pub struct SlackApi {
    /// Served as they are, outside the API's token check: Slack signs its requests and
    /// these routes verify that.
    pub routes: Router,
    /// The workspace's members, for `/team`.
    pub team: Arc<dyn SlackTeam>,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackApi")
    }
}

/// A Slack workspace's members (cached by the bridge).
pub trait SlackTeam: Send + Sync {
    /// The members of the workspace connected for `org` (none when it has none).
    fn members<'a>(
        &'a self,
        org: &'a str,
    ) -> futures::future::BoxFuture<'a, Vec<polaris_protocol::team::SlackMember>>;
}

impl ApiConfig {
    /// The API part of a server configuration.
    pub fn from_server(c: &ServerConfig) -> ApiConfig {
        ApiConfig {
            jwt_secret: c.jwt_secret.clone(),
            rate_limits: c.rate_limits,
            max_body_bytes: c.max_body_bytes,
            sse_heartbeat: c.streams.sse_heartbeat,
            ws_ping: c.streams.ws_ping,
            slack: None,
            metrics_elsewhere: c.metrics_listen.is_some(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            jwt_secret: None,
            rate_limits: RateLimits {
                writes_per_minute: 600,
                injects_per_minute: 60,
            },
            max_body_bytes: 1 << 20,
            sse_heartbeat: Duration::from_secs(15),
            ws_ping: Duration::from_secs(30),
            slack: None,
            metrics_elsewhere: false,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    runtime: Runtime,
    tokens: Option<TokenKeys>,
    writes: Option<DefaultKeyedRateLimiter<String>>,
    injects: Option<DefaultKeyedRateLimiter<String>>,
    sse_heartbeat: Duration,
    ws_ping: Duration,
    shutdown: CancellationToken,
    /// Participants already recorded in `users` by this process.
    seen: DashMap<(Arc<str>, ParticipantId), ()>,
    metrics: Option<PrometheusHandle>,
    slack_team: Option<Arc<dyn SlackTeam>>,
    /// The floors page's activity counts (`dashboard::Activity`).
    activity: dashboard::Activity,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

fn limiter(per_minute: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends
/// the streams and waits for in-flight requests (each of which waits for its commit).
/// The caller shuts the runtime down afterwards.
pub async fn serve(
    listener: TcpListener,
    runtime: Runtime,
    config: ApiConfig,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = CancellationToken::new();
    if config.jwt_secret.is_none()
        && let Err(e) = runtime.store().ensure_org(DEFAULT_ORG).await
    {
        tracing::warn!(error = %e, "could not create the default org");
    }
    let state = AppState(Arc::new(Inner {
        runtime,
        tokens: config.jwt_secret.as_ref().map(TokenKeys::new),
        writes: limiter(config.rate_limits.writes_per_minute),
        injects: limiter(config.rate_limits.injects_per_minute),
        sse_heartbeat: config.sse_heartbeat,
        ws_ping: config.ws_ping,
        shutdown: token.clone(),
        seen: DashMap::new(),
        metrics,
        slack_team: config.slack.as_ref().map(|s| s.team.clone()),
        activity: dashboard::Activity::default(),
    }));
    tokio::spawn(prune_limiters(state.clone()));
    let mut app = router(state, config.max_body_bytes, config.metrics_elsewhere);
    if let Some(slack) = config.slack {
        app = app.merge(slack.routes);
    }
    // Nagle's algorithm would hold small writes (a WebSocket frame, a 201) until the
    // previous segment is acknowledged.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        token.cancel();
    })
    .await
}

/// Forgets rate-limit keys that have been quiet for a while, so the tables do not grow
/// with every caller ever seen.
async fn prune_limiters(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                for l in [&state.writes, &state.injects].into_iter().flatten() {
                    l.retain_recent();
                    l.shrink_to_fit();
                }
            }
        }
    }
}

fn router(state: AppState, max_body: usize, metrics_elsewhere: bool) -> Router {
    let s = "/projects/{project}/sessions/{session}";
    let mut public = Router::new()
        .route("/status", get(misc::status))
        .route("/healthz", get(misc::healthz));
    let mut authenticated = Router::new();
    if metrics_elsewhere {
        authenticated = authenticated.route("/metrics", get(misc::metrics));
    } else {
        public = public.route("/metrics", get(misc::metrics));
    }
    let authenticated = authenticated
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/{project}", get(projects::get))
        .route("/projects/{project}/rename", post(projects::rename))
        .route("/projects/{project}/visibility", post(projects::visibility))
        .route("/projects/{project}/redaction", post(projects::redaction))
        .route("/projects/{project}/passive", post(projects::passive))
        .route(
            "/projects/{project}/members",
            get(projects::members).post(projects::add_member),
        )
        .route(
            "/projects/{project}/members/{pid}",
            delete(projects::remove_member),
        )
        .route("/projects/{project}/messages", get(projects::messages))
        .route("/projects/{project}/events", get(streams::project_events))
        .route("/projects/{project}/ws", get(streams::project_ws))
        .route(
            "/projects/{project}/sessions",
            get(sessions::list).post(sessions::create),
        )
        .route(s, get(sessions::get))
        .route(
            &format!("{s}/events"),
            get(streams::session_events).post(sessions::post_event),
        )
        .route(&format!("{s}/events/batch"), post(sessions::post_batch))
        .route(&format!("{s}/ws"), get(streams::session_ws))
        .route(&format!("{s}/inject"), post(sessions::inject))
        .route(&format!("{s}/messages"), get(sessions::messages))
        .route(&format!("{s}/handoff"), post(sessions::handoff))
        .route(&format!("{s}/driver"), post(sessions::driver))
        .route(&format!("{s}/label"), post(sessions::label))
        .route(
            &format!("{s}/annotations"),
            get(sessions::annotations).post(sessions::annotate),
        )
        .route("/agents", get(agents::list).post(agents::create))
        .route(
            "/agents/{id}",
            get(agents::get).put(agents::replace).delete(agents::delete),
        )
        .route(
            "/agents/{id}/lease",
            get(leases::get)
                .post(leases::take)
                .put(leases::renew)
                .delete(leases::release),
        )
        .route("/agents/{id}/roster", get(hosting::get_roster))
        .route("/agents/{id}/memory", get(memory::list).post(memory::add))
        .route(
            "/agents/{id}/memory/{mid}",
            get(memory::get).delete(memory::delete),
        )
        .route(
            "/agents/{id}/cursors",
            get(hosting::get_cursor).put(hosting::save_cursors),
        )
        .route(
            "/projects/{project}/tags",
            axum::routing::put(agents::set_tags),
        )
        .route(
            "/projects/{project}/agents",
            get(agents::floor_agents).post(agents::invite),
        )
        .route("/projects/{project}/agents/{agent}", delete(agents::remove))
        .route(
            "/projects/{project}/agents/{agent}/tasks",
            get(tasks::list).post(tasks::create),
        )
        .route(
            "/projects/{project}/agents/{agent}/tasks/{id}",
            get(tasks::get),
        )
        .route(
            "/projects/{project}/agents/{agent}/tasks/{id}/stop",
            post(tasks::stop),
        )
        .route("/annotations/{id}", delete(misc::delete_annotation))
        .route("/decisions", get(misc::decisions))
        .route("/search", get(misc::search))
        .route("/team", get(misc::team))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    public
        .merge(authenticated)
        .merge(dashboard::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `/metrics` alone on `listener`, without authentication, for a
/// scraper on a network the API's callers are not on, until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    runtime: Runtime,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let (runtime, metrics) = (runtime.clone(), metrics.clone());
                async move { misc::render_metrics(&runtime, metrics.as_ref()) }
            }),
        )
        .fallback(not_found);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The request-duration histogram, which the server's recorder gives these buckets
/// (seconds) rather than quantiles: buckets add up across nodes behind a load balancer.
pub const REQUEST_DURATION: &str = "polaris_http_request_duration_seconds";
/// See [`REQUEST_DURATION`].
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What every request goes through once routed, in one layer: a 5xx's hidden cause is
/// logged with the request, and the request's duration is recorded, as the server sees
/// it, under its method, status and route pattern (`/projects/{project}/…`, never the
/// path itself). Every label has few values whatever a client sends, so no caller can
/// grow the series: a path no route matches counts as `unmatched`, a method outside
/// HTTP's own as `other`.
async fn observe(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Shares the request's bytes: the path is only read if the answer is a 5xx.
    let uri = req.uri().clone();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    error::log_cause(&method, uri.path(), &res);
    let method = match method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    metrics::histogram!(
        REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => res.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    res
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("handler panicked".into()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not found".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Resolves the caller, applies the write rate limit and records the caller's first
/// appearance in `users`.
async fn authenticate(
    State(st): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = st.caller(req.headers())?;
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|a| a.0);
    let key = RateKey(rate_key(&caller, addr));
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        st.check_rate(&st.writes, &key.0, "Rate limit exceeded")?;
    }
    admit(&st, &caller, addr).await?;
    req.extensions_mut().insert(key);
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// What every authenticated request (API or dashboard) goes through once its caller is
/// known: the caller's first appearance is recorded in `users`; the answer is its
/// rate-limit key.
pub(crate) async fn admit(
    st: &AppState,
    caller: &Caller,
    addr: Option<SocketAddr>,
) -> Result<RateKey, ApiError> {
    let key = RateKey(rate_key(caller, addr));
    if let Some(who) = &caller.participant
        && st
            .seen
            .insert((caller.org.clone(), who.clone()), ())
            .is_none()
    {
        let name = polaris_registry::Persona::of(who, None, None).name;
        if let Err(e) = st.runtime.store().touch_user(&caller.org, who, &name).await {
            // Not fatal for the request; retried on the next one.
            st.seen.remove(&(caller.org.clone(), who.clone()));
            return Err(e.into());
        }
    }
    Ok(key)
}

/// The caller's rate-limit key, for handlers with limits of their own.
#[derive(Clone)]
pub(crate) struct RateKey(pub(crate) String);

fn rate_key(caller: &Caller, addr: Option<SocketAddr>) -> String {
    match (&caller.participant, addr) {
        (Some(p), _) => format!("{}/{p}", caller.org),
        (None, Some(a)) => format!("ip:{}", a.ip()),
        (None, None) => "ip:unknown".to_owned(),
    }
}

impl Inner {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| {
                        s.strip_prefix("Bearer ")
                            .or_else(|| s.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .ok_or_else(|| {
                        ApiError::Unauthorized(
                            "Unauthorized: expected 'Authorization: Bearer <token>'".into(),
                        )
                    })
            })
            .transpose()?;
        match (&self.tokens, bearer) {
            (Some(keys), Some(token)) => keys
                .verify(token)
                .map(|(caller, _)| caller)
                .map_err(|e| ApiError::Unauthorized(format!("Unauthorized: {e}"))),
            (Some(_), None) => Err(ApiError::Unauthorized("Unauthorized: a bearer token is required".into())),
            (None, None) => Ok(Caller::anonymous()),
            (None, Some(_)) => Err(ApiError::Unauthorized(
                "Unauthorized: this server has no token secret configured (POLARIS_JWT_SECRET), so it cannot \
                 verify tokens; send no Authorization header to use it anonymously"
                    .into(),
            )),
        }
    }

    fn check_rate(
        &self,
        limiter: &Option<DefaultKeyedRateLimiter<String>>,
        key: &String,
        message: &'static str,
    ) -> Result<(), ApiError> {
        let Some(l) = limiter else { return Ok(()) };
        l.check_key(key).map_err(|not_until| {
            use governor::clock::{Clock, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests(message, wait.as_secs_f64().ceil() as u64)
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal("caller not resolved (route outside the auth layer)".into())
        })
    }
}

/// A project the caller may use, with its key for the runtime.
pub(crate) struct Opened {
    pub(crate) project: Project,
    pub(crate) key: ProjectKey,
}

/// What a route needs from a project.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and post: org members, or members only for restricted projects.
    Use,
    /// Change visibility or members: admins only.
    Admin,
}

impl AppState {
    /// Resolves a project of the caller's org and checks access (reference 3.4, with an
    /// admin role for visibility and membership changes).
    pub(crate) async fn open_project(
        &self,
        caller: &Caller,
        name: &str,
        access: Access,
    ) -> Result<Opened, ApiError> {
        let project = self
            .runtime
            .project(&caller.org, name)
            .await?
            .ok_or_else(|| ApiError::NotFound("Project not found".into()))?;
        if access == Access::Admin && !caller.is_admin() {
            return Err(ApiError::Forbidden(
                "Forbidden: changing visibility or members needs the admin role".into(),
            ));
        }
        if !self.may_see(caller, &project).await? {
            return Err(ApiError::Forbidden(
                "Forbidden: project is restricted to members".into(),
            ));
        }
        let key = ProjectKey {
            id: project.id,
            org: caller.org.clone(),
            name: project.name.as_str().into(),
        };
        Ok(Opened { project, key })
    }

    /// The project and one of its sessions (404 if the session does not exist).
    pub(crate) async fn open_session(
        &self,
        caller: &Caller,
        project: &str,
        session: &str,
    ) -> Result<Opened, ApiError> {
        let opened = self.open_project(caller, project, Access::Use).await?;
        if self
            .runtime
            .store()
            .get_session(&opened.key, session)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("Session not found".into()));
        }
        Ok(opened)
    }

    /// True when the caller may see the project.
    pub(crate) async fn may_see(
        &self,
        caller: &Caller,
        project: &Project,
    ) -> Result<bool, ApiError> {
        if project.visibility == Visibility::Org || caller.is_admin() {
            return Ok(true);
        }
        let Some(who) = &caller.participant else {
            return Ok(true);
        };
        let members = self.runtime.store().list_members(project.id).await?;
        Ok(members.iter().any(|m| m.participant_id == who.as_str()))
    }

    /// The project a filter names (checked like any other access), or every project the
    /// caller may see.
    pub(crate) async fn projects_in_scope(
        &self,
        caller: &Caller,
        name: Option<&str>,
    ) -> Result<Vec<uuid::Uuid>, ApiError> {
        Ok(match name {
            Some(n) => vec![self.open_project(caller, n, Access::Use).await?.project.id],
            None => self
                .visible_projects(caller)
                .await?
                .iter()
                .map(|p| p.id)
                .collect(),
        })
    }

    /// Projects of the caller's org that the caller may see.
    pub(crate) async fn visible_projects(&self, caller: &Caller) -> Result<Vec<Project>, ApiError> {
        let mut out = Vec::new();
        for p in self.runtime.store().list_projects(&caller.org).await? {
            if self.may_see(caller, &p).await? {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// The answer to a post: 201 with the new event, or 200 with the stored one when the id
/// was known already (a retry). The JSON is the one rendered at commit.
pub(crate) fn event_response(posted: &Posted) -> Response {
    let status = if posted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_bytes(status, posted.committed.json.clone())
}

pub(crate) fn json_bytes(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap_or_else(|_| ApiError::Internal("response build".into()).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tower::ServiceExt;

    use super::*;

    /// Where the test's subscriber writes.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;
        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    #[tokio::test]
    async fn a_5xx_cause_is_logged_with_its_request_and_never_answered() {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app: Router = Router::new()
            .route(
                "/things/{id}",
                get(|| async { Err::<(), _>(ApiError::Internal("the disk is on fire".into())) }),
            )
            .layer(middleware::from_fn(observe));
        let res = app
            .oneshot(
                Request::builder()
                    .uri("/things/42")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("disk"), "{body:?}");
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("request failed"), "{logged}");
        assert!(logged.contains("the disk is on fire"), "{logged}");
        assert!(
            logged.contains("/things/42") && logged.contains("GET"),
            "{logged}"
        );
    }
}
