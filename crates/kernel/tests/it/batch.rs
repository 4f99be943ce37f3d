//! Batches: the API and its refusals, bulk publish through the item write
//! path, exact counts under three concurrent workers, cancel, a plugin's
//! operation, a Redis restart mid-batch, a SIGKILLed worker process, the
//! CLI, and the pages in a real Chromium.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trovato::batch::{self, BatchState, NewBatch};
use trovato::embedded::redis::RedisListen;
use trovato::embedded::{Durability, RedisServer};
use trovato::queue::Queue;
use trovato::queue::worker::{self, RunLimits};

use crate::harness::browser::Browser;
use crate::harness::content::{PASSWORD, error_body, expect_json};
use crate::harness::{PATIENCE, TestApp, free_port, run_trovato};

/// Workers of the kernel's `batch` queue in this process until dropped.
pub struct Workers {
    cancel: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<worker::WorkReport>>,
}

impl Workers {
    pub fn start(app: &TestApp, n: usize, concurrency: usize) -> Self {
        let cancel = CancellationToken::new();
        let handles = (0..n)
            .map(|_| {
                let state = app.state.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let limits = RunLimits {
                        concurrency,
                        until: None,
                        until_empty: false,
                        grace: Duration::from_secs(30),
                    };
                    worker::run(&state, vec![batch::queue_info()], limits, &cancel).await
                })
            })
            .collect();
        Self { cancel, handles }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for h in self.handles {
            let _ = h.await;
        }
    }
}

async fn wait_final(app: &TestApp, id: uuid::Uuid) -> batch::BatchStatus {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let s = batch::status(&app.state, id).await.expect("status");
        if s.state.is_final() {
            return s;
        }
        assert!(Instant::now() < deadline, "batch never ended: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn chunk_states(app: &TestApp, id: uuid::Uuid) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT state, count(*) FROM batch_chunk WHERE batch_id = $1 GROUP BY state ORDER BY state",
    )
    .bind(id)
    .fetch_all(&app.state.db)
    .await
    .expect("chunks")
}

async fn unpublished_articles(app: &TestApp, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = app
            .post_item(
                json!({"type": "article", "title": format!("Draft {i}"), "status": "unpublished",
                       "fields": {"field_body": {"value": "text"}}}),
                None,
            )
            .await;
        let v = expect_json(r, StatusCode::CREATED).await;
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    ids
}

async fn published_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM item WHERE type = 'article' AND status = 1")
        .fetch_one(&app.state.db)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_publish_goes_through_the_item_write_path_and_reports_its_failures() {
    let app = TestApp::spawn_with_articles().await;
    let ids = unpublished_articles(&app, 120).await;
    assert_eq!(published_count(&app).await, 0);
    let mut listed = ids.clone();
    listed.push(uuid::Uuid::now_v7().to_string());
    let r = app
        .json_request(reqwest::Method::POST, "/api/batch")
        .json(&json!({"operation": "items.publish", "params": {"ids": listed}}))
        .send()
        .await
        .expect("POST");
    let started = expect_json(r, StatusCode::ACCEPTED).await;
    assert_eq!(started["state"], "queued");
    assert_eq!(started["total"], 121);
    let id: uuid::Uuid = started["id"].as_str().expect("id").parse().expect("uuid");
    let workers = Workers::start(&app, 1, 2);
    let s = wait_final(&app, id).await;
    workers.stop().await;
    assert_eq!(s.state, BatchState::Done);
    assert_eq!((s.processed, s.failed, s.total), (120, 1, 121));
    assert_eq!(s.percent, 100.0);
    assert_eq!(s.errors.len(), 1);
    assert!(s.errors[0].error.contains("not found"), "{:?}", s.errors);
    assert_eq!(published_count(&app).await, 120, "every item published");
    // Each through the write path: a revision per item.
    let revisions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM item_revision WHERE log = 'batch items.publish'")
            .fetch_one(&app.state.db)
            .await
            .expect("revisions");
    assert_eq!(revisions, 120);
    assert_eq!(chunk_states(&app, id).await, vec![("done".to_owned(), 2)]);
    // The status endpoint says the same.
    let r = app.get(&format!("/batch/{id}/status")).await;
    let body = expect_json(r, StatusCode::OK).await;
    assert_eq!(body["state"], "done");
    assert_eq!(body["processed"], 120);
    assert_eq!(body["failed"], 1);
    assert_eq!(body["eta_secs"], 0.0);
    assert!(body["finished"].is_string());
    // Ended: cancelling is a conflict.
    let r = app
        .json_request(reqwest::Method::POST, &format!("/api/batch/{id}/cancel"))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::CONFLICT, "batch_ended").await;
    // The same by type, unpublishing.
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "items.unpublish".into(),
            params: json!({"type": "article"}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(&app, 1, 2);
    let s = wait_final(&app, s.id).await;
    workers.stop().await;
    assert_eq!((s.processed, s.failed), (120, 0));
    assert_eq!(published_count(&app).await, 0);
}

