//! Who an event is for: mentions resolved against an org's agents, the author rule, and a
//! parent agent's hand-off to the subagent whose skills fit. The live floor and
//! `polaris agents route` both decide through [`Router::route`], so what the command
//! explains is what the floor does.

use std::collections::HashMap;

use polaris_registry::{AgentSpec, ParticipantId};
use serde::Serialize;

use crate::mentions::{Handles, mentions};

/// The agents of one org, ready to route.
#[derive(Debug)]
pub struct Router {
    handles: Handles,
    agents: HashMap<ParticipantId, AgentSpec>,
}

/// A routing decision.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Routing {
    /// Agents addressed, deduplicated, in order of first appearance.
    pub mentions: Vec<ParticipantId>,
    /// Agents that should act (the mentioned ones, minus the author).
    pub responders: Vec<ParticipantId>,
    /// The rules behind the decision, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<String>,
}

impl Router {
    /// A router over these agents.
    pub fn new(agents: &[AgentSpec]) -> Router {
        Router {
            handles: Handles::new(agents.iter().map(|a| a.id.clone())),
            agents: agents.iter().map(|a| (a.id.clone(), a.clone())).collect(),
        }
    }

    /// Every agent, ordered by id.
    pub fn specs(&self) -> Vec<&AgentSpec> {
        let mut v: Vec<&AgentSpec> = self.agents.values().collect();
        v.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        v
    }

    /// The agent with this id.
    pub fn agent(&self, id: &ParticipantId) -> Option<&AgentSpec> {
        self.agents.get(id)
    }

    /// Routes `text`, written by `sender`. With `explain`, says why for every `@`.
    pub fn route(&self, text: &str, sender: Option<&ParticipantId>, explain: bool) -> Routing {
        let found = mentions(text, &self.handles);
        let mut r = Routing {
            mentions: found.iter().map(|m| m.agent.clone()).collect(),
            ..Routing::default()
        };
        for id in &r.mentions {
            if sender == Some(id) {
                if explain {
                    r.explain.push(format!(
                        "{id} wrote this event: an agent never answers itself"
                    ));
                }
                continue;
            }
            r.responders.push(id.clone());
        }
        if explain {
            for m in &found {
                r.explain
                    .push(format!("`{}` at byte {} → {}", m.written, m.start, m.agent));
            }
            for (at, why) in rejected_ats(text, &found) {
                r.explain
                    .push(format!("`@` at byte {at}: not a mention ({why})"));
            }
            if r.mentions.is_empty() {
                r.explain.push("no agent is addressed".into());
            }
        }
        r
    }

    /// A hand-over written on the floor: `@dean take: <task>` (the mention, then `take:`
    /// with nothing but spaces between) gives `(agent:dean, "<task>")`. The task runs to the
    /// end of the text.
    pub fn take(&self, text: &str) -> Option<(ParticipantId, String)> {
        mentions(text, &self.handles).into_iter().find_map(|m| {
            let rest = text[m.end..].trim_start();
            let head = rest.get(..5)?;
            if !head.eq_ignore_ascii_case("take:") {
                return None;
            }
            let task = rest[5..].trim();
            (!task.is_empty()).then(|| (m.agent, task.to_owned()))
        })
    }

    /// The subagent of `parent` best suited to `text` by its skills, if one clearly is.
    pub fn delegate(&self, parent: &ParticipantId, text: &str) -> Option<&AgentSpec> {
        let lower = text.to_lowercase();
        let mut best: Option<(&AgentSpec, usize)> = None;
        let mut tie = false;
        for a in self
            .agents
            .values()
            .filter(|a| a.parent.as_ref() == Some(parent))
        {
            let score = a
                .skills
                .iter()
                .filter(|s| contains_phrase(&lower, &s.to_lowercase()))
                .count();
            match best {
                _ if score == 0 => {}
                Some((_, b)) if score < b => {}
                Some((_, b)) if score == b => tie = true,
                _ => {
                    best = Some((a, score));
                    tie = false;
                }
            }
        }
        best.filter(|_| !tie).map(|(a, _)| a)
    }
}

/// True when `phrase` occurs in `text` on word boundaries (`dbt` in "dbt tests", not in
/// "dbtx").
fn contains_phrase(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    let bytes = text.as_bytes();
    text.match_indices(phrase).any(|(i, _)| {
        let before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let end = i + phrase.len();
        let after = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        before && after
    })
}

