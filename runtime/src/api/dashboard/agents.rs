//! The agents page: each registered agent with its persona, where it is defined (file or
//! table), the floors it is on and why (tag or invitation), its rate limits and use, its
//! tasks, what it remembers and its recent answers and advice; invite to or remove from a
//! floor.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::render::{self, Personas};
use super::{Form, Page, Seen, back, seg, session_url};
use crate::api::agents::agent_id;
use crate::api::extract::PathParams;
use crate::api::{Access, AppState};
use crate::store::ProjectKey;

/// Recent posts shown per agent.
const RECENT: i64 = 5;
/// Remembered facts shown per agent (newest first; the API lists them all).
const FACTS: usize = 10;

pub(in crate::api) async fn page(State(st): State<AppState>, seen: Seen) -> Page {
    let directory = st.runtime.directory();
    let org = &seen.caller.org;
    let agents = directory.agents(org).await?;
    let personas = Personas::new(&agents);
    let projects = st.visible_projects(&seen.caller).await?;
    // Floors per agent, with why.
    let mut on: HashMap<String, Vec<(String, String, Option<String>)>> = HashMap::new();
    let mut keys = Vec::with_capacity(projects.len());
    for p in &projects {
        let key = ProjectKey {
            id: p.id,
            org: org.clone(),
            name: p.name.as_str().into(),
        };
        for fa in directory.floor_agents(&key).await? {
            on.entry(fa.agent)
                .or_default()
                .push((p.name.clone(), fa.reason, fa.detail));
        }
        keys.push(key);
    }
    let named: Vec<(uuid::Uuid, String)> =
        projects.iter().map(|p| (p.id, p.name.clone())).collect();
    let store = st.runtime.store();
    let now = Utc::now();
    let v = &seen.viewer;
    let mut sections = Vec::with_capacity(agents.len());
    for a in &agents {
        let id = a.spec.id.to_string();
        let recent = store.recent_posts(&named, &id, RECENT).await?;
        let last_minute = recent
            .iter()
            .filter(|e| now - e.received_at < chrono::Duration::minutes(1))
            .count();
        let floors = on.get(&id).cloned().unwrap_or_default();
        let mut tasks = Vec::new();
        for k in keys
            .iter()
            .filter(|k| floors.iter().any(|(n, ..)| **n == *k.name))
        {
            for t in st.runtime.tasks_of(k, &a.spec.id).await? {
                tasks.push((k.name.clone(), t));
            }
        }
        // What it remembers, as the memory API shows it to this caller: shared facts, and
        // the facts of floors the caller can see.
        let seen_floors: Vec<uuid::Uuid> = projects.iter().map(|p| p.id).collect();
        let mut facts = st.runtime.agent_memory().list(org, &id, 200).await?;
        facts.retain(|m| crate::api::memory::visible(m, &seen_floors));
        facts.truncate(FACTS);
        let facts: Vec<(String, crate::store::MemoryFact)> = facts
            .into_iter()
            .map(|m| {
                let place = m
                    .project_id
                    .and_then(|p| named.iter().find(|(id, _)| *id == p))
                    .map_or_else(|| "shared".to_owned(), |(_, n)| n.clone());
                (place, m)
            })
            .collect();
        sections.push((a, recent, last_minute, floors, tasks, facts));
    }
    let body = html! {
        h1 { "Agents" }
        @if agents.is_empty() { p.empty { "No agents registered. Add them in agents.yaml or with POST /agents." } }
        @for (a, recent, last_minute, floors, tasks, facts) in &sections {
            @let persona = personas.of(&a.spec.id);
            section.agent id={"agent-" (a.spec.id.name())} {
                h2 { (persona.icon) " " (persona.name) }
                p.muted { code { (a.spec.id.as_str()) } " · defined in " (match a.source.as_str() { "yaml" => "agents.yaml (file)", "table" => "the agents table", _ => "both (the file's runs)" }) }
                @if !a.spec.description.is_empty() { p { (a.spec.description) } }
                @if !a.spec.tags.is_empty() { p { "tags: " @for t in &a.spec.tags { span.tag { "#" (t) } } } }
                p.muted {
                    "rate limits: " (a.spec.rate.per_floor_per_minute) " answers per floor per minute, "
                    (a.spec.rate.per_agent_per_minute) " in all; posts in the last minute: " (last_minute)
                }
                h3 { "Floors" }
                @if floors.is_empty() { p.empty { "On no floor you can see." } }
                ul.floors {
                    @for (project, reason, detail) in floors {
                        li {
                            (project) " — " (reason) @if let Some(d) = detail { " (" (d) ")" }
                            form.inline method="post" action={"/ui/floors/" (seg(project)) "/agents/remove"} {
                                (v.csrf_field())
                                input type="hidden" name="agent" value=(a.spec.id.as_str());
                                button.link type="submit" { "remove" }
                            }
                        }
                    }
                }
                form.invite method="post" action="/ui/agents/invite" {
                    (v.csrf_field())
                    input type="hidden" name="agent" value=(a.spec.id.as_str());
                    select name="project" aria-label="floor" {
                        @for p in &projects { option value=(p.name) { (p.name) } }
                    }
                    button type="submit" { "Invite to floor" }
                }
                @if !tasks.is_empty() {
                    h3 { "Tasks" }
                    ul.tasks {
                        @for (project, t) in tasks {
                            li { a href=(session_url(project, &t.session)) { (t.task) } " — " (t.status) ", " (t.steps) " steps" }
                        }
                    }
                }
                @if !facts.is_empty() {
                    h3 { "Memory" }
                    ul.memory {
                        @for (place, m) in facts {
                            li {
                                (m.fact)
                                span.muted { " — " (place) ", " (m.origin) ", " (m.created_at.format("%Y-%m-%d")) " · " code { (m.id) } }
                            }
                        }
                    }
                }
                h3 { "Recent answers and advice" }
                @if recent.is_empty() { p.empty { "Nothing yet." } }
                ol.events {
                    @for e in recent { (render::event(e, &personas, None)) }
                }
            }
        }
    };
    Ok(render::layout("Agents", v, body).into_response())
}