#[tokio::test]
async fn starting_and_reading_batches_is_refused_clearly() {
    let app = TestApp::spawn_with_articles().await;
    let anonymous = crate::harness::client();
    let r = anonymous
        .post(app.url("/api/batch"))
        .json(&json!({"operation": "noop", "params": {"count": 1}}))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let post = |body: Value| {
        app.json_request(reqwest::Method::POST, "/api/batch")
            .json(&body)
            .send()
    };
    let r = post(json!({"operation": "nope"})).await.expect("POST");
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_operation").await;
    for params in [
        json!({}),
        json!({"type": "missing_type"}),
        json!({"type": "article", "ids": []}),
        json!({"ids": ["x"], "extra": 1}),
    ] {
        let r = post(json!({"operation": "items.publish", "params": params}))
            .await
            .expect("POST");
        error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_params").await;
    }
    let r = post(json!({"operation": "noop", "params": {"count": 2_000_000}}))
        .await
        .expect("POST");
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "too_many_targets").await;
    let r = post(json!({"operation": "noop", "params": {"count": 5}, "bogus": true}))
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batch")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(batches, 0, "no refused request started a batch");
    assert_eq!(app.state.queues.len(batch::QUEUE).await.expect("len"), 0);

    // A user without `administer site` may not run noop.
    let mine = expect_json(
        post(json!({"operation": "noop", "params": {"count": 10}}))
            .await
            .expect("POST"),
        StatusCode::ACCEPTED,
    )
    .await;
    app.create_user("editor", "editor-password-1", false).await;
    let editor = trovato::user::find_by_name(&app.state.db, "editor")
        .await
        .expect("db")
        .expect("editor");
    let token = trovato::user::token::create(&app.state.db, editor.id, "t")
        .await
        .expect("token");
    let r = crate::harness::client()
        .post(app.url("/api/batch"))
        .bearer_auth(&token)
        .json(&json!({"operation": "noop", "params": {"count": 1}}))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    // Someone else's batch, a malformed id and an unknown one are all 404.
    for path in [
        format!("/batch/{}/status", mine["id"].as_str().expect("id")),
        "/batch/not-a-uuid/status".to_owned(),
        format!("/batch/{}/status", uuid::Uuid::now_v7()),
    ] {
        let r = crate::harness::client()
            .get(app.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        error_body(r, StatusCode::NOT_FOUND, "batch_not_found").await;
    }
    let r = crate::harness::client()
        .post(app.url(&format!(
            "/api/batch/{}/cancel",
            mine["id"].as_str().expect("id")
        )))
        .bearer_auth(&token)
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::NOT_FOUND, "batch_not_found").await;
    let r = anonymous
        .get(app.url(&format!(
            "/batch/{}/status",
            mine["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Its starter reads it.
    let r = app
        .get(&format!(
            "/batch/{}/status",
            mine["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(expect_json(r, StatusCode::OK).await["total"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_workers_count_exactly() {
    let app = TestApp::spawn().await;
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "noop".into(),
            params: json!({"count": 20_000}),
        },
    )
    .await
    .expect("start");
    assert_eq!(s.total, 20_000);
    let workers = Workers::start(&app, 3, 2);
    let s = wait_final(&app, s.id).await;
    workers.stop().await;
    assert_eq!(s.state, BatchState::Done);
    assert_eq!((s.processed, s.failed), (20_000, 0));
    assert_eq!(
        chunk_states(&app, s.id).await,
        vec![("done".to_owned(), 200)]
    );
    let sum: i64 = sqlx::query_scalar("SELECT sum(processed) FROM batch_chunk WHERE batch_id = $1")
        .bind(s.id)
        .fetch_one(&app.state.db)
        .await
        .expect("sum");
    assert_eq!(sum, 20_000);
    // Redis and PostgreSQL agree.
    assert_eq!(batch::load(&app.state.db, s.id).await.expect("load"), s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_new_chunks_within_one_chunk() {
    let app = TestApp::spawn().await;
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "noop".into(),
            params: json!({"count": 100_000}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(&app, 1, 2);
    let deadline = Instant::now() + PATIENCE;
    while batch::status(&app.state, s.id)
        .await
        .expect("status")
        .processed
        == 0
    {
        assert!(Instant::now() < deadline, "no chunk ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at_cancel = batch::cancel(&app.state, s.id).await.expect("cancel");
    assert_eq!(at_cancel.state, BatchState::Cancelled);
    // The queue drains: the rest are skipped, not run.
    let drained = crate::harness::eventually(Duration::from_secs(300), || async {
        app.state.queues.len(batch::QUEUE).await.expect("len") == 0
    })
    .await;
    assert!(drained.is_some());
    workers.stop().await;
    let end = batch::load(&app.state.db, s.id).await.expect("load");
    assert_eq!(end.state, BatchState::Cancelled);
    // At most the chunks in flight at the cancel (2 workers × 100) ran after it.
    assert!(
        end.processed <= at_cancel.processed + 200,
        "{} after cancelling at {}",
        end.processed,
        at_cancel.processed
    );
    assert!(end.processed < 100_000);
    let states = chunk_states(&app, s.id).await;
    let skipped = states
        .iter()
        .find(|(s, _)| s == "skipped")
        .map_or(0, |(_, n)| *n);
    let done = states
        .iter()
        .find(|(s, _)| s == "done")
        .map_or(0, |(_, n)| *n);
    assert_eq!(skipped + done, 1000, "{states:?}");
    assert_eq!(done as u64 * 100, end.processed);
    let r = batch::cancel(&app.state, s.id).await;
    assert!(matches!(r, Err(batch::BatchError::Ended(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_survives_a_redis_restart_mid_batch() {
    let dir = crate::harness::services::scratch_root()
        .join(format!("redis-batch-{}", uuid::Uuid::now_v7().simple()));
    let redis = RedisServer::ensure(&dir, RedisListen::Tcp(free_port()), Durability::Scratch)
        .await
        .expect("private redis");
    let url = redis.url();
    let app = TestApp::spawn_with(
        move |c| {
            c.redis.url = Some(url);
            c.queue.backend = trovato::queue::QueueBackend::Postgres;
        },
        axum::Router::new(),
    )
    .await;
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "noop".into(),
            params: json!({"count": 30_000}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(&app, 1, 2);
    let deadline = Instant::now() + PATIENCE;
    while batch::status(&app.state, s.id)
        .await
        .expect("status")
        .processed
        == 0
    {
        assert!(Instant::now() < deadline, "no chunk ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Redis goes away (and comes back empty: it keeps nothing on disk).
    redis.kill().await.expect("stop redis");
    redis.start().await.expect("start redis");
    let s = wait_final(&app, s.id).await;
    workers.stop().await;
    assert_eq!(s.state, BatchState::Done);
    assert_eq!((s.processed, s.failed), (30_000, 0));
    assert_eq!(batch::load(&app.state.db, s.id).await.expect("load"), s);
    let _ = redis.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_does_nothing_twice() {
    let app = TestApp::spawn().await;
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "noop".into(),
            params: json!({"count": 50_000}),
        },
    )
    .await
    .expect("start");
    let mut env = app.cli_env();
    env.push(("TROVATO_QUEUE_LEASE".into(), "1".into()));
    env.push(("TROVATO_PLUGIN_BACKGROUND_DEADLINE".into(), "1".into()));
    let spawn = || {
        let mut cmd = Command::new(crate::harness::trovato_bin());
        cmd.args([
            "queue",
            "work",
            "--queue",
            batch::QUEUE,
            "--concurrency",
            "2",
        ])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn worker")
    };
    let mut w = spawn();
    let deadline = Instant::now() + PATIENCE;
    while batch::load(&app.state.db, s.id)
        .await
        .expect("load")
        .processed
        < 5_000
    {
        assert!(Instant::now() < deadline, "the worker made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.kill().expect("kill -9");
    w.wait().expect("reap");
    let mid = batch::load(&app.state.db, s.id).await.expect("load");
    assert!(mid.processed < 50_000, "killed mid-batch: {mid:?}");
    let mut w = spawn();
    let end = wait_final(&app, s.id).await;
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(end.state, BatchState::Done);
    assert_eq!(
        (end.processed, end.failed),
        (50_000, 0),
        "nothing lost, nothing twice"
    );
    assert_eq!(
        chunk_states(&app, s.id).await,
        vec![("done".to_owned(), 500)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_operation_runs_its_chunks_through_the_plugin() {
    let from = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/digest");
    assert!(
        from.join("digest.wasm").is_file(),
        "plugins/digest/digest.wasm is missing: run scripts/build-plugins before the tests"
    );
    let dir = std::env::temp_dir().join(format!(
        "trovato-batch-plugin-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(dir.join("digest")).expect("mkdir");
    for f in ["digest.info.toml", "digest.wasm"] {
        std::fs::copy(from.join(f), dir.join("digest").join(f)).expect("copy");
    }
    let plugins = dir.clone();
    let app = TestApp::spawn_with(move |c| c.plugin.dir = plugins, axum::Router::new()).await;
    let ops = batch::ops::all(&app.state).await;
    let op = ops
        .iter()
        .find(|o| o.name() == "digest.requeue")
        .expect("the plugin's operation");
    assert_eq!(op.chunk_size(), 50);
    let targets: Vec<String> = (0..120)
        .map(|n| format!("item-{n}"))
        .chain([String::new()])
        .collect();
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "digest.requeue".into(),
            params: json!({"targets": targets}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(&app, 1, 2);
    let s = wait_final(&app, s.id).await;
    workers.stop().await;
    assert_eq!((s.processed, s.failed), (120, 1));
    assert_eq!(s.errors[0].error, "an empty item id");
    assert_eq!(
        app.state.queues.len("digest.outbox").await.expect("len"),
        120,
        "each chunk pushed its entries"
    );
    let bad = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "digest.requeue".into(),
            params: json!({"targets": "x"}),
        },
    )
    .await;
    assert!(matches!(bad, Err(batch::BatchError::BadParams { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_follows_and_cancels_batches() {
    let app = TestApp::spawn().await;
    let env = app.cli_env();
    let env = crate::harness::env_refs(&env);
    let out = run_trovato(
        &["batch", "start", "noop", "--params", r#"{"count": 300}"#],
        &env,
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id: uuid::Uuid = id.parse().expect("the id is printed");
    let workers = Workers::start(&app, 1, 2);
    // Followed through a pipe: plain lines, the last one final.
    let out = run_trovato(
        &["batch", "status", &id.to_string(), "--follow"],
        &env,
        None,
    );
    workers.stop().await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last = text.lines().last().expect("a line");
    assert!(
        last.starts_with("noop done 100% (300 done, 0 failed of 300)"),
        "{text}"
    );
    let out = run_trovato(&["batch", "cancel", &id.to_string()], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
    let out = run_trovato(&["batch", "status", "nope"], &env, None);
    assert!(!out.status.success());
    let out = run_trovato(&["batch", "start", "noop", "--params", "{bad"], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--params is not JSON"));
    let out = run_trovato(&["batch", "operations"], &env, None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("items.publish"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_pages_start_follow_and_cancel_in_a_browser() {
    let app = TestApp::spawn_with_articles().await;
    unpublished_articles(&app, 300).await;
    let workers = Workers::start(&app, 1, 2);
    let browser = Browser::start().await;
    let base = app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    browser
        .open_admin_page(&base, "Batches", "form.start")
        .await;
    browser.screenshot("admin-batches").await;
    c.find(Locator::Css(
        "select#operation option[value='items.publish']",
    ))
    .await
    .expect("the operation")
    .click()
    .await
    .expect("select");
    c.find(Locator::Css("textarea#params"))
        .await
        .expect("params")
        .send_keys(r#"{"type": "article"}"#)
        .await
        .expect("type");
    c.find(Locator::Css("form.start button"))
        .await
        .expect("start")
        .click()
        .await
        .expect("click");
    // The bar reaches 100 % without a reload.
    let done = c
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::XPath("//span[@id='state' and text()='done']"))
        .await;
    assert!(done.is_ok(), "the page never showed the batch done");
    let percent = c.find(Locator::Id("percent")).await.expect("percent");
    assert_eq!(percent.text().await.expect("text"), "100");
    let processed = c.find(Locator::Id("processed")).await.expect("processed");
    assert_eq!(processed.text().await.expect("text"), "300");
    browser.screenshot("admin-batch-done").await;
    assert_eq!(published_count(&app).await, 300, "the items changed");

    // A second, long batch, cancelled midway from its page.
    workers.stop().await;
    let long = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "noop".into(),
            params: json!({"count": 200_000}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(&app, 1, 1);
    c.goto(&format!("{base}/admin/batch/{}", long.id))
        .await
        .expect("batch page");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::XPath("//span[@id='state' and text()='running']"))
        .await
        .expect("running");
    browser.screenshot("admin-batch-running").await;
    c.find(Locator::Css("form#cancel button"))
        .await
        .expect("cancel button")
        .click()
        .await
        .expect("click");
    let notice = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.notice"))
        .await
        .expect("notice");
    assert_eq!(
        notice.text().await.expect("text"),
        "The batch was cancelled."
    );
    let state = c.find(Locator::Id("state")).await.expect("state");
    assert_eq!(state.text().await.expect("text"), "cancelled");
    browser.screenshot("admin-batch-cancelled").await;
    workers.stop().await;
    let end = batch::load(&app.state.db, long.id).await.expect("load");
    assert_eq!(end.state, BatchState::Cancelled);
    assert!(end.processed < 200_000);

    // The queues page lists the batch queue.
    c.goto(&format!("{base}/admin/queues"))
        .await
        .expect("queues");
    let table = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("table tbody"))
        .await
        .expect("queues table");
    assert!(table.text().await.expect("text").contains("batch"));
    browser.screenshot("admin-queues").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_recount_and_listing_rebuild_correct_what_they_cover() {
    let site = crate::files::Site::new().await;
    let app = &site.app;
    let used = site
        .upload("public", "used.png", "image/png", crate::files::PNG)
        .await;
    let loose = site
        .upload("public", "loose.png", "image/png", crate::files::PNG)
        .await;
    let r = app
        .client
        .post(app.url("/api/items"))
        .bearer_auth(&site.token)
        .json(&json!({"type": "article", "title": "Uses a file",
                      "fields": {"field_image": {"file_id": used["id"]}}}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    // Statuses gone wrong: the used file temporary, the loose one permanent.
    sqlx::query(
        "UPDATE file_managed SET status = CASE WHEN id = $1 THEN 0 ELSE 1 END WHERE id = ANY($2)",
    )
    .bind(
        used["id"]
            .as_str()
            .expect("id")
            .parse::<uuid::Uuid>()
            .expect("uuid"),
    )
    .bind(vec![
        used["id"]
            .as_str()
            .expect("id")
            .parse::<uuid::Uuid>()
            .expect("uuid"),
        loose["id"]
            .as_str()
            .expect("id")
            .parse::<uuid::Uuid>()
            .expect("uuid"),
    ])
    .execute(&app.state.db)
    .await
    .expect("spoil");
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "files.recount".into(),
            params: json!({}),
        },
    )
    .await
    .expect("start");
    let workers = Workers::start(app, 1, 1);
    let s = wait_final(app, s.id).await;
    assert_eq!((s.state, s.processed, s.failed), (BatchState::Done, 2, 0));
    assert_eq!(
        site.status_of(used["id"].as_str().expect("id")).await,
        Some(1)
    );
    assert_eq!(
        site.status_of(loose["id"].as_str().expect("id")).await,
        Some(0)
    );

    // A cached listing is dropped and rebuilt from the database.
    let page = app
        .get("/items/article")
        .await
        .text()
        .await
        .expect("listing");
    assert!(page.contains("Uses a file"));
    sqlx::query("UPDATE item SET title = 'Renamed behind the cache' WHERE title = 'Uses a file'")
        .execute(&app.state.db)
        .await
        .expect("rename");
    let cached = app
        .get("/items/article")
        .await
        .text()
        .await
        .expect("listing");
    assert!(
        cached.contains("Uses a file"),
        "served from the cache until rebuilt"
    );
    let s = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "cache.rebuild_listings".into(),
            params: json!({"types": ["article"]}),
        },
    )
    .await
    .expect("start");
    let s = wait_final(app, s.id).await;
    workers.stop().await;
    assert_eq!((s.state, s.processed), (BatchState::Done, 1));
    let rebuilt = app
        .get("/items/article")
        .await
        .text()
        .await
        .expect("listing");
    assert!(rebuilt.contains("Renamed behind the cache"), "{rebuilt}");
    let bad = batch::start(
        &app.state,
        None,
        NewBatch {
            operation: "cache.rebuild_listings".into(),
            params: json!({"types": ["nope"]}),
        },
    )
    .await;
    assert!(matches!(bad, Err(batch::BatchError::BadParams { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_a_followed_batch_running_unless_asked_to_cancel() {
    let app = TestApp::spawn().await;
    let env = app.cli_env();
    for cancel in [false, true] {
        // No worker runs: the batch stays queued while it is followed.
        let s = batch::start(
            &app.state,
            None,
            NewBatch {
                operation: "noop".into(),
                params: json!({"count": 10}),
            },
        )
        .await
        .expect("start");
        let mut cmd = Command::new(crate::harness::trovato_bin());
        cmd.args(["batch", "status", &s.id.to_string(), "--follow"]);
        if cancel {
            cmd.arg("--cancel-on-exit");
        }
        cmd.env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).expect("a progress line");
        assert!(first.starts_with("noop queued 0%"), "{first}");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
        assert!(child.wait().expect("wait").success());
        let now = batch::load(&app.state.db, s.id).await.expect("load");
        if cancel {
            assert!(rest.starts_with("cancelled:"), "{rest}");
            assert_eq!(now.state, BatchState::Cancelled);
        } else {
            assert!(rest.contains("keeps running"), "{rest}");
            assert_eq!(now.state, BatchState::Queued);
        }
    }
}
