//! Agents' leases over HTTP (`/agents/:agent/lease`): one holder at a time, a term that
//! grows with every new holder, contenders that wait and take over on release or expiry,
//! and events written under an old term refused by the floor.

use serde_json::{Value, json};

use crate::both_stores;
use crate::support::{Client, Options, dataset_agents};
use polaris_runtime::auth::Role;

fn with_agents() -> Options {
    Options {
        agents_file: Some(dataset_agents()),
        ..Options::default()
    }
}

fn take(holder: &str, ttl_ms: u64, wait_ms: u64) -> Value {
    json!({"holder": holder, "ttl_ms": ttl_ms, "wait_ms": wait_ms})
}

const LEASE: &str = "/agents/agent:dean/lease";

/// Renews Dean's lease as `holder` under `term`.
async fn renew(c: &Client, holder: &str, term: i64, ttl_ms: u64) -> crate::support::client::Resp {
    let body = json!({"holder": holder, "term": term, "ttl_ms": ttl_ms});
    c.method_json("PUT", LEASE, body).await
}

/// Releases Dean's lease as `holder` under `term`.
async fn release(c: &Client, holder: &str, term: i64) -> crate::support::client::Resp {
    c.method_json("DELETE", LEASE, json!({"holder": holder, "term": term}))
        .await
}

/// Project `p`, tagged `forecasts`, with session `s`.
async fn forecasts_floor(c: &Client) {
    c.post("/projects", json!({"name": "p", "tags": ["forecasts"]}))
        .await;
    c.project_session("p", "s").await;
}

/// An answer from `sender` under `term`, into session `s` of `p`.
async fn answer(
    c: &Client,
    sender: &str,
    term: Option<i64>,
    text: &str,
) -> crate::support::client::Resp {
    let mut body = json!({"sender": sender, "source": "agent",
        "payload": {"type": "message", "content": text}});
    if let Some(t) = term {
        body["term"] = json!(t);
    }
    c.post("/projects/p/sessions/s/events", body).await
}

both_stores!(
    a_lease_has_one_holder_and_a_term_that_grows,
    with_agents(),
    |srv| {
        let c = srv.client();
        assert_eq!(c.get(LEASE).await.status, 404, "never taken");

        let a = c.post(LEASE, take("node-a", 60_000, 0)).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json["holder"], "node-a");
        assert_eq!(a.json["term"], 1);
        assert_eq!(a.json["held"], true);

        // Someone else is told who holds it, and until when.
        let b = c.post(LEASE, take("node-b", 60_000, 0)).await;
        assert_eq!(b.status, 409, "{b:?}");
        assert_eq!(b.json["holder"], "node-a");
        assert_eq!(b.json["term"], 1);
        assert!(b.error().contains("held by node-a"), "{}", b.error());

        // The holder taking it again keeps its term; renewing keeps it too.
        assert_eq!(
            c.post(LEASE, take("node-a", 60_000, 0)).await.json["term"],
            1
        );
        let renewed = renew(&c, "node-a", 1, 60_000).await;
        assert_eq!(renewed.status, 200, "{renewed:?}");
        assert_eq!(renewed.json["term"], 1);
        // Only the holder renews or releases.
        let not_yours = renew(&c, "node-b", 1, 60_000).await;
        assert_eq!(not_yours.status, 409);
        assert!(
            not_yours.error().starts_with("term:"),
            "{}",
            not_yours.error()
        );
        let not_yours = release(&c, "node-b", 1).await;
        assert_eq!(not_yours.status, 409);

        // Released: the next holder gets a new term, and the old one can no longer renew.
        let released = release(&c, "node-a", 1).await;
        assert_eq!(released.status, 204, "{released:?}");
        assert_eq!(c.get(LEASE).await.json["held"], false);
        let b = c.post(LEASE, take("node-b", 60_000, 0)).await;
        assert_eq!(b.status, 200);
        assert_eq!(b.json["term"], 2);
        let stale = renew(&c, "node-a", 1, 60_000).await;
        assert_eq!(stale.status, 409);
        // A holder coming back after a release starts a new term too.
        release(&c, "node-b", 2).await;
        assert_eq!(
            c.post(LEASE, take("node-b", 60_000, 0)).await.json["term"],
            3
        );
    }
);