#[derive(Deserialize)]
pub(in crate::api) struct AgentForm {
    agent: String,
    #[serde(default)]
    project: Option<String>,
}

/// `POST /ui/agents/invite` (floor in the form) and `POST /ui/floors/{project}/agents`.
pub(in crate::api) async fn invite_form(
    State(st): State<AppState>,
    seen: Seen,
    Form(f): Form<AgentForm>,
) -> Page {
    let project = f.project.clone().unwrap_or_default();
    invite_to(&st, &seen, &project, &f.agent).await
}

pub(in crate::api) async fn invite(
    State(st): State<AppState>,
    seen: Seen,
    PathParams(project): PathParams<String>,
    Form(f): Form<AgentForm>,
) -> Page {
    invite_to(&st, &seen, &project, &f.agent).await
}

async fn invite_to(st: &AppState, seen: &Seen, project: &str, agent: &str) -> Page {
    let opened = st.open_project(&seen.caller, project, Access::Use).await?;
    let agent = agent_id(agent)?;
    st.runtime
        .directory()
        .invite_agent(&opened.key, &agent, seen.caller.participant.as_ref())
        .await?;
    Ok(back("/ui/agents"))
}

/// `POST /ui/floors/{project}/agents/remove`.
pub(in crate::api) async fn remove(
    State(st): State<AppState>,
    seen: Seen,
    PathParams(project): PathParams<String>,
    Form(f): Form<AgentForm>,
) -> Page {
    let opened = st.open_project(&seen.caller, &project, Access::Use).await?;
    let agent = agent_id(&f.agent)?;
    st.runtime
        .directory()
        .remove_agent_from_floor(&opened.key, &agent, seen.caller.participant.as_ref())
        .await?;
    Ok(back("/ui/agents"))
}
