//! Two nodes on one PostgreSQL: what one node changes, the other hears at once (NOTIFY on
//! one channel) instead of at its next timeout or never: a roster long-poll on node B wakes
//! when node A invites the agent; node B's cached project follows a rename made on node A.
//! PostgreSQL only: SQLite is one node.

use std::time::Duration;

use polaris_runtime::auth::Role;
use serde_json::json;

use crate::support::{Backend, Options, TestServer, dataset_agents};

fn options() -> Options {
    Options {
        secret: true,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_changes_the_other_hears_at_once() {
    let Some(a) = TestServer::start(Backend::Postgres, options()).await else {
        return;
    };
    let b = a.second_node().await;
    for node in [&a, &b] {
        node.load_agents(&dataset_agents()).await;
    }
    let manu_a = a.client_as("default", "user:manu", Role::Member);
    let manu_b = b.client_as("default", "user:manu", Role::Member);
    let dean_b = b.client_as("default", "agent:dean", Role::Member);
    assert_eq!(
        manu_a
            .post("/projects", json!({"name": "forecasts"}))
            .await
            .status,
        201
    );

    // Node B: Dean's roster, then a poll waiting 20 s for it to change.
    let roster = "/agents/agent:dean/roster";
    let first = dean_b.get(roster).await;
    let etag = first.headers["etag"].to_str().unwrap().to_owned();
    let poll = {
        let dean_b = dean_b.clone();
        tokio::spawn(async move {
            dean_b
                .get_with(
                    &format!("{roster}?wait_ms=20000"),
                    &[("if-none-match", &etag)],
                )
                .await
        })
    };
    // Node A invites Dean: node B's poll answers long before its wait ends.
    let r = manu_a
        .post("/projects/forecasts/agents", json!({"agent": "agent:dean"}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let woke = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("node B heard node A's invite")
        .unwrap();
    assert_eq!(woke.status, 200, "{woke:?}");
    assert!(
        woke.json["seats"].to_string().contains("forecasts"),
        "{}",
        woke.json
    );

    // Node B caches the project; node A renames it; node B follows at once.
    assert_eq!(manu_b.get("/projects/forecasts").await.status, 200);
    let r = manu_a
        .post("/projects/forecasts/rename", json!({"name": "forecasting"}))
        .await;
    assert!(r.status < 300, "{r:?}");
    crate::support::eventually(10, || async {
        let old = manu_b.get("/projects/forecasts").await.status;
        let new = manu_b.get("/projects/forecasting").await.status;
        (old == 404 && new == 200).then_some(())
    })
    .await;
    // And events posted through node B carry the new name.
    manu_b.project_session("forecasting", "s").await;
    let p = manu_b
        .prompt("forecasting", "s", "user:manu", "after the rename")
        .await;
    assert_eq!(p.status, 201, "{p:?}");
    assert_eq!(p.json["project"], "forecasting");
    b.finish().await;
    a.finish().await;
}

/// A floor's subscribers on node B get what node A commits, in order, at once: node A
/// announces its commits, node B reads them from the store. Node B commits nothing here,
/// so nothing else could have told its subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_on_one_node_reach_subscribers_on_the_other() {
    let Some(a) = TestServer::start(Backend::Postgres, Options::default()).await else {
        return;
    };
    let b = a.second_node().await;
    let (ca, cb) = (a.client(), b.client());
    ca.project_session("pj", "s-1").await;
    let mut floor_ws = cb
        .ws("/projects/pj/ws?after=0")
        .await
        .expect("ws on node B");
    let mut session_ws = cb
        .ws("/projects/pj/sessions/s-1/ws?after=0")
        .await
        .expect("session ws on node B");
    for i in 0..20 {
        let r = ca.prompt("pj", "s-1", "user:manu", &format!("a{i}")).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    for ws in [&mut floor_ws, &mut session_ws] {
        let got: Vec<String> = ws
            .take(20)
            .await
            .iter()
            .map(|e| e["payload"]["prompt"].as_str().unwrap_or("").to_owned())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        assert_eq!(got, expected);
    }
    // Live, too: one more on A, long after B's streams caught up.
    ca.prompt("pj", "s-1", "user:manu", "late").await;
    assert_eq!(floor_ws.next_event().await["payload"]["prompt"], "late");
    assert_eq!(session_ws.next_event().await["payload"]["prompt"], "late");
    b.finish().await;
    a.finish().await;
}

/// The LISTEN connections, killed from the database side: each node makes its own again,
/// and what node A committed while node B was not listening still reaches B's subscriber,
/// in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_connection_killed_by_the_database_heals() {
    let Some(a) = TestServer::start(Backend::Postgres, Options::default()).await else {
        return;
    };
    let b = a.second_node().await;
    let polaris_config::DatabaseUrl::Postgres(url) = a.database_url() else {
        unreachable!("PostgreSQL only")
    };
    let admin = sqlx::PgPool::connect(url.expose()).await.expect("connect");
    let listeners = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_all(&pool)
        .await
        .expect("pg_stat_activity")
    };
    let before = crate::support::eventually(10, || {
        let pids = listeners(admin.clone());
        async move {
            let pids = pids.await;
            (pids.len() == 2).then_some(pids)
        }
    })
    .await;

    let (ca, cb) = (a.client(), b.client());
    ca.project_session("pj", "s").await;
    let mut ws = cb.ws("/projects/pj/ws?after=0").await.expect("ws on B");
    ca.prompt("pj", "s", "user:manu", "before").await;
    assert_eq!(ws.next_event().await["payload"]["prompt"], "before");

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&admin)
    .await
    .expect("terminate");
    assert_eq!(killed, [true, true]);
    for i in 0..5 {
        let r = ca.prompt("pj", "s", "user:manu", &format!("gap {i}")).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let got: Vec<String> = ws
        .take(5)
        .await
        .iter()
        .map(|e| e["payload"]["prompt"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(got, (0..5).map(|i| format!("gap {i}")).collect::<Vec<_>>());

    // Both nodes listen again, on new connections.
    crate::support::eventually(10, || {
        let pids = listeners(admin.clone());
        let before = before.clone();
        async move {
            let pids = pids.await;
            (pids.len() == 2 && pids.iter().all(|p| !before.contains(p))).then_some(())
        }
    })
    .await;
    ca.prompt("pj", "s", "user:manu", "after").await;
    assert_eq!(ws.next_event().await["payload"]["prompt"], "after");
    admin.close().await;
    b.finish().await;
    a.finish().await;
}

/// Every connection of the node's pool, killed from the database side while idle (a
/// database restart or a proxy timing connections out looks the same): the node checks a
/// connection that sat idle before handing it out, so the writes and reads that follow
/// succeed on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_connections_killed_while_idle_cost_nothing() {
    let Some(a) = TestServer::start(Backend::Postgres, Options::default()).await else {
        return;
    };
    let polaris_config::DatabaseUrl::Postgres(url) = a.database_url() else {
        unreachable!("PostgreSQL only")
    };
    let admin = sqlx::PgPool::connect(url.expose()).await.expect("connect");
    let c = a.client();
    c.project_session("pj", "s").await;
    assert_eq!(c.prompt("pj", "s", "user:manu", "before").await.status, 201);
    // Reads at once, so the pool holds several connections.
    let reads = (0..32).map(|_| c.get("/projects/pj/events?after=0&limit=100"));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.status, 200, "{r:?}");
    }

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'polaris'",
    )
    .fetch_all(&admin)
    .await
    .expect("terminate");
    assert!(
        !killed.is_empty() && killed.iter().all(|k| *k),
        "{killed:?}"
    );
    // Idle for longer than the pool trusts a connection without checking it (one second).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    for i in 0..5 {
        let r = c
            .prompt("pj", "s", "user:manu", &format!("after {i}"))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = c.get("/projects/pj/events?after=0&limit=100").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json["events"].as_array().map(Vec::len), Some(6), "{r:?}");
    admin.close().await;
    a.finish().await;
}

