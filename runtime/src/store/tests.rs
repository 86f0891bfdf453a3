//! The store's own cases, each run on SQLite and (when `DATABASE_URL` is set) on a fresh
//! PostgreSQL database: the places where one query has two texts (`dialects!`) or a value
//! two encodings (`column`) must read back the same on both.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use polaris_config::{DatabaseUrl, Env, Secret};
use polaris_registry::ParticipantId;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::column::Time;
use super::{Append, NewEvent, ProjectKey, Store, StoreError};
use crate::protocol::{Source, to_ms};

/// A store on a fresh database, removed when dropped (PostgreSQL: by [`TestStore::finish`]).
struct TestStore {
    store: Store,
    dir: Option<std::path::PathBuf>,
    pg: Option<(String, String)>, // (admin url, database)
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl TestStore {
    async fn finish(mut self) {
        self.store.close().await;
        if let Some((admin, name)) = self.pg.take() {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                .await
                .expect("connect to DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop test database");
        }
    }
}

/// SQLite, then PostgreSQL if it is configured.
async fn stores() -> Vec<TestStore> {
    let dir = std::env::temp_dir().join(format!("polaris-store-{}", Uuid::new_v4().simple()));
    let sqlite = Store::open(&DatabaseUrl::Sqlite(dir.join("polaris.db")))
        .await
        .expect("open sqlite");
    let mut out = vec![TestStore {
        store: sqlite,
        dir: Some(dir),
        pg: None,
    }];
    let env = Env::from_process();
    let Some(admin) = env.get("DATABASE_URL") else {
        assert!(
            env.get("POLARIS_TEST_REQUIRE_POSTGRES").is_none(),
            "POLARIS_TEST_REQUIRE_POSTGRES is set but DATABASE_URL is not"
        );
        return out;
    };
    let name = format!("polaris_store_{}", Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .expect("connect to DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    let url = if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    };
    let pg = Store::open(&DatabaseUrl::Postgres(Secret::new(url)))
        .await
        .expect("open postgres");
    out.push(TestStore {
        store: pg,
        dir: None,
        pg: Some((admin.to_owned(), name)),
    });
    out
}

async fn project(store: &Store, name: &str) -> ProjectKey {
    let p = store
        .create_project("org", name, &["rust".into(), "ops".into()])
        .await
        .expect("create project");
    ProjectKey {
        id: p.id,
        org: Arc::from("org"),
        name: Arc::from(name),
    }
}

fn event(session: Option<&str>, payload: &str, at: DateTime<Utc>) -> Append {
    Append {
        fence: None,
        event: NewEvent {
            id: Uuid::new_v4(),
            session: session.map(str::to_owned),
            timestamp: at,
            received_at: at,
            source: Source::Hook,
            kind: "UserPromptSubmit".into(),
            sender: ParticipantId::parse("user:ada").expect("participant"),
            payload: RawValue::from_string(payload.into()).expect("json"),
            redactions: Vec::new(),
            traceparent: None,
        },
        effect: None,
    }
}

#[tokio::test]
async fn values_read_back_as_written() {
    for t in stores().await {
        let s = &t.store;
        let p = project(s, "pj").await;
        let listed = s.list_projects("org").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, p.id);
        assert_eq!(listed[0].tags, ["rust", "ops"]);

        s.create_session(&p, "s1", None, None)
            .await
            .expect("session");
        let t0 = to_ms(Utc::now());
        // Kept byte for byte: spacing, key order and a NUL escape.
        let payload = r#"{ "prompt": "hi\u0000", "b": 1,  "a": [2] }"#;
        let later = t0 + TimeDelta::milliseconds(5);
        let batch = vec![event(Some("s1"), payload, t0), event(None, "{}", later)];
        let appended = s.append(&p, batch).await.expect("append");
        assert!(appended.iter().all(|a| a.as_ref().is_ok_and(|a| a.created)));

        let read = s.events_after(&p, None, 0, 10).await.expect("read");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].payload.get(), payload);
        assert_eq!((read[0].timestamp, read[1].received_at), (t0, later));
        let since = s.events_since(&p, None, Some(t0)).await.expect("since");
        assert_eq!(since.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        let one = s.events_since(&p, Some("s1"), None).await.expect("session");
        assert_eq!(one.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);

        let session = s.get_session(&p, "s1").await.expect("get").expect("some");
        assert_eq!((session.event_count, session.prompt_count), (1, 1));
        assert_eq!(session.last_activity, Some(t0));
        t.finish().await;
    }
}

#[tokio::test]
async fn cursors_never_move_back() {
    for t in stores().await {
        let s = &t.store;
        let (a, b) = (project(s, "a").await.id, project(s, "b").await.id);
        s.save_agent_cursors("org", "dean", &[(a, 5), (b, 3)], None)
            .await
            .expect("save");
        s.save_agent_cursors("org", "dean", &[(a, 2), (b, 7)], None)
            .await
            .expect("save again");
        s.save_agent_cursors("org", "dean", &[], None)
            .await
            .expect("none");
        let at = |p| s.agent_cursor("org", "dean", p);
        assert_eq!(
            (at(a).await.expect("a"), at(b).await.expect("b")),
            (Some(5), Some(7))
        );
        t.finish().await;
    }
}

#[tokio::test]
async fn fenced_cursors_move_only_under_the_current_term() {
    for t in stores().await {
        let s = &t.store;
        let a = project(s, "a").await.id;
        let now = chrono::Utc::now();
        let ttl = std::time::Duration::from_secs(60);
        let first = s
            .acquire_lease("org", "agent:dean", "one", ttl, now)
            .await
            .expect("take")
            .expect("free");
        let fence = Some(("agent:dean", first.term));
        assert!(
            s.save_agent_cursors("org", "agent:dean.sql", &[(a, 4)], fence)
                .await
                .expect("save")
        );
        // Another instance takes the agent over once the first's lease has lapsed.
        let later = now + chrono::Duration::seconds(120);
        let second = s
            .acquire_lease("org", "agent:dean", "two", ttl, later)
            .await
            .expect("take over")
            .expect("expired");
        assert!(second.term > first.term);
        assert!(
            !s.save_agent_cursors("org", "agent:dean.sql", &[(a, 9)], fence)
                .await
                .expect("fenced save")
        );
        assert_eq!(
            s.agent_cursor("org", "agent:dean.sql", a)
                .await
                .expect("read"),
            Some(4)
        );
        let current = Some(("agent:dean", second.term));
        assert!(
            s.save_agent_cursors("org", "agent:dean.sql", &[(a, 9)], current)
                .await
                .expect("save under the new term")
        );
        t.finish().await;
    }
}

#[tokio::test]
async fn decisions_of_the_listed_projects_newest_first() {
    for t in stores().await {
        let s = &t.store;
        let (a, b, c) = (
            project(s, "a").await,
            project(s, "b").await,
            project(s, "c").await,
        );
        let t0 = to_ms(Utc::now());
        for (i, (p, value)) in [(&a, "a1"), (&b, "b1"), (&c, "c1"), (&a, "a2")]
            .into_iter()
            .enumerate()
        {
            s.add_annotation(p, "s", None, None, "decision", Some(value))
                .await
                .expect("annotate");
            // Apart in time, so the order does not rest on the tiebreak.
            let at = Time(t0 + TimeDelta::milliseconds(i64::try_from(i).expect("small")));
            execute!(
                s,
                write,
                "UPDATE annotations SET created_at = $1 WHERE value = $2",
                at,
                value
            )
            .expect("date");
        }
        let got = s
            .decisions("org", &[a.id, c.id], 10)
            .await
            .expect("decisions");
        let values: Vec<_> = got.iter().map(|d| d.value.as_deref()).collect();
        assert_eq!(values, [Some("a2"), Some("c1"), Some("a1")]);
        assert_eq!(s.decisions("org", &[a.id], 1).await.expect("one").len(), 1);
        assert!(s.decisions("org", &[], 10).await.expect("none").is_empty());
        t.finish().await;
    }
}

#[tokio::test]
async fn a_stored_value_that_does_not_parse_is_corrupt() {
    for t in stores().await {
        let s = &t.store;
        let p = project(s, "pj").await;
        s.append(&p, vec![event(None, "{}", to_ms(Utc::now()))])
            .await
            .expect("append");
        execute!(s, write, "UPDATE events SET source = 'carrier pigeon'").expect("update");
        let read = s.events_after(&p, None, 0, 10).await;
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
        t.finish().await;
    }
}

#[tokio::test]
async fn events_are_counted_per_day_from_where_a_window_starts() {
    for t in stores().await {
        let s = &t.store;
        let p = project(s, "busy").await;
        s.create_session(&p, "s", None, None)
            .await
            .expect("session");
        let now = to_ms(Utc::now());
        // 3 events 20 days ago, 2 ten days ago, 4 yesterday, 1 now: seq 1..=10.
        let mut batch = Vec::new();
        for (ago, n) in [(20, 3), (10, 2), (1, 4), (0, 1)] {
            for i in 0..n {
                let at = now - TimeDelta::days(ago) + TimeDelta::milliseconds(i);
                batch.push(event(Some("s"), "{}", at));
            }
        }
        s.append(&p, batch).await.expect("append");
        let head = s.last_seq(p.id).await.expect("head");
        assert_eq!(head, 10);

        let since = now - TimeDelta::days(14);
        assert_eq!(
            s.first_seq_since(p.id, head, since).await.expect("bisect"),
            4
        );
        assert_eq!(
            s.first_seq_since(p.id, head, now).await.expect("bisect"),
            10
        );
        let later = now + TimeDelta::seconds(1);
        assert_eq!(
            s.first_seq_since(p.id, head, later).await.expect("bisect"),
            11
        );
        assert_eq!(s.first_seq_since(p.id, 0, since).await.expect("empty"), 1);

        let today = now.timestamp().div_euclid(86_400);
        let per_day = |ago: i64| (now - TimeDelta::days(ago)).timestamp().div_euclid(86_400);
        let all = s.events_per_day(p.id, 0, head, since).await.expect("count");
        let mut want = vec![(per_day(10), 2), (per_day(1), 4), (today, 1)];
        // Events a few milliseconds apart may straddle midnight: compare totals per day.
        want.sort();
        let total: i64 = all.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 7, "{all:?}");
        if all.len() == want.len() {
            assert_eq!(all, want);
        }
        // Only the range asked for: seq 8..=10 of the window.
        let tail = s.events_per_day(p.id, 7, head, since).await.expect("count");
        assert_eq!(tail.iter().map(|(_, n)| n).sum::<i64>(), 3, "{tail:?}");
        t.finish().await;
    }
}

