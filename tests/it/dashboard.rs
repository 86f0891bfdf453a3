//! The dashboard, driven as a person drives it: over plain HTTP with a cookie jar (sign-in,
//! CSRF, cookie flags, 404 pages, bad input) on both stores, and in headless Chromium
//! (`support::browser`): a live transcript, an inject that reaches the sidecar's queue, a
//! phone's width, and the screenshots of `docs/screenshots/`.

use std::time::Duration;

use polaris_config::DatabaseUrl;
use polaris_registry::ParticipantId;
use polaris_runtime::auth::Role;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::both_stores;
use crate::sidecar::{Sidecar, prompt, wait_queued};
use crate::support::browser::Browser;
use crate::support::client::{Client, enc};
use crate::support::{Backend, Options, SECRET, TestServer, eventually};

/// A browser-like client: no redirects followed, cookies sent back by hand (so the test
/// sees every Set-Cookie), `Origin` set like a browser's form post.
pub(crate) struct Visitor {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

pub(crate) struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Visitor {
    pub(crate) fn new(base: &str) -> Visitor {
        Visitor {
            base: base.to_owned(),
            http: crate::support::client::http_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn answer(&mut self, r: reqwest::Response) -> Page {
        let status = r.status();
        let headers = r.headers().clone();
        if let Some(c) = headers.get(SET_COOKIE) {
            let v = c.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        Page {
            status,
            headers,
            body: r.text().await.unwrap(),
        }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let mut rb = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", c);
        }
        let r = rb.send().await.unwrap();
        self.answer(r).await
    }

    pub(crate) async fn post_form(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_form_from(path, form, &self.base.clone()).await
    }

    async fn post_form_from(&mut self, path: &str, form: &[(&str, &str)], origin: &str) -> Page {
        let mut rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", origin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", c);
        }
        let r = rb.send().await.unwrap();
        self.answer(r).await
    }

    /// Opens the link's confirmation page and presses its button.
    pub(crate) async fn sign_in(&mut self, link: &str) -> Page {
        let path = link
            .strip_prefix(&self.base)
            .expect("a link to this server");
        let confirm = self.get(path).await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let token = path.rsplit('/').next().unwrap().to_owned();
        self.post_form("/ui/login", &[("token", &token)]).await
    }
}

/// The CSRF token of the forms on a page.
pub(crate) fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf field")
        + 19;
    body[at..at + 64].to_owned()
}

