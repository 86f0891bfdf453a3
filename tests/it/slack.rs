//! The Slack bridge, driven as a team uses it: floors posted into a local server that
//! speaks Slack's Web API and Socket Mode, and signed Events API requests (or Socket Mode
//! envelopes) for what people type in Slack.

use std::time::Duration;

use polaris_config::{Secret, SlackConfig};
use polaris_slack::BridgeOptions;
use serde_json::{Value, json};

use crate::support::slack::{FakeSlack, Message, event_callback, sign};
use crate::support::{Backend, Client, Options, TestServer, eventually};

const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const WAIT: Duration = Duration::from_secs(20);

/// Bridge options for `fake`: Events API, a fast channel pace, a short lease.
fn bridge(fake: &FakeSlack, socket: bool) -> BridgeOptions {
    let config = SlackConfig {
        bot_token: Secret::new(FakeSlack::BOT_TOKEN.into()),
        signing_secret: (!socket).then(|| Secret::new(SIGNING.into())),
        app_token: socket.then(|| Secret::new(FakeSlack::APP_TOKEN.into())),
        api_url: fake.api_url(),
        org: "default".into(),
        post_interval: Duration::from_millis(50),
    };
    BridgeOptions {
        lease_ttl: Duration::from_secs(2),
        ..BridgeOptions::new(config)
    }
}

async fn start(
    backend: Backend,
    fake: &FakeSlack,
    tweak: impl FnOnce(&mut Options),
) -> Option<TestServer> {
    // RUST_LOG=polaris_slack=debug shows what the bridge did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut opts = Options {
        slack: Some(bridge(fake, false)),
        ..Options::default()
    };
    tweak(&mut opts);
    TestServer::start(backend, opts).await
}

/// Runs `$body` on SQLite and on PostgreSQL, each with a fresh fake Slack.
macro_rules! slack_test {
    ($name:ident, $tweak:expr, |$srv:ident, $fake:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_mut)]
            async fn run(backend: Backend) {
                let $fake = FakeSlack::start().await;
                let tweak: Box<dyn FnOnce(&mut Options)> = Box::new($tweak);
                let Some(mut $srv) = start(backend, &$fake, tweak).await else { return };
                $body
                $srv.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(Backend::Postgres).await
            }
        }
    };
}

/// The team of the answers tests (Dean, Sage, Martha) on every floor tagged for them.
fn with_agents(o: &mut Options) {
    // The agents' directory outlives the test (agents_dir keeps it).
    let (_dir, team) = crate::answers::team();
    o.agents_file = team.agents_file;
}

/// A workspace member who is also a Polaris user (by name).
fn add_krishna(fake: &FakeSlack) {
    fake.add_user(
        "U0KRISHNA",
        "krishna",
        "Krishna Patel",
        "krishna",
        Some("krishna@example.com"),
    );
}

/// The channel the bridge linked to `project` (waits for it).
async fn channel_of(c: &Client, project: &str) -> String {
    eventually(20, || async {
        let p = c.get(&format!("/projects/{project}")).await;
        p.json["slack_channel_id"].as_str().map(str::to_owned)
    })
    .await
}

