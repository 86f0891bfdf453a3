//! How a sender is shown on Slack, the dashboard and in transcripts.

use crate::identity::{ParticipantId, ParticipantKind};

/// Registry facts about a named agent that change how it is shown.
#[derive(Debug, Clone, Copy)]
pub struct PersonaInfo<'a> {
    /// e.g. `Dean (Data)`.
    pub display_name: &'a str,
    /// e.g. `📊`.
    pub icon: &'a str,
}

/// A sender's display name and icon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// The name shown, with the session suffix when one was asked for.
    pub name: String,
    /// An emoji.
    pub icon: String,
}

impl Persona {
    /// The persona of `sender`. `registered` carries the registry entry when the sender is
    /// a named agent (or, for a subagent, its parent's entry: subagents speak under their
    /// parent's persona). `session` appends ` (s-7a3f)`.
    ///
    /// Unregistered agents are generic tool agents and are shown by name alone
    /// ("Claude"), not with the original's `Agent: ` prefix, as the design docs ask.
    pub fn of(
        sender: &ParticipantId,
        registered: Option<PersonaInfo<'_>>,
        session: Option<&str>,
    ) -> Persona {
        let (mut name, icon) = match (sender.kind(), registered) {
            (ParticipantKind::Agent, Some(info)) => {
                (info.display_name.to_owned(), info.icon.to_owned())
            }
            (ParticipantKind::Agent, None) => (title_case(sender.name()), "🤖".to_owned()),
            (ParticipantKind::User, _) => (title_case(sender.name()), "👤".to_owned()),
            (ParticipantKind::Slack, _) => (title_case(sender.name()), "💬".to_owned()),
        };
        if let Some(s) = session {
            name.push_str(" (");
            name.push_str(s);
            name.push(')');
        }
        Persona { name, icon }
    }
}

/// `manu.bansal` → `Manu Bansal`, `test-writer` → `Test Writer` (reference 1.4, step 2).
fn title_case(name: &str) -> String {
    name.split(['.', '_', '-'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ParticipantId {
        ParticipantId::parse(s).unwrap()
    }

    #[test]
    fn personas_follow_the_design() {
        let dean = PersonaInfo {
            display_name: "Dean (Data)",
            icon: "📊",
        };
        assert_eq!(
            Persona::of(&id("agent:dean"), Some(dean), Some("s-c9d0")),
            Persona {
                name: "Dean (Data) (s-c9d0)".into(),
                icon: "📊".into()
            }
        );
        assert_eq!(
            Persona::of(&id("user:manu.bansal"), None, Some("s-7a3f")).name,
            "Manu Bansal (s-7a3f)"
        );
        let claude = Persona::of(&id("agent:claude"), None, Some("s-7a3f"));
        assert_eq!(
            (claude.name.as_str(), claude.icon.as_str()),
            ("Claude (s-7a3f)", "🤖")
        );
        let krishna = Persona::of(&id("slack:krishna"), None, None);
        assert_eq!(
            (krishna.name.as_str(), krishna.icon.as_str()),
            ("Krishna", "💬")
        );
        assert_eq!(
            Persona::of(&id("agent:test-writer"), None, None).name,
            "Test Writer"
        );
    }
}
