//! Authentication, org isolation (HTTP, WebSocket, SSE), project ACLs, rate limits.

use serde_json::json;

use crate::both_stores;
use crate::support::Options;
use polaris_config::RateLimits;
use polaris_runtime::auth::Role;

fn secured() -> Options {
    Options {
        secret: true,
        ..Options::default()
    }
}

both_stores!(tokens_are_required_and_checked, secured(), |srv| {
    let anon = srv.client();
    let r = anon.get("/projects").await;
    assert_eq!(r.status, 401);
    assert!(r.error().starts_with("Unauthorized"), "{r:?}");
    let forged =
        crate::support::Client::new(&srv.base, Some("eyJhbGciOiJIUzI1NiJ9.e30.bad".into()));
    assert_eq!(forged.get("/projects").await.status, 401);
    // Health and status stay open for probes.
    assert_eq!(anon.get("/healthz").await.status, 200);
    assert_eq!(anon.get("/status").await.status, 200);
    let manu = srv.client_as("acme", "user:manu", Role::Member);
    assert_eq!(manu.get("/projects").await.status, 200);
    assert!(anon.ws("/projects/pj/ws").await.is_err());
});

both_stores!(orgs_never_see_each_other, secured(), |srv| {
    let a = srv.client_as("acme", "user:manu", Role::Member);
    let b = srv.client_as("globex", "user:hank", Role::Member);
    // Same project and session names in both orgs.
    a.project_session("pj", "s").await;
    b.project_session("pj", "s").await;
    let mut a_ws = a.ws("/projects/pj/ws").await.unwrap();
    let mut a_sse = a.sse("/projects/pj/sessions/s/events", None).await.unwrap();
    let mut b_ws = b.ws("/projects/pj/sessions/s/ws").await.unwrap();
    let mut b_sse = b.sse("/projects/pj/events", None).await.unwrap();

    let ea = a.prompt("pj", "s", "user:manu", "acme secret plan").await;
    let eb = b.prompt("pj", "s", "user:hank", "globex secret plan").await;
    assert_eq!(
        (ea.json["seq"].as_i64(), eb.json["seq"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        a_ws.next_event().await["payload"]["prompt"],
        "acme secret plan"
    );
    assert_eq!(
        a_sse.next_event().await.1["payload"]["prompt"],
        "acme secret plan"
    );
    assert_eq!(
        b_ws.next_event().await["payload"]["prompt"],
        "globex secret plan"
    );
    assert_eq!(
        b_sse.next_event().await.1["payload"]["prompt"],
        "globex secret plan"
    );
    a_ws.expect_silence(200).await;
    b_ws.expect_silence(50).await;

    for c in [&a, &b] {
        let msgs = c.get("/projects/pj/messages").await;
        assert_eq!(msgs.json.as_array().unwrap().len(), 1);
        let found = c.get("/search?q=secret").await;
        assert_eq!(found.json["results"].as_array().unwrap().len(), 1);
        assert_eq!(c.get("/projects").await.json.as_array().unwrap().len(), 1);
    }
    // An id of the other org is refused without revealing anything of its event.
    let stolen = json!({"id": ea.json["id"], "sender": "user:hank",
        "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "x", "prompt": "x"}});
    let r = b.post("/projects/pj/sessions/s/events", stolen).await;
    assert_eq!(r.status, 409);
    assert!(!r.json.to_string().contains("acme secret"), "{r:?}");
    assert_eq!(
        b.get("/team").await.json["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
});

both_stores!(callers_act_as_themselves, secured(), |srv| {
    let manu = srv.client_as("acme", "user:manu", Role::Member);
    manu.project_session("pj", "s").await;
    // Injects carry the caller's identity, whatever the body says.
    let r = manu
        .post(
            "/projects/pj/sessions/s/inject",
            json!({"content": "hi", "sender": "user:alice"}),
        )
        .await;
    assert_eq!(r.json["sender"], "user:manu");
    // Posting as another human is refused; as a coding agent, allowed.
    let r = manu.prompt("pj", "s", "user:alice", "spoof").await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = manu
        .post("/projects/pj/sessions/s/events", json!({"sender": "agent:claude", "payload": {"hook_event_name": "Stop", "session_id": "c"}}))
        .await;
    assert_eq!(r.status, 201);
    // The driver seat is claimed as the caller.
    let r = manu.post("/projects/pj/sessions/s/driver", json!({})).await;
    assert_eq!(r.json["driver"], "user:manu", "{r:?}");
    manu.post("/projects/pj/sessions/s/handoff", json!({}))
        .await;
    let r = manu
        .post(
            "/projects/pj/sessions/s/driver",
            json!({"driver": "user:alice"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = manu
        .post(
            "/projects/pj/sessions/s/driver",
            json!({"driver": "agent:dean"}),
        )
        .await;
    assert_eq!(r.json["driver"], "agent:dean");
    // Named agents post as themselves and their subagents only.
    let dean = srv.client_as("acme", "agent:dean", Role::Member);
    let post = |sender: &str| json!({"sender": sender, "source": "agent", "payload": {"type": "advice", "content": "index it"}});
    assert_eq!(
        dean.post("/projects/pj/sessions/s/events", post("agent:dean.dbt"))
            .await
            .status,
        201
    );
    assert_eq!(
        dean.post("/projects/pj/sessions/s/events", post("agent:sage"))
            .await
            .status,
        403
    );
    // A service may post as anyone (the Slack bridge).
    let bridge = srv.client_as("acme", "agent:slack-bridge", Role::Service);
    assert_eq!(
        bridge
            .prompt("pj", "s", "user:alice", "from slack")
            .await
            .status,
        201
    );
    let team = manu.get("/team").await;
    let ids: Vec<&str> = team.json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["participant_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"user:manu") && ids.contains(&"agent:dean"),
        "{ids:?}"
    );
});

both_stores!(restricted_projects_and_the_admin_role, secured(), |srv| {
    let admin = srv.client_as("acme", "user:boss", Role::Admin);
    let manu = srv.client_as("acme", "user:manu", Role::Member);
    let alice = srv.client_as("acme", "user:alice", Role::Member);
    admin.project_session("secret", "s").await;
    admin.project_session("open", "s").await;
    admin
        .prompt("secret", "s", "user:boss", "launch codes")
        .await;
    // Members cannot change visibility or membership.
    assert_eq!(
        manu.post(
            "/projects/secret/visibility",
            json!({"visibility": "members"})
        )
        .await
        .status,
        403
    );
    assert_eq!(
        manu.post(
            "/projects/secret/members",
            json!({"participant_id": "user:manu"})
        )
        .await
        .status,
        403
    );
    let r = admin
        .post(
            "/projects/secret/visibility",
            json!({"visibility": "members"}),
        )
        .await;
    assert_eq!(r.json, json!({"ok": true, "visibility": "members"}));
    assert_eq!(
        admin
            .post(
                "/projects/secret/members",
                json!({"participant_id": "user:manu", "role": "dev"})
            )
            .await
            .json,
        json!({"ok": true})
    );
    assert_eq!(
        admin
            .post(
                "/projects/secret/members",
                json!({"participant_id": "not an id"})
            )
            .await
            .status,
        400
    );
    let m = admin.get("/projects/secret/members").await;
    assert_eq!(
        m.json,
        json!({"members": [{"participant_id": "user:manu", "role": "dev"}]})
    );

    assert_eq!(
        manu.get("/projects/secret/messages")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for path in [
        "/projects/secret",
        "/projects/secret/messages",
        "/projects/secret/sessions/s",
    ] {
        let r = alice.get(path).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.error(), "Forbidden: project is restricted to members");
    }
    assert!(alice.ws("/projects/secret/ws").await.is_err());
    assert_eq!(
        alice
            .sse("/projects/secret/events", None)
            .await
            .err()
            .unwrap()
            .status,
        403
    );
    assert_eq!(
        alice
            .prompt("secret", "s", "user:alice", "let me in")
            .await
            .status,
        403
    );
    let names: Vec<String> = alice
        .get("/projects")
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["open"]);
    assert_eq!(
        alice.get("/search?q=launch").await.json["results"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        alice.get("/search?q=launch&project=secret").await.status,
        403
    );
    assert_eq!(
        manu.get("/search?q=launch").await.json["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Removing a member (percent-encoded participant id) closes the door again.
    let r = admin.delete("/projects/secret/members/user%3Amanu").await;
    assert_eq!(r.json, json!({"ok": true}));
    assert_eq!(manu.get("/projects/secret").await.status, 403);
});

both_stores!(
    write_rate_limits_answer_429_with_retry_after,
    Options {
        rate_limits: RateLimits {
            writes_per_minute: 5,
            injects_per_minute: 2
        },
        ..Options::default()
    },
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await; // two writes
        let inject = json!({"content": "hi", "sender": "slack:k"});
        assert_eq!(
            c.post("/projects/pj/sessions/s/inject", inject.clone())
                .await
                .status,
            201
        );
        assert_eq!(
            c.post("/projects/pj/sessions/s/inject", inject.clone())
                .await
                .status,
            201
        );
        let r = c
            .post("/projects/pj/sessions/s/inject", inject.clone())
            .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.error(), "Rate limit exceeded: too many injects");
        assert!(r.headers.get("retry-after").is_some());
        let r = c.prompt("pj", "s", "user:manu", "x").await;
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.error(), "Rate limit exceeded");
        let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs));
        // Reads are not limited.
        assert_eq!(c.get("/projects/pj/messages").await.status, 200);
    }
);
