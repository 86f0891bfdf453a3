//! Ingest-time redaction: a credential posted to a floor is replaced by a typed placeholder
//! before the commit, on every path a reader has (the post's answer, pages, streams,
//! search, the database files), unless an admin turned the project's policy off.

use polaris_config::DatabaseUrl;
use polaris_runtime::auth::Role;
use serde_json::{Value, json};

use crate::both_stores;
use crate::support::client::enc;
use crate::support::*;

const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Rt3pLvW";
const GITHUB_TOKEN: &str = "ghp_R8x2Kq9LmZ4vT7wY1nB5cD3fG6hJ0kP2sA4e";

fn leaked_prompt() -> String {
    format!("deploy failed, creds are aws_secret_access_key = {AWS_SECRET} can you check")
}

/// True when `needle` appears in any file of the SQLite data directory (database, WAL,
/// search index), or in any event or search row on PostgreSQL.
async fn stored_anywhere(srv: &TestServer, needle: &str) -> bool {
    match srv.database_url() {
        DatabaseUrl::Sqlite(p) => {
            let dir = p.parent().expect("data dir");
            std::fs::read_dir(dir).expect("read data dir").any(|f| {
                let bytes = std::fs::read(f.expect("entry").path()).unwrap_or_default();
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
        }
        DatabaseUrl::Postgres(url) => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url.expose())
                .await
                .expect("connect");
            // The search index keeps lexemes: look for the secret's first letters there.
            let lexeme: String = needle.chars().take(12).collect::<String>().to_lowercase();
            let n: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM events WHERE payload::text LIKE $1)
                      + (SELECT count(*) FROM event_search WHERE search::text LIKE $2)",
            )
            .bind(format!("%{needle}%"))
            .bind(format!("%{lexeme}%"))
            .fetch_one(&mut conn)
            .await
            .expect("query");
            n > 0
        }
    }
}

both_stores!(a_pasted_secret_never_rests_on_the_floor, |srv| {
    let c = srv.client();
    c.project_session("pj", "s-7a3f").await;
    let mut ws = c.ws("/projects/pj/ws?after=0").await.expect("ws");

    let r = c
        .prompt("pj", "s-7a3f", "user:manu", &leaked_prompt())
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let prompt = r.json["payload"]["prompt"].as_str().expect("prompt");
    assert_eq!(
        prompt,
        "deploy failed, creds are aws_secret_access_key = [redacted: aws-secret-key] can you check"
    );
    let red = r.json["redactions"].as_array().expect("redactions");
    assert_eq!(red.len(), 1, "{red:?}");
    assert_eq!(red[0]["kind"], "aws-secret-key");
    assert_eq!(red[0]["path"], "/prompt");
    let at = red[0]["at"].as_u64().expect("at") as usize;
    assert!(
        prompt
            .chars()
            .skip(at)
            .collect::<String>()
            .starts_with("[redacted: aws-secret-key]")
    );
    let hash = red[0]["hash"].as_str().expect("hash").to_owned();
    assert!(!AWS_SECRET.contains(&hash));

    // The stream and the pages carry the redacted event.
    let streamed = ws.next_event().await;
    assert_eq!(streamed["payload"]["prompt"], prompt);
    assert_eq!(streamed["redactions"][0]["kind"], "aws-secret-key");
    let page = c.get("/projects/pj/sessions/s-7a3f/messages").await;
    assert!(!page.json.to_string().contains(AWS_SECRET), "{page:?}");
    assert_eq!(page.json[0]["redactions"][0]["hash"], hash.as_str());

    // An event without a secret carries no list at all.
    let plain = c.prompt("pj", "s-7a3f", "user:manu", "thanks, fixed").await;
    assert!(plain.json.get("redactions").is_none(), "{plain:?}");

    // The same secret again has the same hash; another secret a different one.
    let again = c
        .prompt(
            "pj",
            "s-7a3f",
            "user:manu",
            &format!("still failing: aws_secret_access_key={AWS_SECRET}"),
        )
        .await;
    assert_eq!(again.json["redactions"][0]["hash"], hash.as_str());
    let other = c
        .post(
            "/projects/pj/sessions/s-7a3f/events",
            json!({"sender": "user:manu", "payload": {"hook_event_name": "PostToolUse", "session_id": "cc-1",
                   "tool_name": "Bash", "tool_input": {"command": "env"}, "tool_response": {"stdout": format!("GITHUB_TOKEN={GITHUB_TOKEN}\n")}}}),
        )
        .await;
    assert_eq!(other.status, 201, "{other:?}");
    assert_eq!(other.json["redactions"][0]["kind"], "github-token");
    assert_eq!(other.json["redactions"][0]["path"], "/tool_response/stdout");
    assert_ne!(other.json["redactions"][0]["hash"], hash.as_str());

    // Injects (an advisor's words) go through the same screen.
    let inj = c
        .post(
            "/projects/pj/sessions/s-7a3f/inject",
            json!({"sender": "user:ana", "content": format!("use this one: {GITHUB_TOKEN}")}),
        )
        .await;
    assert!(inj.status < 300, "{inj:?}");

    // Search finds the placeholder, never the secret.
    let found = eventually(10, || async {
        let s = c.get(&format!("/search?q={}", enc("redacted"))).await;
        (s.json["results"].as_array().map_or(0, |a| a.len()) >= 2).then_some(s)
    })
    .await;
    assert!(!found.json.to_string().contains(AWS_SECRET));
    let none = c.get(&format!("/search?q={}", enc("wJalrXUtnFEMI"))).await;
    assert_eq!(none.json["results"], json!([]), "{none:?}");

    let all = c.get("/projects/pj/messages").await;
    let all = all.json.to_string();
    assert!(
        !all.contains(AWS_SECRET) && !all.contains(GITHUB_TOKEN),
        "{all}"
    );
    assert!(
        !stored_anywhere(&srv, AWS_SECRET).await,
        "the AWS secret reached the store"
    );
    assert!(
        !stored_anywhere(&srv, GITHUB_TOKEN).await,
        "the GitHub token reached the store"
    );
    ws.close().await;
});

