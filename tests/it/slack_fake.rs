//! The fake Slack the bridge's tests run against (`support/slack.rs`): its Web API answers
//! as Slack's does, in JSON or form encoding, and its Socket Mode speaks Slack's envelopes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::http;
use crate::support::slack::{self, FakeSlack};

const WAIT: Duration = Duration::from_secs(10);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An answer: status, `Retry-After`, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    json: Value,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let json = resp.json().await.expect("JSON answer");
    Answer {
        status,
        retry_after,
        json,
    }
}

/// `method` with a JSON body and `token`.
async fn call_as(fake: &FakeSlack, token: Option<&str>, method: &str, body: Value) -> Answer {
    let mut req = http()
        .post(format!("{}{method}", fake.api_url()))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    answer(req.send().await.expect("send")).await
}

/// `method` with a JSON body and the bot token; the answer's body.
async fn call(fake: &FakeSlack, method: &str, body: Value) -> Value {
    call_as(fake, Some(FakeSlack::BOT_TOKEN), method, body)
        .await
        .json
}

/// `method` form-encoded, as many Slack clients send it.
async fn call_form(fake: &FakeSlack, method: &str, pairs: &[(&str, &str)]) -> Value {
    let body = serde_urlencoded::to_string(pairs).expect("form");
    let resp = http()
        .post(format!("{}{method}", fake.api_url()))
        .bearer_auth(FakeSlack::BOT_TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("send");
    answer(resp).await.json
}

async fn create(fake: &FakeSlack, name: &str) -> String {
    let a = call(fake, "conversations.create", json!({"name": name})).await;
    assert_eq!(a["ok"], true, "{a}");
    a["channel"]["id"].as_str().expect("id").to_owned()
}

async fn post(fake: &FakeSlack, body: Value) -> Value {
    call(fake, "chat.postMessage", body).await
}

fn error(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "{v}");
    v["error"].as_str().expect("error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_in_json_and_form_encoding_are_stored_and_read_back() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;

    let metadata = json!({"event_type": "polaris_event", "event_payload": {"id": 1}});
    let a = post(
        &fake,
        json!({"channel": ch, "text": "hello", "metadata": metadata,
            "username": "Dean", "icon_emoji": ":robot_face:"}),
    )
    .await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["channel"], ch.as_str());
    assert_eq!(a["message"]["user"], FakeSlack::BOT_USER);
    assert_eq!(a["message"]["bot_id"], FakeSlack::BOT_ID);
    assert_eq!(a["message"]["metadata"], metadata);
    assert_eq!(a["message"]["username"], "Dean");

    // Forms carry blocks and metadata as JSON text.
    let blocks = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
    let b = call_form(
        &fake,
        "chat.postMessage",
        &[
            ("channel", &ch),
            ("text", "fallback"),
            ("blocks", &blocks.to_string()),
            ("metadata", &metadata.to_string()),
            ("unfurl_links", "false"),
        ],
    )
    .await;
    assert_eq!(b["ok"], true, "{b}");
    assert!(
        b["ts"].as_str() > a["ts"].as_str(),
        "ts grows: {a} then {b}"
    );

    let messages = fake.wait_messages(2, WAIT).await;
    assert_eq!(messages[0].text, "hello");
    assert_eq!(messages[0].username.as_deref(), Some("Dean"));
    assert_eq!(messages[0].icon_emoji.as_deref(), Some(":robot_face:"));
    assert_eq!(messages[0].ts, a["ts"].as_str().expect("ts"));
    assert_eq!(messages[1].blocks, Some(blocks.clone()));
    assert_eq!(messages[1].metadata, Some(metadata));
    assert_eq!(messages[1].user, FakeSlack::BOT_USER);
    assert_eq!(messages[1].raw["unfurl_links"], "false");
    let posts = fake.calls_of("chat.postMessage");
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].params["blocks"], blocks, "parsed from the form");
    assert_eq!(posts[1].status, 200);

    // GET with a query string works too.
    let info = http()
        .get(format!("{}conversations.info?channel={ch}", fake.api_url()))
        .bearer_auth(FakeSlack::BOT_TOKEN)
        .send()
        .await
        .expect("send");
    let info = answer(info).await.json;
    assert_eq!(info["channel"]["name"], "floor-a", "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_names_are_validated_and_taken_names_refused() {
    let fake = FakeSlack::start().await;
    let ours = create(&fake, "floor-a").await;
    let again = call(&fake, "conversations.create", json!({"name": "floor-a"})).await;
    assert_eq!(error(&again), "name_taken");

    // A human's channel, and an archived one, keep their names.
    let general = fake.add_channel("general", "for humans", false);
    let old = fake.add_channel("old-floor", "", true);
    fake.archive_channel(&old);
    for name in ["general", "old-floor"] {
        let a = call(&fake, "conversations.create", json!({"name": name})).await;
        assert_eq!(error(&a), "name_taken", "{name}");
    }
    for (name, e) in [
        ("Floor A", "invalid_name_specials"),
        ("", "invalid_name_required"),
        (&"x".repeat(81)[..], "invalid_name_maxlength"),
    ] {
        let a = call(&fake, "conversations.create", json!({"name": name})).await;
        assert_eq!(error(&a), e, "{name:?}");
    }

    // Not a member yet: posting is refused until the bot joins.
    let a = post(&fake, json!({"channel": general, "text": "hi"})).await;
    assert_eq!(error(&a), "not_in_channel");
    let a = call(&fake, "conversations.join", json!({"channel": general})).await;
    assert_eq!(a["channel"]["is_member"], true, "{a}");
    assert!(fake.channel(&general).expect("general").is_member);
    let a = call(&fake, "conversations.join", json!({"channel": old})).await;
    assert_eq!(error(&a), "is_archived");
    let a = call(&fake, "conversations.join", json!({"channel": "CNOPE"})).await;
    assert_eq!(error(&a), "channel_not_found");

    // Renames, by the bridge and by a human.
    let a = call(
        &fake,
        "conversations.rename",
        json!({"channel": ours, "name": "general"}),
    )
    .await;
    assert_eq!(error(&a), "name_taken");
    let a = call(
        &fake,
        "conversations.rename",
        json!({"channel": ours, "name": "floor-b"}),
    )
    .await;
    assert_eq!(a["channel"]["name"], "floor-b", "{a}");
    fake.rename_channel(&ours, "floor-c");
    assert_eq!(fake.channel_by_name("floor-c").expect("renamed").id, ours);

    let a = call(
        &fake,
        "conversations.setTopic",
        json!({"channel": ours, "topic": "Floor A"}),
    )
    .await;
    assert_eq!(a["channel"]["topic"]["value"], "Floor A", "{a}");
    assert_eq!(fake.channel(&ours).expect("ours").topic, "Floor A");

    // Listing pages through every public channel in creation order.
    let private = call(
        &fake,
        "conversations.create",
        json!({"name": "secret", "is_private": true}),
    )
    .await;
    assert_eq!(private["channel"]["is_private"], true, "{private}");
    let mut names = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = call(
            &fake,
            "conversations.list",
            json!({"limit": 1, "cursor": cursor, "exclude_archived": true}),
        )
        .await;
        names.extend(
            page["channels"]
                .as_array()
                .expect("channels")
                .iter()
                .map(|c| c["name"].as_str().expect("name").to_owned()),
        );
        cursor = page["response_metadata"]["next_cursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(
        names,
        ["floor-c", "general"],
        "private and archived left out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_need_a_top_level_parent_and_read_back_in_slack_order() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;
    let parent = post(&fake, json!({"channel": ch, "text": "session s"})).await;
    let parent_ts = parent["ts"].as_str().expect("ts").to_owned();

    let bogus = post(
        &fake,
        json!({"channel": ch, "text": "x", "thread_ts": "1.000001"}),
    )
    .await;
    assert_eq!(error(&bogus), "thread_not_found");
    let reply = post(
        &fake,
        json!({"channel": ch, "text": "first", "thread_ts": parent_ts}),
    )
    .await;
    assert_eq!(reply["message"]["thread_ts"], parent_ts.as_str(), "{reply}");
    // A reply is no parent.
    let nested = post(
        &fake,
        json!({"channel": ch, "text": "x", "thread_ts": reply["ts"]}),
    )
    .await;
    assert_eq!(error(&nested), "thread_not_found");

    let event = fake.human_message(&ch, "U0HUMAN", "from a human", Some(&parent_ts));
    assert_eq!(event["thread_ts"], parent_ts.as_str());
    assert_eq!(event["channel_type"], "channel");
    assert_eq!(
        fake.messages().len(),
        2,
        "humans' messages are not the bot's"
    );

    let history = call(&fake, "conversations.history", json!({"channel": ch})).await;
    let messages = history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "replies stay in the thread: {history}");
    assert_eq!(messages[0]["reply_count"], 2);
    assert_eq!(messages[0]["thread_ts"], parent_ts.as_str());

    let replies = call(
        &fake,
        "conversations.replies",
        json!({"channel": ch, "ts": parent_ts}),
    )
    .await;
    let texts: Vec<&str> = replies["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(
        texts,
        ["session s", "first", "from a human"],
        "oldest first"
    );
    let a = call(
        &fake,
        "conversations.replies",
        json!({"channel": ch, "ts": reply["ts"]}),
    )
    .await;
    assert_eq!(error(&a), "thread_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_injected_failures_answer_as_slack_does() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;
    let other = create(&fake, "floor-b").await;
    let hi = json!({"channel": ch, "text": "hi"});

    fake.rate_limit("chat.postMessage", 1, 3);
    fake.fail("chat.postMessage", 1, "fatal_error");
    let a = call_as(
        &fake,
        Some(FakeSlack::BOT_TOKEN),
        "chat.postMessage",
        hi.clone(),
    )
    .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.retry_after.as_deref(), Some("3"));
    assert_eq!(a.json, json!({"ok": false, "error": "ratelimited"}));
    assert_eq!(error(&post(&fake, hi.clone()).await), "fatal_error");
    assert_eq!(post(&fake, hi.clone()).await["ok"], true);
    let statuses: Vec<u16> = fake
        .calls_of("chat.postMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [429, 200, 200]);
    assert_eq!(fake.messages().len(), 1);

    // About one message per second per channel.
    fake.enforce_channel_rate(Duration::from_millis(400));
    let a = call_as(
        &fake,
        Some(FakeSlack::BOT_TOKEN),
        "chat.postMessage",
        hi.clone(),
    )
    .await;
    assert_eq!((a.status, a.retry_after.as_deref()), (429, Some("1")));
    let b = post(&fake, json!({"channel": other, "text": "hi"})).await;
    assert_eq!(b["ok"], true, "another channel is not limited: {b}");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(post(&fake, hi.clone()).await["ok"], true);

    // Slack's size limits.
    fake.enforce_channel_rate(Duration::ZERO);
    let long = json!({"channel": ch, "text": "x".repeat(40_001)});
    assert_eq!(error(&post(&fake, long).await), "msg_too_long");
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"type": "section", "text": {"type": "mrkdwn", "text": i.to_string()}}))
        .collect();
    let a = post(&fake, json!({"channel": ch, "text": "x", "blocks": many})).await;
    assert_eq!(error(&a), "invalid_blocks");
    let big = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x".repeat(3001)}}]);
    let a = post(&fake, json!({"channel": ch, "text": "x", "blocks": big})).await;
    assert_eq!(error(&a), "invalid_blocks");
    assert_eq!(error(&post(&fake, json!({"channel": ch})).await), "no_text");
    let a = post(&fake, json!({"channel": "CNOPE", "text": "x"})).await;
    assert_eq!(error(&a), "channel_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_post_waits_for_its_release() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;
    let pause = fake.pause("chat.postMessage");
    let in_flight = tokio::spawn({
        let fake = fake.clone();
        async move { post(&fake, json!({"channel": ch, "text": "held"})).await }
    });
    pause.wait_arrived(1, WAIT).await;
    assert!(fake.messages().is_empty(), "still held");
    pause.release();
    assert_eq!(in_flight.await.expect("join")["ok"], true);
    assert_eq!(fake.wait_messages(1, WAIT).await[0].text, "held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_newest_first_with_metadata_only_when_asked() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;
    for i in 0..3 {
        let md = json!({"event_type": "polaris_event", "event_payload": {"seq": i}});
        let a = post(
            &fake,
            json!({"channel": ch, "text": format!("m{i}"), "metadata": md}),
        )
        .await;
        assert_eq!(a["ok"], true, "{a}");
    }
    let plain = call(&fake, "conversations.history", json!({"channel": ch})).await;
    let texts: Vec<&str> = plain["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["m2", "m1", "m0"]);
    assert!(
        plain["messages"][0].get("metadata").is_none(),
        "no metadata unless asked: {plain}"
    );

    let first = call_form(
        &fake,
        "conversations.history",
        &[
            ("channel", &ch),
            ("limit", "2"),
            ("include_all_metadata", "true"),
        ],
    )
    .await;
    assert_eq!(first["messages"].as_array().expect("messages").len(), 2);
    assert_eq!(first["messages"][0]["metadata"]["event_payload"]["seq"], 2);
    assert_eq!(first["has_more"], true);
    let cursor = first["response_metadata"]["next_cursor"]
        .as_str()
        .expect("cursor");
    assert!(!cursor.is_empty());
    let rest = call(
        &fake,
        "conversations.history",
        json!({"channel": ch, "limit": 2, "cursor": cursor, "include_all_metadata": true}),
    )
    .await;
    assert_eq!(rest["messages"][0]["text"], "m0", "{rest}");
    assert_eq!(rest["messages"][0]["metadata"]["event_payload"]["seq"], 0);
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["response_metadata"]["next_cursor"], "");

    let oldest = first["messages"][1]["ts"].clone();
    let newer = call(
        &fake,
        "conversations.history",
        json!({"channel": ch, "oldest": oldest}),
    )
    .await;
    assert_eq!(newer["messages"].as_array().expect("messages").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_users_and_signatures() {
    let fake = FakeSlack::start().await;
    let a = call_as(&fake, None, "auth.test", json!({})).await;
    assert_eq!(error(&a.json), "not_authed");
    let a = call_as(&fake, Some("xoxb-wrong"), "auth.test", json!({})).await;
    assert_eq!(error(&a.json), "invalid_auth");
    let a = call_as(&fake, Some(FakeSlack::APP_TOKEN), "auth.test", json!({})).await;
    assert_eq!(error(&a.json), "not_allowed_token_type");
    assert_eq!(
        error(&call(&fake, "chat.fly", json!({})).await),
        "unknown_method"
    );
    let me = call(&fake, "auth.test", json!({})).await;
    assert_eq!(me["user_id"], FakeSlack::BOT_USER);
    assert_eq!(me["bot_id"], FakeSlack::BOT_ID);
    assert_eq!(fake.calls().len(), 5, "refused calls are recorded too");

    fake.add_user(
        "U0ADA",
        "ada",
        "Ada Lovelace",
        "ada",
        Some("ada@example.com"),
    );
    fake.add_bot_user("U0OTHER", "otherbot");
    let ada = call(&fake, "users.info", json!({"user": "U0ADA"})).await;
    assert_eq!(ada["user"]["profile"]["email"], "ada@example.com", "{ada}");
    assert_eq!(ada["user"]["is_bot"], false);
    let nobody = call(&fake, "users.info", json!({"user": "U0NOBODY"})).await;
    assert_eq!(error(&nobody), "user_not_found");

    let first = call(&fake, "users.list", json!({"limit": 2})).await;
    let cursor = first["response_metadata"]["next_cursor"]
        .as_str()
        .expect("cursor");
    let rest = call(&fake, "users.list", json!({"cursor": cursor})).await;
    let ids: Vec<&str> = first["members"]
        .as_array()
        .expect("members")
        .iter()
        .chain(rest["members"].as_array().expect("members"))
        .map(|u| u["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["USLACKBOT", "U0BOT", "U0ADA", "U0OTHER"]);
    assert_eq!(rest["members"][1]["is_bot"], true);

    // Slack's documented example.
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    assert_eq!(
        slack::sign("8f742231b10e8888abcd99yyyzzz85a5", 1_531_420_618, body),
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    );
    let cb = slack::event_callback("Ev1", json!({"type": "app_mention"}));
    assert_eq!(cb["type"], "event_callback");
    assert_eq!(cb["authorizations"][0]["user_id"], FakeSlack::BOT_USER);
}

/// The next text frame, as JSON.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("a frame");
        if let WsMessage::Text(text) = msg {
            return serde_json::from_str(text.as_str()).expect("JSON frame");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_says_hello_carries_envelopes_and_records_acks() {
    let fake = FakeSlack::start().await;
    let ch = create(&fake, "floor-a").await;
    let wrong = call(&fake, "apps.connections.open", json!({})).await;
    assert_eq!(
        error(&wrong),
        "not_allowed_token_type",
        "needs the app token"
    );
    let open = call_as(
        &fake,
        Some(FakeSlack::APP_TOKEN),
        "apps.connections.open",
        json!({}),
    )
    .await
    .json;
    let url = open["url"].as_str().expect("url").to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert_eq!(fake.connections_opened(), 1);

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connect");
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["num_connections"], 1);
    fake.wait_socket(WAIT).await;
    assert_eq!(fake.sockets_connected(), 1);

    // The URL is single-use.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400);
        }
        other => panic!("a reused ticket must be refused: {other:?}"),
    }

    let event = fake.human_message(&ch, "U0HUMAN", "hello floor", None);
    let id = fake
        .send_envelope(slack::event_callback("Ev1", event))
        .await;
    let envelope = next_json(&mut ws).await;
    assert_eq!(envelope["type"], "events_api");
    assert_eq!(envelope["envelope_id"], id.as_str());
    assert_eq!(envelope["payload"]["event"]["text"], "hello floor");
    let ack = json!({"envelope_id": id}).to_string();
    ws.send(WsMessage::Text(ack.into())).await.expect("ack");
    let took = fake.wait_ack(&id, WAIT).await;
    assert!(took < WAIT, "{took:?}");
    assert_eq!(fake.acks(), [id]);

    fake.send_disconnect().await;
    let disconnect = next_json(&mut ws).await;
    assert_eq!(disconnect["type"], "disconnect");
    assert_eq!(disconnect["reason"], "refresh_requested");

    fake.drop_sockets().await;
    assert_eq!(fake.sockets_connected(), 0);
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the stream ends in time");
    assert!(
        matches!(end, None | Some(Err(_))),
        "the stream ended: {end:?}"
    );
}