both_stores!(
    a_waiting_contender_takes_a_released_lease_at_once,
    with_agents(),
    |srv| {
        let c = srv.client();
        let a = c.post(LEASE, take("node-a", 60_000, 0)).await;
        assert_eq!(a.json["term"], 1);
        // The standby waits up to 30 s for a lease that would expire only in 60 s: it can
        // have it only through the release.
        let standby = {
            let c = c.clone();
            tokio::spawn(async move { c.post(LEASE, take("node-b", 60_000, 30_000)).await })
        };
        // Released once the standby is waiting.
        crate::support::eventually(10, || async {
            (srv.runtime.leases().waiting() == 1).then_some(())
        })
        .await;
        let released = release(&c, "node-a", 1).await;
        assert_eq!(released.status, 204);
        // Woken by the release, not by its 30 s deadline (whose last try would also
        // succeed).
        let b = tokio::time::timeout(std::time::Duration::from_secs(10), standby)
            .await
            .expect("the standby was not woken by the release")
            .unwrap();
        assert_eq!(b.status, 200, "{b:?}");
        assert_eq!(srv.runtime.leases().waiting(), 0);
        assert_eq!(b.json["holder"], "node-b");
        assert_eq!(b.json["term"], 2);
    }
);

both_stores!(an_expired_lease_is_taken_over, with_agents(), |srv| {
    let c = srv.client();
    assert_eq!(c.post(LEASE, take("node-a", 300, 0)).await.json["term"], 1);
    // Node A stops renewing (it died); B, waiting, takes over once the lease expires.
    let b = c.post(LEASE, take("node-b", 60_000, 20_000)).await;
    assert_eq!(b.status, 200, "{b:?}");
    assert_eq!(b.json["term"], 2);
    // A's late renewal is refused: it must stop and take the lease again.
    let late = renew(&c, "node-a", 1, 300).await;
    assert_eq!(late.status, 409);
});

both_stores!(
    events_written_under_an_old_term_are_refused,
    with_agents(),
    |srv| {
        let c = srv.client();
        c.project_session("p", "s").await;
        assert_eq!(
            c.post(LEASE, take("node-a", 60_000, 0)).await.json["term"],
            1
        );
        let ok = answer(&c, "agent:dean", Some(1), "under term 1").await;
        assert_eq!(ok.status, 201, "{ok:?}");
        // The term is checked, not stored: the event reads as any other.
        assert!(ok.json.get("term").is_none());

        release(&c, "node-a", 1).await;
        assert_eq!(
            c.post(LEASE, take("node-b", 60_000, 0)).await.json["term"],
            2
        );
        // The old holder's queued answer, delivered late: refused, and nothing is written.
        let stale = answer(&c, "agent:dean", Some(1), "late, from the old holder").await;
        assert_eq!(stale.status, 409, "{stale:?}");
        assert!(stale.error().starts_with("term:"), "{}", stale.error());
        assert!(stale.error().contains("term 2"), "{}", stale.error());
        // The new holder writes, and so do its subagents, under the top-level agent's lease.
        assert_eq!(
            answer(&c, "agent:dean", Some(2), "from B").await.status,
            201
        );
        let sub = answer(&c, "agent:dean.snowflake", Some(2), "from B's subagent").await;
        assert_eq!(sub.status, 201, "{sub:?}");
        // An agent that never took a lease cannot claim a term.
        let none = answer(&c, "agent:sage", Some(1), "no lease").await;
        assert_eq!(none.status, 409);
        assert!(none.error().contains("holds no lease"), "{}", none.error());
        // Writes without a term are not fenced (a human's hook events, agents without leases).
        assert_eq!(answer(&c, "agent:sage", None, "unfenced").await.status, 201);
        // Only agents claim terms, and only positive ones.
        let user = c
            .post(
                "/projects/p/sessions/s/events",
                json!({"sender": "user:manu", "term": 2, "payload": {
                "hook_event_name": "UserPromptSubmit", "session_id": "cc-1", "prompt": "hi"}}),
            )
            .await;
        assert_eq!(user.status, 400);
        assert!(user.error().starts_with("term"), "{}", user.error());
        assert_eq!(answer(&c, "agent:dean", Some(0), "zero").await.status, 400);

        let texts: Vec<String> = c
            .get("/projects/p/sessions/s/messages")
            .await
            .json
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["payload"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            texts,
            ["under term 1", "from B", "from B's subagent", "unfenced"]
        );
    }
);

