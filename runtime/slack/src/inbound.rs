//! Slack messages onto the floor: one handler for both transports (Events API and Socket
//! Mode), called after Slack has been answered.
//!
//! A message in a channel a project links becomes, in this order:
//!
//! 1. a reply in a session's thread → an inject into that session;
//! 2. `@<session> text`, naming a session of the project → an inject into it;
//! 3. anything else → floor chat (session `slack`), which named agents read: `@dean …` is
//!    answered by Dean, in the message's thread.
//!
//! Unlike the original, `Note: deploy later` is chat, never a new session. The event's id
//! is derived from Slack's `event_id`, so a retried delivery (even after a restart, even
//! on another node) is the floor's idempotent re-post. Messages from the bot itself,
//! edits and other subtypes are ignored; a channel rename is recorded.

use std::sync::LazyLock;

use polaris_protocol::Source;
use polaris_protocol::validate::Incoming;
use polaris_registry::ParticipantId;
use polaris_runtime::auth::{Caller, Role};
use polaris_runtime::{FloorError, ProjectKey};
use regex::Regex;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::format::unescape;
use crate::web::str_of;
use crate::{CHAT_SESSION, EVENT_NAMESPACE, Shared, names, team};

/// Tries at taking one Slack message onto the floor (about 6 s in all).
const ATTEMPTS: u32 = 5;

/// What became of a Slack event (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not for the floor.
    Ignored(&'static str),
    /// An inject into this session.
    Injected(String),
    /// Floor chat.
    Chat,
    /// Refused (the sender was told why).
    Refused,
}

/// Handles one `event_callback` body.
#[tracing::instrument(name = "slack.inbound", skip_all, fields(event_id))]
pub(crate) async fn handle(shared: &Shared, body: &Value) -> Outcome {
    let event_id = str_of(body, "event_id");
    tracing::Span::current().record("event_id", event_id);
    // Slack was answered already: a failure here (the store or the floor busy a moment)
    // is retried, and the derived event id makes a repeated post a no-op.
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    let outcome = loop {
        match route(shared, body).await {
            Ok(o) => break o,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "slack message not on the floor yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, attempt, "slack message not taken onto the floor");
                break Outcome::Ignored("error");
            }
        }
    };
    tracing::debug!(?outcome, "slack event handled");
    outcome
}