/// A batch of plain writes goes in whole when nothing is in its way (on PostgreSQL in one
/// statement); when something is — a session that does not exist, an id stored already,
/// here or in another project, the same id twice — each item is decided on its own and
/// the written ones still take consecutive `seq`s.
#[tokio::test]
async fn a_batch_is_decided_item_by_item_when_something_is_in_its_way() {
    use super::Rejected;
    for t in stores().await {
        let s = &t.store;
        let p = project(s, "pj").await;
        let other = project(s, "other").await;
        for name in ["s1", "s2"] {
            s.create_session(&p, name, None, None)
                .await
                .expect("session");
        }
        s.create_session(&other, "s1", None, None)
            .await
            .expect("session");
        let at = to_ms(Utc::now());
        macro_rules! seqs {
            ($r:expr) => {
                $r.iter()
                    .map(|a| a.clone().map(|a| (a.event.seq, a.created)))
                    .collect::<Vec<Result<(i64, bool), Rejected>>>()
            };
        }

        // Nothing in the way.
        let first = vec![
            event(Some("s1"), "{}", at),
            event(Some("s2"), "{}", at),
            event(None, "{}", at),
        ];
        let kept = first[1].clone();
        let r = s.append(&p, first).await.expect("append");
        assert_eq!(seqs!(r), [Ok((1, true)), Ok((2, true)), Ok((3, true))]);

        // A session that does not exist.
        let r = s
            .append(
                &p,
                vec![
                    event(Some("s1"), "{}", at),
                    event(Some("nope"), "{}", at),
                    event(Some("s2"), "{}", at),
                ],
            )
            .await
            .expect("append");
        assert_eq!(
            seqs!(r),
            [
                Ok((4, true)),
                Err(Rejected::NoSession("nope".into())),
                Ok((5, true))
            ]
        );

        // An id stored already (a retry), the same id twice, an id of another project.
        let taken = event(Some("s1"), "{}", at);
        let r = s.append(&other, vec![taken.clone()]).await.expect("append");
        assert_eq!(seqs!(r), [Ok((1, true))]);
        let twice = event(Some("s2"), "{}", at);
        let r = s
            .append(
                &p,
                vec![
                    event(Some("s1"), "{}", at),
                    kept,
                    twice.clone(),
                    twice,
                    taken.clone(),
                ],
            )
            .await
            .expect("append");
        assert_eq!(
            seqs!(r),
            [
                Ok((6, true)),
                Ok((2, false)),
                Ok((7, true)),
                Ok((7, false)),
                Err(Rejected::IdTaken(taken.event.id)),
            ]
        );

        // After all that, plain batches go on from the head, gap-free.
        let r = s
            .append(
                &p,
                vec![event(Some("s1"), "{}", at), event(Some("s1"), "{}", at)],
            )
            .await
            .expect("append");
        assert_eq!(seqs!(r), [Ok((8, true)), Ok((9, true))]);
        assert_eq!(s.last_seq(p.id).await.expect("head"), 9);
        let all = s.events_after(&p, None, 0, 100).await.expect("read");
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=9).collect::<Vec<_>>()
        );
        let s1 = s.get_session(&p, "s1").await.expect("get").expect("s1");
        let s2 = s.get_session(&p, "s2").await.expect("get").expect("s2");
        assert_eq!((s1.event_count, s1.prompt_count), (5, 5));
        assert_eq!((s2.event_count, s2.prompt_count), (3, 3));
        t.finish().await;
    }
}