both_stores!(
    only_the_agent_a_service_or_an_admin_hold_its_lease,
    Options {
        secret: true,
        ..with_agents()
    },
    |srv| {
        let manu = srv.client_as("acme", "user:manu", Role::Member);
        let r = manu.post(LEASE, take("laptop", 60_000, 0)).await;
        assert_eq!(r.status, 403, "{r:?}");
        let dean = srv.client_as("acme", "agent:dean", Role::Member);
        assert_eq!(
            dean.post(LEASE, take("dean-1", 60_000, 0)).await.json["term"],
            1
        );
        // Sage may not hold Dean's lease, nor read it.
        let sage = srv.client_as("acme", "agent:sage", Role::Member);
        assert_eq!(sage.get(LEASE).await.status, 403);
        let service = srv.client_as("acme", "user:ops", Role::Service);
        let held = service.get(LEASE).await;
        assert_eq!(held.json["holder"], "dean-1");
        // Another org's Dean is another lease.
        let other = srv.client_as("globex", "agent:dean", Role::Member);
        assert_eq!(other.get(LEASE).await.status, 404);
        let r = other.post(LEASE, take("dean-globex", 60_000, 0)).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json["term"], 1);
        assert_eq!(dean.get(LEASE).await.json["holder"], "dean-1");
    }
);

