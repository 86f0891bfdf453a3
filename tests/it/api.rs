//! The original's routes, their status codes and JSON shapes, plus the additions.

use serde_json::json;

use crate::both_stores;
use crate::support::client::enc;

both_stores!(projects_crud_and_rename, |srv| {
    let c = srv.client();
    let r = c
        .post("/projects", json!({"name": "pj", "tags": ["data", "etl"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["name"], "pj");
    assert_eq!(r.json["visibility"], "org");
    assert_eq!(r.json["tags"], json!(["data", "etl"]));
    assert!(r.json["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.post("/projects", json!({"name": "pj"})).await.status, 409);
    assert_eq!(c.get("/projects/pj").await.json["name"], "pj");
    assert_eq!(c.get("/projects/nope").await.status, 404);
    c.post("/projects", json!({"name": "other"})).await;
    let list = c.get("/projects").await;
    let names: Vec<_> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["pj", "other"]);

    // Rename keeps the floor: events before and after share one seq space.
    c.post("/projects/pj/sessions", json!({"name": "s"})).await;
    assert_eq!(
        c.prompt("pj", "s", "user:manu", "before").await.json["seq"],
        1
    );
    let r = c
        .post("/projects/pj/rename", json!({"name": "renamed"}))
        .await;
    assert_eq!(
        r.json,
        json!({"status": "renamed", "oldName": "pj", "newName": "renamed"})
    );
    assert_eq!(
        c.post("/projects/renamed/rename", json!({"name": "other"}))
            .await
            .status,
        409
    );
    assert_eq!(c.get("/projects/pj").await.status, 404);
    let e = c.prompt("renamed", "s", "user:manu", "after").await;
    assert_eq!(e.status, 201, "{e:?}");
    assert_eq!(e.json["seq"], 2);
    assert_eq!(e.json["project"], "renamed");
    let all = c.get("/projects/renamed/messages").await;
    assert_eq!(all.json.as_array().unwrap().len(), 2);
});

both_stores!(sessions_list_with_counters_driver_and_agent, |srv| {
    let c = srv.client();
    c.post("/projects", json!({"name": "pj"})).await;
    let r = c
        .post(
            "/projects/pj/sessions",
            json!({"name": "s-7a3f", "driver": "user:manu", "agent": "agent:claude"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json["driver"], "user:manu");
    assert_eq!(r.json["agent"], "agent:claude");
    assert_eq!(r.json["label"], json!(null));
    assert_eq!(
        c.post("/projects/pj/sessions", json!({"name": "s-7a3f"}))
            .await
            .status,
        409
    );
    assert_eq!(
        c.post("/projects/nope/sessions", json!({"name": "x"}))
            .await
            .status,
        404
    );
    c.post("/projects/pj/sessions", json!({"name": "s-b2e1"}))
        .await;
    c.prompt("pj", "s-7a3f", "user:manu", "one").await;
    c.prompt("pj", "s-7a3f", "user:manu", "two").await;
    c.post(
        "/projects/pj/sessions/s-7a3f/events",
        json!({"sender": "agent:claude", "payload": {"hook_event_name": "Stop", "session_id": "cc", "stop_response": "done"}}),
    )
    .await;
    let list = c.get("/projects/pj/sessions").await;
    assert_eq!(list.status, 200);
    let s = &list.json[0];
    assert_eq!(s["name"], "s-7a3f");
    assert_eq!(s["prompt_count"], 2);
    assert_eq!(s["event_count"], 3);
    assert!(s["last_activity"].is_string());
    assert_eq!(list.json[1]["prompt_count"], 0);
    assert_eq!(list.json[1]["last_activity"], json!(null));
    assert_eq!(
        c.get("/projects/pj/sessions/s-b2e1").await.json["name"],
        "s-b2e1"
    );
    assert_eq!(
        c.get("/projects/pj/sessions/none").await.error(),
        "Session not found"
    );
});

both_stores!(events_carry_seq_and_keep_undeclared_fields, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let payload = json!({
        "hook_event_name": "PostToolUse", "session_id": "cc-1", "tool_name": "Bash",
        "tool_input": {"command": "ls"}, "tool_response": {"stdout": "a\nb"}, "tool_use_id": "toolu_1",
        "permission_mode": "default"
    });
    let r = c
        .post(
            "/projects/pj/sessions/s/events",
            json!({"sender": "agent:claude", "payload": payload}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json["seq"], 1);
    assert_eq!(r.json["source"], "hook");
    assert_eq!(r.json["kind"], "PostToolUse");
    assert_eq!(r.json["payload"], payload);
    // Any hook Claude Code sends is accepted.
    for (i, name) in ["Notification", "SubagentStop", "PreCompact", "SessionStart"]
        .iter()
        .enumerate()
    {
        let r = c
            .post("/projects/pj/sessions/s/events", json!({"sender": "agent:claude", "payload": {"hook_event_name": name, "session_id": "cc-1"}}))
            .await;
        assert_eq!(r.status, 201, "{name}: {r:?}");
        assert_eq!(r.json["seq"], i as i64 + 2);
    }
    let page = c.get("/projects/pj/events?after=0&limit=100").await;
    assert_eq!(
        page.json["events"][0]["payload"]["tool_response"]["stdout"],
        "a\nb"
    );
    assert_eq!(page.json["events"][0]["payload"]["tool_use_id"], "toolu_1");
});

both_stores!(idempotent_retry_with_client_id_and_timestamp, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let id = uuid::Uuid::new_v4();
    let body = json!({"id": id, "timestamp": "2026-06-05T10:00:00.123Z", "sender": "user:manu",
        "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": "hello"}});
    let first = c.post("/projects/pj/sessions/s/events", body.clone()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json["id"], id.to_string());
    assert_eq!(first.json["timestamp"], "2026-06-05T10:00:00.123Z");
    assert_ne!(first.json["received_at"], first.json["timestamp"]);
    let again = c.post("/projects/pj/sessions/s/events", body.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json, first.json);
    // Same id with another body still returns the stored event, writes nothing.
    let mut other = body.clone();
    other["payload"]["prompt"] = json!("changed");
    let r = c.post("/projects/pj/sessions/s/events", other).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["payload"]["prompt"], "hello");
    assert_eq!(
        c.get("/projects/pj/sessions/s/messages")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        c.get("/projects/pj/sessions/s").await.json["event_count"],
        1
    );
    // The same id in another project of the org is a conflict, not a silent success.
    c.project_session("pj2", "s").await;
    let r = c.post("/projects/pj2/sessions/s/events", body).await;
    assert_eq!(r.status, 409, "{r:?}");
    // The next new event continues the sequence without a gap.
    assert_eq!(
        c.prompt("pj", "s", "user:manu", "next").await.json["seq"],
        2
    );
});

both_stores!(paged_reads_by_seq_and_original_cursor, |srv| {
    let c = srv.client();
    c.project_session("pj", "a").await;
    c.post("/projects/pj/sessions", json!({"name": "b"})).await;
    for i in 0..25 {
        let s = if i % 2 == 0 { "a" } else { "b" };
        assert_eq!(
            c.prompt("pj", s, "user:manu", &format!("p{i}"))
                .await
                .status,
            201
        );
    }
    // Project pages by seq, oldest first.
    let p1 = c.get("/projects/pj/events?after=0&limit=10").await;
    let seqs: Vec<i64> = p1.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(p1.json["next_after"], 10);
    assert_eq!(p1.json["has_more"], true);
    let p3 = c.get("/projects/pj/events?after=20&limit=10").await;
    assert_eq!(p3.json["events"].as_array().unwrap().len(), 5);
    assert_eq!(p3.json["has_more"], false);
    // Session pages by seq.
    let sa = c
        .get("/projects/pj/sessions/a/events?after=0&limit=100")
        .await;
    assert_eq!(sa.json["events"].as_array().unwrap().len(), 13);
    assert!(
        sa.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["session"] == "a")
    );
    // The original's newest-first pages with nextCursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/projects/pj/sessions/a/events?limit=5".to_owned(),
            Some(cur) => format!("/projects/pj/sessions/a/events?limit=5&before={}", enc(cur)),
        };
        let page = c.get(&path).await;
        assert_eq!(page.status, 200, "{page:?}");
        for e in page.json["events"].as_array().unwrap() {
            seen.push(e["payload"]["prompt"].as_str().unwrap().to_owned());
        }
        match page.json["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25)
        .rev()
        .filter(|i| i % 2 == 0)
        .map(|i| format!("p{i}"))
        .collect();
    assert_eq!(seen, expected);
    // `since` on project messages: strictly later client timestamps.
    let all = c.get("/projects/pj/messages").await;
    let ts = all.json[19]["timestamp"].as_str().unwrap().to_owned();
    let later = c
        .get(&format!("/projects/pj/messages?since={}", enc(&ts)))
        .await;
    assert!(
        later
            .json
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["timestamp"].as_str().unwrap() > ts.as_str())
    );
});

both_stores!(
    inject_driver_handoff_label_are_recorded_on_the_floor,
    |srv| {
        let c = srv.client();
        c.post("/projects", json!({"name": "pj"})).await;
        c.post(
            "/projects/pj/sessions",
            json!({"name": "s", "driver": "user:manu"}),
        )
        .await;
        let r = c
            .post(
                "/projects/pj/sessions/s/inject",
                json!({"content": "Use RS256", "sender": "slack:krishna"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json["source"], "inject");
        assert_eq!(r.json["sender"], "slack:krishna");
        assert_eq!(
            r.json["payload"],
            json!({"type": "inject", "content": "Use RS256", "sender": "slack:krishna", "target": "s"})
        );
        assert_eq!(
            c.post("/projects/pj/sessions/s/inject", json!({"content": "x"}))
                .await
                .status,
            400
        );
        assert_eq!(
            c.post(
                "/projects/pj/sessions/s/inject",
                json!({"content": "", "sender": "user:a"})
            )
            .await
            .status,
            400
        );

        // The seat is taken: 409 before anything is written.
        let r = c
            .post(
                "/projects/pj/sessions/s/driver",
                json!({"driver": "user:alice"}),
            )
            .await;
        assert_eq!(r.status, 409);
        let r = c.post("/projects/pj/sessions/s/handoff", json!({})).await;
        assert_eq!(r.json, json!({"status": "open", "session": "s"}));
        assert_eq!(
            c.get("/projects/pj/sessions/s").await.json["driver"],
            json!(null)
        );
        assert_eq!(
            c.post("/projects/pj/sessions/s/handoff", json!({}))
                .await
                .status,
            400
        );
        let r = c
            .post(
                "/projects/pj/sessions/s/driver",
                json!({"driver": "agent:dean"}),
            )
            .await;
        assert_eq!(
            r.json,
            json!({"status": "claimed", "driver": "agent:dean", "session": "s"})
        );
        assert_eq!(
            c.get("/projects/pj/sessions/s").await.json["driver"],
            "agent:dean"
        );
        assert_eq!(
            c.post(
                "/projects/pj/sessions/s/label",
                json!({"label": "ETL retry fix"})
            )
            .await
            .json,
            json!({"ok": true})
        );
        assert_eq!(
            c.get("/projects/pj/sessions/s").await.json["label"],
            "ETL retry fix"
        );
        assert_eq!(
            c.post("/projects/pj/sessions/s/label", json!({"label": 5}))
                .await
                .status,
            400
        );

        let kinds: Vec<String> = c
            .get("/projects/pj/sessions/s/messages")
            .await
            .json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["source"].as_str().unwrap(),
                    e["kind"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "inject:message",
                "system:handoff",
                "system:driver",
                "system:label"
            ]
        );
    }
);

both_stores!(system_feed_is_created_on_first_post, |srv| {
    let c = srv.client();
    let r = c
        .post(
            "/projects/_system/sessions/_system/events",
            json!({"sender": "user:manu", "payload": {"hook_event_name": "Stop", "session_id": "_system", "stop_response": "Device connected: laptop (darwin)"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        c.get("/projects/_system/sessions/_system").await.status,
        200
    );
    // Other sessions of _system are not auto-created.
    assert_eq!(
        c.prompt("_system", "other", "user:manu", "x").await.status,
        404
    );
    assert_eq!(
        c.post("/projects/_system/rename", json!({"name": "sys"}))
            .await
            .status,
        400
    );
});

both_stores!(annotations_decisions_and_search, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let e1 = c
        .prompt(
            "pj",
            "s",
            "user:manu",
            "add exponential backoff to the S3 upload",
        )
        .await;
    c.prompt("pj", "s", "user:manu", "rotate the signing keys weekly")
        .await;
    let stop = c
        .post("/projects/pj/sessions/s/events", json!({"sender": "agent:claude", "payload": {
            "hook_event_name": "Stop", "session_id": "cc", "stop_response": "Added retries with jitter to uploads",
            "last_assistant_message": "Added retries with jitter to uploads"}}))
        .await;
    let id1 = e1.json["id"].as_str().unwrap();
    let r = c
        .post(
            "/projects/pj/sessions/s/annotations",
            json!({"event_id": id1, "kind": "tag", "value": "infra"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = c
        .post(
            "/projects/pj/sessions/s/annotations",
            json!({"kind": "decision", "value": "RS256 everywhere"}),
        )
        .await;
    let decision_id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.post(
            "/projects/pj/sessions/s/annotations",
            json!({"kind": "like"})
        )
        .await
        .status,
        400
    );
    let foreign = uuid::Uuid::new_v4();
    assert_eq!(
        c.post(
            "/projects/pj/sessions/s/annotations",
            json!({"kind": "star", "event_id": foreign})
        )
        .await
        .status,
        400
    );
    let list = c.get("/projects/pj/sessions/s/annotations").await;
    assert_eq!(list.json["annotations"].as_array().unwrap().len(), 2);
    assert_eq!(list.json["annotations"][0]["kind"], "tag");
    let d = c.get("/decisions").await;
    assert_eq!(d.json["decisions"][0]["value"], "RS256 everywhere");
    assert_eq!(d.json["decisions"][0]["project"], "pj");

    let s = c.get("/search?q=retry").await;
    let results = s.json["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{s:?}");
    assert_eq!(results[0]["event"]["id"], stop.json["id"]);
    assert!(
        results[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("<b>retries</b>"),
        "{s:?}"
    );
    let s = c
        .get(&format!("/search?q={}", enc("backoff or keys")))
        .await;
    assert_eq!(s.json["results"].as_array().unwrap().len(), 2);
    let s = c
        .get(&format!("/search?q={}", enc("\"signing keys\"")))
        .await;
    assert_eq!(s.json["results"].as_array().unwrap().len(), 1);
    let s = c.get("/search?q=backoff&tag=infra").await;
    assert_eq!(s.json["results"].as_array().unwrap().len(), 1);
    let s = c.get("/search?q=backoff&tag=other").await;
    assert_eq!(s.json["results"].as_array().unwrap().len(), 0);
    let s = c
        .get("/search?q=uploads&sender=agent:claude&source=hook")
        .await;
    assert_eq!(s.json["results"].as_array().unwrap().len(), 1);
    assert_eq!(c.get("/search?q=%20").await.status, 400);
    assert_eq!(c.get("/search").await.status, 400);

    assert_eq!(
        c.delete(&format!("/annotations/{decision_id}")).await.json,
        json!({"ok": true})
    );
    assert_eq!(
        c.get("/decisions").await.json["decisions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(c.delete("/annotations/not-a-uuid").await.status, 400);
});

both_stores!(team_lists_people_who_acted, |srv| {
    let c = srv.client();
    assert_eq!(c.get("/team").await.json, json!({"members": []}));
    assert_eq!(c.get("/status").await.json["ok"], true);
    let h = c.get("/healthz").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json["ok"], true);
});

both_stores!(batches_answer_each_event_in_order, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let ev = |i: usize| {
        json!({"id": uuid::Uuid::new_v4(), "sender": "user:manu",
        "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("p{i}")}})
    };
    let events = vec![
        ev(0),
        json!({"sender": "nobody", "payload": {}}),
        ev(2),
        ev(3),
    ];
    let r = c
        .post(
            "/projects/pj/sessions/s/events/batch",
            json!({"events": events}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let res = r.json["results"].as_array().unwrap();
    let statuses: Vec<i64> = res.iter().map(|x| x["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 201, 201]);
    assert!(
        res[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("events[1].sender:"),
        "{res:?}"
    );
    let seqs: Vec<i64> = [0, 2, 3]
        .iter()
        .map(|&i| res[i]["event"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    // The same batch again writes nothing new.
    let again = c
        .post(
            "/projects/pj/sessions/s/events/batch",
            json!({"events": events}),
        )
        .await;
    let statuses: Vec<i64> = again.json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 400, 200, 200]);
    assert_eq!(
        c.get("/projects/pj/sessions/s").await.json["event_count"],
        3
    );
    assert_eq!(
        c.post(
            "/projects/pj/sessions/none/events/batch",
            json!({"events": []})
        )
        .await
        .status,
        404
    );
    let too_many: Vec<_> = (0..1001).map(ev).collect();
    assert_eq!(
        c.post(
            "/projects/pj/sessions/s/events/batch",
            json!({"events": too_many})
        )
        .await
        .status,
        400
    );
});

both_stores!(
    a_batch_commits_in_its_order_while_its_session_starts,
    |srv| {
        // Each round's session is not live yet: its first event starts it through the
        // floor while the rest of the batch is already on its way.
        let c = srv.client();
        c.post("/projects", json!({"name": "pj"})).await;
        for round in 0..10 {
            let s = format!("s{round}");
            c.post("/projects/pj/sessions", json!({"name": s})).await;
            let events: Vec<_> = (0..200)
                .map(|i| json!({"sender": "user:manu", "payload": {"hook_event_name": "Notification", "session_id": "cc", "n": i}}))
                .collect();
            let r = c
                .post(
                    &format!("/projects/pj/sessions/{s}/events/batch"),
                    json!({"events": events}),
                )
                .await;
            assert_eq!(r.status, 200, "{r:?}");
            let stored = c
                .get(&format!("/projects/pj/sessions/{s}/messages"))
                .await
                .json;
            let order: Vec<i64> = stored
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["payload"]["n"].as_i64().unwrap())
                .collect();
            assert_eq!(order, (0..200).collect::<Vec<_>>(), "round {round}");
        }
    }
);