async fn route(shared: &Shared, body: &Value) -> Result<Outcome, String> {
    let Some(me) = shared.me() else {
        return Ok(Outcome::Ignored("bridge not connected yet"));
    };
    if str_of(body, "type") != "event_callback" {
        return Ok(Outcome::Ignored("not an event callback"));
    }
    let team = str_of(body, "team_id");
    if team != me.team {
        return Ok(Outcome::Ignored("another workspace"));
    }
    let e = &body["event"];
    if str_of(e, "type") != "message" {
        return Ok(Outcome::Ignored("not a message"));
    }
    let channel = str_of(e, "channel");
    match str_of(e, "subtype") {
        "" => {}
        "channel_name" => {
            let name = str_of(e, "name");
            if !name.is_empty() {
                shared
                    .links
                    .channel_renamed(team, channel, name)
                    .await
                    .map_err(|e| e.to_string())?;
                let linked = shared.links.target(team, channel, None).await;
                if let Ok(Some(t)) = linked
                    && let Some(key) = crate::floor_by_id(shared, t.project).await
                {
                    shared.runtime.refresh_project(&key).await;
                }
            }
            return Ok(Outcome::Ignored("channel renamed"));
        }
        _ => return Ok(Outcome::Ignored("subtype")),
    }
    let user = str_of(e, "user");
    if user.is_empty() || user == me.user || !str_of(e, "bot_id").is_empty() {
        return Ok(Outcome::Ignored("from a bot"));
    }
    let (text, ts) = (str_of(e, "text"), str_of(e, "ts"));
    if channel.is_empty() || text.trim().is_empty() || event_id_of(body).is_empty() {
        return Ok(Outcome::Ignored("incomplete"));
    }
    let Some(linked) = shared
        .links
        .target(team, channel, None)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Outcome::Ignored("no project links this channel"));
    };
    if linked.org != *shared.org {
        return Ok(Outcome::Ignored("another org"));
    }
    let Some(key) = crate::floor_by_id(shared, linked.project).await else {
        return Ok(Outcome::Ignored("project gone"));
    };
    // A profile Slack cannot give right now must not lose the message: the sender is then
    // named by their Slack id.
    let sender_profile = match team::user(shared, user).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%user, error = %e, "slack profile not read; naming the sender by id");
            polaris_protocol::team::SlackMember {
                id: user.to_owned(),
                handle: String::new(),
                real_name: String::new(),
                display_name: String::new(),
                email: None,
            }
        }
    };
    let sender = names::participant(
        user,
        &[
            &sender_profile.display_name,
            &sender_profile.real_name,
            &sender_profile.handle,
        ],
    );
    let text = unescape(text);
    let mentions = mentions(shared, &text).await;
    let thread_ts = e["thread_ts"].as_str().filter(|t| *t != ts);
    let slack =
        json!({"team": team, "channel": channel, "ts": ts, "thread_ts": thread_ts, "user": user});

    // 1. A reply in a session's thread.
    let starting = thread_ts.and_then(|t| {
        let s = shared.starting.get(t)?;
        (s.0 == key.id).then(|| s.1.clone())
    });
    let thread_session = match (starting, thread_ts) {
        (Some(s), _) => Some(s),
        (None, Some(t)) => shared
            .links
            .target(team, channel, Some(t))
            .await
            .map_err(|e| e.to_string())?
            .and_then(|target| target.session),
        (None, None) => None,
    };
    if let Some(session) = thread_session {
        return inject(
            shared,
            body,
            &key,
            &session,
            &sender,
            &sender_profile,
            text.trim(),
            &mentions,
            slack,
        )
        .await;
    }
    // 2. `@<session> text`.
    static ADDRESSED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)^@([A-Za-z0-9][A-Za-z0-9._-]*):?\s+(.+)$").expect("regex")
    });
    if let Some(c) = ADDRESSED.captures(text.trim()) {
        let session = &c[1];
        if session != CHAT_SESSION
            && shared
                .runtime
                .session_exists(&key, session)
                .await
                .map_err(|e| e.to_string())?
        {
            let content = c[2].trim().to_owned();
            return inject(
                shared,
                body,
                &key,
                session,
                &sender,
                &sender_profile,
                &content,
                &mentions,
                slack,
            )
            .await;
        }
    }
    // 3. Floor chat.
    if !may_write(shared, &key, &sender, &sender_profile).await? {
        refuse(shared, channel, user, thread_ts.unwrap_or(ts), &key, None).await;
        return Ok(Outcome::Refused);
    }
    shared
        .runtime
        .ensure_session(&key, CHAT_SESSION)
        .await
        .map_err(|e| e.to_string())?;
    let payload = json!({
        "type": "message",
        "content": text.trim(),
        "sender": sender,
        "mentions": mentions,
        "slack": slack,
    });
    post(
        shared,
        body,
        &key,
        CHAT_SESSION,
        Source::Slack,
        &sender,
        payload,
    )
    .await?;
    Ok(Outcome::Chat)
}

#[allow(clippy::too_many_arguments)]
async fn inject(
    shared: &Shared,
    body: &Value,
    key: &ProjectKey,
    session: &str,
    sender: &ParticipantId,
    profile: &polaris_protocol::team::SlackMember,
    content: &str,
    mentions: &[String],
    slack: Value,
) -> Result<Outcome, String> {
    let channel = str_of(&slack, "channel").to_owned();
    let user = str_of(&slack, "user").to_owned();
    let thread = slack["thread_ts"]
        .as_str()
        .unwrap_or(str_of(&slack, "ts"))
        .to_owned();
    if !may_write(shared, key, sender, profile).await? {
        refuse(shared, &channel, &user, &thread, key, Some(session)).await;
        return Ok(Outcome::Refused);
    }
    let payload = json!({
        "type": "inject",
        "content": content,
        "sender": sender,
        "target": session,
        "mentions": mentions,
        "slack": slack,
    });
    post(shared, body, key, session, Source::Inject, sender, payload).await?;
    Ok(Outcome::Injected(session.to_owned()))
}

