//! Stages: isolation from live, publishing (all or nothing), and errors.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::harness::content::{PASSWORD, error_body};

async fn app_with_stage() -> TestApp {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    app
}

async fn live_row_title(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT title FROM item WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("item row")
}

#[tokio::test]
async fn a_stage_edit_is_invisible_on_live_until_published() {
    let app = app_with_stage().await;
    let item = app.create_item("Live title", None).await;
    let id = item["id"].as_str().expect("id");
    // Warm both views into the cache first.
    assert_eq!(
        app.item_title(id, None).await.as_deref(),
        Some("Live title")
    );
    assert_eq!(
        app.item_title(id, Some("draft")).await.as_deref(),
        Some("Live title")
    );

    app.rename_item(id, "Draft title", Some("draft")).await;
    assert_eq!(
        app.item_title(id, Some("draft")).await.as_deref(),
        Some("Draft title")
    );
    assert_eq!(
        app.item_title(id, None).await.as_deref(),
        Some("Live title")
    );
    assert_eq!(
        live_row_title(&app, id).await,
        "Live title",
        "live row untouched"
    );
    assert_eq!(app.listed_titles(None).await, ["Live title"]);
    assert_eq!(app.listed_titles(Some("draft")).await, ["Draft title"]);
    // The header selects the stage too.
    let r = app
        .client
        .get(app.url(&format!("/api/items/{id}")))
        .header("x-trovato-stage", "draft")
        .send()
        .await
        .expect("GET");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["title"], "Draft title");

    let r = app.publish_stage("draft").await;
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["updated"], json!([id]));
    assert_eq!(
        app.item_title(id, None).await.as_deref(),
        Some("Draft title")
    );
    assert_eq!(live_row_title(&app, id).await, "Draft title");
    assert_eq!(app.listed_titles(None).await, ["Draft title"]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM stage_association")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn an_item_created_in_a_stage_goes_live_only_when_published() {
    let app = app_with_stage().await;
    let item = app.create_item("Staged", Some("draft")).await;
    let id = item["id"].as_str().expect("id");
    assert_eq!(item["stage_id"], "draft");
    assert!(app.listed_titles(None).await.is_empty());
    error_body(
        app.read_item(id, None).await,
        StatusCode::NOT_FOUND,
        "item_not_found",
    )
    .await;
    let anon = crate::harness::client();
    let r = anon
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.listed_titles(Some("draft")).await, ["Staged"]);

    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);
    assert_eq!(app.listed_titles(None).await, ["Staged"]);
    let r = anon
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn publish_is_all_or_nothing() {
    let app = app_with_stage().await;
    // A live item edited in the stage (applied first) ...
    let a = app.create_item("A live", None).await;
    let a_id = a["id"].as_str().expect("id");
    app.rename_item(a_id, "A staged", Some("draft")).await;
    // ... and an item created in the stage whose body stops validating.
    let r = app
        .post_item(
            json!({"type": "article", "title": "B",
                   "fields": {"field_body": {"value": "short"}}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let b: Value = r.json().await.expect("json");
    let b_id = b["id"].as_str().expect("id");
    // Written behind the kernel's back (no API accepts it, and a type
    // change existing values fail is refused): B fails after A applied.
    sqlx::query(
        "UPDATE item SET fields = jsonb_set(fields, '{field_body,value}', to_jsonb(repeat('x', 101)))
         WHERE id = $1::uuid",
    )
    .bind(b_id)
    .execute(&app.state.db)
    .await
    .expect("corrupt B");

    let r = app.publish_stage("draft").await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "stage_item_invalid").await;
    assert_eq!(body["details"]["item"], b_id);
    assert!(body["details"]["fields"]["field_body"].is_array(), "{body}");

    // Nothing changed: A's live row, B's stage, the association.
    assert_eq!(live_row_title(&app, a_id).await, "A live");
    assert_eq!(app.item_title(a_id, None).await.as_deref(), Some("A live"));
    let b_stage: String = sqlx::query_scalar("SELECT stage_id FROM item WHERE id = $1::uuid")
        .bind(b_id)
        .fetch_one(&app.state.db)
        .await
        .expect("B row");
    assert_eq!(b_stage, "draft");
    let assoc: i64 = sqlx::query_scalar("SELECT count(*) FROM stage_association")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(assoc, 1);
    assert_eq!(
        app.item_title(a_id, Some("draft")).await.as_deref(),
        Some("A staged")
    );

    // Fixing B lets the whole stage publish.
    app.update_item(
        b_id,
        json!({"fields": {"field_body": {"value": "short"}}}),
        Some("draft"),
    )
    .await;
    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);
    assert_eq!(app.listed_titles(None).await, ["A staged", "B"]);
}

#[tokio::test]
async fn stage_errors_are_specific() {
    let app = app_with_stage().await;
    error_body(
        app.create_stage("draft").await,
        StatusCode::CONFLICT,
        "stage_exists",
    )
    .await;
    error_body(
        app.create_stage("Bad Id").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_stage_id",
    )
    .await;
    let blank = app
        .json_request(reqwest::Method::POST, "/api/stages")
        .json(&json!({"id": "other", "label": " "}))
        .send()
        .await
        .expect("POST");
    error_body(blank, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    error_body(
        app.publish_stage("nope").await,
        StatusCode::NOT_FOUND,
        "stage_not_found",
    )
    .await;
    error_body(
        app.publish_stage("live").await,
        StatusCode::CONFLICT,
        "stage_is_live",
    )
    .await;
    error_body(
        app.get("/api/items?stage=nope").await,
        StatusCode::NOT_FOUND,
        "stage_not_found",
    )
    .await;
    // A live item cannot be deleted from inside a stage.
    let item = app.create_item("Live", None).await;
    let id = item["id"].as_str().expect("id");
    let r = app
        .json_request(
            reqwest::Method::DELETE,
            &format!("/api/items/{id}?stage=draft"),
        )
        .send()
        .await
        .expect("DELETE");
    error_body(r, StatusCode::CONFLICT, "stage_conflict").await;
    assert!(app.item_title(id, None).await.is_some());
    let stages: Value = app.get("/api/stages").await.json().await.expect("json");
    assert_eq!(stages[0]["id"], "live");
    assert_eq!(stages[1]["id"], "draft");
}

#[tokio::test]
async fn stages_are_for_editors_only() {
    let app = app_with_stage().await;
    app.create_user("visitor", PASSWORD, false).await;
    let (visitor, visitor_csrf) = app.browser_for("visitor").await;
    let r = visitor
        .get(app.url("/api/items?stage=draft"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = visitor
        .post(app.url("/stage/draft/publish"))
        .header("content-type", "application/json")
        .header("x-csrf-token", &visitor_csrf)
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let anon = crate::harness::client();
    let r = anon
        .get(app.url("/api/items?stage=draft"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let r = anon
        .post(app.url("/api/stages"))
        .json(&json!({"id": "x", "label": "X"}))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn a_browser_session_can_work_in_a_stage() {
    let app = app_with_stage().await;
    let live = app.create_item("Live", None).await;
    let id = live["id"].as_str().expect("id");
    let r = app
        .json_request(reqwest::Method::PUT, "/api/stage/current")
        .json(&json!({"stage": "draft"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let cur: Value = app
        .get("/api/stage/current")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cur["stage"], "draft");
    // Without ?stage=, this session now edits and reads the draft.
    app.rename_item(id, "Drafted", None).await;
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("Drafted"));
    let anon = crate::harness::client();
    let v: Value = anon
        .get(app.url(&format!("/api/items/{id}")))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(v["title"], "Live", "other visitors still see live");
    // Back to live.
    let r = app
        .json_request(reqwest::Method::PUT, "/api/stage/current")
        .json(&json!({"stage": "live"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("Live"));

    let missing = app
        .json_request(reqwest::Method::PUT, "/api/stage/current")
        .json(&json!({"stage": "nope"}))
        .send()
        .await
        .expect("PUT");
    error_body(missing, StatusCode::NOT_FOUND, "stage_not_found").await;
    let r = anon
        .put(app.url("/api/stage/current"))
        .json(&json!({"stage": "draft"}))
        .send()
        .await
        .expect("PUT");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn publishing_drops_every_value_cached_for_the_stage() {
    let app = app_with_stage().await;
    let item = app.create_item("One", None).await;
    let id = item["id"].as_str().expect("id");
    app.rename_item(id, "Two", Some("draft")).await;
    assert_eq!(app.listed_titles(Some("draft")).await, ["Two"]);
    assert_eq!(
        app.item_title(id, Some("draft")).await.as_deref(),
        Some("Two")
    );
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("One"));
    let staged = trovato::cache::CacheKey::new(format!("st:draft:item:{id}")).expect("key");
    let cache = &app.state.cache;
    assert!(cache.peek_l2(&staged).await.expect("redis").is_some());
    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);
    assert!(cache.peek_l1(&staged).is_none());
    assert!(cache.peek_l2(&staged).await.expect("redis").is_none());
    let live = trovato::cache::CacheKey::new(format!("item:{id}")).expect("key");
    assert!(cache.peek_l2(&live).await.expect("redis").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_edit_waits_for_a_publish_in_progress_instead_of_being_lost() {
    let app = app_with_stage().await;
    let item = app.create_item("Live title", None).await;
    let id = item["id"].as_str().expect("id").to_owned();

    // A publish in progress holds the stage row FOR UPDATE until it commits.
    let mut publish = app.state.db.begin().await.expect("tx");
    sqlx::query("SELECT id FROM stage WHERE id = 'draft' FOR UPDATE")
        .execute(&mut *publish)
        .await
        .expect("lock the stage");
    let edit = tokio::spawn({
        let client = app.client.clone();
        let url = app.url(&format!("/api/items/{id}?stage=draft"));
        let csrf = app.csrf_token();
        async move {
            client
                .put(url)
                .header("x-csrf-token", csrf)
                .json(&json!({"title": "Draft title"}))
                .send()
                .await
        }
    });
    let db = app.state.db.clone();
    let waiting = crate::harness::eventually(std::time::Duration::from_secs(5), || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db)
            .await
            .unwrap_or(0)
                > 0
        }
    })
    .await;
    assert!(
        waiting.is_some(),
        "the stage edit must wait on the publish's lock"
    );
    assert!(!edit.is_finished());

    publish.rollback().await.expect("end the publish");
    let resp = edit.await.expect("join").expect("PUT");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        app.item_title(&id, Some("draft")).await.as_deref(),
        Some("Draft title")
    );
    assert_eq!(live_row_title(&app, &id).await, "Live title");
}

/// A kernel with the `item_audit` test plugin (the three item taps).
async fn app_with_audit_plugin() -> TestApp {
    let dir = std::env::temp_dir().join(format!(
        "trovato-stage-plugins-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let to = dir.join("item_audit");
    std::fs::create_dir_all(&to).expect("plugin dir");
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/item_audit");
    for f in ["item_audit.info.toml", "item_audit.wat"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy fixture");
    }
    let app = TestApp::spawn_with(
        move |c| {
            c.server.data_dir = std::env::temp_dir().join("trovato-plugin-tests-data");
            c.plugin.dir = dir;
        },
        axum::Router::new(),
    )
    .await;
    app.sign_in_as_admin().await;
    app.create_article_type().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    app
}

/// Successful invocations of `tap` by `item_audit`, per `/metrics`.
async fn audited(app: &TestApp, tap: &str) -> u64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("trovato_plugin_tap_duration_seconds_count{"))
        .filter(|l| {
            l.contains("plugin=\"item_audit\"")
                && l.contains(&format!("tap=\"{tap}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn publishing_a_stage_fires_tap_item_update_for_each_item_it_changes() {
    let app = app_with_audit_plugin().await;
    let a = app.create_item("A live", None).await;
    let b = app.create_item("B live", None).await;
    let untouched = app.create_item("Untouched", None).await;
    let (a_id, b_id) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    app.rename_item(a_id, "A staged", Some("draft")).await;
    app.rename_item(b_id, "B staged", Some("draft")).await;
    let born = app.create_item("Born", Some("draft")).await;
    let born_id = born["id"].as_str().expect("id");
    // Warm the live views so a publish that forgot them would serve stale.
    for id in [a_id, b_id] {
        assert!(
            app.item_title(id, None)
                .await
                .expect("live")
                .ends_with("live")
        );
    }
    let page = crate::harness::client()
        .get(app.url(&format!("/item/{a_id}")))
        .send()
        .await
        .expect("GET page");
    assert!(page.text().await.expect("page").contains("A live"));
    let before = (
        audited(&app, "tap_item_update").await,
        audited(&app, "tap_item_insert").await,
    );

    let r = app.publish_stage("draft").await;
    assert_eq!(r.status(), StatusCode::OK);
    let report: Value = r.json().await.expect("json");
    assert_eq!(report["created"], json!([born_id]));

    // Two live items took stage revisions, one item born in the stage went
    // live: three updates, no insert (that fired when it was created).
    assert_eq!(audited(&app, "tap_item_update").await, before.0 + 3);
    assert_eq!(audited(&app, "tap_item_insert").await, before.1);
    // The cache was invalidated: the published values are served at once.
    assert_eq!(
        app.item_title(a_id, None).await.as_deref(),
        Some("A staged")
    );
    assert_eq!(
        app.item_title(b_id, None).await.as_deref(),
        Some("B staged")
    );
    assert_eq!(app.item_title(born_id, None).await.as_deref(), Some("Born"));
    let page = crate::harness::client()
        .get(app.url(&format!("/item/{a_id}")))
        .send()
        .await
        .expect("GET page");
    assert!(page.text().await.expect("page").contains("A staged"));
    assert_eq!(
        app.item_title(untouched["id"].as_str().expect("id"), None)
            .await
            .as_deref(),
        Some("Untouched")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_publishes_sharing_items_never_deadlock_and_the_last_one_wins() {
    const ITEMS: usize = 50;
    const ROUNDS: usize = 20;
    let app = app_with_stage().await;
    assert_eq!(
        app.create_stage("other").await.status(),
        StatusCode::CREATED
    );
    let mut ids = Vec::new();
    for i in 0..ITEMS {
        let item = app.create_item(&format!("live {i}"), None).await;
        ids.push(uuid::Uuid::parse_str(item["id"].as_str().expect("id")).expect("uuid"));
    }
    let state = app.state.clone();
    let draft = trovato::stage::StageId::parse("draft").expect("id");
    let other = trovato::stage::StageId::parse("other").expect("id");
    for round in 0..ROUNDS {
        // Each stage edits every item, in opposite orders.
        for (stage, order) in [(&draft, false), (&other, true)] {
            let mut list = ids.clone();
            if order {
                list.reverse();
            }
            for id in list {
                let patch = trovato::item::ItemPatch {
                    title: Some(format!("{stage} {round}")),
                    ..Default::default()
                };
                trovato::item::update(&state, stage, id, None, patch)
                    .await
                    .expect("stage edit");
            }
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let publish = |stage: &'static str| {
            let barrier = barrier.clone();
            let client = app.client.clone();
            let token = app.csrf_token();
            let url = app.url(&format!("/stage/{stage}/publish"));
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-csrf-token", token)
                    .send()
                    .await
                    .expect("publish");
                let status = r.status();
                let body: Value = r.json().await.expect("json");
                (status, body)
            })
        };
        let (a, b) = (publish("draft"), publish("other"));
        let (a, b) = (a.await.expect("join"), b.await.expect("join"));
        for (status, body) in [&a, &b] {
            assert!(
                *status == StatusCode::OK || *status == StatusCode::CONFLICT,
                "round {round}: {status} {body}"
            );
        }
        // Every item shows one stage's version, the same for all: the
        // publish that committed last replaced all of them.
        let titles: Vec<String> =
            sqlx::query_scalar("SELECT title FROM item WHERE id = ANY($1) ORDER BY id")
                .bind(&ids)
                .fetch_all(&app.state.db)
                .await
                .expect("titles");
        let first = titles[0].clone();
        assert!(
            titles.iter().all(|t| *t == first),
            "round {round}: mixed {titles:?}"
        );
        let winner = if first == format!("draft {round}") {
            &a
        } else {
            assert_eq!(first, format!("other {round}"), "round {round}");
            &b
        };
        assert_eq!(winner.0, StatusCode::OK, "round {round}");
        // A publish that got through leaves no stage revision behind.
        for (stage, (status, _)) in [("draft", &a), ("other", &b)] {
            if *status == StatusCode::OK {
                let left: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM stage_association WHERE stage_id = $1",
                )
                .bind(stage)
                .fetch_one(&app.state.db)
                .await
                .expect("count");
                assert_eq!(left, 0, "round {round}: {stage}");
            }
        }
        // The live API serves the winner's values.
        assert_eq!(
            app.item_title(&ids[ITEMS - 1].to_string(), None).await,
            Some(first)
        );
    }
}

/// The status and error code of `GET path` sent by `client` with `headers`.
async fn answer(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    headers: &[(&str, &[u8])],
) -> (StatusCode, String) {
    let mut req = client.get(app.url(path));
    for (name, value) in headers {
        req = req.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).expect("header"),
        );
    }
    let r = req.send().await.expect("GET");
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn without_stage_access_an_existing_and_a_missing_stage_look_the_same() {
    let app = app_with_stage().await;
    let item = app.create_item("Live", None).await;
    let id = item["id"].as_str().expect("id");
    app.create_user("visitor", PASSWORD, false).await;
    let (visitor, _) = app.browser_for("visitor").await;
    let anon = crate::harness::client();
    let paths = [
        "/api/stage/current?stage={s}".to_owned(),
        "/api/items?stage={s}".to_owned(),
        format!("/api/items/{id}?stage={{s}}"),
        format!("/item/{id}?stage={{s}}"),
    ];
    for (client, expected) in [
        (&anon, StatusCode::UNAUTHORIZED),
        (&visitor, StatusCode::FORBIDDEN),
    ] {
        for path in &paths {
            let existing = answer(&app, client, &path.replace("{s}", "draft"), &[]).await;
            let missing = answer(&app, client, &path.replace("{s}", "nosuchstage"), &[]).await;
            assert_eq!(existing.0, expected, "{path}");
            assert_eq!(existing, missing, "{path}");
            let bare = path.split('?').next().expect("path");
            let existing = answer(&app, client, bare, &[("x-trovato-stage", b"draft")]).await;
            let missing = answer(&app, client, bare, &[("x-trovato-stage", b"nosuchstage")]).await;
            assert_eq!(existing.0, expected, "{bare} with the header");
            assert_eq!(existing, missing, "{bare} with the header");
        }
    }
    // An editor still learns that a stage is missing.
    error_body(
        app.get("/api/stage/current?stage=nosuchstage").await,
        StatusCode::NOT_FOUND,
        "stage_not_found",
    )
    .await;
}

#[tokio::test]
async fn a_malformed_stage_header_is_refused_like_a_malformed_query() {
    let app = app_with_stage().await;
    let anon = crate::harness::client();
    for (path, headers) in [
        ("/api/stage/current?stage=Bad%20Id", vec![]),
        (
            "/api/stage/current",
            vec![("x-trovato-stage", &b"Bad Id"[..])],
        ),
        // Not visible ASCII at all: still a bad id, never silently live.
        (
            "/api/stage/current",
            vec![("x-trovato-stage", &b"dr\xe4ft"[..])],
        ),
    ] {
        for client in [&app.client, &anon] {
            assert_eq!(
                answer(&app, client, path, &headers).await,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_stage_id".to_owned()
                ),
                "{path} {headers:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_api_client_is_told_the_working_stage_belongs_to_a_session() {
    let app = app_with_stage().await;
    let admin = trovato::user::find_by_name(&app.state.db, "admin")
        .await
        .expect("db")
        .expect("admin");
    let token = trovato::user::token::create(&app.state.db, admin.id, "test")
        .await
        .expect("token");
    let r = crate::harness::client()
        .put(app.url("/api/stage/current"))
        .bearer_auth(&token)
        .json(&json!({"stage": "draft"}))
        .send()
        .await
        .expect("PUT");
    let body = error_body(r, StatusCode::FORBIDDEN, "stage_session_only").await;
    let message = body["message"].as_str().expect("message");
    assert!(
        message.contains("?stage=") && message.contains("X-Trovato-Stage"),
        "{message}"
    );
}

#[tokio::test]
async fn revisions_written_in_a_stage_are_shown_only_to_those_who_may_work_in_it() {
    let app = app_with_stage().await;
    app.create_user("author", PASSWORD, false).await;
    app.grant_authenticated("create content").await;
    app.grant_authenticated("edit own content").await;
    let (author, csrf) = app.browser_for("author").await;
    let created = author
        .post(app.url("/api/items"))
        .header("x-csrf-token", &csrf)
        .json(
            &json!({"type": "article", "title": "Mine", "fields": {"field_body": {"value": "b"}}}),
        )
        .send()
        .await
        .expect("POST");
    let item = crate::harness::content::expect_json(created, StatusCode::CREATED).await;
    let id = item["id"].as_str().expect("id");
    // An administrator edits the author's item inside the stage.
    let r = app
        .update_item(
            id,
            json!({"title": "Secret draft", "fields": {"field_body": {"value": "embargoed"}}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let seen: Value = author
        .get(app.url(&format!("/api/items/{id}/revisions")))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let seen = seen.as_array().expect("revisions");
    assert_eq!(seen.len(), 1, "only the live revision: {seen:?}");
    assert_eq!(seen[0]["stage_id"], "live");
    assert_eq!(seen[0]["title"], "Mine");
    assert!(
        !serde_json::to_string(seen)
            .expect("json")
            .contains("embargoed")
    );

    let all: Value = app
        .get(&format!("/api/items/{id}/revisions"))
        .await
        .json()
        .await
        .expect("json");
    let stages: Vec<&str> = all
        .as_array()
        .expect("revisions")
        .iter()
        .filter_map(|r| r["stage_id"].as_str())
        .collect();
    assert_eq!(stages, ["draft", "live"], "the administrator sees both");
}
