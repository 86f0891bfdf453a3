//! Actors under stress: group commit with many writers, crashes of floor and session
//! actors, idle sessions stopping and coming back, restarts of the whole server.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::support::{Client, Options, eventually};
use polaris_registry::ParticipantId;
use polaris_runtime::ProjectKey;

async fn key(c: &Client, project: &str) -> ProjectKey {
    let p = c.get(&format!("/projects/{project}")).await;
    ProjectKey {
        id: p.json["id"].as_str().unwrap().parse().unwrap(),
        org: "default".into(),
        name: project.into(),
    }
}

/// `n` prompts with client-chosen ids, each retried until it gets a 2xx (a 503 while an
/// actor restarts is allowed; losing an acknowledged event is not). Returns the ids.
fn writer(
    c: &Client,
    project: &str,
    session: &str,
    n: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (c, p, s) = (c.clone(), project.to_owned(), session.to_owned());
    tokio::spawn(async move {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let body = json!({"id": id, "sender": "user:manu",
                "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("{i}")}});
            loop {
                let r = c
                    .post(&format!("/projects/{p}/sessions/{s}/events"), body.clone())
                    .await;
                match r.status {
                    200 | 201 => break,
                    503 => tokio::time::sleep(Duration::from_millis(5)).await,
                    other => panic!("unexpected {other}: {r:?}"),
                }
            }
            ids.push(id);
        }
        ids
    })
}

async fn check_floor(c: &Client, project: &str, acked: &[String]) {
    let events = c.get(&format!("/projects/{project}/messages")).await.json;
    let events = events.as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "seq must be gap-free"
    );
    let stored: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(stored.len(), events.len(), "an event was stored twice");
    for id in acked {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged event {id} is missing"
        );
    }
}

both_stores!(many_writers_one_session_group_commit, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let mut ws = c.ws("/projects/pj/ws").await.unwrap();
    let writers: Vec<_> = (0..16).map(|_| writer(&c, "pj", "s", 25)).collect();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert_eq!(acked.len(), 400);
    check_floor(&c, "pj", &acked).await;
    let got: Vec<i64> = ws
        .take(400)
        .await
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(got, (1..=400).collect::<Vec<_>>());
    let s = c.get("/projects/pj/sessions/s").await;
    assert_eq!(
        (
            s.json["event_count"].as_i64(),
            s.json["prompt_count"].as_i64()
        ),
        (Some(400), Some(400))
    );
});

both_stores!(
    a_crashed_floor_restarts_from_the_store_and_loses_nothing,
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        let k = key(&c, "pj").await;
        assert_eq!(
            c.prompt("pj", "s", "user:manu", "first").await.json["seq"],
            1
        );
        let (floor_before, _) = srv.runtime.actor_ids(k.id, "s").await;
        let floor_before = floor_before.expect("floor running");
        let mut ws = c.ws("/projects/pj/ws?after=1").await.unwrap();

        let writers: Vec<_> = (0..4).map(|_| writer(&c, "pj", "s", 50)).collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        srv.runtime.crash_floor(&k).await.unwrap();
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        let floor_after =
            eventually(10, || async { srv.runtime.actor_ids(k.id, "s").await.0 }).await;
        assert_ne!(floor_before, floor_after, "the floor was not restarted");
        // seq continues after the restart.
        let next = c.prompt("pj", "s", "user:manu", "after the crash").await;
        assert_eq!(next.json["seq"], 202);
        check_floor(&c, "pj", &acked).await;
        // A live subscriber rode through the restart: every event, once, in order.
        let got: Vec<i64> = ws
            .take(201)
            .await
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(got, (2..=202).collect::<Vec<_>>());
    }
);

both_stores!(a_crashed_session_is_restarted_by_its_floor, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let k = key(&c, "pj").await;
    c.prompt("pj", "s", "user:manu", "one").await;
    let (_, before) = srv.runtime.actor_ids(k.id, "s").await;
    let before = before.expect("session running");
    srv.runtime.crash_session(&k, "s").await.unwrap();
    let after = eventually(10, || async {
        srv.runtime
            .actor_ids(k.id, "s")
            .await
            .1
            .filter(|id| *id != before)
    })
    .await;
    assert_ne!(before, after);
    assert_eq!(c.prompt("pj", "s", "user:manu", "two").await.json["seq"], 2);
});

both_stores!(
    idle_sessions_stop_and_come_back,
    Options {
        session_idle: Duration::from_secs(2),
        ..Options::default()
    },
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        for i in 0..20 {
            c.post("/projects/pj/sessions", json!({"name": format!("t{i}")}))
                .await;
            c.prompt("pj", &format!("t{i}"), "user:manu", "hi").await;
        }
        assert!(srv.runtime.live_actors().1 > 0);
        eventually(10, || async {
            (srv.runtime.live_actors().1 == 0).then_some(())
        })
        .await;
        // Back on demand, with its state from the store.
        c.post("/projects/pj/sessions/t3/label", json!({"label": "back"}))
            .await;
        assert_eq!(
            c.get("/projects/pj/sessions/t3").await.json["label"],
            "back"
        );
        assert_eq!(
            c.prompt("pj", "t3", "user:manu", "again").await.json["seq"],
            22
        );
    }
);

