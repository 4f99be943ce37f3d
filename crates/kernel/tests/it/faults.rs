//! Dependencies lost while serving: `/health` answers 503 naming the one
//! that is gone and why, the other stays `ok`, and it recovers by itself
//! once the dependency comes back. Waits are patience, not claims.

use reqwest::StatusCode;
use serde_json::Value;
use trovato::embedded::postgres::PgListen;
use trovato::embedded::redis::RedisListen;
use trovato::embedded::{Durability, PostgresServer, RedisServer};

use crate::harness::{PATIENCE, TestApp, eventually, free_port, services::scratch_root};

async fn health(app: &TestApp) -> (StatusCode, Value) {
    let resp = app.get("/health").await;
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn scratch_dir(tag: &str) -> std::path::PathBuf {
    scratch_root()
        .join("faults")
        .join(format!("{tag}-{}", uuid::Uuid::now_v7().simple()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_while_serving_is_reported_and_recovered() {
    let port = free_port();
    let dir = scratch_dir("redis");
    let redis = RedisServer::ensure(&dir, RedisListen::Tcp(port), Durability::Scratch)
        .await
        .expect("private redis");
    let url = redis.url();
    let app = TestApp::spawn_with(move |c| c.redis.url = Some(url), axum::Router::new()).await;
    assert_eq!(health(&app).await.0, StatusCode::OK);

    redis.kill().await.expect("stop redis");
    let down = eventually(PATIENCE, || async {
        let (s, body) = health(&app).await;
        s == StatusCode::SERVICE_UNAVAILABLE && body["checks"]["redis"]["status"] == "error"
    })
    .await;
    assert!(
        down.is_some(),
        "no 503 naming redis; last: {:?}",
        health(&app).await
    );
    let (_, body) = health(&app).await;
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["checks"]["postgres"]["status"], "ok", "{body}");
    assert!(body["checks"]["redis"]["reason"].is_string(), "{body}");

    redis.start().await.expect("restart redis");
    let up = eventually(PATIENCE, || async {
        health(&app).await.0 == StatusCode::OK
    })
    .await;
    assert!(
        up.is_some(),
        "no 200 after redis returned; last: {:?}",
        health(&app).await
    );
    redis.kill().await.expect("stop redis");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_while_serving_is_reported_and_recovered() {
    let port = free_port();
    let dir = scratch_dir("pg");
    let pg = PostgresServer::ensure(&dir, PgListen::Tcp(port), Durability::Scratch)
        .await
        .expect("private postgres");
    pg.create_database("trovato").await.expect("db");
    let url = pg.url("trovato");
    let redis_url = crate::harness::services().await.redis_url.clone();
    let mut config = trovato::Config::default();
    config.db.url = Some(url);
    config.redis.url = Some(redis_url);
    config.redis.prefix = crate::harness::test_prefix();
    let state = trovato::Kernel::connect(config).await.expect("kernel");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(trovato::serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();
    let health = || {
        let client = client.clone();
        async move {
            let resp = client
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .expect("health");
            let s = resp.status();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(health().await.0, StatusCode::OK);

    pg.kill().await.expect("stop postgres");
    let down = eventually(PATIENCE, || async {
        let (s, body) = health().await;
        s == StatusCode::SERVICE_UNAVAILABLE
            && body["checks"]["postgres"]["status"] == "error"
            && body["checks"]["redis"]["status"] == "ok"
    })
    .await;
    assert!(
        down.is_some(),
        "no 503 naming postgres; last: {:?}",
        health().await
    );
    let (_, body) = health().await;
    assert_eq!(body["status"], "error", "{body}");
    assert!(body["checks"]["postgres"]["reason"].is_string(), "{body}");

    pg.start().await.expect("restart postgres");
    let up = eventually(PATIENCE, || async { health().await.0 == StatusCode::OK }).await;
    assert!(
        up.is_some(),
        "no 200 after postgres returned; last: {:?}",
        health().await
    );
    pg.kill().await.expect("stop postgres");
    let _ = std::fs::remove_dir_all(dir);
}