both_stores!(
    an_admin_may_turn_redaction_off_for_a_project,
    Options::secured(),
    |srv| {
        let admin = srv.client_as("acme", "user:ops", Role::Admin);
        let member = srv.client_as("acme", "user:manu", Role::Member);
        admin.project_session("pj", "s").await;
        assert_eq!(admin.get("/projects/pj").await.json["redact_secrets"], true);

        let r = member
            .post("/projects/pj/redaction", json!({"redact_secrets": false}))
            .await;
        assert_eq!(r.status, 403, "{r:?}");
        let r = admin
            .post("/projects/pj/redaction", json!({"redact": false}))
            .await;
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.error().contains("redact"), "{r:?}");
        let r = admin
            .post("/projects/pj/redaction", json!({"redact_secrets": "no"}))
            .await;
        assert_eq!(r.status, 400, "{r:?}");

        // Still on: redacted.
        let on = member
            .prompt("pj", "s", "user:manu", &leaked_prompt())
            .await;
        assert!(on.json.get("redactions").is_some(), "{on:?}");

        let r = admin
            .post("/projects/pj/redaction", json!({"redact_secrets": false}))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            admin.get("/projects/pj").await.json["redact_secrets"],
            false
        );
        let off = member
            .prompt("pj", "s", "user:manu", &leaked_prompt())
            .await;
        assert_eq!(off.json["payload"]["prompt"], leaked_prompt().as_str());
        assert!(off.json.get("redactions").is_none(), "{off:?}");

        // A second node learns of the change too: back on, posted there.
        let other = srv.second_node().await;
        admin
            .post("/projects/pj/redaction", json!({"redact_secrets": true}))
            .await;
        let there = Client::new(&other.base, Some(token("acme", "user:manu", Role::Member)));
        let r = eventually(10, || async {
            let r = there.prompt("pj", "s", "user:manu", &leaked_prompt()).await;
            r.json.get("redactions").is_some().then_some(r)
        })
        .await;
        assert_eq!(r.json["redactions"][0]["kind"], "aws-secret-key");
        other.finish().await;
    }
);

both_stores!(
    other_orgs_hash_the_same_secret_differently,
    Options::secured(),
    |srv| {
        let a = srv.client_as("acme", "user:a", Role::Admin);
        let b = srv.client_as("globex", "user:b", Role::Admin);
        let mut hashes = Vec::new();
        for c in [&a, &b] {
            c.project_session("pj", "s").await;
            let r = c.prompt("pj", "s", "user:a", &leaked_prompt()).await;
            let r = if r.status == 201 {
                r
            } else {
                c.prompt("pj", "s", "user:b", &leaked_prompt()).await
            };
            let h: Value = r.json["redactions"][0]["hash"].clone();
            assert!(h.is_string(), "{r:?}");
            hashes.push(h);
        }
        assert_ne!(hashes[0], hashes[1]);
    }
);
