//! /health, /healthz, /metrics, the OpenAPI document, and the multi-process
//! harness.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Cluster, PATIENCE, TestApp, eventually};

#[tokio::test]
async fn health_is_200_when_postgres_and_redis_answer() {
    let app = TestApp::spawn().await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["postgres"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "ok");
    assert!(body["checks"]["postgres"]["latency_ms"].is_number());
}

#[tokio::test]
async fn healthz_answers_without_checking_dependencies() {
    let app = TestApp::spawn().await;
    // Close the pool: /healthz must not care.
    app.state.db.close().await;
    let resp = app.get("/healthz").await;
    assert_eq!(resp.status(), StatusCode::OK);
    // /health does check, and names the dependency that failed.
    let health = app.get("/health").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.expect("json");
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["checks"]["postgres"]["status"], "error", "{body}");
    assert!(
        body["checks"]["postgres"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");
}

/// A failing `/health` for a kernel whose operators' networks are `allow`.
async fn failing_health(allow: &str) -> Value {
    let app = TestApp::spawn_with(
        |c| c.observe.metrics_allow = vec![allow.parse().expect("cidr")],
        axum::Router::new(),
    )
    .await;
    app.state.db.close().await;
    let health = app.get("/health").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    health.json().await.expect("json")
}

#[tokio::test]
async fn health_shows_driver_text_only_to_the_operators_networks() {
    let public = failing_health("10.0.0.0/8").await;
    let check = &public["checks"]["postgres"];
    assert_eq!(check["status"], "error", "{public}");
    let reason = check["reason"].as_str().expect("reason");
    assert_eq!(
        check["message"].as_str(),
        Some(trovato::observe::health::reason_message(reason)),
        "the kernel's own sentence: {public}"
    );
    assert!(check.get("detail").is_none(), "{public}");
    let text = public.to_string();
    for driver_text in ["pool", "closed", "error communicating", "os error"] {
        assert!(!text.contains(driver_text), "{driver_text} leaked: {text}");
    }

    let operator = failing_health("127.0.0.0/8").await;
    let detail = operator["checks"]["postgres"]["detail"]
        .as_str()
        .expect("detail for operators");
    assert!(detail.contains("closed"), "{detail}");
}

#[tokio::test]
async fn metrics_report_requests_by_route_template() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(
        app.get("/does-not-exist-abc123").await.status(),
        StatusCode::NOT_FOUND
    );
    app.get("/health").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(
        text.contains("# TYPE trovato_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("route=\"/healthz\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
    assert!(
        !text.contains("does-not-exist-abc123"),
        "raw paths must never be labels"
    );
    assert!(text.contains("trovato_db_query_duration_seconds"), "{text}");
    assert!(text.contains("trovato_redis_commands_in_flight"), "{text}");
    assert!(text.contains("trovato_db_pool_connections"), "{text}");
}

#[tokio::test]
async fn metrics_are_forbidden_outside_the_allowed_networks() {
    let app = TestApp::spawn_with(
        |c| c.observe.metrics_allow = vec!["10.0.0.0/8".parse().expect("cidr")],
        axum::Router::new(),
    )
    .await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "forbidden");
}

#[tokio::test]
async fn openapi_document_describes_every_json_endpoint() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{doc}"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/health", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/user/login", "post"),
        ("/user/logout", "post"),
        ("/user/me", "get"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
}

#[tokio::test]
async fn a_session_started_on_one_process_is_valid_on_another() {
    let cluster = Cluster::spawn(2).await;
    let a = &cluster.nodes[0];
    let b = &cluster.nodes[1];
    let pool = sqlx::PgPool::connect(&cluster.db_url).await.expect("db");
    trovato::user::create(
        &pool,
        trovato::user::NewUser {
            name: "pat",
            email: "pat@example.com",
            password: "correct horse battery",
            admin: false,
        },
    )
    .await
    .expect("user");
    pool.close().await;
    let client = crate::harness::client();
    let refused = client
        .post(a.url("/user/login"))
        .json(&serde_json::json!({"name": "pat", "password": "wrong"}))
        .send()
        .await
        .expect("failed login on A");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let resp = client
        .post(a.url("/user/login"))
        .json(&serde_json::json!({"name": "pat", "password": "correct horse battery"}))
        .send()
        .await
        .expect("login on A");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned();
    let me: Value = reqwest::Client::new()
        .get(b.url("/user/me"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("me on B")
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["name"], "pat");
    // The request span carries the route template, status and latency.
    let logs = a.logs.lock().map(|l| l.clone()).unwrap_or_default();
    let line = logs
        .iter()
        .find(|l| {
            l.contains("request completed")
                && l.contains("\"route\":\"/user/login\"")
                && l.contains("\"status\":200")
        })
        .unwrap_or_else(|| panic!("no request line for /user/login in {logs:?}"));
    let v: Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["span"]["status"], 200, "{line}");
    assert_eq!(v["span"]["method"], "POST", "{line}");
    assert!(v["span"]["latency_ms"].is_number(), "{line}");
    assert!(
        !v["span"]["request_id"].as_str().unwrap_or("").is_empty(),
        "{line}"
    );
    // An event the handler logs carries the route as well.
    let failed = logs
        .iter()
        .find(|l| l.contains("login failed"))
        .unwrap_or_else(|| panic!("no failed-login line in {logs:?}"));
    let v: Value = serde_json::from_str(failed).expect("JSON log line");
    assert_eq!(v["span"]["route"], "/user/login", "{failed}");
}

#[tokio::test]
async fn metrics_pass_promtool_lint() {
    let app = TestApp::spawn().await;
    app.get("/healthz").await;
    app.get("/health").await;
    app.get("/nope").await;
    app.login("nobody", "wrong password").await;
    let text = app.get("/metrics").await.text().await.expect("text");
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("promtool is not installed: run scripts/install-test-tools (the README's test command does)");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    use std::sync::Arc;
    use tokio::sync::Notify;
    // The handler says when it is running, then holds the request until
    // the test lets it go: the request is in flight for certain when the
    // shutdown starts.
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a, r) = (arrived.clone(), release.clone());
    let extra = axum::Router::new().route(
        "/test/held",
        axum::routing::get(move || {
            let (a, r) = (a.clone(), r.clone());
            async move {
                a.notify_one();
                r.notified().await;
                "finished"
            }
        }),
    );
    let mut app = TestApp::spawn_with(|_| {}, extra).await;
    let held = tokio::spawn(app.client.get(app.url("/test/held")).send());
    tokio::time::timeout(PATIENCE, arrived.notified())
        .await
        .expect("the request never reached its handler");
    app.begin_shutdown();
    // New connections are refused while the held request is still open.
    let healthz = app.url("/healthz");
    let closed = eventually(PATIENCE, || {
        let url = healthz.clone();
        async move { reqwest::get(url).await.is_err() }
    })
    .await;
    assert!(closed.is_some(), "the listener stayed open after shutdown");
    assert!(!held.is_finished(), "the held request ended early");
    release.notify_one();
    let resp = held
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.expect("body"), "finished");
    app.shut_down().await;
    assert!(reqwest::get(app.url("/healthz")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_http_loops_share_one_port_and_stop_together() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let app = TestApp::spawn().await;
    let listeners = trovato::app::bind_loops("127.0.0.1:0".parse().expect("addr"), 3)
        .await
        .expect("bind");
    let addrs: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    assert_eq!(addrs.len(), 3);
    assert!(addrs.iter().all(|a| *a == addrs[0]), "{addrs:?}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let server = tokio::spawn(trovato::app::serve_loops(
        listeners,
        app.state.clone(),
        async move {
            let _ = stop_rx.await;
        },
        async move { flag.store(true, Ordering::SeqCst) },
    ));
    // A new connection per request, so the kernel spreads them over the loops.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("http://{}/healthz", addrs[0]);
    for _ in 0..30 {
        let resp = client.get(&url).send().await.expect("answered");
        assert_eq!(resp.status(), StatusCode::OK);
    }
    stop_tx.send(()).expect("server running");
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the loops stopped")
        .expect("join")
        .expect("served without error");
    assert!(finished.load(Ordering::SeqCst), "finally never ran");
    assert!(
        client.get(&url).send().await.is_err(),
        "a loop still listens"
    );
}