/// Three nodes, writers on each at once, a floor subscriber on each: every subscriber sees
/// every event once, in `seq` order; a reader resumes from its cursor on another node (SSE
/// `Last-Event-ID`); and another org's subscriber on any node sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_writers_everywhere_every_subscriber_sees_all_once_in_order() {
    let Some(a) = TestServer::start(Backend::Postgres, options()).await else {
        return;
    };
    let (b, c) = (a.second_node().await, a.second_node().await);
    let nodes = [&a, &b, &c];
    let acme: Vec<_> = nodes
        .iter()
        .map(|n| n.client_as("acme", "user:manu", Role::Member))
        .collect();
    let globex: Vec<_> = nodes
        .iter()
        .map(|n| n.client_as("globex", "user:eve", Role::Member))
        .collect();
    acme[0].project_session("pj", "s").await;
    // Same project name in another org, with a subscriber on every node.
    globex[1].project_session("pj", "s").await;
    let mut subs = Vec::new();
    for cl in &acme {
        subs.push(cl.ws("/projects/pj/ws?after=0").await.expect("ws"));
    }
    let mut others = Vec::new();
    for cl in &globex {
        others.push(cl.ws("/projects/pj/ws?after=0").await.expect("ws"));
    }

    const PER_NODE: usize = 30;
    let writers = acme.iter().enumerate().map(|(i, cl)| {
        let cl = cl.clone();
        async move {
            for k in 0..PER_NODE {
                let r = cl
                    .prompt("pj", "s", "user:manu", &format!("n{i}-{k}"))
                    .await;
                assert_eq!(r.status, 201, "{r:?}");
            }
        }
    });
    futures::future::join_all(writers).await;
    let total = PER_NODE * nodes.len();
    let mut first: Option<Vec<String>> = None;
    for ws in &mut subs {
        let got = ws.take(total).await;
        let seqs: Vec<i64> = got.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=total as i64).collect::<Vec<_>>(),
            "every event once, in order"
        );
        let texts: Vec<String> = got
            .iter()
            .map(|e| e["payload"]["prompt"].as_str().unwrap().to_owned())
            .collect();
        // Each writer's own events keep their order.
        for i in 0..nodes.len() {
            let mine: Vec<&String> = texts
                .iter()
                .filter(|t| t.starts_with(&format!("n{i}-")))
                .collect();
            let want: Vec<String> = (0..PER_NODE).map(|k| format!("n{i}-{k}")).collect();
            assert_eq!(mine.len(), PER_NODE);
            assert!(mine.iter().zip(&want).all(|(a, b)| *a == b));
        }
        match &first {
            None => first = Some(texts),
            Some(f) => assert_eq!(f, &texts, "the same order on every node"),
        }
    }

    // Resume on another node: read 10 on A's SSE, go on from seq 10 on C.
    let mut sse = acme[0]
        .sse("/projects/pj/events?after=0", None)
        .await
        .expect("sse");
    for want in 1..=10 {
        assert_eq!(sse.next_event().await.0, want);
    }
    let mut resumed = acme[2]
        .sse("/projects/pj/events", Some(10))
        .await
        .expect("sse on C");
    for want in 11..=total as i64 {
        assert_eq!(resumed.next_event().await.0, want);
    }

    // The other org: its own event arrives on every node, and nothing of acme's before it.
    let r = globex[2].prompt("pj", "s", "user:eve", "globex only").await;
    assert_eq!(r.status, 201, "{r:?}");
    for ws in &mut others {
        let e = ws.next_event().await;
        assert_eq!(e["payload"]["prompt"], "globex only", "{e}");
        assert_eq!(e["seq"], 1);
    }
    c.finish().await;
    b.finish().await;
    a.finish().await;
}
