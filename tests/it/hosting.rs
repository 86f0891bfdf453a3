//! What `polaris agent run` reads from the floor besides streams and its lease: its roster,
//! long-polled with an ETag, and its read positions, saved only under the lease's current
//! term.

use serde_json::{Value, json};

use crate::both_stores;
use crate::support::{Options, dataset_agents};
use polaris_runtime::auth::Role;

fn with_agents() -> Options {
    Options {
        secret: true,
        ..Options::default()
    }
}

/// The dataset's agents, known to the floor but run by nobody in this process: these
/// tests play the `agent run` process themselves.
async fn load_agents(srv: &crate::support::TestServer) {
    srv.load_agents(&dataset_agents()).await;
}

const ROSTER: &str = "/agents/agent:dean/roster";

fn seats_on(roster: &Value, project: &str) -> Vec<String> {
    roster["seats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["project"] == project)
        .map(|s| s["agent"].as_str().unwrap().to_owned())
        .collect()
}

both_stores!(
    a_roster_poll_wakes_when_the_agent_joins_a_floor,
    with_agents(),
    |srv| {
        load_agents(&srv).await;
        let dean = srv.client_as("default", "agent:dean", Role::Member);
        let manu = srv.client_as("default", "user:manu", Role::Member);
        let first = dean.get(ROSTER).await;
        assert_eq!(first.status, 200, "{first:?}");
        let etag = first.headers["etag"].to_str().unwrap().to_owned();
        assert!(
            first.json["agents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["id"] == "agent:sean"),
            "the router needs every agent of the org: {}",
            first.json
        );
        assert!(seats_on(&first.json, "forecasts").is_empty());

        // Unchanged: the same ETag, and a conditional request answers 304 when its wait ends.
        let same = dean
            .get_with(&format!("{ROSTER}?wait_ms=50"), &[("if-none-match", &etag)])
            .await;
        assert_eq!(same.status, 304, "{same:?}");

        // A poll waiting on the floor wakes when Dean is invited somewhere.
        let poll = {
            let dean = dean.clone();
            let etag = etag.clone();
            tokio::spawn(async move {
                dean.get_with(
                    &format!("{ROSTER}?wait_ms=20000"),
                    &[("if-none-match", &etag)],
                )
                .await
            })
        };
        let r = manu.post("/projects", json!({"name": "forecasts"})).await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = manu
            .post("/projects/forecasts/agents", json!({"agent": "agent:dean"}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let woke = tokio::time::timeout(std::time::Duration::from_secs(10), poll)
            .await
            .expect("the poll wakes long before its wait ends")
            .unwrap();
        assert_eq!(woke.status, 200, "{woke:?}");
        assert_ne!(woke.headers["etag"].to_str().unwrap(), etag);
        assert!(
            seats_on(&woke.json, "forecasts").contains(&"agent:dean".to_owned()),
            "{}",
            woke.json
        );

        // Only Dean, a service or an admin; an unknown agent is 404; waits are bounded.
        let sean = srv.client_as("default", "agent:sean", Role::Member);
        let r = sean.get(ROSTER).await;
        assert_eq!(r.status, 403, "{r:?}");
        let r = manu.get(ROSTER).await;
        assert_eq!(r.status, 403, "{r:?}");
        let admin = srv.client_as("default", "user:root", Role::Admin);
        assert_eq!(admin.get(ROSTER).await.status, 200);
        assert_eq!(admin.get("/agents/agent:nobody/roster").await.status, 404);
        let r = dean.get(&format!("{ROSTER}?wait_ms=600000")).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("wait_ms"), "{}", r.error());
    }
);

both_stores!(
    read_positions_move_only_under_the_current_term,
    with_agents(),
    |srv| {
        load_agents(&srv).await;
        let dean = srv.client_as("default", "agent:dean", Role::Member);
        let manu = srv.client_as("default", "user:manu", Role::Member);
        let p = manu.post("/projects", json!({"name": "forecasts"})).await;
        let project = p.json["id"].as_str().unwrap().to_owned();
        manu.post("/projects/forecasts/agents", json!({"agent": "agent:dean"}))
            .await;
        let lease = "/agents/agent:dean/lease";
        let t1 = dean
            .post(lease, json!({"holder": "one", "ttl_ms": 60_000}))
            .await
            .json["term"]
            .as_i64()
            .unwrap();

        // No saved position yet: just before Dean's join (seq 1 on this floor).
        let at = |who: &'static str| {
            let dean = dean.clone();
            let project = project.clone();
            async move {
                dean.get(&format!("/agents/{who}/cursors?project_id={project}"))
                    .await
            }
        };
        let r = at("agent:dean").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["after"], 0, "{r:?}");
        // A subagent starts at its parent's join.
        assert_eq!(at("agent:dean.snowflake").await.json["after"], 0);

        let save = |term: i64, seq: i64| {
            let dean = dean.clone();
            let project = project.clone();
            async move {
                dean.method_json(
                    "PUT",
                    "/agents/agent:dean.snowflake/cursors",
                    json!({"term": term, "cursors": [{"project_id": project, "seq": seq}]}),
                )
                .await
            }
        };
        assert_eq!(save(t1, 3).await.status, 204);
        assert_eq!(at("agent:dean.snowflake").await.json["after"], 3);

        // Another instance takes Dean over: the old term moves nothing any more.
        let r = dean
            .method_json("DELETE", lease, json!({"holder": "one", "term": t1}))
            .await;
        assert_eq!(r.status, 204, "{r:?}");
        let t2 = dean
            .post(lease, json!({"holder": "two", "ttl_ms": 60_000}))
            .await
            .json["term"]
            .as_i64()
            .unwrap();
        let r = save(t1, 9).await;
        assert_eq!(r.status, 409, "{r:?}");
        assert!(r.error().starts_with("term:"), "{}", r.error());
        assert_eq!(at("agent:dean.snowflake").await.json["after"], 3);
        assert_eq!(save(t2, 9).await.status, 204);
        assert_eq!(at("agent:dean.snowflake").await.json["after"], 9);

        // Bad input names the field; nothing is saved.
        let put = |body: Value| {
            let dean = dean.clone();
            async move {
                dean.method_json("PUT", "/agents/agent:dean/cursors", body)
                    .await
            }
        };
        let cases = [
            (
                json!({"term": t2, "cursors": [{"project_id": "0190a0a0-0000-7000-8000-000000000000", "seq": 1}]}),
                404,
                "cursors[0].project_id",
            ),
            (
                json!({"term": t2, "cursors": [{"project_id": project, "seq": -1}]}),
                400,
                "cursors[0].seq",
            ),
            (json!({"term": 0, "cursors": []}), 400, "term"),
            (
                json!({"term": t2, "cursors": [{"project_id": project}]}),
                400,
                "seq",
            ),
        ];
        for (body, status, field) in cases {
            let r = put(body.clone()).await;
            assert_eq!(r.status, status, "{body}: {r:?}");
            assert!(r.error().contains(field), "{body}: {}", r.error());
        }
        assert_eq!(at("agent:dean").await.json["after"], 0);

        // Another org's Dean cannot read or move this org's positions.
        let other = srv.client_as("other", "agent:dean", Role::Member);
        let r = other
            .get(&format!("/agents/agent:dean/cursors?project_id={project}"))
            .await;
        assert_eq!(r.status, 404, "{r:?}");
        // Sean cannot act for Dean.
        let sean = srv.client_as("default", "agent:sean", Role::Member);
        let r = sean
            .method_json(
                "PUT",
                "/agents/agent:dean/cursors",
                json!({"term": t2, "cursors": []}),
            )
            .await;
        assert_eq!(r.status, 403, "{r:?}");
    }
);
