//! WebSocket and SSE: live delivery, resume from a cursor with no gap and no duplicate,
//! session scoping, heartbeats, slow subscribers.

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::support::client::WsItem;
use crate::support::{Client, Options};

fn seqs(events: &[serde_json::Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

/// Posts `n` prompts in the background, as fast as one client can.
fn post_in_background(
    c: &Client,
    project: &str,
    session: &str,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    let (c, p, s) = (c.clone(), project.to_owned(), session.to_owned());
    tokio::spawn(async move {
        for i in 0..n {
            let r = c.prompt(&p, &s, "user:manu", &format!("bg {i}")).await;
            assert_eq!(r.status, 201, "{r:?}");
        }
    })
}

both_stores!(websocket_live_then_resume_without_gap_or_duplicate, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let mut live = c.ws("/projects/pj/ws").await.unwrap();
    for i in 0..5 {
        c.prompt("pj", "s", "user:manu", &format!("p{i}")).await;
    }
    let got = live.take(5).await;
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5]);
    assert_eq!(got[0]["payload"]["prompt"], "p0");

    // Resume from seq 2 while events keep arriving: replay from the store, then live,
    // with every seq exactly once, in order.
    let bg = post_in_background(&c, "pj", "s", 60);
    let mut resumed = c.ws("/projects/pj/ws?after=2").await.unwrap();
    bg.await.unwrap();
    let got = resumed.take(63).await;
    assert_eq!(seqs(&got), (3..=65).collect::<Vec<_>>());
    resumed.expect_silence(200).await;
    // The first socket saw everything too.
    assert_eq!(seqs(&live.take(60).await), (6..=65).collect::<Vec<_>>());
});

both_stores!(websocket_session_scope_and_original_clients, |srv| {
    let c = srv.client();
    c.project_session("pj", "a").await;
    c.post("/projects/pj/sessions", json!({"name": "b"})).await;
    // An original client: no cursor, only what happens after it connects.
    c.prompt("pj", "a", "user:manu", "before").await;
    let mut only_a = c.ws("/projects/pj/sessions/a/ws").await.unwrap();
    c.prompt("pj", "b", "user:manu", "to b").await;
    c.prompt("pj", "a", "user:manu", "to a").await;
    let e = only_a.next_event().await;
    assert_eq!(e["payload"]["prompt"], "to a");
    assert_eq!(e["seq"], 3);
    only_a.expect_silence(150).await;
    // A session socket with a cursor replays only that session.
    let mut replay = c.ws("/projects/pj/sessions/b/ws?after=0").await.unwrap();
    assert_eq!(replay.next_event().await["payload"]["prompt"], "to b");
    replay.expect_silence(150).await;
    // Unknown projects and sessions are refused before the upgrade.
    assert!(c.ws("/projects/nope/ws").await.is_err());
    assert!(c.ws("/projects/pj/sessions/nope/ws").await.is_err());
    let plain = c.get("/projects/pj/ws").await;
    assert_eq!(plain.status, 400);
    assert_eq!(plain.error(), "WebSocket upgrade failed");
});

both_stores!(
    websocket_pings_keep_the_connection,
    Options {
        ws_ping: Duration::from_millis(100),
        ..Options::default()
    },
    |srv| {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let c = srv.client();
        c.project_session("pj", "s").await;
        let url = format!("{}/projects/pj/ws", c.base.replacen("http", "ws", 1));
        let (mut raw, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), raw.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(msg, Message::Ping(_)), "{msg:?}");
    }
);

both_stores!(sse_ids_last_event_id_after_and_session_scope, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    c.post("/projects/pj/sessions", json!({"name": "t"})).await;
    for i in 0..4 {
        c.prompt(
            "pj",
            if i == 2 { "t" } else { "s" },
            "user:manu",
            &format!("p{i}"),
        )
        .await;
    }
    let mut sse = c.sse("/projects/pj/events", Some(1)).await.unwrap();
    for want in 2..=4 {
        let (id, e) = sse.next_event().await;
        assert_eq!(id, want);
        assert_eq!(e["seq"], want);
    }
    c.prompt("pj", "s", "user:manu", "live").await;
    let (id, e) = sse.next_event().await;
    assert_eq!((id, e["payload"]["prompt"].as_str()), (5, Some("live")));

    let mut after = c.sse("/projects/pj/events?after=3", None).await.unwrap();
    assert_eq!(after.next_event().await.0, 4);
    let mut session = c
        .sse("/projects/pj/sessions/s/events?after=0", None)
        .await
        .unwrap();
    let ids: Vec<i64> = vec![
        session.next_event().await.0,
        session.next_event().await.0,
        session.next_event().await.0,
    ];
    assert_eq!(ids, [1, 2, 4]);
    assert_eq!(
        c.sse("/projects/nope/events", None)
            .await
            .err()
            .unwrap()
            .status,
        404
    );
    let bad = c.sse("/projects/pj/events", None).await;
    assert!(bad.is_ok());
    let r = crate::support::http()
        .get(format!("{}/projects/pj/events", c.base))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
});

both_stores!(
    sse_heartbeats,
    Options {
        sse_heartbeat: Duration::from_millis(100),
        ..Options::default()
    },
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        let mut sse = c.sse("/projects/pj/events", None).await.unwrap();
        let rec = sse
            .next_record(Duration::from_secs(5))
            .await
            .expect("a heartbeat");
        assert_eq!(rec.comment.as_deref(), Some("heartbeat"));
        assert!(rec.data.is_none());
    }
);

// A subscriber that does not read while the floor moves on falls out of the floor's
// small buffer; it is never waited for, and it still receives every event, in order,
// from the store.
both_stores!(
    slow_subscriber_catches_up_from_the_store,
    Options {
        subscriber_buffer: 16,
        ..Options::default()
    },
    |srv| {
        let c = srv.client();
        c.project_session("pj", "s").await;
        let mut slow = c.ws("/projects/pj/ws?after=0").await.unwrap();
        let mut fast = c.ws("/projects/pj/ws").await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|_| post_in_background(&c, "pj", "s", 100))
            .collect();
        // The fast one keeps up while the slow one is not read at all.
        let got = fast.take(400).await;
        assert_eq!(seqs(&got), (1..=400).collect::<Vec<_>>());
        for w in writers {
            w.await.unwrap();
        }
        let got = slow.take(400).await;
        assert_eq!(seqs(&got), (1..=400).collect::<Vec<_>>());
        slow.expect_silence(100).await;
    }
);

both_stores!(streams_end_cleanly_on_shutdown, |srv| {
    let c = srv.client();
    c.project_session("pj", "s").await;
    let mut ws = c.ws("/projects/pj/ws").await.unwrap();
    let mut sse = c.sse("/projects/pj/events", None).await.unwrap();
    srv.stop().await;
    match ws.next_item(Duration::from_secs(5)).await {
        WsItem::Closed(Some((code, reason))) => {
            assert_eq!(code, 1001);
            assert!(reason.contains("after="), "{reason}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(sse.next_record(Duration::from_secs(5)).await.is_none());
});