/// A one-time link made in-process, as `polaris login-link` makes it.
pub(crate) async fn link(srv: &TestServer, org: &str, who: &str, role: Role) -> String {
    let token = polaris_runtime::api::login_link(
        &srv.store,
        org,
        &ParticipantId::parse(who).unwrap(),
        role,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    format!("{}/ui/login/{token}", srv.base)
}

/// `polaris login-link` against the server's database, as an operator runs it.
async fn link_from_cli(srv: &TestServer, org: &str, who: &str) -> String {
    let db = match srv.database_url() {
        DatabaseUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
        DatabaseUrl::Postgres(s) => s.expose().to_owned(),
    };
    let out = tokio::process::Command::new(crate::support::BIN)
        .args(["login-link", "--org", org, "--participant", who])
        .args(["--base-url", &srv.base, "--database", &db])
        .env("POLARIS_JWT_SECRET", SECRET)
        .env_remove("POLARIS_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(url.starts_with(&format!("{}/ui/login/", srv.base)), "{url}");
    url
}

both_stores!(
    a_login_link_signs_in_once_with_a_guarded_cookie,
    Options::secured(),
    |srv| {
        let manu = srv.client_as("acme", "user:manu", Role::Member);
        manu.project_session("webapp", "s-1").await;

        // Signed out: the floors page sends the visitor to the sign-in page.
        let mut v = Visitor::new(&srv.base);
        let r = v.get("/").await;
        assert_eq!(r.status, 303);
        assert_eq!(r.headers[LOCATION], "/ui/signin");
        assert_eq!(v.get("/ui/signin").await.status, 401);

        let url = link_from_cli(&srv, "acme", "user:manu").await;
        // Opening the link spends nothing: a preview can fetch it.
        let token = url.rsplit('/').next().unwrap().to_owned();
        assert_eq!(v.get(&format!("/ui/login/{token}")).await.status, 200);
        let r = v.sign_in(&url).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.headers[LOCATION], "/");
        let cookie = r.headers[SET_COOKIE].to_str().unwrap().to_owned();
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
            assert!(cookie.contains(flag), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        assert!(cookie.starts_with("polaris_session="), "{cookie}");

        let home = v.get("/").await;
        assert_eq!(home.status, 200);
        assert!(
            home.body.contains("webapp") && home.body.contains("s-1"),
            "{}",
            home.body
        );
        assert!(home.body.contains("Manu"), "signed in as Manu");
        let csp = home.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert!(!home.body.contains("<script>"), "no inline script");
        assert!(!home.body.contains(&token), "no token in the page");

        // The link works once, here and on another node of the deployment.
        let mut again = Visitor::new(&srv.base);
        let r = again.sign_in(&url).await;
        assert_eq!(r.status, 401);
        assert!(r.body.contains("does not work"), "{}", r.body);
        assert!(r.headers.get(SET_COOKIE).is_none());
        let mut node_b = srv.second_node().await;
        let mut elsewhere = Visitor::new(&node_b.base);
        assert_eq!(
            elsewhere
                .sign_in(&url.replace(&srv.base, &node_b.base))
                .await
                .status,
            401
        );
        // …while the cookie made on node A is good on node B.
        elsewhere.cookie = v.cookie.clone();
        assert_eq!(elsewhere.get("/").await.status, 200);
        node_b.stop().await;

        // Forms need the session's CSRF token and a same-origin Origin.
        let page = v.get("/ui/floors/webapp/sessions/s-1").await;
        assert_eq!(page.status, 200);
        let token = csrf(&page.body);
        let inject = "/ui/floors/webapp/sessions/s-1/inject";
        let r = v.post_form(inject, &[("content", "no token")]).await;
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("csrf"), "{}", r.body);
        let r = v
            .post_form(inject, &[("content", "bad token"), ("csrf", "0000")])
            .await;
        assert_eq!(r.status, 403);
        let r = v
            .post_form_from(
                inject,
                &[("content", "cross-site"), ("csrf", &token)],
                "https://evil.example",
            )
            .await;
        assert_eq!(r.status, 403);
        let r = v
            .post_form(inject, &[("content", "use RS256"), ("csrf", &token)])
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let events = manu
            .get("/projects/webapp/sessions/s-1/messages")
            .await
            .json;
        let contents: Vec<_> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["source"].clone(),
                    e["sender"].clone(),
                    e["payload"]["content"].clone(),
                )
            })
            .collect();
        assert_eq!(
            contents,
            vec![(json!("inject"), json!("user:manu"), json!("use RS256"))],
            "only the guarded post landed, as the signed-in person"
        );

        // Sign-out ends the session in the store: the old cookie no longer works.
        let old = v.cookie.clone();
        let r = v.post_form("/ui/signout", &[("csrf", &token)]).await;
        assert_eq!(r.status, 303);
        assert!(
            r.headers[SET_COOKIE]
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
        v.cookie = old;
        assert_eq!(v.get("/").await.status, 303);
    }
);

