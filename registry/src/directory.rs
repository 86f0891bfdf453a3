//! The directory's pure rules: which agents an org has, and who belongs on a floor.
//!
//! Agents come from two sources: `agents.yaml` (GitOps, every org) and the `agents` table
//! (API edits, one org). [`merge`] combines them; an id defined in both with different
//! content is reported as a conflict, never merged silently: the file's definition runs
//! and listings show both. [`plan_floor`] decides which joins and leaves bring a floor in
//! line with its tags. Nothing here reads a store or posts an event: the runtime persists
//! the outcome, and `polaris agents list|validate|route` use the same rules without a
//! server.

use std::path::PathBuf;

use serde::Serialize;

use crate::{AgentSpec, ParticipantId};

/// Where an agent's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentSource {
    /// `agents.yaml`.
    Yaml,
    /// The `agents` table.
    Table,
    /// Both, with different content: the file's definition runs.
    Conflict,
}

impl AgentSource {
    /// The name listings show.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentSource::Yaml => "yaml",
            AgentSource::Table => "table",
            AgentSource::Conflict => "conflict",
        }
    }
}

/// An agent as the directory lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The definition that runs.
    pub spec: AgentSpec,
    /// Where it comes from.
    pub source: AgentSource,
    /// For a conflict: the table's definition, which does not run.
    pub shadowed: Option<AgentSpec>,
}

/// The agents of the file (shared by every org).
#[derive(Debug, Clone, Default)]
pub struct FileAgents {
    /// The file, if one was given.
    pub path: Option<PathBuf>,
    /// The directory its relative paths (knowledge) start from.
    pub base_dir: PathBuf,
    /// Its agents.
    pub agents: Vec<AgentSpec>,
}

/// A table row that no longer parses as an [`AgentSpec`] (written by an older build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The row's `id` field, when it has one.
    pub id: Option<String>,
    /// Why it does not parse.
    pub error: String,
}

/// Merges the file's agents with an org's table rows (as stored): same id and content is
/// the file's; same id, other content is a conflict (the file's runs, the table's is kept
/// beside it); table-only ids are the table's. Rows that do not parse are returned apart,
/// so the caller can report them without taking the org's agents down.
pub fn merge(file: &[AgentSpec], table: Vec<serde_json::Value>) -> (Vec<Listed>, Vec<Unreadable>) {
    let mut out: Vec<Listed> = file
        .iter()
        .map(|spec| Listed {
            spec: spec.clone(),
            source: AgentSource::Yaml,
            shadowed: None,
        })
        .collect();
    let mut unreadable = Vec::new();
    for value in table {
        let id = value.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let spec: AgentSpec = match serde_json::from_value(value) {
            Ok(s) => s,
            Err(e) => {
                unreadable.push(Unreadable {
                    id,
                    error: e.to_string(),
                });
                continue;
            }
        };
        match out.iter_mut().find(|l| l.spec.id == spec.id) {
            Some(l) if l.spec == spec => {}
            Some(l) => {
                l.source = AgentSource::Conflict;
                l.shadowed = Some(spec);
            }
            None => out.push(Listed {
                spec,
                source: AgentSource::Table,
                shadowed: None,
            }),
        }
    }
    (out, unreadable)
}

/// The first of the agent's tags that the project has: the tag it joins by.
pub fn matching_tag<'a>(agent: &'a AgentSpec, project_tags: &[String]) -> Option<&'a String> {
    agent.tags.iter().find(|t| project_tags.contains(t))
}

/// How an agent is on a floor today, as stored.
#[derive(Debug, Clone, Copy)]
pub struct Seat<'a> {
    /// The agent's id.
    pub agent: &'a str,
    /// It joined by a tag (not by invitation).
    pub by_tag: bool,
    /// Someone removed it by hand: it stays off while its tags match.
    pub removed: bool,
}

/// A membership change that brings a floor in line with the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Join by this tag.
    Join {
        /// The agent.
        agent: ParticipantId,
        /// The matching tag.
        tag: String,
    },
    /// Leave: the tag it joined by is gone (from the project or the agent).
    TagLost(ParticipantId),
    /// Leave: the agent no longer exists.
    Gone(ParticipantId),
}

