//! Every error response is JSON: unknown routes, wrong methods, oversized
//! bodies, panics.

use axum::routing::get;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::TestApp;

async fn json_error(resp: reqwest::Response) -> Value {
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = resp.json().await.expect("json body");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body.get("details").is_some(), "{body}");
    body
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = TestApp::spawn().await;
    let resp = app.get("/no/such/page").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_error(resp).await["error"], "not_found");
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .delete(app.url("/health"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json_error(resp).await["error"], "method_not_allowed");
}

#[tokio::test]
async fn oversized_body_is_413_json_and_nothing_is_written() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024, axum::Router::new()).await;
    app.create_user("olga", "correct horse battery", false)
        .await;
    let big = "x".repeat(4096);
    let resp = app
        .client
        .post(app.url("/user/login"))
        .json(&serde_json::json!({"name": "olga", "password": big}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_error(resp).await["error"], "payload_too_large");
    let keys: Vec<String> = app
        .state
        .kv
        .query(redis::cmd("KEYS").arg(format!("{}*", app.state.config.redis.prefix)))
        .await
        .expect("keys");
    assert!(keys.is_empty(), "no session may be created: {keys:?}");
}

#[tokio::test]
async fn oversized_body_without_content_length_is_413_json() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024, axum::Router::new()).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = app
        .client
        .post(app.url("/user/login"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_error(resp).await["error"], "payload_too_large");
}

#[tokio::test]
async fn panic_in_a_handler_is_a_500_json_error_and_the_server_keeps_serving() {
    let extra = axum::Router::new().route(
        "/test/panic",
        get(|| async {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: a genuine panic in handler code.
            let i = v.len() + 3;
            format!("{}", v[i])
        }),
    );
    let app = TestApp::spawn_with(|_| {}, extra).await;
    let resp = app.get("/test/panic").await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json_error(resp).await;
    assert_eq!(body["error"], "internal");
    assert!(
        !body["message"]
            .as_str()
            .unwrap_or("")
            .contains("index out of bounds"),
        "{body}"
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = TestApp::spawn().await;
    let resp = app.get("/healthz").await;
    let id = resp
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn a_nul_character_gets_the_kernels_sentence_not_the_databases() {
    let app = TestApp::spawn_with_articles().await;
    let title = app
        .post_item(
            serde_json::json!({"type": "article", "title": "nul\u{0}byte",
                "fields": {"field_body": {"value": "text"}}}),
            None,
        )
        .await;
    let login = crate::harness::client()
        .post(app.url("/user/login"))
        .json(&serde_json::json!({"name": "ad\u{0}min", "password": "x"}))
        .send()
        .await
        .expect("POST");
    for resp in [title, login] {
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = json_error(resp).await;
        assert_eq!(body["error"], "invalid_text", "{body}");
        let message = body["message"].as_str().expect("message");
        assert_eq!(message, "text must not contain NUL (U+0000) characters");
        assert!(
            !message.contains("UTF8") && !message.contains("0x00"),
            "{message}"
        );
    }
}
