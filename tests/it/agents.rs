//! Named agents on the floor service: the registry (file ∪ table), tags, joins and
//! leaves as events, invitations and removals.

use serde_json::{Value, json};

use crate::both_stores;
use crate::support::{Options, dataset_agents};
use polaris_runtime::auth::Role;

fn with_agents() -> Options {
    Options {
        agents_file: Some(dataset_agents()),
        ..Options::default()
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| a[key].as_str().unwrap().to_owned())
        .collect()
}

async fn floor_log(c: &crate::support::Client, project: &str) -> Vec<String> {
    let events = c
        .get(&format!("/projects/{project}/events?after=0&limit=1000"))
        .await
        .json;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "system")
        .map(|e| {
            format!(
                "{} {} {}",
                e["kind"].as_str().unwrap(),
                e["payload"]["agent"].as_str().unwrap(),
                e["payload"]["reason"].as_str().unwrap()
            )
        })
        .collect()
}

both_stores!(
    the_file_registry_is_listed_with_its_source,
    with_agents(),
    |srv| {
        let c = srv.client();
        let all = c.get("/agents").await;
        assert_eq!(all.status, 200, "{all:?}");
        assert_eq!(ids(&all.json, "id").len(), 8);
        assert!(
            all.json
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["source"] == "yaml")
        );
        let dean = c.get("/agents/dean").await;
        assert_eq!(dean.json["display_name"], "Dean (Data)");
        assert_eq!(
            c.get("/agents/agent:dean.dbt").await.json["parent"],
            "agent:dean"
        );
        assert_eq!(c.get("/agents/nobody").await.status, 404);
        assert_eq!(c.get("/agents/Not%20An%20Id").await.status, 400);
    }
);

