//! The dashboard: server-rendered pages on the API's port — floors at `/`, everything
//! else under `/ui/` — readable without JavaScript and kept live by one small script over
//! Server-Sent Events.
//!
//! It owns presentation only. Every page and form resolves its project through the API's
//! own access rules ([`AppState::open_project`], `open_session`, `visible_projects`), so
//! it cannot show what the API would refuse; an unknown (or other org's) project or session
//! is a 404 page. It must never accept a state-changing request without the session's CSRF
//! token and a same-origin `Origin`, never put a credential in a page URL it makes, and
//! never serve inline script (the Content-Security-Policy forbids it).
//!
//! Sign-in: in development mode (no token secret; the server only listens on loopback then)
//! the visitor is the anonymous development caller. Otherwise a cookie session from a
//! one-time login link (`signin`).

mod activity;
mod agents;
mod floors;
mod org;
mod render;
mod signin;
mod transcript;

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub(super) use activity::Activity;
pub use signin::login_link;

use super::extract::RawBody;
use super::{ApiError, AppState, admit};
use crate::auth::Caller;
use crate::store::StoreError;
use render::Viewer;

/// Content-Security-Policy of every dashboard answer: nothing inline, nothing from
/// elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The dashboard's routes, to be merged into the API router (its own paths never collide
/// with the API's: `/` and `/ui/…`).
pub(super) fn routes(state: AppState) -> Router<AppState> {
    let s = "/ui/floors/{project}/sessions/{session}";
    let signed_in = Router::new()
        .route("/", get(floors::page))
        .route(s, get(transcript::page))
        .route(&format!("{s}/live"), get(transcript::live))
        .route(&format!("{s}/inject"), post(transcript::inject))
        .route(&format!("{s}/annotate"), post(transcript::annotate))
        .route(&format!("{s}/driver"), post(transcript::driver))
        .route(&format!("{s}/handoff"), post(transcript::handoff))
        .route("/ui/agents", get(agents::page))
        .route("/ui/agents/invite", post(agents::invite_form))
        .route("/ui/floors/{project}/agents", post(agents::invite))
        .route("/ui/floors/{project}/agents/remove", post(agents::remove))
        .route("/ui/search", get(org::search))
        .route("/ui/decisions", get(org::decisions))
        .route("/ui/team", get(org::team))
        .route(
            "/ui/floors/{project}/settings",
            get(org::settings).post(org::save_settings),
        )
        .route("/ui/signout", post(signin::sign_out))
        .route_layer(middleware::from_fn_with_state(state, sign_in_required));
    Router::new()
        .merge(signed_in)
        .route("/ui/signin", get(signin::page))
        .route("/ui/login/{token}", get(signin::confirm))
        .route("/ui/login", post(signin::redeem))
        .route("/ui/assets/app.css", get(|| asset("text/css", APP_CSS)))
        .route(
            "/ui/assets/app.js",
            get(|| asset("text/javascript", APP_JS)),
        )
        .route_layer(middleware::from_fn(same_origin_and_headers))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Refuses cross-site writes (an `Origin` other than this host) and puts the security
/// headers on every dashboard answer.
async fn same_origin_and_headers(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) && !same_origin(&req) {
        return PageError(ApiError::Forbidden(
            "Forbidden: a cross-site form post was refused".into(),
        ))
        .into_response();
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// True when the request has no `Origin` (a same-origin GET-form or an old browser: the
/// CSRF token still guards it) or one whose host is the `Host` we were reached at.
fn same_origin(req: &Request) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The CSRF token the current request's forms must carry.
#[derive(Clone)]
struct Csrf(String);

/// A per-process token for the development caller's forms (no cookie to derive one from;
/// the `Origin` check is what keeps other sites out on loopback).
fn dev_csrf() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| signin::hash(&uuid::Uuid::new_v4().to_string()))
}