both_stores!(
    other_orgs_and_unknown_names_get_404_pages_and_stale_cursors_render,
    Options::secured(),
    |srv| {
        let manu = srv.client_as("acme", "user:manu", Role::Member);
        manu.project_session("webapp", "s-1").await;
        for i in 0..3 {
            manu.prompt("webapp", "s-1", "user:manu", &format!("prompt {i}"))
                .await;
        }
        let mut a = Visitor::new(&srv.base);
        a.sign_in(&link(&srv, "acme", "user:manu", Role::Member).await)
            .await;
        let mut b = Visitor::new(&srv.base);
        b.sign_in(&link(&srv, "globex", "user:bob", Role::Admin).await)
            .await;

        let page = "/ui/floors/webapp/sessions/s-1";
        let mine = a.get(page).await;
        assert_eq!(mine.status, 200);
        assert!(mine.body.contains("prompt 2"), "{}", mine.body);
        // Org B, even an admin there, does not learn that org A's floor exists.
        for path in [
            page.to_owned(),
            format!("{page}/live"),
            "/ui/floors/webapp/settings".to_owned(),
        ] {
            let r = b.get(&path).await;
            assert_eq!(r.status, 404, "{path}: {}", r.body);
            assert!(
                r.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
        }
        assert!(!b.get("/").await.body.contains("webapp"));
        let r = b.get("/ui/search?q=prompt").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains("0 results"), "{}", r.body);

        // Unknown names are 404 pages, not 500s.
        for path in [
            "/ui/floors/nope/sessions/s-1",
            "/ui/floors/webapp/sessions/nope",
            "/ui/floors/nope/settings",
        ] {
            let r = a.get(path).await;
            assert_eq!(r.status, 404, "{path}");
            assert!(r.body.contains("not found"), "{}", r.body);
        }
        // A member is not an admin: settings are refused.
        assert_eq!(a.get("/ui/floors/webapp/settings").await.status, 403);

        // Stale or odd cursors still render a page.
        for q in [
            "?before=abc",
            "?before=999999",
            "?before=1",
            "?before=-4",
            "?before=",
        ] {
            let r = a.get(&format!("{page}{q}")).await;
            assert_eq!(r.status, 200, "{q}");
        }
        assert!(
            a.get(&format!("{page}?before=abc"))
                .await
                .body
                .contains("not valid any more")
        );

        // Every other page renders for a member.
        for path in [
            "/ui/agents",
            "/ui/search",
            "/ui/search?q=prompt&project=webapp",
            "/ui/decisions",
            "/ui/team",
        ] {
            let r = a.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
        }
        let r = a.get("/ui/search?q=prompt&project=nope").await;
        assert!(r.body.contains("not found"), "{}", r.body);
    }
);

both_stores!(
    an_inject_over_the_size_limit_shows_the_error_in_the_form,
    Options {
        max_body: 4096,
        ..Options::secured()
    },
    |srv| {
        let manu = srv.client_as("acme", "user:manu", Role::Member);
        manu.project_session("webapp", "s-1").await;
        let mut v = Visitor::new(&srv.base);
        v.sign_in(&link(&srv, "acme", "user:manu", Role::Member).await)
            .await;
        let page = v.get("/ui/floors/webapp/sessions/s-1").await;
        let token = csrf(&page.body);
        let big = "x".repeat(5000);
        let r = v
            .post_form(
                "/ui/floors/webapp/sessions/s-1/inject",
                &[("content", &big), ("csrf", &token)],
            )
            .await;
        assert_eq!(r.status, 413);
        assert!(r.body.contains("id=\"inject-error\""), "{}", r.body);
        assert!(r.body.contains("too large"), "{}", r.body);
        assert!(r.body.contains("<textarea"), "the form is shown again");
        // Blank advice is refused the same way, naming the field.
        let r = v
            .post_form(
                "/ui/floors/webapp/sessions/s-1/inject",
                &[("content", "  "), ("csrf", &token)],
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("content: must not be empty"), "{}", r.body);
        let events = manu
            .get("/projects/webapp/sessions/s-1/messages")
            .await
            .json;
        assert_eq!(events.as_array().unwrap().len(), 0, "nothing was posted");
    }
);

