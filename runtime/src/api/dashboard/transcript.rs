//! A session's transcript: newest first, paged by `seq` ("older" loads the page before),
//! live over Server-Sent Events (HTML fragments, resumed with `Last-Event-ID`), with the
//! driver seat, handoff, annotations and the inject box.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::Event as SseEvent;
use maud::html;
use polaris_registry::ParticipantId;
use serde::Deserialize;

use super::render::{self, Personas};
use super::{Form, NoFields, Page, PageError, Seen, back, session_url};
use crate::api::extract::{PathParams, QueryParams};
use crate::api::sessions::{Annotate, Inject, annotate_as, inject_as};
use crate::api::streams::sse_with;
use crate::api::{Access, ApiError, AppState, RateKey};
use crate::session::SessionMsg;
use crate::subscription::Start;

/// Who the development caller's advice comes from.
const LOCAL: &str = "user:local";

/// Events on one page.
const PAGE: i64 = 100;

#[derive(Deserialize, Default)]
pub(in crate::api) struct PageQuery {
    #[serde(default)]
    before: Option<String>,
}

/// `GET …/sessions/{session}?before=<seq>`.
pub(in crate::api) async fn page(
    State(st): State<AppState>,
    seen: Seen,
    PathParams((project, session)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Page {
    render_page(&st, &seen, &project, &session, q.before.as_deref(), None).await
}

/// The page, with an error beside the inject box when a post failed.
async fn render_page(
    st: &AppState,
    seen: &Seen,
    project: &str,
    session: &str,
    before: Option<&str>,
    inject_error: Option<(StatusCode, String, String)>,
) -> Page {
    let opened = st.open_session(&seen.caller, project, session).await?;
    let store = st.runtime.store();
    let row = store
        .get_session(&opened.key, session)
        .await?
        .ok_or_else(|| ApiError::NotFound("Session not found".into()))?;
    // A cursor that is not a seq (hand-edited, or from an older page format) is ignored
    // rather than refused: the newest page is a fine answer to a stale link.
    let before_seq = before
        .and_then(|b| b.trim().parse::<i64>().ok())
        .filter(|b| *b > 0);
    let stale = before.is_some() && before_seq.is_none();
    let mut events = store
        .events_before(&opened.key, Some(session), before_seq, PAGE + 1)
        .await?;
    let has_more = events.len() as i64 > PAGE;
    events.truncate(PAGE as usize);
    let personas = Personas::new(&st.runtime.directory().agents(&seen.caller.org).await?);
    let url = session_url(project, session);
    let annotate_url = format!("{url}/annotate");
    // Live only on the newest page: from the newest event shown, or the floor's head.
    let live_after = match (before_seq, events.first()) {
        (Some(_), _) => None,
        (None, Some(e)) => Some(e.seq),
        (None, None) => Some(st.runtime.head(&opened.key).await?),
    };
    let v = &seen.viewer;
    let signed_in = seen.caller.participant.is_some();
    let (status, error, draft) = match inject_error {
        Some((s, e, d)) => (s, Some(e), d),
        None => (StatusCode::OK, None, String::new()),
    };
    let body = html! {
        p.crumbs { a href="/" { "Floors" } " / " (project) }
        h1 { (session) }
        dl.facts {
            dt { "driver" } dd #driver { (row.driver.as_ref().map_or("—".to_owned(), |d| personas.of(d).name)) }
            dt { "agent" } dd { (row.agent.as_ref().map_or("—".to_owned(), |a| personas.of(a).name)) }
            dt { "label" } dd { (row.label.as_deref().unwrap_or("—")) }
            dt { "prompts" } dd { (row.prompt_count) }
            dt { "events" } dd { (row.event_count) }
            dt { "last activity" } dd { (row.last_activity.as_ref().map_or("—".to_owned(), render::when)) }
        }
        @if signed_in {
            div.seat {
                form.inline method="post" action={(url) "/driver"} {
                    (v.csrf_field())
                    button type="submit" { "Take the driver seat" }
                }
                form.inline method="post" action={(url) "/handoff"} {
                    (v.csrf_field())
                    button type="submit" { "Hand off" }
                }
            }
        }
        form #inject.inject method="post" action={(url) "/inject"} {
            (v.csrf_field())
            label for="content" { "Advice for this session" }
            textarea #content name="content" rows="3" required { (draft) }
            @if let Some(e) = &error { p.error #inject-error role="alert" { (e) } }
            button type="submit" { "Inject" }
        }
        @if stale { p.notice { "That page cursor is not valid any more; showing the newest events." } }
        ol #events.events data-live=[live_after.map(|_| format!("{url}/live"))] data-after=[live_after] {
            @for e in &events {
                (render::event(e, &personas, Some((&annotate_url, &v.csrf))))
            }
        }
        @if events.is_empty() { p.empty { "No events yet." } }
        @if has_more {
            @if let Some(oldest) = events.last() {
                p { a.older href={(url) "?before=" (oldest.seq)} { "Older events" } }
            }
        }
    };
    Ok((status, render::layout(session, v, body)).into_response())
}

#[derive(Deserialize, Default)]
pub(in crate::api) struct LiveQuery {
    #[serde(default)]
    after: Option<i64>,
}

/// `GET …/live`: the session's new events as HTML fragments over SSE. A reconnect's
/// `Last-Event-ID` wins over the page's `?after=` (it is later).
pub(in crate::api) async fn live(
    State(st): State<AppState>,
    seen: Seen,
    headers: HeaderMap,
    PathParams((project, session)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<LiveQuery>,
) -> Page {
    let opened = st.open_session(&seen.caller, &project, &session).await?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok());
    let start = match last.or(q.after) {
        Some(n) => Start::After(n.max(0)),
        None => Start::Now,
    };
    let personas = Personas::new(&st.runtime.directory().agents(&seen.caller.org).await?);
    let annotate_url = format!("{}/annotate", session_url(&project, &session));
    let csrf = seen.viewer.csrf.clone();
    Ok(sse_with(&st, opened, Some(session), start, move |c| {
        let _span = tracing::debug_span!("dashboard.live", seq = c.event.seq).entered();
        SseEvent::default()
            .id(c.event.seq.to_string())
            .data(render::event(&c.event, &personas, Some((&annotate_url, &csrf))).into_string())
    })
    .await?)
}

#[derive(Deserialize)]
pub(in crate::api) struct InjectForm {
    content: String,
}

/// `POST …/inject`: advice into the session as the signed-in person. A refused inject
/// (empty, too large, rate-limited) re-renders the page with the error and the draft.
pub(in crate::api) async fn inject(
    State(st): State<AppState>,
    seen: Seen,
    Extension(key): Extension<RateKey>,
    PathParams((project, session)): PathParams<(String, String)>,
    form: Result<Form<InjectForm>, PageError>,
) -> Page {
    let (result, draft) = match form {
        Ok(Form(f)) => {
            let draft = f.content.clone();
            // The development caller has no identity of its own; its advice is signed
            // `user:local` (an authenticated caller always injects as itself).
            let local = ParticipantId::parse(LOCAL).ok();
            let r = inject_as(
                &st,
                &seen.caller,
                &key,
                &project,
                &session,
                Inject {
                    content: f.content,
                    sender: local,
                },
                None,
            )
            .await;
            (r.map(|_| ()), draft)
        }
        Err(PageError(e)) => (Err(e), String::new()),
    };
    match result {
        Ok(()) => Ok(back(&session_url(&project, &session))),
        Err(
            e @ (ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge
            | ApiError::TooManyRequests(..)),
        ) => {
            let message = match &e {
                ApiError::PayloadTooLarge => {
                    "The advice is too large to send (over the server's request size limit)."
                        .to_owned()
                }
                other => other.message(),
            };
            render_page(
                &st,
                &seen,
                &project,
                &session,
                None,
                Some((e.status(), message, draft)),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST …/annotate`: star, tag or decision on an event.
pub(in crate::api) async fn annotate(
    State(st): State<AppState>,
    seen: Seen,
    PathParams((project, session)): PathParams<(String, String)>,
    Form(mut form): Form<Annotate>,
) -> Page {
    if form.value.as_deref().is_some_and(|v| v.trim().is_empty()) {
        form.value = None;
    }
    annotate_as(&st, &seen.caller, &project, &session, form).await?;
    Ok(back(&session_url(&project, &session)))
}

/// `POST …/driver`: the signed-in person takes the driver seat.
pub(in crate::api) async fn driver(
    State(st): State<AppState>,
    seen: Seen,
    PathParams((project, session)): PathParams<(String, String)>,
    Form(_): Form<NoFields>,
) -> Page {
    let opened = st.open_project(&seen.caller, &project, Access::Use).await?;
    let Some(me) = seen.caller.participant.clone() else {
        return Err(ApiError::BadRequest("driver: sign in to take the seat".into()).into());
    };
    st.runtime
        .ask(&opened.key, &session, |reply| SessionMsg::ClaimDriver {
            driver: me.clone(),
            by: Some(me.clone()),
            reply,
        })
        .await
        .map_err(ApiError::from)?;
    Ok(back(&session_url(&project, &session)))
}

/// `POST …/handoff`: frees the driver seat.
pub(in crate::api) async fn handoff(
    State(st): State<AppState>,
    seen: Seen,
    PathParams((project, session)): PathParams<(String, String)>,
    Form(_): Form<NoFields>,
) -> Page {
    let opened = st.open_project(&seen.caller, &project, Access::Use).await?;
    let by = seen.caller.participant.clone();
    st.runtime
        .ask(&opened.key, &session, |reply| SessionMsg::Handoff {
            by: by.clone(),
            reply,
        })
        .await
        .map_err(ApiError::from)?;
    Ok(back(&session_url(&project, &session)))
}