async fn post_event(
    c: &Client,
    project: &str,
    session: &str,
    sender: &str,
    payload: Value,
) -> Value {
    let r = c
        .post(
            &format!("/projects/{project}/sessions/{session}/events"),
            json!({"sender": sender, "payload": payload}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json
}

fn sections(m: &Message) -> Vec<String> {
    m.blocks
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["text"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// Sends a signed Events API request; returns the status and body.
async fn deliver(srv: &TestServer, body: &Value, headers: &[(&str, String)]) -> (u16, Value) {
    let text = body.to_string();
    let ts = chrono::Utc::now().timestamp();
    let mut rb = crate::support::http()
        .post(format!("{}/slack/events", srv.base))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SIGNING, ts, &text));
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let r = rb.body(text).send().await.expect("server answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// What a human typed in `channel`, delivered as Slack would.
async fn human(
    srv: &TestServer,
    fake: &FakeSlack,
    channel: &str,
    user: &str,
    text: &str,
    thread: Option<&str>,
) -> String {
    let event = fake.human_message(channel, user, text, thread);
    let ts = event["ts"].as_str().expect("ts").to_owned();
    let body = event_callback(&format!("Ev{}", ts.replace('.', "")), event);
    let (status, v) = deliver(srv, &body, &[]).await;
    assert_eq!(status, 200, "{v}");
    ts
}

/// Floor events of a session, oldest first.
async fn floor(c: &Client, project: &str, session: &str) -> Vec<Value> {
    let r = c
        .get(&format!("/projects/{project}/sessions/{session}/messages"))
        .await;
    r.json.as_array().cloned().unwrap_or_default()
}

slack_test!(
    posts_each_speaker_under_their_persona_one_thread_per_session,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        c.project_session("Payments API", "s-7a3f").await;
        let channel = channel_of(&c, "Payments%20API").await;
        let linked = fake.channel(&channel).expect("channel exists");
        assert_eq!(linked.name, "payments-api");
        assert!(linked.topic.contains("polaris:"), "{}", linked.topic);

        let p = "Payments%20API";
        post_event(&c, p, "s-7a3f", "user:manu.bansal", json!({"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": "ship it <!channel> and ping <@U999> **now**"})).await;
        let m = fake.wait_messages(1, WAIT).await;
        let first = &m[0];
        assert_eq!(first.channel, channel);
        assert_eq!(
            first.thread_ts, None,
            "a session's first message starts its thread"
        );
        assert_eq!(first.username.as_deref(), Some("Manu Bansal (s-7a3f)"));
        assert!(
            first
                .icon_emoji
                .as_deref()
                .is_some_and(|i| i.starts_with(':') && i.ends_with(':')),
            "{first:?}"
        );
        let body = sections(first).concat();
        assert!(
            body.contains("&lt;!channel&gt;") && body.contains("&lt;@U999&gt;"),
            "escaped: {body}"
        );
        assert!(body.contains("*now*") && !body.contains("**"), "{body}");
        assert_eq!(
            first.metadata.as_ref().map(|m| m["event_type"].clone()),
            Some(json!("polaris_events"))
        );

        // A tool call is not posted; the response is, in the thread, as the coding agent.
        post_event(&c, p, "s-7a3f", "agent:claude", json!({"hook_event_name": "PreToolUse", "session_id": "cc", "tool_name": "Bash", "tool_input": {"command": "cargo test"}})).await;
        post_event(&c, p, "s-7a3f", "agent:claude", json!({"hook_event_name": "Stop", "session_id": "cc", "stop_response": "Done: 42 tests pass."})).await;
        let m = fake.wait_messages(2, WAIT).await;
        assert_eq!(m[1].username.as_deref(), Some("Claude (s-7a3f)"));
        assert_eq!(m[1].thread_ts.as_deref(), Some(first.ts.as_str()));
        assert_eq!(sections(&m[1]), ["Done: 42 tests pass."]);

        // An advisor's inject shows the arrow and the target session.
        let r = c
            .post(
                &format!("/projects/{p}/sessions/s-7a3f/inject"),
                json!({"content": "use RS256", "sender": "user:alice.chen"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let m = fake.wait_messages(3, WAIT).await;
        assert_eq!(m[2].username.as_deref(), Some("Alice Chen"));
        assert_eq!(sections(&m[2]), ["→ _s-7a3f_:  use RS256"]);
        assert_eq!(m[2].thread_ts.as_deref(), Some(first.ts.as_str()));

        // A long response is cut into sections Slack accepts, nothing lost.
        let long: String = (0..700)
            .map(|i| format!("line {i} of the report\n"))
            .collect();
        post_event(
            &c,
            p,
            "s-7a3f",
            "agent:claude",
            json!({"hook_event_name": "Stop", "session_id": "cc", "stop_response": long}),
        )
        .await;
        let m = fake.wait_messages(4, WAIT).await;
        let parts = sections(&m[3]);
        assert!(parts.len() > 3, "{}", parts.len());
        assert!(parts.iter().all(|s| s.chars().count() <= 3000));
        let joined = parts.concat();
        assert!(joined.contains("line 0 of") && joined.contains("line 699 of"));

        // Another session gets a thread of its own.
        let r = c
            .post(
                &format!("/projects/{p}/sessions"),
                json!({"name": "s-b2c4"}),
            )
            .await;
        assert_eq!(r.status, 201);
        let r = c
            .prompt(
                "Payments API",
                "s-b2c4",
                "user:alice.chen",
                "second session",
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let m = fake.wait_messages(5, WAIT).await;
        assert_eq!(m[4].thread_ts, None);
        assert_eq!(m[4].username.as_deref(), Some("Alice Chen (s-b2c4)"));
        assert_eq!(fake.messages().len(), 5, "nothing else was posted");
        assert!(
            fake.calls_of("chat.postMessage")
                .iter()
                .all(|c| c.status == 200)
        );
    }
);

slack_test!(
    slack_messages_become_injects_chat_and_answers,
    with_agents,
    |srv, fake| {
        let c = srv.client();
        add_krishna(&fake);
        let r = c
            .post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = c
            .post("/projects/warehouse/sessions", json!({"name": "s-7a3f"}))
            .await;
        assert_eq!(r.status, 201);
        let channel = channel_of(&c, "warehouse").await;
        c.prompt(
            "warehouse",
            "s-7a3f",
            "user:manu",
            "starting the orders migration",
        )
        .await;
        let parent = fake.wait_messages(1, WAIT).await[0].ts.clone();

        // A reply in the session's thread is an inject into that session.
        human(
            &srv,
            &fake,
            &channel,
            "U0KRISHNA",
            "use the &lt;staging&gt; schema first",
            Some(&parent),
        )
        .await;
        // `@<session> text` in the channel is one too; `Note: …` is chat, not a session.
        human(
            &srv,
            &fake,
            &channel,
            "U0KRISHNA",
            "@s-7a3f mind the GDPR columns",
            None,
        )
        .await;
        human(
            &srv,
            &fake,
            &channel,
            "U0KRISHNA",
            "Note: deploy later",
            None,
        )
        .await;
        let injects = eventually(20, || async {
            let evs = floor(&c, "warehouse", "s-7a3f").await;
            let injects: Vec<Value> = evs
                .into_iter()
                .filter(|e| e["source"] == "inject")
                .collect();
            (injects.len() == 2).then_some(injects)
        })
        .await;
        assert_eq!(injects[0]["sender"], "slack:krishna");
        assert_eq!(
            injects[0]["payload"]["content"],
            "use the <staging> schema first"
        );
        assert_eq!(injects[0]["payload"]["target"], "s-7a3f");
        assert_eq!(injects[1]["payload"]["content"], "mind the GDPR columns");
        let chat = eventually(20, || async {
            let evs = floor(&c, "warehouse", "slack").await;
            (!evs.is_empty()).then_some(evs)
        })
        .await;
        assert_eq!(chat[0]["payload"]["content"], "Note: deploy later");
        assert_eq!(c.get("/projects/warehouse/sessions/Note").await.status, 404);

        // `@dean …` in the channel: Dean answers in the message's thread, as his persona.
        let asked = human(
            &srv,
            &fake,
            &channel,
            "U0KRISHNA",
            "@dean how long are raw events kept? cc <@U0KRISHNA>",
            None,
        )
        .await;
        let answer = eventually(30, || async {
            fake.messages()
                .into_iter()
                .find(|m| m.thread_ts.as_deref() == Some(asked.as_str()))
        })
        .await;
        assert_eq!(answer.username.as_deref(), Some("Dean (Data)"));
        assert_eq!(answer.icon_emoji.as_deref(), Some(":bar_chart:"));
        assert!(
            sections(&answer).concat().contains("400 days"),
            "{answer:?}"
        );
        let question = eventually(20, || async {
            floor(&c, "warehouse", "slack")
                .await
                .into_iter()
                .find(|e| e["payload"]["slack"]["ts"] == asked.as_str())
        })
        .await;
        assert_eq!(question["payload"]["mentions"], json!(["slack:krishna"]));
        // Slack's copy of the bot's own answer comes back as an event: ignored, no loop.
        let own = json!({"type": "message", "channel": channel, "user": FakeSlack::BOT_USER, "bot_id": FakeSlack::BOT_ID, "text": "Dean's answer", "ts": answer.ts});
        let (s, _) = deliver(&srv, &event_callback("EvOwn", own), &[]).await;
        assert_eq!(s, 200);
        // Nothing typed in Slack is posted back to it.
        let posted: Vec<String> = fake.messages().iter().flat_map(sections).collect();
        assert!(
            posted
                .iter()
                .all(|t| !t.contains("GDPR columns") && !t.contains("deploy later")),
            "{posted:?}"
        );
    }
);

slack_test!(
    signed_requests_only_and_retries_land_once,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        c.project_session("pj", "s-1").await;
        let channel = channel_of(&c, "pj").await;
        fake.add_user("U0X", "x", "Xavier", "", None);

        // URL verification.
        let (s, v) = deliver(
            &srv,
            &json!({"type": "url_verification", "challenge": "abc123", "token": "x"}),
            &[],
        )
        .await;
        assert_eq!((s, v), (200, json!({"challenge": "abc123"})));

        let event = fake.human_message(&channel, "U0X", "@s-1 hello", None);
        let body = event_callback("Ev0001", event).to_string();
        let http = crate::support::http();
        let url = format!("{}/slack/events", srv.base);
        let now = chrono::Utc::now().timestamp();
        // Badly signed, unsigned, replayed after five minutes: 401, nothing on the floor.
        for (ts, sig) in [
            (now, sign("not-the-secret", now, &body)),
            (now, "v0=00".to_owned()),
            (now - 360, sign(SIGNING, now - 360, &body)),
        ] {
            let r = http
                .post(&url)
                .header("x-slack-request-timestamp", ts.to_string())
                .header("x-slack-signature", sig)
                .body(body.clone())
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status(), 401);
            let v: Value = r.json().await.expect("json");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("x-slack-")),
                "{v}"
            );
        }
        let r = http
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 401);

        // Delivered, then retried twice (as Slack does when it missed the 200): one inject.
        let parsed: Value = serde_json::from_str(&body).expect("json");
        for retry in ["", "1", "2"] {
            let headers: Vec<(&str, String)> = if retry.is_empty() {
                vec![]
            } else {
                vec![
                    ("x-slack-retry-num", retry.to_owned()),
                    ("x-slack-retry-reason", "http_timeout".to_owned()),
                ]
            };
            let (s, _) = deliver(&srv, &parsed, &headers).await;
            assert_eq!(s, 200);
        }
        // Bad input is answered 200 and ignored: malformed JSON, an unknown event type, a
        // channel no project links, a message without text.
        let ts = chrono::Utc::now().timestamp();
        let junk = "{not json";
        let r = http
            .post(&url)
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(SIGNING, ts, junk))
            .body(junk)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 200);
        for (id, ev) in [
            (
                "EvU1",
                json!({"type": "reaction_added", "user": "U0X", "reaction": "tada"}),
            ),
            (
                "EvU2",
                json!({"type": "message", "channel": "C0NOBODY", "user": "U0X", "text": "@s-1 hi", "ts": "1.000001"}),
            ),
            (
                "EvU3",
                json!({"type": "message", "channel": channel, "user": "U0X", "ts": "1.000002"}),
            ),
            (
                "EvU4",
                json!({"type": "message", "subtype": "message_changed", "channel": channel, "ts": "1.000003"}),
            ),
        ] {
            let (s, _) = deliver(&srv, &event_callback(id, ev), &[]).await;
            assert_eq!(s, 200);
        }
        let (s, _) = deliver(
            &srv,
            &json!({"type": "app_rate_limited", "minute_rate_limited": 1}),
            &[],
        )
        .await;
        assert_eq!(s, 200);
        // A marker delivered last: once it is on the floor, everything before it was handled.
        human(&srv, &fake, &channel, "U0X", "@s-1 marker", None).await;
        let evs = eventually(20, || async {
            let evs = floor(&c, "pj", "s-1").await;
            evs.iter()
                .any(|e| e["payload"]["content"] == "marker")
                .then_some(evs)
        })
        .await;
        let injects: Vec<&Value> = evs.iter().filter(|e| e["source"] == "inject").collect();
        assert_eq!(injects.len(), 2, "one per delivered message: {injects:?}");
        assert_eq!(injects[0]["payload"]["content"], "hello");
    }
);