both_stores!(
    agents_join_floors_by_tag_with_join_and_leave_events,
    with_agents(),
    |srv| {
        let c = srv.client();
        let r = c
            .post("/projects", json!({"name": "warehouse", "tags": ["data"]}))
            .await;
        assert_eq!(r.status, 201);
        let on = c.get("/projects/warehouse/agents").await.json;
        let agents = ids(&on["agents"], "agent");
        assert_eq!(agents[0], "agent:dean");
        // Subagents come with their parent.
        for sub in [
            "agent:dean.snowflake",
            "agent:dean.spark",
            "agent:dean.dbt",
            "agent:dean.quality",
        ] {
            assert!(
                agents.contains(&sub.to_owned()),
                "{sub} missing from {agents:?}"
            );
        }
        assert_eq!(on["agents"][0]["reason"], "tag");
        assert_eq!(on["agents"][0]["detail"], "data");
        assert_eq!(floor_log(&c, "warehouse").await, ["join agent:dean tag"]);

        // A tag change: Sage joins (security), Dean leaves (data gone).
        let r = c
            .method_json(
                "PUT",
                "/projects/warehouse/tags",
                json!({"tags": ["security", "dbt"]}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["tags"], json!(["security", "dbt"]));
        let agents = ids(
            &c.get("/projects/warehouse/agents").await.json["agents"],
            "agent",
        );
        assert!(
            agents.contains(&"agent:sage".to_owned())
                && agents.contains(&"agent:dean.dbt".to_owned()),
            "{agents:?}"
        );
        assert!(!agents.contains(&"agent:dean".to_owned()));
        let log = floor_log(&c, "warehouse").await;
        assert!(log.contains(&"leave agent:dean tag".to_owned()), "{log:?}");
        assert!(log.contains(&"join agent:sage tag".to_owned()), "{log:?}");
        assert!(
            log.contains(&"join agent:dean.dbt tag".to_owned()),
            "{log:?}"
        );
        // Re-applying the same tags changes nothing.
        c.method_json(
            "PUT",
            "/projects/warehouse/tags",
            json!({"tags": ["security", "dbt"]}),
        )
        .await;
        assert_eq!(floor_log(&c, "warehouse").await, log);
        // Join events are floor-wide (no session) and sent by the agent.
        let events = c
            .get("/projects/warehouse/events?after=0&limit=10")
            .await
            .json;
        assert_eq!(events["events"][0]["session"], Value::Null);
        assert_eq!(events["events"][0]["sender"], "agent:dean");
    }
);

both_stores!(
    invitations_and_removals_stand_against_tags,
    with_agents(),
    |srv| {
        let c = srv.client();
        c.post("/projects", json!({"name": "site", "tags": ["website"]}))
            .await;
        let r = c
            .post("/projects/site/agents", json!({"agent": "sean"}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(
            c.post("/projects/site/agents", json!({"agent": "agent:sean"}))
                .await
                .status,
            409
        );
        assert_eq!(
            c.post("/projects/site/agents", json!({"agent": "agent:nobody"}))
                .await
                .status,
            404
        );
        // Martha joined by tag; removing her by hand keeps her off through tag syncs.
        assert_eq!(
            c.delete("/projects/site/agents/agent:martha").await.json,
            json!({"ok": true})
        );
        c.method_json(
            "PUT",
            "/projects/site/tags",
            json!({"tags": ["website", "marketing"]}),
        )
        .await;
        let agents = ids(
            &c.get("/projects/site/agents").await.json["agents"],
            "agent",
        );
        assert_eq!(agents, ["agent:sean"]);
        assert_eq!(
            c.delete("/projects/site/agents/agent:martha").await.status,
            404
        );
        // An invitation brings her back.
        assert_eq!(
            c.post("/projects/site/agents", json!({"agent": "martha"}))
                .await
                .status,
            201
        );
        let on = c.get("/projects/site/agents").await.json;
        let martha = on["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent"] == "agent:martha")
            .unwrap()
            .clone();
        assert_eq!(martha["reason"], "invite");
        let log = floor_log(&c, "site").await;
        assert_eq!(
            log,
            [
                "join agent:martha tag",
                "join agent:sean invite",
                "leave agent:martha removed",
                "join agent:martha invite"
            ]
        );
    }
);

both_stores!(
    table_agents_join_and_conflicts_are_reported,
    with_agents(),
    |srv| {
        let c = srv.client();
        c.post("/projects", json!({"name": "revops", "tags": ["revops"]}))
            .await;
        let riley = json!({"id": "agent:riley", "name": "Riley", "display_name": "Riley (RevOps)", "icon": "📈",
        "tags": ["revops"], "skills": ["forecasting"]});
        let r = c.post("/agents", riley.clone()).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json["source"], "table");
        assert_eq!(c.post("/agents", riley.clone()).await.status, 409);
        let agents = ids(
            &c.get("/projects/revops/agents").await.json["agents"],
            "agent",
        );
        assert!(agents.contains(&"agent:riley".to_owned()), "{agents:?}");
        // The same id as a file agent with other content is a conflict: reported, file wins.
        let r = c
            .post(
                "/agents",
                json!({"id": "agent:sage", "name": "Sage", "tags": ["revops"]}),
            )
            .await;
        assert_eq!(r.status, 201);
        assert_eq!(r.json["source"], "conflict");
        assert_eq!(r.json["display_name"], "Sage (Security)");
        assert_eq!(r.json["table_definition"]["tags"], json!(["revops"]));
        let agents = ids(
            &c.get("/projects/revops/agents").await.json["agents"],
            "agent",
        );
        assert!(
            !agents.contains(&"agent:sage".to_owned()),
            "the file's definition runs: {agents:?}"
        );
        // Replacing and deleting.
        let mut changed = riley.clone();
        changed["tags"] = json!(["sales"]);
        let r = c.method_json("PUT", "/agents/agent:riley", changed).await;
        assert_eq!(r.status, 200, "{r:?}");
        let agents = ids(
            &c.get("/projects/revops/agents").await.json["agents"],
            "agent",
        );
        assert!(!agents.contains(&"agent:riley".to_owned()));
        assert_eq!(
            c.method_json("PUT", "/agents/agent:other", riley.clone())
                .await
                .status,
            400
        );
        assert_eq!(
            c.delete("/agents/agent:riley").await.json,
            json!({"ok": true})
        );
        assert_eq!(c.delete("/agents/agent:riley").await.status, 404);
        assert_eq!(c.delete("/agents/agent:dean").await.status, 409);
        let log = floor_log(&c, "revops").await;
        assert_eq!(
            log,
            [
                "join agent:sean tag",
                "join agent:riley tag",
                "leave agent:riley tag"
            ]
        );
    }
);

both_stores!(
    agent_definitions_are_checked_like_the_file,
    with_agents(),
    |srv| {
        let c = srv.client();
        let bad = [
            (json!({"id": "user:riley", "name": "R"}), "id:"),
            (json!({"id": "agent:Riley", "name": "R"}), "id:"),
            (json!({"id": "agent:riley", "name": ""}), "name:"),
            (
                json!({"id": "agent:riley", "name": "R", "colour": "red"}),
                "unknown field `colour`",
            ),
            (
                json!({"id": "agent:x.y", "name": "R", "parent": "agent:x"}),
                "parent:",
            ),
            (
                json!({"id": "agent:riley", "name": "R", "tags": ["Sales"]}),
                "tags[0]:",
            ),
            (
                json!({"id": "agent:riley", "name": "R", "tools": {"database": {"url": "postgres://u:pw@db/x"}}}),
                "tools.database.url:",
            ),
            (
                json!({"id": "agent:riley", "name": "R", "max_hops": 0}),
                "max_hops:",
            ),
        ];
        for (body, want) in bad {
            let r = c.post("/agents", body.clone()).await;
            assert_eq!(r.status, 400, "{body}: {r:?}");
            assert!(
                r.error().contains(want),
                "{body}: expected {want:?} in {:?}",
                r.error()
            );
        }
        assert_eq!(
            ids(&c.get("/agents").await.json, "id").len(),
            8,
            "nothing was written"
        );
        // Secrets stay references in what the API returns.
        let r = c.post("/agents", json!({"id": "agent:dana", "name": "Dana", "tools": {"database": {"url": "env:DANA_DB"}}})).await;
        assert_eq!(r.json["tools"]["database"]["url"], "env:DANA_DB");
    }
);

both_stores!(
    agent_edits_need_the_admin_role,
    Options {
        secret: true,
        ..with_agents()
    },
    |srv| {
        let member = srv.client_as("acme", "user:manu", Role::Member);
        let admin = srv.client_as("acme", "user:boss", Role::Admin);
        let spec = json!({"id": "agent:riley", "name": "Riley"});
        assert_eq!(member.post("/agents", spec.clone()).await.status, 403);
        assert_eq!(admin.post("/agents", spec).await.status, 201);
        // Orgs see their own table agents only.
        let other = srv.client_as("globex", "user:hank", Role::Admin);
        assert_eq!(ids(&other.get("/agents").await.json, "id").len(), 8);
        assert_eq!(ids(&member.get("/agents").await.json, "id").len(), 9);
    }
);

both_stores!(agents_join_existing_floors_when_they_start, |srv| {
    let c = srv.client();
    c.post("/projects", json!({"name": "lake", "tags": ["analytics"]}))
        .await;
    assert_eq!(
        ids(
            &c.get("/projects/lake/agents").await.json["agents"],
            "agent"
        )
        .len(),
        0
    );
    srv.stop().await;
    srv.store.close().await;
    srv.opts.agents_file = Some(dataset_agents());
    srv.reopen().await;
    let c = srv.client();
    let agents = ids(
        &c.get("/projects/lake/agents").await.json["agents"],
        "agent",
    );
    assert_eq!(agents[0], "agent:dean");
    assert_eq!(floor_log(&c, "lake").await, ["join agent:dean tag"]);
});