/// The joins and leaves that bring a floor with `project_tags` in line with `agents`:
/// agents whose tags match join, those that joined by a tag no longer shared leave, and
/// those that no longer exist leave. Invitations and removals by hand stand.
pub fn plan_floor(agents: &[Listed], project_tags: &[String], seats: &[Seat<'_>]) -> Vec<Change> {
    let mut out = Vec::new();
    for a in agents {
        let tag = matching_tag(&a.spec, project_tags);
        let seat = seats.iter().find(|s| s.agent == a.spec.id.as_str());
        match (tag, seat) {
            (Some(t), None) => out.push(Change::Join {
                agent: a.spec.id.clone(),
                tag: t.clone(),
            }),
            (None, Some(s)) if !s.removed && s.by_tag => {
                out.push(Change::TagLost(a.spec.id.clone()));
            }
            _ => {}
        }
    }
    for s in seats.iter().filter(|s| !s.removed) {
        if agents.iter().any(|a| a.spec.id.as_str() == s.agent) {
            continue;
        }
        // A stored id that no longer parses cannot be addressed: nothing to announce.
        if let Ok(agent) = ParticipantId::parse(s.agent) {
            out.push(Change::Gone(agent));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, tags: &[&str]) -> AgentSpec {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": id.trim_start_matches("agent:"), "tags": tags,
        }))
        .unwrap()
    }

    fn listed(specs: &[AgentSpec]) -> Vec<Listed> {
        merge(specs, Vec::new()).0
    }

    #[test]
    fn same_content_is_the_files_other_content_a_conflict() {
        let dean = spec("agent:dean", &["data"]);
        let mut other = serde_json::to_value(&dean).unwrap();
        other["tags"] = serde_json::json!(["sales"]);
        let sean = serde_json::to_value(spec("agent:sean", &["sales"])).unwrap();
        let (l, bad) = merge(std::slice::from_ref(&dean), vec![other, sean]);
        assert!(bad.is_empty());
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].source, AgentSource::Conflict);
        assert_eq!(l[0].spec, dean, "the file's definition runs");
        assert_eq!(l[0].shadowed.as_ref().unwrap().tags, ["sales"]);
        assert_eq!(l[1].source, AgentSource::Table);
        let (l, _) = merge(
            std::slice::from_ref(&dean),
            vec![serde_json::to_value(&dean).unwrap()],
        );
        assert_eq!(l[0].source, AgentSource::Yaml);
    }

    #[test]
    fn an_unreadable_row_is_reported_not_fatal() {
        let (l, bad) = merge(
            &[spec("agent:dean", &[])],
            vec![serde_json::json!({"id": "agent:old", "brain": 7})],
        );
        assert_eq!(l.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].id.as_deref(), Some("agent:old"));
    }

    #[test]
    fn a_floor_is_planned_from_tags_and_seats() {
        let agents = listed(&[
            spec("agent:dean", &["data"]),
            spec("agent:sean", &["sales"]),
        ]);
        let tags = vec!["data".to_owned()];
        let plan = plan_floor(&agents, &tags, &[]);
        assert_eq!(
            plan,
            [Change::Join {
                agent: ParticipantId::parse("agent:dean").unwrap(),
                tag: "data".into()
            }]
        );
        // Sean joined by a tag the project no longer has; Dean is seated; Ghost is gone;
        // Martha was removed by hand and stays off.
        let seats = [
            Seat {
                agent: "agent:dean",
                by_tag: true,
                removed: false,
            },
            Seat {
                agent: "agent:sean",
                by_tag: true,
                removed: false,
            },
            Seat {
                agent: "agent:ghost",
                by_tag: false,
                removed: false,
            },
            Seat {
                agent: "agent:martha",
                by_tag: true,
                removed: true,
            },
        ];
        let plan = plan_floor(&agents, &tags, &seats);
        assert_eq!(
            plan,
            [
                Change::TagLost(ParticipantId::parse("agent:sean").unwrap()),
                Change::Gone(ParticipantId::parse("agent:ghost").unwrap()),
            ]
        );
        // An invited agent without a matching tag stays.
        let seats = [Seat {
            agent: "agent:sean",
            by_tag: false,
            removed: false,
        }];
        assert!(plan_floor(&agents, &[], &seats).is_empty());
    }
}
