//! A real headless Chromium, driven over WebDriver (chromedriver on a free
//! loopback port, one per test), for the HTML pages.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use super::{PATIENCE, eventually, free_port};

pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn binary(names: &[&str]) -> PathBuf {
    names
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{names:?} not installed: run scripts/install-test-tools (the README's test command does)")
        })
}

impl Browser {
    pub async fn start() -> Self {
        let driver_bin = binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
        let chromium = binary(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]);
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let status = format!("http://127.0.0.1:{port}/status");
        let up = eventually(PATIENCE, || async {
            reqwest::get(&status)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(up.is_some(), "chromedriver did not come up");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");
        Self { client, driver }
    }

    /// Logs in through the real login form at `base`.
    pub async fn log_in(&self, base: &str, name: &str, password: &str) {
        let c = &self.client;
        c.goto(&format!("{base}/user/login"))
            .await
            .expect("login page");
        c.find(Locator::Css("#name"))
            .await
            .expect("name field")
            .send_keys(name)
            .await
            .expect("type name");
        c.find(Locator::Css("#password"))
            .await
            .expect("password field")
            .send_keys(password)
            .await
            .expect("type password");
        c.find(Locator::Css("form.stacked button[type=submit]"))
            .await
            .expect("submit")
            .click()
            .await
            .expect("click");
        let left = eventually(PATIENCE, || async {
            c.current_url()
                .await
                .is_ok_and(|u| !u.path().starts_with("/user/login"))
        })
        .await;
        assert!(left.is_some(), "the login form did not log in");
    }

    /// From the admin overview at `base`, follows the navigation link
    /// `link` and waits for `ready` (a CSS selector) on the page it opens.
    pub async fn open_admin_page(
        &self,
        base: &str,
        link: &str,
        ready: &str,
    ) -> fantoccini::elements::Element {
        let c = &self.client;
        c.goto(&format!("{base}/admin")).await.expect("admin");
        c.find(Locator::LinkText(link))
            .await
            .unwrap_or_else(|e| panic!("the navigation links the {link} page: {e}"))
            .click()
            .await
            .expect("click");
        c.wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(ready))
            .await
            .unwrap_or_else(|e| panic!("`{ready}` on the {link} page: {e}"))
    }

    /// Saves a screenshot of the page as `name`.png under the test output
    /// directory and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Screenshots of the whole page at 1280 px and at 390 px wide, as
    /// `{name}-1280.png` and `{name}-390.png` under `$SCREENSHOT_DIR` (else
    /// the test output directory). Asserts that at 390 px nothing but a
    /// table's own scroll box is wider than the window: pages must not
    /// scroll sideways on a phone.
    pub async fn shots(&self, name: &str) {
        let dir = std::env::var_os("SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        for width in [1280u32, 390] {
            self.client
                .set_window_size(width, 900)
                .await
                .expect("window size");
            let height = self
                .client
                .execute("return document.documentElement.scrollHeight", vec![])
                .await
                .expect("page height")
                .as_u64()
                .unwrap_or(900)
                .clamp(600, 6000) as u32;
            self.client
                .set_window_size(width, height + 120)
                .await
                .expect("window size");
            let overflow = self
                .client
                .execute(
                    "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                    vec![],
                )
                .await
                .expect("page width")
                .as_i64()
                .unwrap_or(0);
            assert!(
                overflow <= 0,
                "{name} scrolls sideways by {overflow} px at {width} px"
            );
            let png = self.client.screenshot().await.expect("screenshot");
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).expect("write screenshot");
        }
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("window size");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
