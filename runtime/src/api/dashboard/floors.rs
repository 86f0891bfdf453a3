//! The floors page (`/`): every project the viewer may see, with its tags, visibility, a
//! 14-day activity chart and its sessions; idle sessions are folded away.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{Duration, Utc};
use maud::html;

use super::render::{self, Personas};
use super::{Page, Seen, seg, session_url};
use crate::api::AppState;
use crate::protocol::Visibility;
use crate::store::ProjectKey;

/// A session with nothing newer than this is idle (folded).
const IDLE: Duration = Duration::hours(24);

pub(in crate::api) async fn page(State(st): State<AppState>, seen: Seen) -> Page {
    let store = st.runtime.store();
    let projects = st.visible_projects(&seen.caller).await?;
    let now = Utc::now();
    let today = now.timestamp().div_euclid(86_400);
    let personas = Personas::new(&st.runtime.directory().agents(&seen.caller.org).await?);
    let mut floors = Vec::with_capacity(projects.len());
    for p in &projects {
        let activity = st.activity.days(store, p.id, today).await?;
        let key = ProjectKey {
            id: p.id,
            org: seen.caller.org.clone(),
            name: p.name.as_str().into(),
        };
        let mut sessions = store.list_sessions(&key).await?;
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_activity));
        let (active, idle): (Vec<_>, Vec<_>) = sessions
            .into_iter()
            .partition(|s| s.last_activity.is_some_and(|t| now - t < IDLE));
        floors.push((p, activity, active, idle));
    }
    let table = |list: &[crate::protocol::Session], project: &str| {
        html! {
            table.sessions {
                thead { tr { th { "session" } th { "driver" } th { "agent" } th { "label" } th.num { "prompts" } th { "last activity" } } }
                tbody {
                    @for s in list {
                        tr {
                            td { a href=(session_url(project, &s.name)) { (s.name) } }
                            td { (s.driver.as_ref().map_or(String::new(), |d| personas.of(d).name)) }
                            td { (s.agent.as_ref().map_or(String::new(), |a| personas.of(a).name)) }
                            td { (s.label.as_deref().unwrap_or("")) }
                            td.num { (s.prompt_count) }
                            td { (s.last_activity.as_ref().map_or("never".to_owned(), render::when)) }
                        }
                    }
                }
            }
        }
    };
    let body = html! {
        h1 { "Floors" }
        @if floors.is_empty() { p.empty { "No floors yet. Sessions appear here as soon as a hook posts to a project." } }
        @for (p, activity, active, idle) in &floors {
            section.floor id={"floor-" (p.name)} {
                div.floor-head {
                    h2 { (p.name) }
                    span.badge { (match p.visibility { Visibility::Org => "org", Visibility::Members => "members only" }) }
                    @for t in &p.tags { span.tag { "#" (t) } }
                    (render::activity_chart(activity))
                    @if seen.viewer.is_admin() {
                        a.settings href={"/ui/floors/" (seg(&p.name)) "/settings"} { "settings" }
                    }
                }
                @if active.is_empty() { p.empty { "No session active in the last 24 hours." } }
                @else { (table(active, &p.name)) }
                @if !idle.is_empty() {
                    details.idle {
                        summary { (idle.len()) " idle session" @if idle.len() != 1 { "s" } }
                        (table(idle, &p.name))
                    }
                }
            }
        }
    };
    Ok(render::layout("Floors", &seen.viewer, body).into_response())
}
