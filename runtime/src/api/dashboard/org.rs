//! Org-wide pages: search (the API's `/search` with its filters), decisions, the team,
//! and a project's settings (visibility, passive advice, members) for admins.

use axum::extract::State;
use axum::response::IntoResponse;
use maud::html;
use polaris_registry::ParticipantId;
use serde::Deserialize;

use super::render::{self, Personas};
use super::{Form, Page, Seen, back, seg, session_url};
use crate::api::extract::{PathParams, QueryParams};
use crate::api::misc::{SearchParams, search_as, team_of};
use crate::api::projects::set_passive;
use crate::api::{Access, ApiError, AppState};
use crate::protocol::Visibility;
use crate::validate::FieldError;

/// `GET /ui/search?q=…&project=…&session=…&sender=…&source=…&tag=…`.
pub(in crate::api) async fn search(
    State(st): State<AppState>,
    seen: Seen,
    QueryParams(p): QueryParams<SearchParams>,
) -> Page {
    let shown = (
        p.q.clone().unwrap_or_default(),
        p.project.clone().unwrap_or_default(),
        p.session.clone().unwrap_or_default(),
        p.sender.clone().unwrap_or_default(),
        p.source.clone().unwrap_or_default(),
        p.tag.clone().unwrap_or_default(),
    );
    let asked = !shown.0.trim().is_empty();
    let (results, error) = if asked {
        match search_as(&st, &seen.caller, p).await {
            Ok(r) => (r, None),
            // A bad filter (unknown project, bad query) is said on the page.
            Err(e @ (ApiError::BadRequest(_) | ApiError::NotFound(_) | ApiError::Forbidden(_))) => {
                (Vec::new(), Some(e.message()))
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        (Vec::new(), None)
    };
    let personas = Personas::new(&st.runtime.directory().agents(&seen.caller.org).await?);
    let body = html! {
        h1 { "Search" }
        form.search method="get" action="/ui/search" {
            input type="search" name="q" value=(shown.0) placeholder="words, \"a phrase\", -not" autofocus;
            input type="text" name="project" value=(shown.1) placeholder="project";
            input type="text" name="session" value=(shown.2) placeholder="session";
            input type="text" name="sender" value=(shown.3) placeholder="sender (user:manu)";
            select name="source" {
                @for s in ["", "hook", "inject", "reply", "agent", "slack", "system"] {
                    option value=(s) selected[shown.4 == s] { (if s.is_empty() { "any source" } else { s }) }
                }
            }
            input type="text" name="tag" value=(shown.5) placeholder="tag";
            button type="submit" { "Search" }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if asked && error.is_none() {
            p { (results.len()) " result" @if results.len() != 1 { "s" } }
            ol.events {
                @for (e, snippet) in &results {
                    li.result {
                        div.meta {
                            span.persona { (personas.of(&e.sender).name) }
                            @if let Some(s) = &e.session {
                                a href=(session_url(&e.project, s)) { (e.project) " / " (s) }
                            } @else { span { (e.project) } }
                            time { (render::when(&e.received_at)) }
                        }
                        div.body { (highlighted(&polaris_protocol::secrets::redact(snippet))) }
                    }
                }
            }
        }
    };
    Ok(render::layout("Search", &seen.viewer, body).into_response())
}

#[derive(Deserialize, Default)]
pub(in crate::api) struct DecisionsQuery {
    #[serde(default)]
    project: Option<String>,
}

/// `GET /ui/decisions`: decisions recorded on the floors the viewer may see.
pub(in crate::api) async fn decisions(
    State(st): State<AppState>,
    seen: Seen,
    QueryParams(q): QueryParams<DecisionsQuery>,
) -> Page {
    let projects = st
        .projects_in_scope(&seen.caller, q.project.as_deref().filter(|p| !p.is_empty()))
        .await?;
    let list = st
        .runtime
        .store()
        .decisions(&seen.caller.org, &projects, 200)
        .await?;
    let body = html! {
        h1 { "Decisions" }
        @if list.is_empty() { p.empty { "No decisions recorded yet. Mark one from a transcript." } }
        ul.decisions {
            @for d in &list {
                li {
                    div.body { (polaris_protocol::secrets::redact(d.value.as_deref().unwrap_or("(no text)"))) }
                    div.meta {
                        a href=(session_url(&d.project, &d.session)) { (d.project) " / " (d.session) }
                        " · " (d.participant_id.as_deref().unwrap_or("development mode"))
                        " · " (render::when(&d.created_at))
                    }
                }
            }
        }
    };
    Ok(render::layout("Decisions", &seen.viewer, body).into_response())
}

/// `GET /ui/team`: people and agents of the org.
pub(in crate::api) async fn team(State(st): State<AppState>, seen: Seen) -> Page {
    let members = team_of(&st, &seen.caller).await?;
    let body = html! {
        h1 { "Team" }
        table.team {
            thead { tr { th { "name" } th { "kind" } th { "participant" } th { "alias" } th { "Slack" } } }
            tbody {
                @for m in &members {
                    tr {
                        td { (m.name) }
                        td { (m.kind) }
                        td { code { (m.participant_id.as_deref().unwrap_or("")) } }
                        td { @if let Some(a) = &m.alias { "@" (a) } }
                        td { (m.slack_handle.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    };
    Ok(render::layout("Team", &seen.viewer, body).into_response())
}

/// `GET /ui/floors/{project}/settings`: visibility and members (admins only, as the API).
pub(in crate::api) async fn settings(
    State(st): State<AppState>,
    seen: Seen,
    PathParams(project): PathParams<String>,
) -> Page {
    let opened = st
        .open_project(&seen.caller, &project, Access::Admin)
        .await?;
    let members = st.runtime.store().list_members(opened.project.id).await?;
    let v = &seen.viewer;
    let action = format!("/ui/floors/{}/settings", seg(&project));
    let restricted = opened.project.visibility == Visibility::Members;
    let advising = opened.project.passive_advice;
    let body = html! {
        p.crumbs { a href="/" { "Floors" } " / " (project) }
        h1 { "Settings of " (project) }
        h2 { "Visibility" }
        form method="post" action=(action) {
            (v.csrf_field())
            input type="hidden" name="action" value="visibility";
            label { input type="radio" name="visibility" value="org" checked[!restricted]; " everyone in the org" }
            label { input type="radio" name="visibility" value="members" checked[restricted]; " members only" }
            button type="submit" { "Save" }
        }
        h2 { "Passive advice" }
        p { "Agents on this floor speak up unasked when an event nobody addressed is clearly theirs (a pasted secret, a failing data job)." }
        form method="post" action=(action) {
            (v.csrf_field())
            input type="hidden" name="action" value="passive";
            label { input type="radio" name="passive" value="on" checked[advising]; " on" }
            label { input type="radio" name="passive" value="off" checked[!advising]; " off" }
            button type="submit" { "Save" }
        }
        h2 { "Members" }
        ul.members {
            @for m in &members {
                li {
                    code { (m.participant_id) } @if let Some(r) = &m.role { " (" (r) ")" }
                    form.inline method="post" action=(action) {
                        (v.csrf_field())
                        input type="hidden" name="action" value="remove";
                        input type="hidden" name="participant_id" value=(m.participant_id);
                        button.link type="submit" { "remove" }
                    }
                }
            }
        }
        form method="post" action=(action) {
            (v.csrf_field())
            input type="hidden" name="action" value="add";
            input type="text" name="participant_id" placeholder="user:alice" required;
            input type="text" name="role" placeholder="role (optional)" maxlength="64";
            button type="submit" { "Add member" }
        }
    };
    Ok(render::layout("Settings", v, body).into_response())
}

#[derive(Deserialize)]
pub(in crate::api) struct SettingsForm {
    action: String,
    #[serde(default)]
    visibility: Option<Visibility>,
    #[serde(default)]
    participant_id: Option<String>,
    #[serde(default)]
    role: Option<String>,
    /// `on` or `off`.
    #[serde(default)]
    passive: Option<String>,
}

/// `POST /ui/floors/{project}/settings`: one change, as the API's routes make it.
pub(in crate::api) async fn save_settings(
    State(st): State<AppState>,
    seen: Seen,
    PathParams(project): PathParams<String>,
    Form(f): Form<SettingsForm>,
) -> Page {
    let opened = st
        .open_project(&seen.caller, &project, Access::Admin)
        .await?;
    let store = st.runtime.store();
    let participant = || -> Result<ParticipantId, ApiError> {
        let raw = f.participant_id.as_deref().unwrap_or("").trim();
        ParticipantId::parse(raw)
            .map_err(|e| FieldError::new("participant_id", e.to_string()).into())
    };
    match f.action.as_str() {
        "visibility" => {
            let v = f
                .visibility
                .ok_or_else(|| ApiError::from(FieldError::new("visibility", "is required")))?;
            store.set_visibility(opened.project.id, v).await?;
            st.runtime
                .project_changed(
                    &seen.caller.org,
                    &opened.project.name,
                    opened.project.id,
                    false,
                )
                .await;
        }
        "passive" => {
            let on = match f.passive.as_deref() {
                Some("on") => true,
                Some("off") => false,
                _ => {
                    return Err(
                        ApiError::from(FieldError::new("passive", "must be on or off")).into(),
                    );
                }
            };
            set_passive(&st, &seen.caller, &opened.project, on).await?;
        }
        "add" => {
            let who = participant()?;
            let role = f.role.as_deref().map(str::trim).filter(|r| !r.is_empty());
            if role.is_some_and(|r| r.chars().count() > 64) {
                return Err(ApiError::from(FieldError::new(
                    "role",
                    "must be at most 64 characters",
                ))
                .into());
            }
            store
                .add_member(opened.project.id, who.as_str(), role)
                .await?;
        }
        "remove" => {
            let who = participant()?;
            store.remove_member(opened.project.id, who.as_str()).await?;
        }
        other => {
            return Err(ApiError::from(FieldError::new(
                "action",
                format!("must be visibility, passive, add or remove, not {other:?}"),
            ))
            .into());
        }
    }
    Ok(back(&format!("/ui/floors/{}/settings", seg(&project))))
}

/// A search snippet with its matches (`<b>…</b>` from the store) as `<mark>`, and
/// everything else escaped.
fn highlighted(snippet: &str) -> maud::Markup {
    let mut parts = Vec::new();
    let mut rest = snippet;
    while let Some(start) = rest.find("<b>") {
        let (before, after) = rest.split_at(start);
        let after = &after[3..];
        let (hit, tail) = after.split_once("</b>").unwrap_or((after, ""));
        parts.push((before, false));
        parts.push((hit, true));
        rest = tail;
    }
    parts.push((rest, false));
    html! {
        @for (text, hit) in parts {
            @if hit { mark { (text) } } @else { (text) }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn snippets_mark_matches_and_escape_the_rest() {
        let m = super::highlighted("a <b>signup</b> <i>x</i> <b>b</b>").into_string();
        assert_eq!(
            m,
            "a <mark>signup</mark> &lt;i&gt;x&lt;/i&gt; <mark>b</mark>"
        );
    }
}