slack_test!(
    members_only_floors_refuse_strangers_with_an_explanation,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        c.project_session("vault", "s-1").await;
        let r = c
            .post(
                "/projects/vault/visibility",
                json!({"visibility": "members"}),
            )
            .await;
        assert!(r.status < 300, "{r:?}");
        let r = c
            .post(
                "/projects/vault/members",
                json!({"participant_id": "user:krishna.patel"}),
            )
            .await;
        assert!(r.status < 300, "{r:?}");
        // Krishna (a member, matched by name) and a stranger.
        fake.add_user("U0KP", "kp", "Krishna Patel", "kp", None);
        fake.add_user("U0ST", "stranger", "Sam Stranger", "sam", None);
        let channel = channel_of(&c, "vault").await;
        let asked = human(&srv, &fake, &channel, "U0ST", "@s-1 let me in", None).await;
        let refusal = eventually(20, || async { fake.ephemerals().into_iter().next() }).await;
        assert_eq!(refusal["user"], "U0ST");
        assert_eq!(refusal["thread_ts"], asked.as_str());
        assert!(
            refusal["text"]
                .as_str()
                .is_some_and(|t| t.contains("members only")),
            "{refusal}"
        );
        human(&srv, &fake, &channel, "U0KP", "@s-1 member here", None).await;
        let evs = eventually(20, || async {
            let evs = floor(&c, "vault", "s-1").await;
            evs.iter().any(|e| e["source"] == "inject").then_some(evs)
        })
        .await;
        let injects: Vec<&Value> = evs.iter().filter(|e| e["source"] == "inject").collect();
        assert_eq!(injects.len(), 1);
        assert_eq!(injects[0]["payload"]["content"], "member here");
        assert_eq!(fake.ephemerals().len(), 1);
    }
);

