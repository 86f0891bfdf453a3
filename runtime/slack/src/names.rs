//! Names crossing the border: a Slack user as a floor participant, a project as a channel
//! name.

use polaris_registry::{ParticipantId, ParticipantKind};

/// The participant a Slack user posts as: `slack:<name>` from the display name (else the
/// real name, else the handle), transliterated to ASCII and cut to the participant
/// grammar; the Slack id lowercased when nothing usable is left.
pub fn participant(user_id: &str, names: &[&str]) -> ParticipantId {
    for n in names {
        let ascii = deunicode::deunicode(n).to_ascii_lowercase();
        let mut out = String::with_capacity(ascii.len());
        for c in ascii.chars() {
            let c = match c {
                'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
                _ => '.',
            };
            // No runs of separators, none at the start.
            if matches!(c, '.' | '_' | '-') && (out.is_empty() || out.ends_with(['.', '_', '-'])) {
                continue;
            }
            out.push(c);
        }
        let out = out.trim_end_matches(['.', '_', '-']);
        let out: String = out.chars().take(64).collect();
        if let Ok(id) = ParticipantId::new(ParticipantKind::Slack, &out) {
            return id;
        }
    }
    let id: String = user_id
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    ParticipantId::new(
        ParticipantKind::Slack,
        if id.is_empty() { "unknown" } else { &id },
    )
    .unwrap_or_else(|_| unreachable!("lowercase alphanumerics are a valid name"))
}

/// A project name as a Slack channel name (7.2): lowercase, every character outside
/// `[a-z0-9-]` a `-` (after transliteration, so `Données` is `donnees`), at most 80
/// characters, with room kept for `suffix`.
pub fn channel_name(project: &str, suffix: &str) -> String {
    let ascii = deunicode::deunicode(project).to_ascii_lowercase();
    let mut base: String = ascii
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if base.trim_matches('-').is_empty() {
        base = "polaris".into();
    }
    let room = 80usize.saturating_sub(suffix.len());
    let base: String = base.chars().take(room).collect();
    format!("{base}{suffix}")
}

/// The topic that marks a channel as a project's: the bridge links a channel it finds by
/// name only when its topic carries the project's id.
pub fn topic(project_name: &str, project_id: &uuid::Uuid) -> String {
    format!("Polaris project: {project_name} · polaris:{project_id}")
}

/// Whether a channel's topic marks it as the project's.
pub fn topic_marks(topic: &str, project_id: &uuid::Uuid) -> bool {
    topic.contains(&format!("polaris:{project_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_users_become_valid_participants() {
        assert_eq!(
            participant("U1", &["Krishna", "x"]).as_str(),
            "slack:krishna"
        );
        assert_eq!(
            participant("U1", &["José Núñez"]).as_str(),
            "slack:jose.nunez"
        );
        assert_eq!(
            participant("U1", &["Zoë  O'Brien!"]).as_str(),
            "slack:zoe.o.brien"
        );
        assert_eq!(participant("U1", &["北京"]).as_str(), "slack:bei.jing");
        assert_eq!(participant("U0ABC", &["", "!!!"]).as_str(), "slack:u0abc");
        assert_eq!(participant("U0ABC", &["...", "--"]).as_str(), "slack:u0abc");
    }

    #[test]
    fn channel_names_follow_slack_rules() {
        assert_eq!(channel_name("Payments API", ""), "payments-api");
        assert_eq!(
            channel_name("Données_2026", "-polaris"),
            "donnees-2026-polaris"
        );
        let long = "a".repeat(100);
        assert_eq!(channel_name(&long, "-polaris-2").len(), 80);
        assert_eq!(channel_name("!!!", ""), "polaris");
    }
}