both_stores!(
    a_session_in_use_is_not_swept,
    Options {
        session_idle: Duration::from_secs(1),
        ..Options::default()
    },
    |srv| {
        // Posts to a live session go straight to its actor, past the floor that sweeps
        // idle ones: the sweep must still count them as use. Three idle timeouts of
        // steady posting keep the one actor; then, left alone, it stops.
        let c = srv.client();
        c.project_session("pj", "s").await;
        let k = key(&c, "pj").await;
        c.prompt("pj", "s", "user:manu", "first").await;
        let (_, first) = srv.runtime.actor_ids(k.id, "s").await;
        let first = first.expect("session running");
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut n = 1;
        while std::time::Instant::now() < until {
            n += 1;
            let r = c.prompt("pj", "s", "user:manu", &format!("p{n}")).await;
            assert_eq!(r.json["seq"], n);
            assert_eq!(srv.runtime.actor_ids(k.id, "s").await.1, Some(first));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eventually(10, || async {
            srv.runtime
                .actor_ids(k.id, "s")
                .await
                .1
                .is_none()
                .then_some(())
        })
        .await;
    }
);

both_stores!(a_restarted_server_continues_the_sequence, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    for i in 0..3 {
        c.prompt("pj", "s", "user:manu", &format!("{i}")).await;
    }
    srv.restart().await;
    let c = srv.client();
    assert_eq!(
        c.prompt("pj", "s", "user:manu", "after restart").await.json["seq"],
        4
    );
    let mut ws = c.ws("/projects/pj/ws?after=0").await.unwrap();
    assert_eq!(ws.take(4).await.len(), 4);
});

both_stores!(a_lost_search_index_is_rebuilt_from_the_events, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    c.prompt(
        "pj",
        "s",
        "user:manu",
        "the flux capacitor needs calibration",
    )
    .await;
    assert_eq!(
        c.get("/search?q=capacitor").await.json["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    srv.stop().await;
    srv.store.close().await;
    srv.wipe_search_index().await;
    srv.reopen().await;
    // Nothing new is posted: the indexer finds the lag itself when it starts.
    let c = srv.client();
    let found = c.get("/search?q=capacitor").await;
    assert_eq!(
        found.json["results"].as_array().unwrap().len(),
        1,
        "{found:?}"
    );
    c.prompt("pj", "s", "user:manu", "another capacitor").await;
    assert_eq!(
        c.get("/search?q=capacitor").await.json["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
});

both_stores!(the_session_actor_keeps_the_seat_the_store_has, |srv| {
    let c = srv.client();
    let r = c.post("/projects", json!({"name": "pj"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = c
        .post(
            "/projects/pj/sessions",
            json!({"name": "s", "driver": "user:manu", "agent": "agent:claude"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let k = key(&c, "pj").await;
    let seat = |driver: Option<&str>, label: Option<&str>| polaris_runtime::Seat {
        driver: driver.map(|d| ParticipantId::parse(d).unwrap()),
        agent: Some(ParticipantId::parse("agent:claude").unwrap()),
        label: label.map(str::to_owned),
    };
    // Loaded from the row when the actor starts.
    assert_eq!(
        srv.runtime.session_seat(&k, "s").await,
        Some(seat(Some("user:manu"), None))
    );

    // Eight claims of an empty seat at once: one wins, the others hear who has it.
    assert_eq!(
        c.post("/projects/pj/sessions/s/handoff", json!({}))
            .await
            .status,
        200
    );
    let claims: Vec<_> = (0..8)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let who = format!("user:u{i}");
                let r = c
                    .post("/projects/pj/sessions/s/driver", json!({"driver": who}))
                    .await;
                (who, r)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in claims {
        let (who, r) = t.await.unwrap();
        match r.status {
            200 => winners.push(who),
            409 => assert!(
                r.json["error"]
                    .as_str()
                    .unwrap()
                    .contains("already has a driver"),
                "{r:?}"
            ),
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let row = c.get("/projects/pj/sessions/s").await.json;
    assert_eq!(row["driver"], winners[0].as_str());
    c.post(
        "/projects/pj/sessions/s/label",
        json!({"label": "auth refactor"}),
    )
    .await;
    assert_eq!(
        srv.runtime.session_seat(&k, "s").await,
        Some(seat(Some(&winners[0]), Some("auth refactor")))
    );
    // The floor's record agrees: one driver event among the claims.
    let events = c.get("/projects/pj/messages").await.json;
    let drivers = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "driver")
        .count();
    assert_eq!(drivers, 1);

    // A restarted actor loads the same state again.
    let (_, before) = srv.runtime.actor_ids(k.id, "s").await;
    srv.runtime.crash_session(&k, "s").await.unwrap();
    eventually(10, || async {
        srv.runtime
            .actor_ids(k.id, "s")
            .await
            .1
            .filter(|id| Some(*id) != before)
    })
    .await;
    assert_eq!(
        srv.runtime.session_seat(&k, "s").await,
        Some(seat(Some(&winners[0]), Some("auth refactor")))
    );
    // A session that does not exist has no actor.
    assert_eq!(srv.runtime.session_seat(&k, "nope").await, None);
});