async fn post(
    shared: &Shared,
    body: &Value,
    key: &ProjectKey,
    session: &str,
    source: Source,
    sender: &ParticipantId,
    payload: Value,
) -> Result<(), String> {
    let id = Uuid::new_v5(
        &EVENT_NAMESPACE,
        format!("{}/{}", str_of(body, "team_id"), event_id_of(body)).as_bytes(),
    );
    let incoming = Incoming {
        traceparent: None,
        term: None,
        id,
        timestamp: None,
        source,
        kind: "message".to_owned(),
        sender: sender.clone(),
        payload: serde_json::value::to_raw_value(&payload).map_err(|e| e.to_string())?,
    };
    let caller = Caller::participant(&shared.org, sender.clone(), Role::Service);
    match shared.runtime.post(key, session, incoming, &caller).await {
        Ok(posted) => {
            tracing::debug!(
                seq = posted.committed.event.seq,
                created = posted.created,
                "slack message on the floor"
            );
            Ok(())
        }
        Err(FloorError::NoSession) => Err(format!("session {session} does not exist")),
        Err(e) => Err(e.to_string()),
    }
}

fn event_id_of(body: &Value) -> &str {
    str_of(body, "event_id")
}

/// Whether a Slack user may write on a floor: anyone in the workspace on an org-wide
/// floor; on a members-only floor, a member (as `slack:<name>`, or as the Polaris user
/// with the same e-mail or name).
async fn may_write(
    shared: &Shared,
    key: &ProjectKey,
    sender: &ParticipantId,
    profile: &polaris_protocol::team::SlackMember,
) -> Result<bool, String> {
    let users = team::polaris_users(shared, Some(key)).await?;
    let matched = team::matching(&users, profile);
    let mut who = vec![sender.as_str()];
    if let Some(m) = &matched {
        who.push(m);
    }
    shared
        .runtime
        .directory()
        .may_use(key, &who)
        .await
        .map_err(|e| e.to_string())
}

/// Tells the sender (only them) why their message did not reach the floor.
async fn refuse(
    shared: &Shared,
    channel: &str,
    user: &str,
    thread_ts: &str,
    key: &ProjectKey,
    session: Option<&str>,
) {
    let what = match session {
        Some(s) => format!("your message was not passed to session `{s}`"),
        None => "your message was not added to the floor".to_owned(),
    };
    let text = format!(
        "Polaris: {what}: project *{}* is open to its members only, and your Slack account is not one of them. Ask a project admin to add you.",
        crate::format::escape(&key.name)
    );
    let body = json!({"channel": channel, "user": user, "text": text, "thread_ts": thread_ts});
    if let Err(e) = shared.web.post("chat.postEphemeral", &body).await {
        tracing::warn!(error = %e, "refusal not shown to the sender");
    }
}

/// The people a Slack text mentions (`<@U…>`), as participants: the Polaris user a
/// member matches, else `slack:<name>`.
async fn mentions(shared: &Shared, text: &str) -> Vec<String> {
    static USER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>").expect("regex"));
    let mut out: Vec<String> = Vec::new();
    let users = team::polaris_users(shared, None).await.unwrap_or_default();
    for c in USER.captures_iter(text) {
        let id = &c[1];
        let Ok(m) = team::user(shared, id).await else {
            continue;
        };
        let p = team::matching(&users, &m).unwrap_or_else(|| {
            names::participant(id, &[&m.display_name, &m.real_name, &m.handle]).to_string()
        });
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}