/// Every `@` that did not become a mention, with the rule that stopped it.
fn rejected_ats(text: &str, found: &[crate::mentions::Mention]) -> Vec<(usize, &'static str)> {
    let mut out = Vec::new();
    let code = code_spans(text);
    for (i, _) in text.match_indices('@') {
        if found.iter().any(|m| m.start <= i && i < m.end) {
            continue;
        }
        let prev = text[..i].chars().next_back();
        let why = if code.iter().any(|(a, b)| *a <= i && i < *b) {
            "inside code"
        } else if prev == Some('<') {
            "a Slack user mention, not an agent"
        } else if prev.is_some_and(|c| !c.is_whitespace() && !"([{\"',;:".contains(c)) {
            "right after another character, like an e-mail address"
        } else {
            "not a registered agent"
        };
        out.push((i, why));
    }
    out
}

/// Byte ranges of inline code and fenced blocks (for explanations only).
fn code_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        if b[i] == b'`' {
            let fence = text[i..].starts_with("```");
            let open = if fence { 3 } else { 1 };
            let close = if fence { "```" } else { "`" };
            match text[i + open..].find(close) {
                Some(j) => {
                    let end = i + open + j + close.len();
                    spans.push((i, end));
                    i = end;
                }
                None => {
                    spans.push((i, b.len()));
                    break;
                }
            }
        } else {
            i += 1;
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use polaris_registry::AgentFile;
    use std::path::Path;

    fn router() -> Router {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/agents.yaml");
        Router::new(&AgentFile::load(&path).unwrap().agents)
    }

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).unwrap()
    }

    #[test]
    fn authors_never_answer_themselves() {
        let r = router().route("@dean and @sage, thoughts?", Some(&id("agent:dean")), true);
        assert_eq!(r.mentions, [id("agent:dean"), id("agent:sage")]);
        assert_eq!(r.responders, [id("agent:sage")]);
        assert!(
            r.explain.iter().any(|l| l.contains("never answers itself")),
            "{:?}",
            r.explain
        );
    }

    #[test]
    fn explanations_cover_every_at() {
        let r = router().route(
            "mail ops@dean.io, ask `@dean` or <@U012AB3CD> or @everyone",
            None,
            true,
        );
        assert!(r.mentions.is_empty());
        let text = r.explain.join("\n");
        assert!(text.contains("e-mail"), "{text}");
        assert!(text.contains("inside code"), "{text}");
        assert!(text.contains("Slack user"), "{text}");
        assert!(text.contains("not a registered agent"), "{text}");
    }

    #[test]
    fn parents_hand_off_by_skill() {
        let r = router();
        let dean = id("agent:dean");
        let to = r.delegate(
            &dean,
            "should this be an incremental models thing or a snapshot? dbt tests fail",
        );
        assert_eq!(to.map(|a| a.id.as_str()), Some("agent:dean.dbt"));
        assert!(r.delegate(&dean, "what tables hold PII?").is_none());
        assert!(contains_phrase("run dbt tests", "dbt"));
        assert!(!contains_phrase("dbtx", "dbt"));
    }
}

#[cfg(test)]
mod take_tests {
    use super::*;

    fn router() -> Router {
        let spec: AgentSpec =
            serde_json::from_value(serde_json::json!({"id": "agent:dean", "name": "Dean"}))
                .unwrap();
        Router::new(&[spec])
    }

    #[test]
    fn a_take_names_the_agent_and_the_task() {
        let r = router();
        let dean = ParticipantId::parse("agent:dean").unwrap();
        assert_eq!(
            r.take("@dean take: PII audit of prod"),
            Some((dean.clone(), "PII audit of prod".into()))
        );
        assert_eq!(
            r.take("hey @Dean  TAKE:  audit slow queries\nplease"),
            Some((dean, "audit slow queries\nplease".into()))
        );
        assert_eq!(r.take("@dean take:   "), None);
        assert_eq!(r.take("@dean, take: it"), None);
        assert_eq!(r.take("@dean what does take: mean"), None);
        assert_eq!(r.take("take: @dean"), None);
        assert_eq!(r.take("@nobody take: x"), None);
    }
}