/// Every line posted so far, in posting order (one speaker's short texts share a section,
/// a line each).
fn posted_texts(fake: &FakeSlack) -> Vec<String> {
    fake.messages()
        .iter()
        .flat_map(sections)
        .flat_map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

slack_test!(
    bursts_are_packed_in_order_and_a_429_is_waited_out,
    |o: &mut Options| {
        if let Some(s) = o.slack.as_mut() {
            s.config.post_interval = Duration::from_millis(200);
        }
    },
    |srv, fake| {
        let c = srv.client();
        c.project_session("busy", "s-1").await;
        channel_of(&c, "busy").await;
        // Slack's pace for one channel, and one 429 on the first post.
        fake.enforce_channel_rate(Duration::from_millis(200));
        fake.rate_limit("chat.postMessage", 1, 1);
        for batch in 0..3 {
            let events: Vec<Value> = (0..100)
            .map(|i| json!({"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("p{}", batch * 100 + i)}}))
            .collect();
            let r = c
                .post(
                    "/projects/busy/sessions/s-1/events/batch",
                    json!({"events": events}),
                )
                .await;
            assert!(r.status < 300, "{r:?}");
        }
        let texts = eventually(60, || async {
            let t = posted_texts(&fake);
            t.iter().any(|s| s == "p299").then_some(t)
        })
        .await;
        let expected: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
        assert_eq!(texts, expected, "every event once, in order");
        let messages = fake.messages();
        assert!(
            messages.len() <= 30,
            "{} messages for 300 events",
            messages.len()
        );
        let calls = fake.calls_of("chat.postMessage");
        let refused = calls.iter().filter(|c| c.status == 429).count();
        assert_eq!(
            refused, 1,
            "only the injected 429: the bridge keeps Slack's pace"
        );
        assert_eq!(calls.len(), messages.len() + 1);
    }
);

slack_test!(a_restart_posts_nothing_twice, |_o| {}, |srv, fake| {
    let c = srv.client();
    c.project_session("pj", "s-1").await;
    channel_of(&c, "pj").await;
    for (i, text) in ["one", "two"].into_iter().enumerate() {
        c.prompt("pj", "s-1", "user:manu", text).await;
        fake.wait_messages(i + 1, WAIT).await;
    }
    srv.restart().await;
    let c = srv.client();
    // Slack fails the next two posts: retried until it takes one, posted once.
    fake.fail("chat.postMessage", 2, "internal_error");
    c.prompt("pj", "s-1", "user:manu", "three").await;
    fake.wait_messages(3, WAIT).await;
    // "three" is behind anything a replay would have posted.
    assert_eq!(posted_texts(&fake), ["one", "two", "three"]);
    let m = fake.messages();
    assert_eq!(
        m[2].thread_ts.as_deref(),
        Some(m[0].ts.as_str()),
        "same thread after the restart"
    );
});

slack_test!(
    a_post_in_doubt_after_a_crash_is_made_once,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        c.project_session("pj", "s-1").await;
        channel_of(&c, "pj").await;
        let before = c.prompt("pj", "s-1", "user:manu", "before").await;
        fake.wait_messages(1, WAIT).await;
        // Slack has it; wait until the bridge has recorded that too.
        let project: uuid::Uuid = c.get("/projects/pj").await.json["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("project id");
        let seq = before.json["seq"].as_i64().expect("seq");
        let at = polaris_runtime::SlackFloor {
            org: "default",
            team: FakeSlack::TEAM,
            project,
        };
        eventually(20, || async {
            let cursor = srv.runtime.slack_links().cursor(at).await.ok().flatten()?;
            (cursor.seq >= seq && cursor.pending.is_none()).then_some(())
        })
        .await;
        // The bridge dies after Slack took the post, before the cursor moved.
        let faults = srv.opts.slack.as_ref().expect("slack").faults.clone();
        faults
            .crash_after_post
            .store(true, std::sync::atomic::Ordering::SeqCst);
        c.prompt("pj", "s-1", "user:manu", "in doubt").await;
        eventually(20, || async {
            faults
                .crashed
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        })
        .await;
        assert_eq!(fake.messages().len(), 2);
        // Another instance (its lease expired, never released) takes over.
        srv.opts.slack = Some(bridge(&fake, false));
        srv.restart().await;
        let c = srv.client();
        c.prompt("pj", "s-1", "user:manu", "after").await;
        fake.wait_messages(3, WAIT).await;
        assert_eq!(posted_texts(&fake), ["before", "in doubt", "after"]);
        assert_eq!(
            fake.calls_of("conversations.history").len(),
            0,
            "the post in doubt is a thread reply"
        );
        assert_eq!(
            fake.calls_of("conversations.replies").len(),
            1,
            "looked for once"
        );
    }
);

slack_test!(
    socket_mode_acks_at_once_and_reconnects,
    |o: &mut Options| {
        if let Some(s) = o.slack.as_mut() {
            s.config.signing_secret = None;
            s.config.app_token = Some(Secret::new(FakeSlack::APP_TOKEN.into()));
        }
    },
    |srv, fake| {
        let c = srv.client();
        c.project_session("pj", "s-1").await;
        let channel = channel_of(&c, "pj").await;
        fake.add_user("U0K", "krishna", "Krishna", "krishna", None);
        assert_eq!(
            c.post("/slack/events", json!({})).await.status,
            404,
            "no request URL without a signing secret"
        );
        fake.wait_socket(WAIT).await;
        let send = |text: &'static str| {
            let fake = fake.clone();
            let channel = channel.clone();
            async move {
                let event = fake.human_message(&channel, "U0K", text, None);
                let ts = event["ts"].as_str().expect("ts").replace('.', "");
                let id = fake
                    .send_envelope(event_callback(&format!("Ev{ts}"), event))
                    .await;
                let took = fake.wait_ack(&id, WAIT).await;
                assert!(took < Duration::from_secs(3), "acked after {took:?}");
            }
        };
        send("@s-1 over the socket").await;
        // Slack asks for a fresh connection; then the socket drops outright.
        fake.send_disconnect().await;
        eventually(20, || async {
            (fake.sockets_accepted() >= 2 && fake.sockets_connected() == 1).then_some(())
        })
        .await;
        send("@s-1 after a refresh").await;
        fake.drop_sockets().await;
        eventually(20, || async {
            (fake.sockets_accepted() >= 3 && fake.sockets_connected() == 1).then_some(())
        })
        .await;
        send("@s-1 after a drop").await;
        let injects = eventually(20, || async {
            let evs = floor(&c, "pj", "s-1").await;
            let i: Vec<Value> = evs
                .into_iter()
                .filter(|e| e["source"] == "inject")
                .map(|e| e["payload"]["content"].clone())
                .collect();
            (i.len() == 3).then_some(i)
        })
        .await;
        assert_eq!(
            injects,
            ["over the socket", "after a refresh", "after a drop"]
        );
        assert!(
            fake.connections_opened() >= 3,
            "a fresh URL for each connection"
        );
    }
);

slack_test!(
    channels_never_adopt_a_stranger_and_follow_renames,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        let human_channel = fake.add_channel("billing", "where finance chats", false);
        c.project_session("billing", "s-1").await;
        let channel = channel_of(&c, "billing").await;
        assert_ne!(channel, human_channel);
        let linked = fake.channel(&channel).expect("channel");
        assert_eq!(linked.name, "billing-polaris");
        c.prompt("billing", "s-1", "user:manu", "hello").await;
        let m = fake.wait_messages(1, WAIT).await;
        assert_eq!(m[0].channel, channel);
        assert!(
            fake.channel(&human_channel).is_some_and(|h| !h.is_member),
            "never joined"
        );

        // Renamed in Polaris: the channel follows (its own name is free).
        let r = c
            .post("/projects/billing/rename", json!({"name": "invoicing"}))
            .await;
        assert!(r.status < 300, "{r:?}");
        eventually(20, || async {
            fake.channel(&channel)
                .filter(|ch| ch.name == "invoicing")
                .map(|_| ())
        })
        .await;
        // Renamed in Slack: the link holds, the project shows the new name.
        fake.rename_channel(&channel, "money-talk");
        let ev = json!({"type": "message", "subtype": "channel_name", "channel": channel, "old_name": "invoicing", "name": "money-talk", "ts": fake.next_ts()});
        let (s, _) = deliver(&srv, &event_callback("EvRename", ev), &[]).await;
        assert_eq!(s, 200);
        eventually(20, || async {
            let p = c.get("/projects/invoicing").await;
            (p.json["slack_channel_name"] == "money-talk").then_some(())
        })
        .await;
        c.prompt("invoicing", "s-1", "user:manu", "still here")
            .await;
        let m = fake.wait_messages(2, WAIT).await;
        assert_eq!(m[1].channel, channel);
        assert_eq!(m[1].thread_ts.as_deref(), Some(m[0].ts.as_str()));
    }
);

slack_test!(
    the_team_lists_slack_people_beside_agents_and_agents_mention_them,
    with_agents,
    |srv, fake| {
        let c = srv.client();
        add_krishna(&fake);
        fake.add_user("U0ALICE", "alice", "Alice Chen", "", None);
        fake.add_bot_user("B0OTHER", "otherbot");
        let team = c.get("/team").await;
        assert_eq!(team.status, 200, "{team:?}");
        let members = team.json["members"].as_array().cloned().unwrap_or_default();
        let find = |alias: &str| members.iter().find(|m| m["alias"] == alias).cloned();
        let k = find("krishna").expect("krishna listed");
        assert_eq!(
            (k["slack_id"].clone(), k["kind"].clone()),
            (json!("U0KRISHNA"), json!("person"))
        );
        assert_eq!(find("alice").expect("alice")["slack_id"], "U0ALICE");
        let dean = find("dean").expect("dean listed");
        assert_eq!(
            (dean["name"].clone(), dean["kind"].clone()),
            (json!("Dean (Data)"), json!("agent"))
        );
        assert!(
            members
                .iter()
                .all(|m| m["slack_handle"] != "otherbot" && m["slack_handle"] != "slackbot"),
            "{members:?}"
        );

        c.project_session("pj", "s-1").await;
        channel_of(&c, "pj").await;
        post_event(&c, "pj", "s-1", "agent:claude", json!({"hook_event_name": "Stop", "session_id": "cc", "stop_response": "ask @krishna about it, not `@krishna` in code"})).await;
        let m = fake.wait_messages(1, WAIT).await;
        assert_eq!(
            sections(&m[0]),
            ["ask <@U0KRISHNA> about it, not `@krishna` in code"]
        );
    }
);

/// Several nodes (PostgreSQL; SQLite is one node): one bridge posts, each event once,
/// whichever node committed it; the other takes over when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_post_each_event_once() {
    let fake = FakeSlack::start().await;
    let Some(mut srv) = start(Backend::Postgres, &fake, |_| {}).await else {
        return;
    };
    // A second node with a bridge of its own (another lease holder) on the same store.
    srv.opts.slack = Some(bridge(&fake, false));
    let mut other = srv.second_node().await;
    let (a, b) = (srv.client(), other.client());
    a.project_session("pj", "s-1").await;
    channel_of(&a, "pj").await;
    for i in 0..10 {
        let c = if i % 2 == 0 { &a } else { &b };
        let r = c.prompt("pj", "s-1", "user:manu", &format!("m{i}")).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let texts = eventually(20, || async {
        let t = posted_texts(&fake);
        t.iter().any(|s| s == "m9").then_some(t)
    })
    .await;
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    // The node that did not post takes over when the one that did stops.
    let before = fake.messages().len();
    srv.stop().await;
    let r = b
        .prompt("pj", "s-1", "user:manu", "after the handover")
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    fake.wait_messages(before + 1, WAIT).await;
    assert_eq!(
        posted_texts(&fake).last().map(String::as_str),
        Some("after the handover")
    );
    assert_eq!(
        fake.calls_of("conversations.create").len(),
        1,
        "one channel"
    );
    other.stop().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reply_reaches_the_coding_agent_at_its_next_prompt() {
    use crate::sidecar::{Sidecar, home_dir, prompt, wait_following, wait_for, wait_queued};
    let fake = FakeSlack::start().await;
    let Some(srv) = start(Backend::Sqlite, &fake, |_| {}).await else {
        return;
    };
    fake.add_user("U0K", "krishna", "Krishna", "krishna", None);
    let (_d, home) = home_dir();
    let sc = Sidecar::start(&home, &srv.base).await;
    let session = sc.join("i", "pj", "user:manu").await;
    wait_for(&srv.base, "pj", &session, 1).await;
    wait_following(&sc, &srv.base, "pj", &session, "i").await;
    let (s, v) = sc.post("/events", prompt("i", "let's start")).await;
    assert_eq!(s, 200, "{v}");
    // The session's thread in Slack, whatever opened it (the probes' injects, here).
    let channel = channel_of(&srv.client(), "pj").await;
    let parent = eventually(20, || async {
        fake.messages()
            .into_iter()
            .find(|m| m.channel == channel && m.thread_ts.is_none())
    })
    .await;
    eventually(20, || async {
        posted_texts(&fake)
            .iter()
            .any(|t| t == "let's start")
            .then_some(())
    })
    .await;
    human(
        &srv,
        &fake,
        &parent.channel,
        "U0K",
        "use RS256, not HS256",
        Some(&parent.ts),
    )
    .await;
    wait_queued(&sc, "i", 1).await;
    let (_, v) = sc.post("/events", prompt("i", "next")).await;
    let pending = v["pendingInjects"].as_array().cloned().unwrap_or_default();
    assert_eq!(pending.len(), 1, "{v}");
    assert_eq!(pending[0]["from"], "slack:krishna");
    assert_eq!(pending[0]["content"], "use RS256, not HS256");
    sc.stop().await;
    srv.finish().await;
}

/// `polaris serve` as deployed: Slack from the environment (the bot token and signing
/// secret by value, as a container's secrets arrive), the request URL on the server's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polaris_serve_bridges_slack_from_its_environment() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = tokio::process::Command::new(crate::support::BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("POLARIS_JWT_SECRET")
        .env_remove("SLACK_APP_TOKEN")
        .env("SLACK_BOT_TOKEN", FakeSlack::BOT_TOKEN)
        .env("SLACK_SIGNING_SECRET", SIGNING)
        .env("SLACK_API_URL", fake.api_url())
        .env("POLARIS_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    let (mut child, base) = crate::support::spawn_listening(cmd).await;
    let c = Client::new(&base, None);
    c.project_session("pj", "s-1").await;
    let channel = channel_of(&c, "pj").await;
    c.prompt("pj", "s-1", "user:manu", "from the process").await;
    let m = fake.wait_messages(1, WAIT).await;
    assert_eq!(
        (m[0].channel.as_str(), sections(&m[0])),
        (channel.as_str(), vec!["from the process".to_owned()])
    );
    // The request URL answers Slack's verification, signed.
    let body = json!({"type": "url_verification", "challenge": "c-1"}).to_string();
    let ts = chrono::Utc::now().timestamp();
    let r = crate::support::http()
        .post(format!("{base}/slack/events"))
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(SIGNING, ts, &body))
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"challenge": "c-1"})
    );
    // Secrets never reach the API's answers.
    let team = c.get("/team").await;
    let text = team.json.to_string();
    assert!(!text.contains(FakeSlack::BOT_TOKEN) && !text.contains(SIGNING));
    child.kill().await.expect("kill");
}