both_stores!(bad_lease_requests_name_the_field, with_agents(), |srv| {
    let c = srv.client();
    let r = c
        .post("/agents/agent:ghost/lease", take("a", 1000, 0))
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = c
        .post("/agents/agent:dean.snowflake/lease", take("a", 1000, 0))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("subagent"), "{}", r.error());
    for (body, field) in [
        (take("a", 0, 0), "ttl_ms"),
        (take("a", 1000, 3_600_000), "wait_ms"),
        (take("", 1000, 0), "holder"),
        (json!({"holder": "a", "ttl_ms": 1000, "extra": 1}), "extra"),
        (json!({"holder": "a", "ttl_ms": "soon"}), "ttl_ms"),
        (json!({"ttl_ms": 1000}), "holder"),
    ] {
        let r = c.post(LEASE, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(r.error().contains(field), "{body}: {}", r.error());
    }
    let r = c
        .method_json("PUT", LEASE, json!({"holder": "a", "ttl_ms": 1000}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("term"), "{}", r.error());
});

both_stores!(
    the_floors_own_agents_run_only_under_their_lease,
    with_agents(),
    |srv| {
        use std::time::Duration;

        let c = srv.client();
        forecasts_floor(&c).await;
        // Another instance (a `polaris agent run`, say) holds Riley's lease before Riley is
        // defined here.
        let org: std::sync::Arc<str> = polaris_runtime::auth::DEFAULT_ORG.into();
        let leases = srv.runtime.leases();
        let outside = leases
            .acquire(
                &org,
                "agent:riley",
                "outside",
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outside.term, 1);
        let riley = json!({"id": "agent:riley", "name": "Riley", "tags": ["forecasts"],
        "skills": ["forecasting"]});
        assert_eq!(c.post("/agents", riley).await.status, 201);
        // The floor's host waits for the lease instead of starting a second Riley.
        crate::support::eventually(10, || async { (leases.waiting() == 1).then_some(()) }).await;
        let question = c
            .prompt("p", "s", "user:manu", "@riley what is the forecast?")
            .await;
        assert_eq!(question.status, 201, "{question:?}");
        let marker = c.prompt("p", "s", "user:manu", "marker").await;
        // The outside holder writes under its term meanwhile.
        assert_eq!(
            answer(&c, "agent:riley", Some(1), "from outside")
                .await
                .status,
            201
        );

        // It lets go: the host takes the lease under term 2, Riley starts here and answers
        // the question asked while it was held elsewhere, after the marker.
        assert!(
            leases
                .release(&org, "agent:riley", "outside", 1)
                .await
                .unwrap()
        );
        let id = question.json["id"].clone();
        let answered = crate::support::eventually(15, || async {
            let all = c.get("/projects/p/sessions/s/messages").await.json;
            all.as_array()
                .unwrap()
                .iter()
                .find(|e| e["payload"]["in_reply_to"] == id)
                .cloned()
        })
        .await;
        assert_eq!(answered["sender"], "agent:riley");
        assert!(answered["seq"].as_i64() > marker.json["seq"].as_i64());
        let lease = c.get("/agents/agent:riley/lease").await.json;
        assert_eq!(lease["term"], 2, "{lease}");
        assert!(
            lease["holder"]
                .as_str()
                .unwrap()
                .starts_with("polaris-serve/"),
            "{lease}"
        );
        // The old holder's late write is refused.
        assert_eq!(answer(&c, "agent:riley", Some(1), "late").await.status, 409);

        // A clean restart releases the lease, and the new host takes it at once (term 3).
        srv.restart().await;
        let c = srv.client();
        let lease = crate::support::eventually(10, || async {
            let l = c.get("/agents/agent:riley/lease").await.json;
            (l["term"] == 3 && l["held"] == true).then_some(l)
        })
        .await;
        assert_ne!(lease["holder"], "outside");
    }
);

/// Two nodes on one PostgreSQL: a release on one wakes a contender waiting on the other at
/// once (NOTIFY), long before the lease would have expired. PostgreSQL only: SQLite is one
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_one_node_wakes_a_contender_on_another() {
    use crate::support::{Backend, TestServer};
    use std::time::Duration;

    let Some(srv) = TestServer::start(Backend::Postgres, Options::default()).await else {
        return;
    };
    let store = polaris_runtime::Store::open(srv.database_url())
        .await
        .unwrap();
    let other = polaris_runtime::Runtime::start(store.clone(), Default::default())
        .await
        .unwrap();
    let org: std::sync::Arc<str> = "acme".into();
    let here = srv.runtime.leases();
    let there = other.leases();
    let minute = Duration::from_secs(60);
    let held = here
        .acquire(&org, "bridge:t1", "node-a", minute, Duration::ZERO)
        .await;
    assert_eq!(held.unwrap().unwrap().term, 1);
    // Node B waits 30 s for a lease that expires in 60: only the release can give it.
    let waiter = {
        let there = there.clone();
        let org = org.clone();
        tokio::spawn(async move {
            there
                .acquire(&org, "bridge:t1", "node-b", minute, Duration::from_secs(30))
                .await
        })
    };
    crate::support::eventually(10, || async { (there.waiting() == 1).then_some(()) }).await;
    assert!(here.release(&org, "bridge:t1", "node-a", 1).await.unwrap());
    // Woken by the release, not by its 30 s deadline (whose last try would also succeed).
    let taken = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was not woken by the release")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((taken.holder.as_str(), taken.term), ("node-b", 2));
    other.shutdown().await;
    store.close().await;
    srv.finish().await;
}

both_stores!(
    an_externally_hosted_agent_is_known_but_never_run_here,
    with_agents(),
    |srv| {
        let c = srv.client();
        forecasts_floor(&c).await;
        let ext =
            json!({"id": "agent:ext", "name": "Ext", "tags": ["forecasts"], "hosting": "external"});
        let r = c.post("/agents", ext).await;
        assert_eq!(r.status, 201, "{r:?}");
        assert_eq!(r.json["hosting"], "external");
        // A second agent, hosted here: once the host holds its lease, it has planned both.
        let here = json!({"id": "agent:riley", "name": "Riley", "tags": ["forecasts"]});
        assert_eq!(c.post("/agents", here).await.status, 201);
        crate::support::eventually(10, || async {
            let l = c.get("/agents/agent:riley/lease").await;
            (l.status == 200 && l.json["held"] == true).then_some(())
        })
        .await;
        // The floor knows Ext (it joined by tag), but serve never took its lease.
        let on_floor = c.get("/projects/p/agents").await.json["agents"].clone();
        assert!(
            on_floor
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["agent"] == "agent:ext"),
            "{on_floor}"
        );
        assert_eq!(c.get("/agents/agent:ext/lease").await.status, 404);
        // Its own process takes the lease and writes under it.
        let lease = c
            .post("/agents/agent:ext/lease", take("ext-1", 60_000, 0))
            .await;
        assert_eq!(lease.json["term"], 1);
        assert_eq!(
            answer(&c, "agent:ext", Some(1), "from my own process")
                .await
                .status,
            201
        );
        // Only a top-level agent says where it runs.
        let sub = json!({"id": "agent:ext.sub", "name": "Sub", "parent": "agent:ext", "hosting": "external"});
        let r = c.post("/agents", sub).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("hosting"), "{}", r.error());
    }
);