both_stores!(
    annotations_seat_and_settings_go_through_the_forms,
    Options::secured(),
    |srv| {
        let manu = srv.client_as("acme", "user:manu", Role::Admin);
        manu.project_session("webapp", "s-1").await;
        let posted = manu
            .prompt("webapp", "s-1", "user:manu", "ship on friday?")
            .await;
        let event_id = posted.json["id"].as_str().unwrap().to_owned();
        let mut v = Visitor::new(&srv.base);
        v.sign_in(&link(&srv, "acme", "user:manu", Role::Admin).await)
            .await;
        let s = "/ui/floors/webapp/sessions/s-1";
        let token = csrf(&v.get(s).await.body);
        let r = v
            .post_form(
                &format!("{s}/annotate"),
                &[
                    ("csrf", &token),
                    ("event_id", &event_id),
                    ("kind", "decision"),
                    ("value", "ship on monday"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let d = v.get("/ui/decisions").await;
        assert!(d.body.contains("ship on monday"), "{}", d.body);
        let r = v
            .post_form(&format!("{s}/driver"), &[("csrf", &token)])
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let row = manu.get("/projects/webapp/sessions/s-1").await.json;
        assert_eq!(row["driver"], "user:manu");
        let settings = "/ui/floors/webapp/settings";
        assert_eq!(v.get(settings).await.status, 200);
        let r = v
            .post_form(
                settings,
                &[
                    ("csrf", &token),
                    ("action", "add"),
                    ("participant_id", "user:alice"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let r = v
            .post_form(
                settings,
                &[
                    ("csrf", &token),
                    ("action", "visibility"),
                    ("visibility", "members"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let p = manu.get("/projects/webapp").await.json;
        assert_eq!(p["visibility"], "members", "{p}");
        assert!(v.get(settings).await.body.contains("Passive advice"));
        let r = v
            .post_form(
                settings,
                &[("csrf", &token), ("action", "passive"), ("passive", "off")],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let p = manu.get("/projects/webapp").await.json;
        assert_eq!(p["passive_advice"], false, "{p}");
        let r = v
            .post_form(
                settings,
                &[
                    ("csrf", &token),
                    ("action", "passive"),
                    ("passive", "maybe"),
                ],
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("passive"), "{}", r.body);
        let members = manu.get("/projects/webapp/members").await.json;
        assert!(members.to_string().contains("user:alice"), "{members}");
        let r = v
            .post_form(
                settings,
                &[
                    ("csrf", &token),
                    ("action", "add"),
                    ("participant_id", "Alice"),
                ],
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.body.contains("participant_id"), "{}", r.body);

        // Agents: invite to a floor and remove again, from the agents page's forms.
        srv.load_agents(&crate::support::dataset_agents()).await;
        let agents = v.get("/ui/agents").await;
        assert!(agents.body.contains("Martha"), "{}", agents.body);
        let r = v
            .post_form(
                "/ui/agents/invite",
                &[
                    ("csrf", &token),
                    ("agent", "agent:martha"),
                    ("project", "webapp"),
                ],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let on = manu.get("/projects/webapp/agents").await.json;
        assert!(
            on.to_string().contains("agent:martha") && on.to_string().contains("invite"),
            "{on}"
        );
        let page = v.get("/ui/agents").await;
        assert!(page.body.contains("webapp — invite"), "{}", page.body);
        let r = v
            .post_form(
                "/ui/floors/webapp/agents/remove",
                &[("csrf", &token), ("agent", "agent:martha")],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        let on = manu.get("/projects/webapp/agents").await.json;
        assert!(!on.to_string().contains("agent:martha"), "{on}");
        let r = v
            .post_form(
                "/ui/agents/invite",
                &[
                    ("csrf", &token),
                    ("agent", "agent:nobody"),
                    ("project", "webapp"),
                ],
            )
            .await;
        assert!(r.status.is_client_error(), "{}", r.status);

        // What Martha remembers, as the memory API shows it.
        let r = manu
            .post(
                "/agents/martha/memory",
                serde_json::json!({"fact": "launch e-mails go out on Tuesdays"}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let mid = r.json["id"].as_str().unwrap().to_owned();
        let page = v.get("/ui/agents").await;
        assert!(
            page.body.contains("launch e-mails go out on Tuesdays") && page.body.contains(&mid),
            "{}",
            page.body
        );
        // Deleted through the API: gone from the page.
        assert_eq!(
            manu.delete(&format!("/agents/martha/memory/{mid}"))
                .await
                .status,
            200
        );
        let page = v.get("/ui/agents").await;
        assert!(!page.body.contains("launch e-mails go out on Tuesdays"));
    }
);

/// Development mode (no secret, loopback): no sign-in, pages open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_needs_no_sign_in() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    srv.client().project_session("webapp", "s-1").await;
    let mut v = Visitor::new(&srv.base);
    let r = v.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("development mode"), "{}", r.body);
    let page = format!("/ui/floors/{}/sessions/s-1", enc("webapp"));
    let r = v.get(&page).await;
    assert_eq!(r.status, 200);
    let token = csrf(&r.body);
    let r = v
        .post_form(
            &format!("{page}/inject"),
            &[("content", "hello"), ("csrf", &token)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let events = srv
        .client()
        .get("/projects/webapp/sessions/s-1/messages")
        .await
        .json;
    assert_eq!(events[0]["sender"], "user:local", "{events}");
    srv.finish().await;
}

/// The floors page's chart counts today's events as they come: the first view counts the
/// window, later views only what was committed since, and nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_chart_counts_events_as_they_come() {
    let srv = TestServer::start(Backend::Sqlite, Options::default())
        .await
        .unwrap();
    let c = srv.client();
    c.project_session("webapp", "s-1").await;
    let post = |n: usize| {
        let c = &c;
        async move {
            for i in 0..n {
                let r = c
                    .post(
                        "/projects/webapp/sessions/s-1/events",
                        json!({"sender": "user:ada", "payload": {"hook_event_name": "UserPromptSubmit", "session_id": "cc", "prompt": format!("p{i}")}}),
                    )
                    .await;
                assert_eq!(r.status, 201, "{r:?}");
            }
        }
    };
    // The chart's label lists the 14 days' counts, today last.
    let today = |body: &str| -> i64 {
        let label = body
            .split("aria-label=\"events per day, last 14 days: ")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no chart: {body}"));
        let counts: Vec<i64> = label.split(", ").map(|n| n.parse().unwrap()).collect();
        assert_eq!(counts.len(), 14, "{label}");
        assert!(counts[..13].iter().all(|n| *n == 0), "{label}");
        counts[13]
    };
    let mut v = Visitor::new(&srv.base);
    post(1).await;
    let first = today(&v.get("/").await.body);
    assert!(first >= 1, "{first}");
    post(3).await;
    assert_eq!(today(&v.get("/").await.body), first + 3);
    post(2).await;
    assert_eq!(today(&v.get("/").await.body), first + 5);
    assert_eq!(
        today(&v.get("/").await.body),
        first + 5,
        "nothing counted twice"
    );
    srv.finish().await;
}

/// Waits until the sidecar follows `session` for window `cc` with an empty queue: a first
/// stream starts at "now", so probe with injects until one is queued, then drain up to a
/// last probe (the stream is in order: nothing older comes after it).
async fn follow(sc: &Sidecar, manu: &Client, project: &str, session: &str, cc: &str) {
    let path = format!("/projects/{project}/sessions/{session}/inject");
    let mut tries = 0u32;
    eventually(20, || {
        tries += 1;
        let probe = tries % 10 == 1;
        let path = path.clone();
        async move {
            if probe {
                assert!(manu.post(&path, json!({"content": "probe"})).await.status < 300);
            }
            let (_, v) = sc.get(&format!("/status/{cc}")).await;
            (v["injectsWaiting"].as_u64() > Some(0)).then_some(())
        }
    })
    .await;
    assert!(
        manu.post(&path, json!({"content": "last probe"}))
            .await
            .status
            < 300
    );
    eventually(20, || async {
        let (_, v) = sc.post("/events", prompt(cc, "drain the probes")).await;
        let drained = v["pendingInjects"].as_array().cloned().unwrap_or_default();
        drained
            .iter()
            .any(|i| i["content"] == "last probe")
            .then_some(())
    })
    .await;
    wait_queued(sc, cc, 0).await;
}

/// The page is as wide as the window: nothing scrolls sideways.
async fn fits_the_width(b: &Browser) {
    let v = b
        .client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "the page is {scroll}px wide in a {inner}px window"
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The browser scenario, end to end in headless Chromium: sign in through a
/// one-time link; watch a hook event posted over HTTP appear without a reload (and time
/// it); inject from the page and find the advice in the sidecar's queue; the link fails a
/// second time; org B gets a 404 page for org A's session; the pages fit a phone's width.
/// With `POLARIS_SCREENSHOTS=1` it saves each page under `docs/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_sign_in_watch_live_and_inject() {
    let Some(b) = Browser::start(1280, 900).await else {
        return;
    };
    let srv = TestServer::start(Backend::Sqlite, Options::secured())
        .await
        .unwrap();
    srv.load_agents(&crate::support::dataset_agents()).await;
    let manu = srv.client_as("acme", "user:manu", Role::Admin);
    assert!(
        manu.post("/projects", json!({"name": "webapp"}))
            .await
            .status
            < 300
    );
    assert!(
        manu.method_json(
            "PUT",
            "/projects/webapp/tags",
            json!({"tags": ["data", "website"]})
        )
        .await
        .status
            < 300
    );
    manu.project_session("billing", "nightly-etl").await;

    // A sidecar for Manu's window, following its session.
    let (_d, home) = crate::sidecar::home_dir();
    let token = crate::support::token("acme", "user:manu", Role::Member);
    let sc = Sidecar::start_env(
        &home,
        &srv.base,
        &[("POLARIS_AUTH_TOKEN", std::path::Path::new(&token))],
    )
    .await;
    let session = sc.join("w", "webapp", "user:manu").await;
    follow(&sc, &manu, "webapp", &session, "w").await;
    let s_path = format!("/projects/webapp/sessions/{session}");
    manu.prompt(
        "webapp",
        &session,
        "user:manu",
        "Why is the signup funnel down 12% this week? Key: AKIAIOSFODNN7EXAMPLE",
    )
    .await;
    let tool = manu
        .post(&format!("{s_path}/events"), json!({"sender": "agent:claude",
            "payload": {"hook_event_name": "PostToolUse", "session_id": "w", "tool_name": "Bash", "tool_input": {"command": "psql -c 'select count(*) from signups'"}}}))
        .await;
    assert!(tool.status < 300, "{tool:?}");
    let answer = manu
        .post(&format!("{s_path}/events"), json!({"sender": "agent:claude",
            "payload": {"hook_event_name": "Stop", "session_id": "w", "stop_response": "Signups fell after Tuesday's deploy: the email step rejects plus-addresses."}}))
        .await;
    assert!(answer.status < 300, "{answer:?}");
    let seq = answer.json["seq"].as_i64().unwrap();
    let r = manu
        .post(&format!("{s_path}/annotations"), json!({"kind": "decision", "value": "Roll back the email validator today", "event_id": answer.json["id"]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Sign in through the link.
    let url = link(&srv, "acme", "user:manu", Role::Admin).await;
    b.client.goto(&url).await.unwrap();
    b.screenshot("signin").await;
    b.wait_for("#signin").await.click().await.unwrap();
    b.wait_for("section.floor").await;
    let html = b.client.source().await.unwrap();
    assert!(html.contains("webapp") && html.contains(&session), "{html}");
    b.screenshot("floors").await;

    // The transcript: secrets redacted, tool calls folded, live.
    let page = format!("{}/ui/floors/webapp/sessions/{}", srv.base, enc(&session));
    b.client.goto(&page).await.unwrap();
    b.wait_for("#live-status[data-state=open]").await;
    let html = b.client.source().await.unwrap();
    assert!(
        !html.contains("AKIAIOSFODNN7EXAMPLE"),
        "the key is shown redacted"
    );
    assert!(
        html.contains("details class=\"tool\""),
        "the tool call is folded"
    );
    assert!(
        b.client
            .find(fantoccini::Locator::Css(&format!("#e{seq}")))
            .await
            .is_ok()
    );
    // Hook events posted over HTTP appear without a reload; time each, arrival to shown.
    let mut delays = Vec::new();
    for i in 0..20 {
        let r = manu
            .prompt("webapp", &session, "user:manu", &format!("live check {i}"))
            .await;
        let seq = r.json["seq"].as_i64().unwrap();
        let received =
            chrono::DateTime::parse_from_rfc3339(r.json["received_at"].as_str().unwrap()).unwrap();
        b.wait_for(&format!("#e{seq}")).await;
        let shown = b
            .client
            .execute(
                &format!("return Number(document.getElementById('e{seq}').dataset.shownAt);"),
                vec![],
            )
            .await
            .unwrap()
            .as_f64()
            .unwrap();
        delays.push(shown - received.timestamp_millis() as f64);
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "dashboard: received → shown in the browser over SSE, 20 events: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    b.screenshot("transcript").await;

    // Inject from the page: it lands in the sidecar's queue for the window, from Manu.
    let advice = "Check the plus-address regex before rolling back";
    b.wait_for("#content")
        .await
        .send_keys(advice)
        .await
        .unwrap();
    b.wait_for("#inject button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_queued(&sc, "w", 1).await;
    let (_, v) = sc.post("/events", prompt("w", "what next?")).await;
    assert_eq!(v["pendingInjects"][0]["content"], advice, "{v}");
    assert_eq!(v["pendingInjects"][0]["from"], "user:manu", "{v}");

    // The other pages, for the README and to see that they render in a browser.
    for (name, path) in [
        ("agents", "/ui/agents".to_owned()),
        ("search", "/ui/search?q=signup".to_owned()),
        ("decisions", "/ui/decisions".to_owned()),
        ("team", "/ui/team".to_owned()),
        ("settings", "/ui/floors/webapp/settings".to_owned()),
    ] {
        b.client.goto(&format!("{}{path}", srv.base)).await.unwrap();
        b.wait_for("main h1").await;
        let title = b.client.title().await.unwrap();
        assert!(
            !title.starts_with("Not Found") && !title.starts_with("Internal"),
            "{name}: {title}"
        );
        let html = b.client.source().await.unwrap();
        let expected = match name {
            "agents" => "Dean",
            "search" => "<mark>signup</mark> funnel down 12%",
            "decisions" => "Roll back the email validator today",
            "team" => "user:manu",
            _ => "members only",
        };
        assert!(html.contains(expected), "{name}: {html}");
        b.screenshot(name).await;
    }

    // A phone's width: nothing overflows sideways.
    b.client.set_window_size(390, 844).await.unwrap();
    for path in [
        "/".to_owned(),
        format!("/ui/floors/webapp/sessions/{}", enc(&session)),
        "/ui/agents".to_owned(),
    ] {
        b.client.goto(&format!("{}{path}", srv.base)).await.unwrap();
        b.wait_for("main h1").await;
        fits_the_width(&b).await;
    }
    b.client.goto(&page).await.unwrap();
    b.wait_for("#live-status[data-state=open]").await;
    b.screenshot("transcript-phone").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // The link again: refused.
    b.client.delete_all_cookies().await.unwrap();
    b.client.goto(&url).await.unwrap();
    b.wait_for("#signin").await.click().await.unwrap();
    b.wait_for_text("main h1", "This link does not work").await;

    // Org B signs in and gets a 404 page for org A's session.
    let bob = link(&srv, "globex", "user:bob", Role::Admin).await;
    b.client.goto(&bob).await.unwrap();
    b.wait_for("#signin").await.click().await.unwrap();
    b.wait_for_text("main h1", "Floors").await;
    b.client.goto(&page).await.unwrap();
    b.wait_for_text("main h1", "404 Not Found").await;
    assert!(!b.client.source().await.unwrap().contains("signup funnel"));

    b.stop().await;
    sc.stop().await;
    srv.finish().await;
}
