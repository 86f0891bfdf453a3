//! The workspace's people: `users.list` cached for five minutes (for `/team` and for the
//! aliases an agent's `@krishna` resolves by), and single users (`users.info`) cached for
//! thirty, since every inbound message needs its sender.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use polaris_protocol::team::{SlackMember, TeamUser, merge};
use polaris_runtime::api::SlackTeam;
use serde_json::Value;

use crate::Shared;
use crate::web::{SlackError, str_of};

/// How long the member list is trusted.
const TEAM_TTL: Duration = Duration::from_secs(300);
/// How long one user's profile is trusted.
const USER_TTL: Duration = Duration::from_secs(1800);

/// The member list and its aliases, as last read.
pub(crate) struct Cached {
    at: Instant,
    members: Arc<Vec<SlackMember>>,
    aliases: Arc<HashMap<String, String>>,
}

/// A Slack user as the bridge needs one.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) at: Instant,
    pub(crate) member: SlackMember,
}

/// `/team`'s view of the bridge.
pub(crate) struct Team(pub(crate) Arc<Shared>);

impl SlackTeam for Team {
    fn members<'a>(&'a self, org: &'a str) -> BoxFuture<'a, Vec<SlackMember>> {
        Box::pin(async move {
            if org != &*self.0.org {
                return Vec::new();
            }
            members(&self.0).await.as_ref().clone()
        })
    }
}

/// The workspace's members (bots and deactivated accounts left out), cached.
pub(crate) async fn members(shared: &Shared) -> Arc<Vec<SlackMember>> {
    refresh(shared).await.0
}

/// Alias → Slack id, for the aliases that name exactly one member.
pub(crate) async fn aliases(shared: &Shared) -> Arc<HashMap<String, String>> {
    refresh(shared).await.1
}

async fn refresh(shared: &Shared) -> (Arc<Vec<SlackMember>>, Arc<HashMap<String, String>>) {
    let mut cached = shared.team.lock().await;
    if let Some(c) = cached.as_ref()
        && c.at.elapsed() < TEAM_TTL
    {
        return (c.members.clone(), c.aliases.clone());
    }
    match list(shared).await {
        Ok(members) => {
            let users = polaris_users(shared, None).await.unwrap_or_default();
            let team = merge(&users, &members, &[]);
            let mut aliases = HashMap::new();
            for m in &team {
                if let (Some(a), Some(id)) = (&m.alias, &m.slack_id) {
                    aliases.insert(a.clone(), id.clone());
                }
            }
            let c = Cached {
                at: Instant::now(),
                members: Arc::new(members),
                aliases: Arc::new(aliases),
            };
            let out = (c.members.clone(), c.aliases.clone());
            *cached = Some(c);
            out
        }
        Err(e) => {
            tracing::warn!(error = %e, "slack members not listed");
            // An old list is better than none; try again on the next call.
            match cached.as_ref() {
                Some(c) => (c.members.clone(), c.aliases.clone()),
                None => (Arc::default(), Arc::default()),
            }
        }
    }
}

async fn list(shared: &Shared) -> Result<Vec<SlackMember>, SlackError> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let v = shared
            .web
            .get("users.list", &[("limit", "200"), ("cursor", &cursor)])
            .await?;
        for u in v["members"].as_array().into_iter().flatten() {
            if u["deleted"].as_bool() == Some(true) || u["is_bot"].as_bool() == Some(true) {
                continue;
            }
            out.push(member(u));
        }
        cursor = str_of(&v["response_metadata"], "next_cursor").to_owned();
        if cursor.is_empty() {
            return Ok(out);
        }
    }
}

fn member(u: &Value) -> SlackMember {
    let profile = &u["profile"];
    let real = match str_of(u, "real_name") {
        "" => str_of(profile, "real_name"),
        r => r,
    };
    SlackMember {
        id: str_of(u, "id").to_owned(),
        handle: str_of(u, "name").to_owned(),
        real_name: real.to_owned(),
        display_name: str_of(profile, "display_name").to_owned(),
        email: profile["email"].as_str().map(str::to_owned),
    }
}

/// One user, cached.
pub(crate) async fn user(shared: &Shared, id: &str) -> Result<SlackMember, SlackError> {
    if let Some(u) = shared.users.get(id)
        && u.at.elapsed() < USER_TTL
    {
        return Ok(u.member.clone());
    }
    let v = shared.web.get("users.info", &[("user", id)]).await?;
    let m = member(&v["user"]);
    shared.users.insert(
        id.to_owned(),
        User {
            at: Instant::now(),
            member: m.clone(),
        },
    );
    Ok(m)
}

/// The org's Polaris users, and with `floor` its members too: a member who never called
/// the API has no user row and is matched by the name their participant id shows as.
pub(crate) async fn polaris_users(
    shared: &Shared,
    floor: Option<&polaris_runtime::ProjectKey>,
) -> Result<Vec<TeamUser>, String> {
    let directory = shared.runtime.directory();
    let mut users = directory
        .users(&shared.org)
        .await
        .map_err(|e| e.to_string())?;
    let Some(key) = floor else { return Ok(users) };
    for m in directory.members(key).await.map_err(|e| e.to_string())? {
        if users.iter().all(|u| u.participant_id != m)
            && let Ok(id) = polaris_registry::ParticipantId::parse(&m)
        {
            users.push(TeamUser {
                name: polaris_registry::Persona::of(&id, None, None).name,
                participant_id: m,
                email: None,
            });
        }
    }
    Ok(users)
}

/// The Polaris participant a Slack member is (same e-mail, else same name), if any.
pub(crate) fn matching(users: &[TeamUser], member: &SlackMember) -> Option<String> {
    merge(users, std::slice::from_ref(member), &[])
        .into_iter()
        .find(|t| t.slack_id.as_deref() == Some(member.id.as_str()))
        .and_then(|t| t.participant_id)
}
