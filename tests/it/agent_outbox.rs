//! Agents posting through an embedded sidecar (the `Outbox` an agent outside the floor's
//! process uses): the answer goes into the sidecar's write-ahead log and reaches the floor
//! over authenticated HTTP, the same as it would from a container.

use std::time::Duration;

use polaris_runtime::auth::Role;
use polaris_sidecar::{FloorClient, Uplink};
use serde_json::{Value, json};

use crate::answers::{TEAM, agents_dir, wait_for};
use crate::both_stores;
use crate::support::Options;

both_stores!(
    agents_answer_through_an_embedded_sidecar,
    Options {
        secret: true,
        ..Options::default()
    },
    |srv| {
        let dir = agents_dir(TEAM);
        srv.load_agents(&dir.file).await;
        let wal = tempfile::tempdir().unwrap();
        // A sidecar holds one credential for everything it relays: a service token of the
        // org, as an agent container would be given.
        let floor = FloorClient::new(
            &srv.base,
            Some(crate::support::token(
                "default",
                "agent:host",
                Role::Service,
            )),
        )
        .unwrap();
        let uplink = Uplink::open(wal.path(), floor).await.unwrap();
        let relay = {
            let uplink = uplink.clone();
            polaris_agents::outbox::Relay::shared(move |project, session, body| {
                let uplink = uplink.clone();
                Box::pin(async move {
                    let (_, delivered) = uplink
                        .submit_tracked(&project, &session, body)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Box::pin(delivered) as polaris_agents::outbox::Delivered)
                })
            })
        };
        let host = polaris_agents::AgentHost::start_with(srv.runtime.clone(), relay)
            .await
            .unwrap();

        let c = srv.client_as("default", "user:manu", Role::Member);
        for (name, tag) in [("warehouse", "data"), ("launch", "marketing")] {
            let r = c
                .post("/projects", json!({"name": name, "tags": [tag]}))
                .await;
            assert_eq!(r.status, 201, "{r:?}");
            let r = c
                .post(
                    &format!("/projects/{name}/sessions"),
                    json!({"name": "s-1", "driver": "user:manu"}),
                )
                .await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        let mut ws = c.ws("/projects/warehouse/sessions/s-1/ws").await.unwrap();
        let q = c
            .prompt(
                "warehouse",
                "s-1",
                "user:manu",
                "@dean how do we name staging tables?",
            )
            .await;
        assert_eq!(q.status, 201, "{q:?}");
        let id = q.json["id"].clone();
        let a = wait_for(&mut ws, "Dean's answer via the sidecar", |e: &Value| {
            e["payload"]["in_reply_to"] == id
        })
        .await;
        assert_eq!(a["source"], "agent");
        assert_eq!(a["sender"], "agent:dean");
        assert_eq!(a["payload"]["persona"]["name"], "Dean (Data)");
        let content = a["payload"]["content"].as_str().unwrap();
        assert!(content.contains("stg_<source>__<entity>"), "{content}");
        // The floor shows the event before the sidecar has read the floor's answer.
        crate::support::eventually(10, || {
            let s = uplink.status();
            async move { (s.delivered >= 1).then_some(()) }
        })
        .await;

        // Only the floor writes system events: out of process, Martha's rate-limit notice
        // arrives as her own notice, with the floor's kind as its reason.
        let mut ws = c.ws("/projects/launch/sessions/s-1/ws").await.unwrap();
        let mut asked = Vec::new();
        for i in 0..4 {
            let q = c
                .prompt(
                    "launch",
                    "s-1",
                    "user:manu",
                    &format!("@martha tagline idea {i}?"),
                )
                .await;
            assert_eq!(q.status, 201, "{q:?}");
            asked.push(q.json["id"].clone());
        }
        let n = wait_for(&mut ws, "the rate-limit notice", |e: &Value| {
            e["payload"]["reason"] == "rate_limited"
        })
        .await;
        assert!(asked[2..].contains(&n["payload"]["in_reply_to"]), "{n}");
        assert_eq!(n["source"], "agent");
        assert_eq!(n["sender"], "agent:martha");
        assert_eq!(n["kind"], "notice");

        // Nothing is left behind in the log, and nothing was refused.
        crate::support::eventually(10, || {
            let s = uplink.status();
            async move { (s.pending == 0).then_some(()) }
        })
        .await;
        assert_eq!(uplink.status().dead_letters, 0);
        host.shutdown().await;
        uplink.shutdown().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
);
