//! One channel per project (reference 7.2, with its ⚠ fixed): the stored link if the
//! channel still exists (joined again if the bot was removed), else a new channel named
//! after the project. A taken name is adopted only when the channel's topic marks it as
//! this project's; otherwise the bridge tries `<name>-polaris`, then `-polaris-2`, … —
//! it never posts a floor into somebody's unrelated channel.

use polaris_runtime::{ProjectKey, SlackFloor};
use serde_json::{Value, json};

use crate::names;
use crate::web::{SlackError, str_of};
use crate::{Shared, fence};

/// Names tried before giving up on a project.
const ATTEMPTS: usize = 10;

/// The channel of `key`'s floor, linked (and created) if need be.
pub(crate) async fn ensure(
    shared: &Shared,
    team: &str,
    key: &ProjectKey,
    lease: &(String, i64),
) -> Result<String, SlackError> {
    if let Some(c) = shared.channels.get(&key.id) {
        return Ok(c.clone());
    }
    let stored = shared
        .links
        .channel(at(shared, team, key))
        .await
        .map_err(|e| SlackError::Transport(format!("store: {e}")))?;
    if let Some(id) = stored {
        match shared
            .web
            .get("conversations.info", &[("channel", &id)])
            .await
        {
            Ok(v) if !v["channel"]["is_archived"].as_bool().unwrap_or(false) => {
                if !v["channel"]["is_member"].as_bool().unwrap_or(true) {
                    shared
                        .web
                        .post("conversations.join", &json!({"channel": id}))
                        .await?;
                }
                shared.channels.insert(key.id, id.clone());
                return Ok(id);
            }
            // Archived or deleted: the floor gets a new channel.
            Ok(_) => {}
            Err(e) if e.code() == Some("channel_not_found") => {}
            Err(e) => return Err(e),
        }
    }
    let (id, name) = create_or_adopt(shared, key).await?;
    let linked = shared
        .links
        .link_channel(at(shared, team, key), &id, &name, fence(lease))
        .await
        .map_err(|e| SlackError::Transport(format!("store: {e}")))?;
    if !linked {
        return Err(SlackError::Transport("the slack lease moved on".into()));
    }
    shared.runtime.refresh_project(key).await;
    tracing::info!(project = %key.name, channel = %id, %name, "slack channel linked");
    shared.channels.insert(key.id, id.clone());
    Ok(id)
}

fn at<'a>(shared: &'a Shared, team: &'a str, key: &ProjectKey) -> SlackFloor<'a> {
    SlackFloor {
        org: &shared.org,
        team,
        project: key.id,
    }
}

/// Forgets the cached channel of a floor (it was archived or deleted under us).
pub(crate) fn forget(shared: &Shared, key: &ProjectKey) {
    shared.channels.remove(&key.id);
}

async fn create_or_adopt(
    shared: &Shared,
    key: &ProjectKey,
) -> Result<(String, String), SlackError> {
    let topic = names::topic(&key.name, &key.id);
    for attempt in 0..ATTEMPTS {
        let suffix = match attempt {
            0 => String::new(),
            1 => "-polaris".to_owned(),
            n => format!("-polaris-{n}"),
        };
        let name = names::channel_name(&key.name, &suffix);
        match shared
            .web
            .post(
                "conversations.create",
                &json!({"name": name, "is_private": false}),
            )
            .await
        {
            Ok(v) => {
                let id = str_of(&v["channel"], "id").to_owned();
                if let Err(e) = shared
                    .web
                    .post(
                        "conversations.setTopic",
                        &json!({"channel": id, "topic": topic}),
                    )
                    .await
                {
                    // The link is stored; the topic only helps a later adoption.
                    tracing::warn!(channel = %id, error = %e, "channel topic not set");
                }
                return Ok((id, name));
            }
            Err(e) if e.code() == Some("name_taken") => {
                if let Some(c) = find_by_name(shared, &name).await?
                    && names::topic_marks(str_of(&c["topic"], "value"), &key.id)
                {
                    let id = str_of(&c, "id").to_owned();
                    if !c["is_member"].as_bool().unwrap_or(false) {
                        shared
                            .web
                            .post("conversations.join", &json!({"channel": id}))
                            .await?;
                    }
                    return Ok((id, name));
                }
                tracing::info!(%name, "channel name taken by another channel; trying the next");
            }
            Err(e) => return Err(e),
        }
    }
    Err(SlackError::Api(format!(
        "no free channel name for project {} after {ATTEMPTS} tries",
        key.name
    )))
}

/// The open channel called `name`, paging through `conversations.list`.
async fn find_by_name(shared: &Shared, name: &str) -> Result<Option<Value>, SlackError> {
    let mut cursor = String::new();
    loop {
        let v = shared
            .web
            .get(
                "conversations.list",
                &[
                    ("limit", "200"),
                    ("exclude_archived", "true"),
                    ("types", "public_channel"),
                    ("cursor", &cursor),
                ],
            )
            .await?;
        if let Some(c) = v["channels"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| str_of(c, "name") == name))
        {
            return Ok(Some(c.clone()));
        }
        cursor = str_of(&v["response_metadata"], "next_cursor").to_owned();
        if cursor.is_empty() {
            return Ok(None);
        }
    }
}

/// Follows a project rename: the channel takes the new name when it is free (best effort:
/// the link is by id, so a failure changes nothing but the name people see).
pub(crate) async fn rename(shared: &Shared, team: &str, channel: &str, key: &ProjectKey) {
    let name = names::channel_name(&key.name, "");
    match shared
        .web
        .post(
            "conversations.rename",
            &json!({"channel": channel, "name": name}),
        )
        .await
    {
        Ok(_) => match shared.links.channel_renamed(team, channel, &name).await {
            Ok(()) => shared.runtime.refresh_project(key).await,
            Err(e) => tracing::warn!(error = %e, "renamed channel not recorded"),
        },
        Err(e) => tracing::info!(%channel, %name, error = %e, "channel not renamed"),
    }
    let topic = names::topic(&key.name, &key.id);
    if let Err(e) = shared
        .web
        .post(
            "conversations.setTopic",
            &json!({"channel": channel, "topic": topic}),
        )
        .await
    {
        tracing::info!(%channel, error = %e, "channel topic not updated");
    }
}
