//! Markup shared by every page: the layout (navigation, the sign-out form, the assets) and
//! one event as the transcript shows it, under its sender's persona (the same personas as
//! Slack), with tool calls folded and anything the secret scanner flags redacted.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use polaris_protocol::secrets::redact;
use polaris_registry::{ParticipantId, ParticipantKind, Persona, PersonaInfo};
use serde_json::Value;

use crate::auth::Caller;
use crate::protocol::{Event, Source};

/// Who is looking, and the CSRF token their forms carry.
pub(crate) struct Viewer {
    /// `None` on the sign-in pages.
    pub(crate) caller: Option<Caller>,
    pub(crate) csrf: String,
}

impl Viewer {
    pub(crate) fn signed_out() -> Viewer {
        Viewer {
            caller: None,
            csrf: String::new(),
        }
    }

    /// The hidden CSRF field every form carries.
    pub(crate) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.caller.as_ref().is_some_and(Caller::is_admin)
    }
}

/// The page around `body`.
pub(crate) fn layout(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Polaris" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "✦ Polaris" }
                    @if let Some(c) = &viewer.caller {
                        nav {
                            a href="/" { "Floors" }
                            a href="/ui/agents" { "Agents" }
                            a href="/ui/search" { "Search" }
                            a href="/ui/decisions" { "Decisions" }
                            a href="/ui/team" { "Team" }
                        }
                        span.who {
                            @match &c.participant {
                                Some(p) => { (Persona::of(p, None, None).name) " · " (c.org) }
                                None => { "development mode · " (c.org) }
                            }
                            @if c.participant.is_some() {
                                form.inline method="post" action="/ui/signout" {
                                    (viewer.csrf_field())
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Registered agents' personas by id, for a page's senders.
#[derive(Default)]
pub(crate) struct Personas(HashMap<String, (String, String)>);

impl Personas {
    pub(crate) fn new(agents: &[polaris_registry::Listed]) -> Personas {
        Personas(
            agents
                .iter()
                .map(|a| {
                    (
                        a.spec.id.to_string(),
                        (
                            a.spec.shown_name().to_owned(),
                            a.spec.shown_icon().to_owned(),
                        ),
                    )
                })
                .collect(),
        )
    }

    /// The persona Slack shows for `sender`: a named agent's (a subagent speaks as its
    /// parent), else the generic one.
    pub(crate) fn of(&self, sender: &ParticipantId) -> Persona {
        let found = (sender.kind() == ParticipantKind::Agent)
            .then(|| {
                self.0
                    .get(sender.as_str())
                    .or_else(|| self.0.get(sender.root()))
            })
            .flatten();
        Persona::of(
            sender,
            found.map(|(n, i)| PersonaInfo {
                display_name: n,
                icon: i,
            }),
            None,
        )
    }
}

/// `2026-06-05 10:00 UTC`.
pub(crate) fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn text_of(p: &Value, key: &str) -> String {
    p.get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// What an event says, for the transcript: `(summary, body, folded)`. Bodies are redacted
/// here, whatever the store holds.
fn content(e: &Event) -> (String, String, bool) {
    let p = e.payload_value();
    match (e.source, e.kind.as_str()) {
        (Source::Hook, "UserPromptSubmit") => (String::new(), text_of(&p, "prompt"), false),
        (Source::Hook, "Stop" | "SubagentStop") => {
            let r = text_of(&p, "stop_response");
            let r = if r.is_empty() {
                text_of(&p, "last_assistant_message")
            } else {
                r
            };
            (String::new(), r, false)
        }
        (Source::Hook, kind) => {
            let tool = text_of(&p, "tool_name");
            let summary = if tool.is_empty() {
                kind.to_owned()
            } else {
                format!("{kind}: {tool}")
            };
            let detail = p
                .get("tool_input")
                .or_else(|| p.get("tool_response"))
                .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
                .unwrap_or_else(|| serde_json::to_string_pretty(&p).unwrap_or_default());
            (summary, detail, true)
        }
        (Source::Inject, _) => ("advice".into(), text_of(&p, "content"), false),
        (Source::Reply | Source::Agent | Source::Slack, _) => {
            let c = text_of(&p, "content");
            let c = if c.is_empty() { text_of(&p, "text") } else { c };
            (String::new(), c, false)
        }
        (Source::System, kind) => {
            let detail = match kind {
                "driver" => format!("driver: {}", text_of(&p, "driver")),
                "label" => format!("label: {}", text_of(&p, "label")),
                "join" | "leave" => format!("{kind}: {}", text_of(&p, "agent")),
                other => other.to_owned(),
            };
            (detail, String::new(), false)
        }
    }
}

/// One event of a transcript, newest-first lists put these in an `<ol>`. `annotate` is the
/// session's annotation URL (and the viewer's CSRF token), when the page offers it.
pub(crate) fn event(e: &Event, personas: &Personas, annotate: Option<(&str, &str)>) -> Markup {
    let persona = personas.of(&e.sender);
    let (summary, body, folded) = content(e);
    let body = redact(&body);
    let summary = redact(&summary);
    html! {
        li.event id={"e" (e.seq)} data-seq=(e.seq) data-source=(e.source.as_str()) {
            div.meta {
                span.persona title=(e.sender.as_str()) { (persona.icon) " " (persona.name) }
                span.kind { (e.source.as_str()) " · " (e.kind) }
                time datetime=(crate::protocol::format_ms(&e.received_at)) { (when(&e.received_at)) }
                span.seq { "#" (e.seq) }
            }
            @if folded {
                details.tool {
                    summary { (summary) }
                    pre { (body) }
                }
            } @else {
                @if !summary.is_empty() { div.summary { (summary) } }
                @if !body.is_empty() { div.body { (body) } }
            }
            @if let Some((url, csrf)) = annotate {
                details.annotate {
                    summary { "annotate" }
                    form method="post" action=(url) {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="event_id" value=(e.id.to_string());
                        input type="text" name="value" placeholder="tag or decision" maxlength="2000";
                        button type="submit" name="kind" value="star" { "★ star" }
                        button type="submit" name="kind" value="tag" { "tag" }
                        button type="submit" name="kind" value="decision" { "decision" }
                    }
                }
            }
        }
    }
}

/// A 14-bar activity chart: events per day, oldest left. Inline SVG, no script.
pub(crate) fn activity_chart(counts: &[i64]) -> Markup {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h, bar) = (14 * 8, 24, 6);
    html! {
        svg.chart width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img"
            aria-label={"events per day, last 14 days: " (counts.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))} {
            @for (i, n) in counts.iter().enumerate() {
                @let bh = if *n == 0 { 1 } else { (n * (h as i64 - 2) / max).max(2) };
                rect x=(i * 8) y=(h as i64 - bh) width=(bar) height=(bh) {
                    title { (n) " events" }
                }
            }
        }
    }
}
