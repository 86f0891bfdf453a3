//! `GET /team`: the people of an org (its Polaris users and, when Slack is connected, the
//! workspace's members) and its named agents, each with the alias an `@name` resolves by
//! (reference 7.8). Pure: the API and the Slack bridge build the same list from the same
//! inputs, so an agent's `@krishna` resolves to the person the team listing shows.

use serde::{Deserialize, Serialize};

/// A Slack workspace member, as `users.list` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackMember {
    /// `U…`.
    pub id: String,
    /// The handle (`name`).
    pub handle: String,
    /// `real_name`.
    pub real_name: String,
    /// `profile.display_name`.
    pub display_name: String,
    /// `profile.email`, when the app may read it.
    pub email: Option<String>,
}

/// A Polaris user of the org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamUser {
    /// `user:krishna.patel`.
    pub participant_id: String,
    /// Display name.
    pub name: String,
    /// E-mail, if known.
    pub email: Option<String>,
}

/// One entry of `GET /team`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamMember {
    /// Real name, else display name, else handle.
    pub name: String,
    /// Slack id (`U…`), if a Slack member.
    pub slack_id: Option<String>,
    /// Slack handle.
    pub slack_handle: Option<String>,
    /// Slack display name, else real name.
    pub slack_display: Option<String>,
    /// The matched Polaris participant, if any.
    pub participant_id: Option<String>,
    /// Whether a Polaris user matched.
    pub polaris_user: bool,
    /// What `@alias` resolves to (unique in the list when set).
    pub alias: Option<String>,
    /// `person` or `agent`.
    pub kind: String,
}

/// The team: Slack members matched to users (same e-mail, else same name), the users no
/// member matched, then the agents (`(id, display name)`), with aliases.
pub fn merge(
    users: &[TeamUser],
    slack: &[SlackMember],
    agents: &[(String, String)],
) -> Vec<TeamMember> {
    let mut matched = vec![false; users.len()];
    let mut out = Vec::new();
    for m in slack {
        if m.handle == "slackbot" {
            continue;
        }
        let by_email = m.email.as_deref().and_then(|e| {
            users.iter().position(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|ue| ue.eq_ignore_ascii_case(e))
            })
        });
        let found = by_email.or_else(|| {
            (!m.real_name.is_empty())
                .then(|| {
                    users
                        .iter()
                        .position(|u| u.name.eq_ignore_ascii_case(&m.real_name))
                })
                .flatten()
        });
        if let Some(i) = found {
            matched[i] = true;
        }
        let name = [&m.real_name, &m.display_name, &m.handle]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        let display = if m.display_name.is_empty() {
            m.real_name.clone()
        } else {
            m.display_name.clone()
        };
        out.push(TeamMember {
            name,
            slack_id: Some(m.id.clone()),
            slack_handle: Some(m.handle.clone()),
            slack_display: Some(display),
            participant_id: found.map(|i| users[i].participant_id.clone()),
            polaris_user: found.is_some(),
            alias: None,
            kind: "person".into(),
        });
    }
    for (u, _) in users.iter().zip(&matched).filter(|(_, m)| !**m) {
        out.push(TeamMember {
            name: u.name.clone(),
            slack_id: None,
            slack_handle: None,
            slack_display: None,
            participant_id: Some(u.participant_id.clone()),
            polaris_user: true,
            alias: None,
            kind: "person".into(),
        });
    }
    assign_aliases(&mut out);
    // Agents are addressed by their handle, which is unique by construction.
    for (id, display) in agents {
        out.push(TeamMember {
            name: display.clone(),
            slack_id: None,
            slack_handle: None,
            slack_display: None,
            participant_id: Some(id.clone()),
            polaris_user: false,
            alias: id.strip_prefix("agent:").map(str::to_owned),
            kind: "agent".into(),
        });
    }
    out
}

/// 7.8 step 5: the first word of the display name (letters only, at least two), else of
/// the name, else the handle; entries sharing an alias each get a letter of their last
/// name (or their handle) added.
fn assign_aliases(members: &mut [TeamMember]) {
    let base: Vec<Option<String>> = members.iter().map(base_alias).collect();
    for (i, m) in members.iter_mut().enumerate() {
        let Some(a) = &base[i] else { continue };
        let shared = base.iter().filter(|b| b.as_ref() == Some(a)).count() > 1;
        m.alias = Some(if !shared {
            a.clone()
        } else {
            let words: Vec<&str> = m.name.split_whitespace().collect();
            match (words.len() > 1, words.last(), &m.slack_handle) {
                (true, Some(last), _) => {
                    let initial: String = last
                        .chars()
                        .filter(char::is_ascii_alphabetic)
                        .take(1)
                        .map(|c| c.to_ascii_lowercase())
                        .collect();
                    format!("{a}{initial}")
                }
                (_, _, Some(h)) => h.clone(),
                _ => a.clone(),
            }
        });
    }
}

fn letters(word: &str) -> Option<String> {
    let w: String = word
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (w.len() >= 2).then_some(w)
}

fn base_alias(m: &TeamMember) -> Option<String> {
    m.slack_display
        .as_deref()
        .and_then(|d| d.split_whitespace().next())
        .and_then(letters)
        .or_else(|| m.name.split_whitespace().find_map(letters))
        .or_else(|| m.slack_handle.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, handle: &str, real: &str, display: &str) -> SlackMember {
        SlackMember {
            id: id.into(),
            handle: handle.into(),
            real_name: real.into(),
            display_name: display.into(),
            email: None,
        }
    }

    #[test]
    fn members_match_users_and_aliases_stay_unique() {
        let users = vec![
            TeamUser {
                participant_id: "user:krishna.patel".into(),
                name: "Krishna Patel".into(),
                email: None,
            },
            TeamUser {
                participant_id: "user:alice.chen".into(),
                name: "Alice Chen".into(),
                email: None,
            },
        ];
        let slack = vec![
            member("U1", "krishna", "Krishna Patel", "krishna"),
            member("U2", "sam.k", "Sam King", "Sam"),
            member("U3", "sam.l", "Sam Lee", ""),
            member("USLACKBOT", "slackbot", "Slackbot", ""),
        ];
        let team = merge(
            &users,
            &slack,
            &[("agent:dean".into(), "Dean (Data)".into())],
        );
        let alias = |id: &str| {
            team.iter()
                .find(|m| {
                    m.slack_id.as_deref() == Some(id) || m.participant_id.as_deref() == Some(id)
                })
                .and_then(|m| m.alias.clone())
        };
        assert_eq!(team.len(), 5, "{team:#?}");
        assert_eq!(alias("U1").as_deref(), Some("krishna"));
        assert_eq!(
            team[0].participant_id.as_deref(),
            Some("user:krishna.patel")
        );
        assert_eq!(alias("U2").as_deref(), Some("samk"));
        assert_eq!(alias("U3").as_deref(), Some("saml"));
        assert_eq!(alias("user:alice.chen").as_deref(), Some("alice"));
        assert_eq!(alias("agent:dean").as_deref(), Some("dean"));
        assert!(
            team.iter()
                .all(|m| m.slack_handle.as_deref() != Some("slackbot"))
        );
    }
}
