//! Sign-in without tokens in page URLs: a one-time, short-lived login link (made by
//! `polaris login-link`) opens a cookie session. Links and sessions live in the store, by
//! hash only, so any node of a deployment honours them; the cookie is HttpOnly and
//! SameSite=Lax, and every form carries a CSRF token derived from the session.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::render::{self, Viewer};
use super::{Form, PageError};
use crate::api::extract::PathParams;
use crate::api::{AppState, admit};
use crate::auth::{Caller, Role};
use crate::store::{SignIn, Store, StoreError};

/// The cookie that carries the session id.
pub(super) const COOKIE: &str = "polaris_session";
/// How long a cookie session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A fresh random secret: 32 bytes as hex.
fn random_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The stored form of a link token or session id.
pub(super) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The CSRF token of a session: derived from its id (which only the browser holding the
/// cookie knows), so nothing more is stored and every node computes the same one.
pub(super) fn csrf_of(session_id: &str) -> String {
    hash(&format!("csrf:{session_id}"))
}

/// Makes a one-time login link token for `participant` in `org`, valid for `ttl`; the
/// store keeps only its hash. The caller builds the URL: `<base>/ui/login/<token>`.
pub async fn login_link(
    store: &Store,
    org: &str,
    participant: &polaris_registry::ParticipantId,
    role: Role,
    ttl: Duration,
) -> Result<String, StoreError> {
    let token = random_secret();
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
    let who = SignIn {
        org: org.to_owned(),
        participant: participant.clone(),
        role: role_name(role).to_owned(),
    };
    store
        .create_login_link(&hash(&token), &who, now, expires)
        .await?;
    Ok(token)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Service => "service",
    }
}

fn caller_of(who: SignIn) -> Caller {
    let role = match who.role.as_str() {
        "admin" => Role::Admin,
        "service" => Role::Service,
        _ => Role::Member,
    };
    Caller::participant(&who.org, who.participant, role)
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The caller of a cookie session and the session's id, if the request has a live one.
pub(super) async fn session_caller(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Caller, String)>, StoreError> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    Ok(st
        .runtime
        .store()
        .web_session(&hash(id), Utc::now())
        .await?
        .map(|who| (caller_of(who), id.to_owned())))
}

/// `Secure` when the browser reached us over HTTPS (through a proxy: `polaris serve`
/// itself speaks plain HTTP).
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> HeaderValue {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("polaris_session=; Max-Age=0"))
}

/// `GET /ui/signin`: how to get a link (the page signed-out visitors land on).
pub(super) async fn page() -> Response {
    let body = html! {
        h1 { "Sign in" }
        p { "Ask an admin for a one-time sign-in link, or make one on the server:" }
        pre { "polaris login-link --participant user:you --org your-org" }
        p { "Open the link within its lifetime (10 minutes by default). It works once." }
    };
    (
        StatusCode::UNAUTHORIZED,
        render::layout("Sign in", &Viewer::signed_out(), body),
    )
        .into_response()
}

/// `GET /ui/login/{token}`: a confirmation page. The link is spent by the button, not by
/// the GET, so a link preview (Slack, a mail scanner) cannot use it up.
pub(super) async fn confirm(PathParams(token): PathParams<String>) -> Response {
    let body = html! {
        h1 { "Sign in to Polaris" }
        form method="post" action="/ui/login" {
            input type="hidden" name="token" value=(token);
            button type="submit" id="signin" { "Sign in" }
        }
    };
    render::layout("Sign in", &Viewer::signed_out(), body).into_response()
}

#[derive(Deserialize)]
pub(super) struct Redeem {
    token: String,
}

/// `POST /ui/login`: spends the link and opens a cookie session. A used, expired or
/// unknown link is a 401 page; nothing says which.
pub(super) async fn redeem(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Redeem>,
) -> Result<Response, PageError> {
    let store = st.runtime.store();
    let Some(who) = store
        .redeem_login_link(&hash(form.token.trim()), Utc::now())
        .await?
    else {
        tracing::info!("dashboard sign-in refused: unknown, used or expired link");
        let body = html! {
            h1 { "This link does not work" }
            p { "It was used already, has expired, or was never issued. Ask for a new one." }
        };
        return Ok((
            StatusCode::UNAUTHORIZED,
            render::layout("Sign in", &Viewer::signed_out(), body),
        )
            .into_response());
    };
    let id = random_secret();
    let now = Utc::now();
    let expires =
        now + chrono::Duration::from_std(SESSION_TTL).unwrap_or(chrono::Duration::hours(1));
    store
        .create_web_session(&hash(&id), &who, now, expires)
        .await?;
    let caller = caller_of(who);
    tracing::info!(org = %caller.org, participant = ?caller.participant, "dashboard sign-in");
    // Recorded in `users` as any API caller is.
    admit(&st, &caller, None).await?;
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&headers, &id, SESSION_TTL.as_secs()),
    );
    Ok(r)
}

/// `POST /ui/signout`: ends the session here and in the store.
pub(super) async fn sign_out(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(_): Form<super::NoFields>,
) -> Result<Response, PageError> {
    if let Some(id) = cookie(&headers, COOKIE) {
        st.runtime.store().delete_web_session(&hash(id)).await?;
    }
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/signin")]).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&headers, "", 0));
    Ok(r)
}