/// Until the bridge knows who it is in Slack (`auth.test`), events are refused with 503 so
/// that Slack delivers them again, never taken and dropped; the URL check still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_slack_to_answer_auth_test() {
    let fake = FakeSlack::start().await;
    fake.fail("auth.test", 1000, "service_unavailable");
    let Some(srv) = start(Backend::Sqlite, &fake, |_| {}).await else {
        return;
    };
    fake.wait_calls("auth.test", 1, WAIT).await;
    let event =
        json!({"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1.000001"});
    let (s, v) = deliver(&srv, &event_callback("EvEarly", event), &[]).await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("not connected")),
        "{v}"
    );
    let (s, v) = deliver(
        &srv,
        &json!({"type": "url_verification", "challenge": "x"}),
        &[],
    )
    .await;
    assert_eq!((s, v), (200, json!({"challenge": "x"})));
    srv.finish().await;
}

// A bridge asked to stop while Slack has told it to wait five minutes stops now: the post
// stays pending for whoever holds the lease next.
slack_test!(
    stopping_does_not_wait_out_a_retry_after,
    |_o| {},
    |srv, fake| {
        let c = srv.client();
        c.project_session("pj", "s-1").await;
        channel_of(&c, "pj").await;
        fake.rate_limit("chat.postMessage", 1, 300);
        c.prompt("pj", "s-1", "user:manu", "held back").await;
        fake.wait_calls("chat.postMessage", 1, WAIT).await;
        tokio::time::timeout(Duration::from_secs(60), srv.stop())
            .await
            .expect("the server stops without waiting out Retry-After");
        assert!(fake.messages().is_empty());
    }
);
