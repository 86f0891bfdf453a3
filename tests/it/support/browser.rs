//! Headless Chromium for the dashboard tests, driven through chromedriver (WebDriver) with
//! fantoccini. The browser is Debian's `chromium` (`/usr/bin/chromium`, or
//! `POLARIS_TEST_CHROMIUM`) with its `chromedriver` (`/usr/bin/chromedriver`, or
//! `POLARIS_TEST_CHROMEDRIVER`). Without them the tests are skipped with a message, unless
//! `POLARIS_TEST_REQUIRE_BROWSER` is set (CI), which makes their absence a failure.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use polaris_config::Env;
use serde_json::{Value, json};

/// A browser session and the chromedriver behind it (killed with the test).
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
}

fn path_of(env: &Env, var: &str, default: &str) -> PathBuf {
    PathBuf::from(env.get(var).unwrap_or(default))
}

impl Browser {
    /// Starts chromedriver and a headless browser window of `width`×`height`; `None`
    /// (after saying why) when no browser is installed and none is required.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let env = Env::from_process();
        let chromium = path_of(&env, "POLARIS_TEST_CHROMIUM", "/usr/bin/chromium");
        let driver = path_of(&env, "POLARIS_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        if !chromium.exists() || !driver.exists() {
            let why = format!(
                "no browser: {} or {} is missing (apt-get install chromium chromium-driver)",
                chromium.display(),
                driver.display()
            );
            if env.get("POLARIS_TEST_REQUIRE_BROWSER").is_some() {
                panic!("POLARIS_TEST_REQUIRE_BROWSER is set but there is {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        }
        // A free port for chromedriver (it has no "pick one and tell me").
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
        }))
        .expect("capabilities");
        // chromedriver takes a moment to listen.
        let client = crate::support::eventually(30, || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Some(Browser {
            client,
            driver: child,
        })
    }

    /// The element matching `css`, waiting up to ten seconds for it.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} did not appear ({e}) at {url:?}:\n{page}")
            }
        }
    }

    /// Saves a PNG of the window to `docs/screenshots/<name>.png` when
    /// `POLARIS_SCREENSHOTS` is set.
    /// Waits until the element `css` reads `expected`: after a click that navigates, the
    /// old page's element may be found first and go stale under the reader.
    pub async fn wait_for_text(&self, css: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if now == expected {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} reads {now:?}, not {expected:?}:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn screenshot(&self, name: &str) {
        if Env::from_process().get("POLARIS_SCREENSHOTS").is_none() {
            return;
        }
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    pub async fn stop(mut self) {
        // Best effort: the driver is killed next either way.
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}