/// Resolves the signed-in caller (a cookie session, or the development caller), records it
/// as the API's authentication does, and sends everyone else to the sign-in page.
async fn sign_in_required(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let resolved = if st.tokens.is_none() {
        Ok(Some((Caller::anonymous(), dev_csrf().to_owned())))
    } else {
        signin::session_caller(&st, req.headers())
            .await
            .map(|o| o.map(|(c, id)| (c, signin::csrf_of(&id))))
    };
    let (caller, csrf) = match resolved {
        Ok(Some(found)) => found,
        Ok(None) if req.method() == Method::GET => {
            return Redirect::to("/ui/signin").into_response();
        }
        Ok(None) => {
            return PageError(ApiError::Unauthorized("Unauthorized: sign in again".into()))
                .into_response();
        }
        Err(e) => return PageError(e.into()).into_response(),
    };
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|a| a.0);
    let key = match admit(&st, &caller, addr).await {
        Ok(key) => key,
        Err(e) => return PageError(e).into_response(),
    };
    if req.method() != Method::GET
        && let Err(e) = st.check_rate(&st.writes, &key.0, "Rate limit exceeded")
    {
        return PageError(e).into_response();
    }
    req.extensions_mut().insert(key);
    req.extensions_mut().insert(Csrf(csrf));
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The caller of a signed-in request, and the viewer its pages are rendered for.
struct Seen {
    caller: Caller,
    viewer: Viewer,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Seen {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let caller = parts.extensions.get::<Caller>().cloned();
        let csrf = parts.extensions.get::<Csrf>().map(|c| c.0.clone());
        match (caller, csrf) {
            (Some(caller), Some(csrf)) => Ok(Seen {
                viewer: Viewer {
                    caller: Some(caller.clone()),
                    csrf,
                },
                caller,
            }),
            _ => Err(PageError(ApiError::Internal(
                "dashboard route outside the sign-in layer".into(),
            ))),
        }
    }
}

/// A form body (`application/x-www-form-urlencoded`) whose `csrf` field must match the
/// session's when the route is a signed-in one. Over the body limit it is a 413; a bad
/// field is a 400 naming it.
pub(crate) struct Form<T>(pub(crate) T);

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub(crate) struct NoFields {}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: Option<String>,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let expected = req.extensions().get::<Csrf>().map(|c| c.0.clone());
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if let Some(expected) = expected {
            let sent: CsrfOnly = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| PageError(ApiError::BadRequest(format!("malformed form: {e}"))))?;
            if sent.csrf.as_deref() != Some(expected.as_str()) {
                return Err(PageError(ApiError::Forbidden(
                    "Forbidden: csrf: the form's token is missing or stale; reload the page".into(),
                )));
            }
        }
        serde_urlencoded::from_bytes(&bytes)
            .map(Form)
            .map_err(|e| PageError(ApiError::BadRequest(format!("form: {e}"))))
    }
}

/// An error as an HTML page with the API's status (404 page, 403 page, …). The internal
/// cause of a 5xx still travels to the logging middleware.
pub(crate) struct PageError(pub(crate) ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError(e.into())
    }
}

impl From<crate::DirectoryError> for PageError {
    fn from(e: crate::DirectoryError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let message = self.0.message();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (status.as_u16()) " " (title) }
            p.error { (message) }
            p { a href="/" { "Back to the floors" } }
        };
        let page = render::layout(title, &Viewer::signed_out(), body);
        // Keep the API error's extensions (the hidden cause of a 5xx) and headers.
        let api = self.0.into_response();
        let (mut parts, _) = api.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        let mut r = Response::from_parts(parts, Body::from(page.into_string()));
        *r.status_mut() = status;
        r
    }
}

/// A page answer.
type Page = Result<Response, PageError>;

/// After a form post: back to `to` (post/redirect/get).
fn back(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// A path segment, percent-encoded for a URL the dashboard builds.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The transcript page of a session.
fn session_url(project: &str, session: &str) -> String {
    format!("/ui/floors/{}/sessions/{}", seg(project), seg(session))
}
