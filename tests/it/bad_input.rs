//! Bad input gets a 4xx JSON error naming the field, never a 500, and leaves the store
//! as it was.

use serde_json::{Value, json};

use crate::both_stores;
use crate::support::Options;
use crate::support::client::{Client, enc};

/// Everything a user can see of the floor, to check that a rejected request changed nothing.
async fn snapshot(c: &Client) -> Value {
    let mut projects = c.get("/projects").await.json;
    for p in projects.as_array_mut().unwrap() {
        let name = p["name"].as_str().unwrap().to_owned();
        p["sessions"] = c
            .get(&format!("/projects/{}/sessions", enc(&name)))
            .await
            .json;
        p["events"] = c
            .get(&format!("/projects/{}/messages", enc(&name)))
            .await
            .json;
    }
    projects
}

both_stores!(
    malformed_and_mistyped_bodies_are_400s_naming_the_field,
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        c.prompt("pj", "s", "user:manu", "the only event").await;
        let before = snapshot(&c).await;
        let ev = "/projects/pj/sessions/s/events";
        let cases: Vec<(&str, &str, &str)> = vec![
            (ev, "{\"sender\": ", "malformed JSON"),
            (ev, "not json", "malformed JSON"),
            (
                ev,
                "{\"sender\": \"user:manu\", \"payload\": {}} trailing",
                "malformed JSON",
            ),
            (ev, "", "request body must be a JSON object"),
            (ev, "[]", "request body must be a JSON object"),
            (ev, "\"text\"", "request body must be a JSON object"),
            (ev, r#"{"payload": {}}"#, "missing field `sender`"),
            (ev, r#"{"sender": "user:manu"}"#, "missing field `payload`"),
            (
                ev,
                r#"{"sender": 42, "payload": {}}"#,
                "sender: invalid type",
            ),
            (
                ev,
                r#"{"sender": "manu", "payload": {}}"#,
                "sender: participant id \"manu\" must start with",
            ),
            (
                ev,
                r#"{"sender": "user:CAPS", "payload": {}}"#,
                "sender: participant id",
            ),
            (
                ev,
                r#"{"sender": "user:manu", "payload": "text"}"#,
                "payload: must be a JSON object",
            ),
            (
                ev,
                r#"{"sender": "user:manu", "payload": {"hook_event_name": 7, "session_id": "c"}}"#,
                "payload.hook_event_name: must be a string",
            ),
            (
                ev,
                r#"{"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "c", "prompt": ["x"]}}"#,
                "payload.prompt: must be a string",
            ),
            (
                ev,
                r#"{"sender": "user:manu", "payload": {"hook_event_name": "PreToolUse", "session_id": "c", "tool_name": "Bash"}}"#,
                "payload.tool_input: is required",
            ),
            (
                ev,
                r#"{"sender": "user:manu", "payload": {"hook_event_name": "Stop", "session_id": "c", "stop_hook_active": "yes"}}"#,
                "payload.stop_hook_active: must be a boolean",
            ),
            (
                ev,
                r#"{"id": "not-a-uuid", "sender": "user:manu", "payload": {}}"#,
                "id: ",
            ),
            (
                ev,
                r#"{"timestamp": "yesterday", "sender": "user:manu", "payload": {}}"#,
                "timestamp: \"yesterday\" is not an RFC 3339 timestamp",
            ),
            (
                ev,
                r#"{"source": "system", "sender": "user:manu", "payload": {"content": "x"}}"#,
                "source: system events are written by the floor itself",
            ),
            (
                ev,
                r#"{"source": "telepathy", "sender": "user:manu", "payload": {}}"#,
                "source: unknown variant",
            ),
            ("/projects", r#"{"name": 5}"#, "name: invalid type"),
            ("/projects", r#"{"name": ""}"#, "name: must not be empty"),
            ("/projects", r#"{"name": "   "}"#, "name: must not be empty"),
            (
                "/projects",
                r#"{"name": "a\nb"}"#,
                "name: must not contain control characters",
            ),
            (
                "/projects",
                r#"{"name": "ok", "tags": "data"}"#,
                "tags: invalid type",
            ),
            (
                "/projects",
                r#"{"name": "ok", "tags": ["Data"]}"#,
                "tags[0]:",
            ),
            (
                "/projects/pj/sessions",
                r#"{"driver": "user:manu"}"#,
                "missing field `name`",
            ),
            (
                "/projects/pj/sessions",
                r#"{"name": "x", "driver": "boss"}"#,
                "driver: participant id",
            ),
            (
                "/projects/pj/sessions/s/inject",
                r#"{"content": 1}"#,
                "content: invalid type",
            ),
            (
                "/projects/pj/sessions/s/driver",
                r#"{"driver": "nobody"}"#,
                "driver: participant id",
            ),
            (
                "/projects/pj/sessions/s/label",
                r#"{}"#,
                "missing field `label`",
            ),
            (
                "/projects/pj/visibility",
                r#"{"visibility": "public"}"#,
                "visibility: unknown variant",
            ),
            (
                "/projects/pj/members",
                r#"{"participant_id": ""}"#,
                "participant_id: participant id is empty",
            ),
            (
                "/projects/pj/rename",
                r#"{"name": ""}"#,
                "name: must not be empty",
            ),
            ("/projects/pj/rename", "{bad", "malformed JSON"),
        ];
        for (path, body, want) in cases {
            let r = c.post_raw(path, body.to_owned()).await;
            assert_eq!(r.status, 400, "{path} {body}: {r:?}");
            assert!(
                r.error().contains(want),
                "{path} {body}: expected {want:?} in {:?}",
                r.error()
            );
        }
        let long = json!({"name": "x".repeat(201)});
        assert_eq!(c.post("/projects", long).await.status, 400);
        let r = c.get("/projects/pj/events?limit=lots").await;
        assert_eq!(r.status, 400);
        assert!(r.error().contains("limit"), "{r:?}");
        assert_eq!(
            c.get("/projects/pj/messages?since=yesterday").await.status,
            400
        );
        assert_eq!(
            c.get("/projects/pj/sessions/s/events?limit=5&before=2026|nope")
                .await
                .status,
            400
        );
        assert_eq!(c.get("/decisions?limit=x").await.status, 400);
        assert_eq!(
            before,
            snapshot(&c).await,
            "a rejected request changed the store"
        );
    }
);

both_stores!(
    oversized_bodies_are_413,
    Options {
        max_body: 4096,
        ..Options::default()
    },
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        let big = json!({"sender": "user:manu", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "c", "prompt": "x".repeat(5000)}});
        let r = c.post("/projects/pj/sessions/s/events", big).await;
        assert_eq!(r.status, 413, "{r:?}");
        assert_eq!(r.error(), "Request body too large");
        assert_eq!(c.get("/projects/pj/messages").await.json, json!([]));
    }
);

both_stores!(names_with_unicode_spaces_and_reserved_characters, |srv| {
    let c = srv.client();
    for name in ["my project", "a/b", "100%", "ü-ñ 日本", "what?", "x#y"] {
        let r = c.post("/projects", json!({"name": name})).await;
        assert_eq!(r.status, 201, "{name}: {r:?}");
        let p = enc(name);
        assert_eq!(c.get(&format!("/projects/{p}")).await.json["name"], name);
        let r = c
            .post(&format!("/projects/{p}/sessions"), json!({"name": name}))
            .await;
        assert_eq!(r.status, 201, "{name}: {r:?}");
        let r = c.prompt(name, name, "user:manu", "hi").await;
        assert_eq!(r.status, 201, "{name}: {r:?}");
        assert_eq!(r.json["project"], name);
        assert_eq!(r.json["session"], name);
        let mut ws = c
            .ws(&format!("/projects/{p}/sessions/{p}/ws?after=0"))
            .await
            .unwrap();
        assert_eq!(ws.next_event().await["session"], name);
    }
});

both_stores!(unknown_routes_and_methods, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let r = c.get("/nope").await;
    assert_eq!((r.status, r.error()), (404, "Not found"));
    assert_eq!(c.get("/projects/pj/sessions/s/nope").await.status, 404);
    let r = c.method("PUT", "/projects/pj").await;
    assert_eq!((r.status, r.error()), (405, "Method not allowed"));
    assert_eq!(
        c.method("DELETE", "/projects/pj/sessions/s/events")
            .await
            .status,
        405
    );
    assert_eq!(c.method("PATCH", "/projects").await.status, 405);
    assert_eq!(
        c.post("/projects/nope/sessions/s/events", json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        c.prompt("pj", "nope", "user:manu", "x").await.error(),
        "Session not found"
    );
});
