//! Failed-login flood control: per address and per name from an address,
//! with the client address taken from trusted proxies' X-Forwarded-For.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{PATIENCE, TestApp};

const PASSWORD: &str = "correct horse battery";

/// A JSON login as a client at `addr`, as the local nginx would forward it.
async fn login_from(app: &TestApp, addr: &str, name: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/user/login"))
        .header("x-forwarded-for", addr)
        .json(&serde_json::json!({"name": name, "password": password}))
        .send()
        .await
        .expect("POST /user/login")
}

async fn spawn(customise: impl FnOnce(&mut trovato::Config) + Send) -> TestApp {
    TestApp::spawn_with(customise, axum::Router::new()).await
}

/// Every session key under this test's prefix.
async fn sessions(app: &TestApp) -> Vec<String> {
    crate::harness::session_keys(&app.state.kv).await
}

/// Checks a 429 with its JSON body and Retry-After, and that it started no
/// session (no cookie, nothing in Redis).
async fn assert_blocked(app: &TestApp, resp: reqwest::Response, longest: Duration) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        app.session_token(&resp).is_none(),
        "a blocked login set a session"
    );
    let stored = sessions(app).await;
    assert!(
        stored.is_empty(),
        "a blocked login stored a session: {stored:?}"
    );
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(
        (1..=longest.as_secs()).contains(&retry),
        "Retry-After {retry}"
    );
    let body: Value = resp.json().await.expect("json body");
    assert_eq!(body["error"], "too_many_attempts");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("too many failed login attempts")),
        "{body}"
    );
}

#[tokio::test]
async fn failures_for_a_name_block_it_from_that_address_even_with_the_right_password() {
    let app = spawn(|c| c.login.name_limit = 3).await;
    app.create_user("ivan", PASSWORD, false).await;
    for _ in 0..3 {
        let resp = login_from(&app, "203.0.113.1", "ivan", "wrong guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Counted case-insensitively, as names match.
    let resp = login_from(&app, "203.0.113.1", "IVAN", PASSWORD).await;
    assert_blocked(&app, resp, app.state.config.login.limits().name_window).await;
    assert_eq!(
        app.get("/user/me").await.status(),
        StatusCode::UNAUTHORIZED,
        "the client is not logged in"
    );

    // The same name from elsewhere, and another name from here, still work.
    let resp = login_from(&app, "203.0.113.2", "ivan", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
    app.create_user("judy", PASSWORD, false).await;
    let resp = login_from(&app, "203.0.113.1", "judy", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_successful_login_clears_the_count_of_its_name() {
    let app = spawn(|c| c.login.name_limit = 3).await;
    app.create_user("kim", PASSWORD, false).await;
    let addr = "198.51.100.7";
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, addr, "kim", "nope").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let kv = &app.state.kv;
    let keys = |pattern: &str| {
        let mut cmd = redis::cmd("KEYS");
        cmd.arg(kv.key(pattern));
        cmd
    };
    let counted: Vec<String> = kv
        .query(&keys("{flood:login:*}:name:*"))
        .await
        .expect("keys");
    assert_eq!(counted.len(), 1, "{counted:?}");

    assert_eq!(
        login_from(&app, addr, "kim", PASSWORD).await.status(),
        StatusCode::OK
    );
    let counted: Vec<String> = kv
        .query(&keys("{flood:login:*}:name:*"))
        .await
        .expect("keys");
    assert!(counted.is_empty(), "the name's count survived: {counted:?}");
    let addr_count: Option<i64> = kv
        .query(redis::cmd("GET").arg(kv.slot_key(&format!("flood:login:{addr}"), ":addr")))
        .await
        .expect("get");
    assert_eq!(
        addr_count,
        Some(2),
        "the two failures stay counted, the success not"
    );

    // Two more failures make two, not four: still under the limit.
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, addr, "kim", "nope").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_from(&app, addr, "kim", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn failures_at_many_names_block_the_address() {
    let app = spawn(|c| {
        c.login.address_limit = 3;
        c.login.name_limit = 0;
    })
    .await;
    app.create_user("lena", PASSWORD, false).await;
    for name in ["a", "b", "lena"] {
        let resp = login_from(&app, "192.0.2.10", name, "guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = login_from(&app, "192.0.2.10", "lena", PASSWORD).await;
    assert_blocked(&app, resp, app.state.config.login.limits().address_window).await;
    let resp = login_from(&app, "192.0.2.11", "lena", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn(|c| {
        c.login.trusted_proxies = Vec::new();
        c.login.name_limit = 2;
    })
    .await;
    app.create_user("mia", PASSWORD, false).await;
    // Each claims another address; all come from 127.0.0.1.
    for addr in ["198.51.100.1", "198.51.100.2"] {
        let resp = login_from(&app, addr, "mia", "guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = login_from(&app, "198.51.100.3", "mia", PASSWORD).await;
    assert_blocked(&app, resp, app.state.config.login.limits().name_window).await;
}

#[tokio::test]
async fn the_login_form_shows_the_block_with_429() {
    let app = spawn(|c| c.login.name_limit = 1).await;
    app.create_user("nora", PASSWORD, false).await;
    let page = app.get("/user/login").await.text().await.expect("html");
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).expect("csrf field") + marker.len();
    let csrf = page[start..].split('"').next().expect("value").to_owned();
    let post = |password: &'static str| {
        app.client
            .post(app.url("/user/login"))
            .form(&[
                ("name", "nora"),
                ("password", password),
                ("csrf_token", &csrf),
            ])
            .send()
    };
    assert_eq!(
        post("wrong").await.expect("post").status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = post(PASSWORD).await.expect("post");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(app.session_token(&resp).is_none());
    assert!(
        sessions(&app).await.is_empty(),
        "a blocked login stored a session"
    );
    let html = resp.text().await.expect("html");
    assert!(html.contains("Too many failed login attempts"), "{html}");
}

#[tokio::test]
async fn the_block_ends_with_its_window() {
    // One second, against a default of six hours: within the test's
    // patience only the configured window can end the block.
    let app = spawn(|c| {
        c.login.name_limit = 1;
        c.login.name_window_secs = 1;
    })
    .await;
    app.create_user("otto", PASSWORD, false).await;
    let addr = "203.0.113.50";
    assert_eq!(
        login_from(&app, addr, "otto", "guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_from(&app, addr, "otto", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let app = &app;
    let ended = crate::harness::eventually(PATIENCE, || async move {
        login_from(app, addr, "otto", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
    assert!(ended.is_some(), "still blocked after the window");
}

#[tokio::test]
async fn parallel_guesses_cannot_all_pass_one_check() {
    let app = spawn(|c| c.login.name_limit = 3).await;
    app.create_user("pia", PASSWORD, false).await;
    let guesses = (0..20).map(|i| {
        let app = &app;
        async move {
            login_from(app, "203.0.113.77", "pia", &format!("guess {i}"))
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (3, 17), "{statuses:?}");
}
