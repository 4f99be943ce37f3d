//! Item types, items, revisions, listings, permissions and the HTML pages.

use reqwest::StatusCode;
use serde_json::{Value, json};
use trovato::cache::CacheKey;

use crate::harness::TestApp;
use crate::harness::content::{PASSWORD, error_body};

async fn item_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM item")
        .fetch_one(&app.state.db)
        .await
        .expect("count items")
}

#[tokio::test]
async fn item_with_invalid_fields_gets_422_listing_every_failing_field_and_writes_nothing() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .post_item(
            json!({
                "type": "article",
                "title": "",
                "fields": {
                    "field_body": {"value": "x".repeat(101)},
                    "field_rating": {"value": 9},
                    "field_featured": {"value": "yes"},
                    "field_tags": [{"target_id": uuid::Uuid::now_v7().to_string()}],
                    "field_date": {"value": "yesterday"},
                    "field_unknown": {"value": 1},
                }
            }),
            None,
        )
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields = body["details"]["fields"].as_object().expect("fields");
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "field_body",
            "field_date",
            "field_featured",
            "field_rating",
            "field_tags",
            "field_unknown",
            "title"
        ],
        "{body}"
    );
    assert_eq!(item_count(&app).await, 0);
}

#[tokio::test]
async fn missing_required_field_and_unknown_type_are_422() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .post_item(json!({"type": "article", "title": "T", "fields": {}}), None)
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["details"]["fields"]["field_body"][0], "is required");
    let r = app
        .post_item(json!({"type": "nope", "title": "T"}), None)
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["details"]["fields"]["type"].is_array(), "{body}");
    assert_eq!(item_count(&app).await, 0);
}

#[tokio::test]
async fn item_type_errors_are_reported_by_name() {
    let app = TestApp::spawn_with_articles().await;
    let dup = app.create_item_type("article", json!([])).await;
    error_body(dup, StatusCode::CONFLICT, "item_type_exists").await;
    let bad = app
        .create_item_type(
            "Bad-Name",
            json!([{"name": "body", "label": "", "kind": "text"}]),
        )
        .await;
    let body = error_body(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["details"]["fields"]["type"].is_array(), "{body}");
    assert!(body["details"]["fields"]["body"].is_array(), "{body}");
    let missing = app.get("/api/item-types/nope").await;
    error_body(missing, StatusCode::NOT_FOUND, "item_type_not_found").await;

    app.create_item("Keeps the type", None).await;
    let in_use = app
        .json_request(reqwest::Method::DELETE, "/api/item-types/article")
        .send()
        .await
        .expect("DELETE");
    error_body(in_use, StatusCode::CONFLICT, "item_type_in_use").await;
    assert_eq!(
        app.get("/api/item-types/article").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn created_item_reads_back_and_is_cached_in_both_tiers() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Hello", None).await;
    let id = item["id"].as_str().expect("id");
    assert_eq!(item["status"], "published");
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("Hello"));

    let key = CacheKey::new(format!("item:{id}")).expect("key");
    assert!(app.state.cache.peek_l1(&key).is_some(), "L1 filled");
    assert!(
        app.state
            .cache
            .peek_l2(&key)
            .await
            .expect("redis")
            .is_some(),
        "L2 filled"
    );
    // The L2 entry lives under the namespace prefix.
    let raw: Option<Vec<u8>> = app
        .state
        .kv
        .query(redis::cmd("GET").arg(app.state.kv.key(&format!("cache:e:item:{id}"))))
        .await
        .expect("GET");
    assert!(raw.is_some());
}

#[tokio::test]
async fn update_writes_a_revision_and_readers_see_the_new_values() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Before", None).await;
    let id = item["id"].as_str().expect("id");
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("Before"));
    let r = app
        .update_item(
            id,
            json!({"title": "After", "fields": {"field_rating": {"value": 4}}, "log": "retitled"}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.read_item(id, None).await;
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["title"], "After");
    assert_eq!(v["fields"]["field_rating"]["value"], 4);
    assert_eq!(
        v["fields"]["field_body"]["value"], "text",
        "untouched field kept"
    );

    let revs: Value = app
        .get(&format!("/api/items/{id}/revisions"))
        .await
        .json()
        .await
        .expect("json");
    let revs = revs.as_array().expect("array");
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["title"], "After");
    assert_eq!(revs[0]["log"], "retitled");
    assert_eq!(revs[1]["title"], "Before");
    assert_eq!(v["revision_id"], revs[0]["id"]);

    let bad = app
        .update_item(id, json!({"fields": {"field_rating": {"value": 0}}}), None)
        .await;
    error_body(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("After"));
}

#[tokio::test]
async fn deleted_item_is_gone_from_database_cache_and_listing() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Doomed", None).await;
    let id = item["id"].as_str().expect("id");
    assert_eq!(app.listed_titles(None).await, ["Doomed"]);
    assert!(app.item_title(id, None).await.is_some());
    let r = app
        .json_request(reqwest::Method::DELETE, &format!("/api/items/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(item_count(&app).await, 0);
    let key = CacheKey::new(format!("item:{id}")).expect("key");
    assert!(
        app.state
            .cache
            .peek_l2(&key)
            .await
            .expect("redis")
            .is_none()
    );
    error_body(
        app.read_item(id, None).await,
        StatusCode::NOT_FOUND,
        "item_not_found",
    )
    .await;
    assert!(app.listed_titles(None).await.is_empty());
}

#[tokio::test]
async fn delete_by_session_without_csrf_token_is_403() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Kept", None).await;
    let id = item["id"].as_str().expect("id");
    let r = app
        .client
        .delete(app.url(&format!("/api/items/{id}")))
        .send()
        .await
        .expect("DELETE");
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    assert_eq!(item_count(&app).await, 1);
}

#[tokio::test]
async fn listing_is_sorted_paged_and_sees_new_items_at_once() {
    let app = TestApp::spawn_with_articles().await;
    for t in ["b", "a", "c"] {
        app.create_item(t, None).await;
    }
    assert_eq!(app.listed_titles(None).await, ["a", "b", "c"]);
    let page: Value = app
        .get("/api/items?type=article&sort=title&order=desc&page=2&per_page=2")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"][0]["title"], "a");
    // Cached listing is invalidated by the next create.
    app.create_item("d", None).await;
    assert_eq!(app.listed_titles(None).await, ["a", "b", "c", "d"]);
    // Unpublished items are not listed.
    let r = app
        .post_item(
            json!({"type": "article", "title": "hidden", "status": "unpublished",
                   "fields": {"field_body": {"value": "x"}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.listed_titles(None).await.len(), 4);
    let all: Value = app.get("/api/items").await.json().await.expect("json");
    assert_eq!(all["total"], 4);
}

#[tokio::test]
async fn bad_listing_parameters_are_rejected() {
    let app = TestApp::spawn_with_articles().await;
    let r = app.get("/api/items?per_page=500&page=0").await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["details"]["fields"]["per_page"].is_array());
    assert!(body["details"]["fields"]["page"].is_array());
    error_body(
        app.get("/api/items?sort=random").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    error_body(
        app.get("/api/items?type=nope").await,
        StatusCode::NOT_FOUND,
        "item_type_not_found",
    )
    .await;
}

#[tokio::test]
async fn creating_requires_a_permission() {
    let app = TestApp::spawn().await;
    app.create_user("editor", PASSWORD, false).await;
    let anon = app
        .post_item(json!({"type": "article", "title": "x"}), None)
        .await;
    error_body(anon, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.login("editor", PASSWORD).await;
    let r = app
        .post_item(json!({"type": "article", "title": "x"}), None)
        .await;
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(item_count(&app).await, 0);
}

#[tokio::test]
async fn unpublished_items_are_visible_to_their_author_and_administrators_only() {
    let app = TestApp::spawn().await;
    app.create_user("admin", PASSWORD, true).await;
    app.login("admin", PASSWORD).await;
    app.create_article_type().await;
    app.grant_authenticated("create content").await;
    app.grant_authenticated("edit own content").await;
    app.create_user("author", PASSWORD, false).await;
    app.create_user("other", PASSWORD, false).await;

    let (author, author_csrf) = app.browser_for("author").await;
    let r = author
        .post(app.url("/api/items"))
        .header("x-csrf-token", &author_csrf)
        .json(
            &json!({"type": "article", "title": "Draft", "status": "unpublished",
                      "fields": {"field_body": {"value": "x"}}}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let item: Value = r.json().await.expect("json");
    let id = item["id"].as_str().expect("id");
    let path = format!("/api/items/{id}");

    let by_author = author.get(app.url(&path)).send().await.expect("GET");
    assert_eq!(by_author.status(), StatusCode::OK);
    assert_eq!(app.get(&path).await.status(), StatusCode::OK, "admin");
    let anon = crate::harness::client()
        .get(app.url(&path))
        .send()
        .await
        .expect("GET");
    error_body(anon, StatusCode::NOT_FOUND, "item_not_found").await;
    let anon_page = crate::harness::client()
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET");
    error_body(anon_page, StatusCode::NOT_FOUND, "item_not_found").await;
    let (other, other_csrf) = app.browser_for("other").await;
    let r = other.get(app.url(&path)).send().await.expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "item_not_found").await;

    // Publishing it makes it public; another author may still not edit it.
    let r = author
        .put(app.url(&path))
        .header("x-csrf-token", &author_csrf)
        .json(&json!({"status": "published"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let anon = crate::harness::client()
        .get(app.url(&path))
        .send()
        .await
        .expect("GET");
    assert_eq!(anon.status(), StatusCode::OK);
    let r = other
        .put(app.url(&path))
        .header("x-csrf-token", &other_csrf)
        .json(&json!({"title": "Hijacked"}))
        .send()
        .await
        .expect("PUT");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(app.item_title(id, None).await.as_deref(), Some("Draft"));
}

#[tokio::test]
async fn item_page_is_escaped_cached_and_follows_updates() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("<script>alert(1)</script>", None).await;
    let id = item["id"].as_str().expect("id");
    let anon = crate::harness::client();
    let page = |anon: reqwest::Client, url: String| async move {
        let r = anon.get(url).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap_or("")
                .starts_with("text/html")
        );
        r.text().await.expect("html")
    };
    let html = page(anon.clone(), app.url(&format!("/item/{id}"))).await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let key =
        trovato::item::routes::item_page_key(&app.state, id.parse().expect("uuid")).expect("key");
    assert!(
        key.as_str()
            .contains(&format!("page:{}:", app.state.templates.fingerprint())),
        "{key:?}"
    );
    assert!(app.state.cache.peek_l1(&key).is_some(), "page cached");

    app.rename_item(id, "Renamed", None).await;
    assert!(app.state.cache.peek_l1(&key).is_none(), "page invalidated");
    let html = page(anon.clone(), app.url(&format!("/item/{id}"))).await;
    assert!(html.contains("Renamed"), "{html}");

    let list = page(anon.clone(), app.url("/items/article")).await;
    assert!(
        list.contains("Renamed") && list.contains(&format!("/item/{id}")),
        "{list}"
    );
    let r = anon.get(app.url("/items/nope")).send().await.expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "item_type_not_found").await;
    let r = anon
        .get(app.url("/item/not-a-uuid"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn openapi_describes_the_content_endpoints() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    for path in [
        "/api/item-types",
        "/api/item-types/{type}",
        "/api/items",
        "/api/items/{id}",
        "/api/items/{id}/revisions",
        "/api/stages",
        "/stage/{id}/publish",
        "/api/stage/current",
        "/api/categories",
        "/api/categories/{id}",
        "/api/categories/{id}/terms",
        "/api/terms/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

#[tokio::test]
async fn text_the_database_cannot_store_is_422_and_nothing_is_written() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .post_item(
            json!({"type": "article", "title": "nul\u{0}byte", "fields": {"field_body": {"value": "text"}}}),
            None,
        )
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_text").await;
    assert!(body["message"].is_string(), "{body}");
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM item")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    let revisions: i64 = sqlx::query_scalar("SELECT count(*) FROM item_revision")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!((items, revisions), (0, 0));
}

#[tokio::test]
async fn a_type_named_all_has_its_own_listing() {
    let app = TestApp::spawn_with_articles().await;
    let r = app.create_item_type("all", json!([])).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    app.create_item("An article", None).await;
    // Fill the cache for "every type" first, then ask for type `all`.
    let every: Value = app.get("/api/items").await.json().await.expect("json");
    let only_all: Value = app
        .get("/api/items?type=all")
        .await
        .json()
        .await
        .expect("json");
    assert!(every.to_string().contains("An article"), "{every}");
    assert!(
        !only_all.to_string().contains("An article"),
        "type `all` must not be served the every-type listing: {only_all}"
    );
}

#[tokio::test]
async fn deep_listing_pages_are_served_without_creating_cache_entries() {
    let app = TestApp::spawn_with_articles().await;
    app.create_item("Only item", None).await;
    let deep: Value = app
        .get("/api/items?page=51")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(deep["total"], 1, "{deep}");
    assert_eq!(deep["items"].as_array().map(Vec::len), Some(0), "{deep}");
    let shallow: Value = app
        .get("/api/items?page=1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        shallow["items"].as_array().map(Vec::len),
        Some(1),
        "{shallow}"
    );

    let keys: Vec<String> = app
        .state
        .kv
        .query(redis::cmd("KEYS").arg(format!("{}*item_list*", app.state.config.redis.prefix)))
        .await
        .expect("keys");
    assert!(
        keys.iter().any(|k| k.contains(":1:")),
        "page 1 is cached: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(":51:")),
        "page 51 is not: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_client_disconnects_during_the_commit_is_still_invalidated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(
        |c| {
            // Stale stays stale for the whole test unless invalidated.
            c.cache.l1_ttl_secs = 3600;
            c.cache.l2_ttl_secs = 3600;
        },
        axum::Router::new(),
    )
    .await;
    let admin = app.sign_in_as_admin().await;
    app.create_article_type().await;
    let item = app.create_item("Old title", None).await;
    let id = item["id"].as_str().expect("id").to_owned();
    // Cached: the item and its page.
    assert_eq!(
        app.item_title(&id, None).await.as_deref(),
        Some("Old title")
    );
    let page = |app: &TestApp| {
        let url = app.url(&format!("/item/{id}"));
        async move {
            crate::harness::client()
                .get(url)
                .send()
                .await
                .expect("GET page")
                .text()
                .await
                .expect("page")
        }
    };
    assert!(page(&app).await.contains("Old title"));

    // A commit of an item update waits on an advisory lock this test holds
    // (a deferred trigger runs at COMMIT), so the client can go away while
    // the write is committing.
    sqlx::raw_sql(
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER hold_commit AFTER UPDATE ON item
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit();",
    )
    .execute(&app.state.db)
    .await
    .expect("trigger");
    let mut holder = app.state.db.acquire().await.expect("conn");
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut *holder)
        .await
        .expect("lock");

    let token = trovato::user::token::create(&app.state.db, admin.id, "test")
        .await
        .expect("token");
    let body = r#"{"title": "New title"}"#;
    let request = format!(
        "PUT /api/items/{id} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let db = app.state.db.clone();
    let committing = crate::harness::eventually(std::time::Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event = 'advisory'",
            )
            .fetch_one(&db)
            .await
            .unwrap_or(0)
                > 0
        }
    })
    .await;
    assert!(committing.is_some(), "the update must reach its commit");
    // The client goes away; the server drops the request without answering.
    stream.shutdown().await.expect("shutdown");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection")
    .expect("read");
    assert!(
        answer.is_empty(),
        "the request must have been dropped, not answered: {}",
        String::from_utf8_lossy(&answer)
    );

    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut *holder)
        .await
        .expect("unlock");
    drop(holder);
    let served = crate::harness::eventually(std::time::Duration::from_secs(30), || {
        let app = &app;
        let id = id.clone();
        async move { app.item_title(&id, None).await.as_deref() == Some("New title") }
    })
    .await;
    assert!(served.is_some(), "the committed title must be served");
    assert!(page(&app).await.contains("New title"));
}

// ------------------------------------------------------------ integrity

/// A `page` type whose items reference other items and a user.
async fn create_page_type(app: &TestApp) {
    let r = app
        .create_item_type(
            "page",
            json!([
                {"name": "field_related", "label": "Related", "kind": "reference", "target": "item", "cardinality": 0},
                {"name": "field_reviewer", "label": "Reviewer", "kind": "reference", "target": "user"},
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

async fn create_page(app: &TestApp, fields: Value, stage: Option<&str>) -> String {
    let r = app
        .post_item(
            json!({"type": "page", "title": "Page", "fields": fields}),
            stage,
        )
        .await;
    let v = crate::harness::content::expect_json(r, StatusCode::CREATED).await;
    v["id"].as_str().expect("id").to_owned()
}

async fn delete_item(app: &TestApp, id: &str, stage: Option<&str>) -> reqwest::Response {
    app.json_request(
        reqwest::Method::DELETE,
        &crate::harness::content::staged(&format!("/api/items/{id}"), stage),
    )
    .send()
    .await
    .expect("DELETE item")
}

async fn item_exists(app: &TestApp, id: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM item WHERE id = $1::uuid)")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("item row")
}

#[tokio::test]
async fn an_item_other_items_reference_is_not_deleted_until_they_let_go() {
    let app = TestApp::spawn_with_articles().await;
    create_page_type(&app).await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let target = app.create_item("Target", None).await;
    let target = target["id"].as_str().expect("id").to_owned();
    let live_page = create_page(
        &app,
        json!({"field_related": [{"target_id": target}]}),
        None,
    )
    .await;
    // Another page references it only in its draft revision.
    let staged_page = create_page(&app, json!({}), None).await;
    let r = app
        .update_item(
            &staged_page,
            json!({"fields": {"field_related": [{"target_id": target}]}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    let body = error_body(
        delete_item(&app, &target, None).await,
        StatusCode::CONFLICT,
        "item_in_use",
    )
    .await;
    assert_eq!(body["details"]["total"], 2, "{body}");
    let mut uses: Vec<(String, String)> = body["details"]["uses"]
        .as_array()
        .expect("uses")
        .iter()
        .map(|u| {
            (
                u["item"].as_str().unwrap_or("").to_owned(),
                u["stage"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    uses.sort();
    let mut want = vec![
        (live_page.clone(), "live".to_owned()),
        (staged_page.clone(), "draft".to_owned()),
    ];
    want.sort();
    assert_eq!(uses, want, "{body}");
    assert!(item_exists(&app, &target).await);
    assert_eq!(
        app.item_title(&target, None).await.as_deref(),
        Some("Target")
    );

    // The live page lets go; the draft revision still holds it.
    let r = app
        .update_item(&live_page, json!({"fields": {"field_related": null}}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = error_body(
        delete_item(&app, &target, None).await,
        StatusCode::CONFLICT,
        "item_in_use",
    )
    .await;
    assert_eq!(body["details"]["uses"][0]["stage"], "draft", "{body}");
    let r = app
        .update_item(
            &staged_page,
            json!({"fields": {"field_related": []}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        delete_item(&app, &target, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!item_exists(&app, &target).await);
    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_item_referencing_only_itself_is_deleted() {
    let app = TestApp::spawn_with_articles().await;
    create_page_type(&app).await;
    let id = create_page(&app, json!({}), None).await;
    let r = app
        .update_item(
            &id,
            json!({"fields": {"field_related": [{"target_id": id.to_uppercase()}]}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        delete_item(&app, &id, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!item_exists(&app, &id).await);
}

#[tokio::test]
async fn references_to_a_user_are_found_live_and_in_unpublished_stage_revisions_but_not_authorship()
{
    let app = TestApp::spawn_with_articles().await;
    let admin: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'admin'")
        .fetch_one(&app.state.db)
        .await
        .expect("admin");
    let reviewer = app.create_user("reviewer", PASSWORD, false).await;
    create_page_type(&app).await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    // A client may write the id in any form a UUID parser accepts.
    let braced = format!("{{{}}}", reviewer.id.to_string().to_uppercase());
    let live = create_page(&app, json!({"field_reviewer": {"target_id": braced}}), None).await;
    let staged = create_page(&app, json!({}), None).await;
    let r = app
        .update_item(
            &staged,
            json!({"fields": {"field_reviewer": {"target_id": reviewer.id}}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let unrelated = create_page(&app, json!({}), None).await;

    let mut conn = app.state.db.acquire().await.expect("conn");
    let uses = trovato::item::references_to_user(&mut conn, reviewer.id)
        .await
        .expect("uses");
    let mut found: Vec<(String, String, String)> = uses
        .iter()
        .map(|u| {
            assert_eq!(u.target, reviewer.id);
            (u.item.to_string(), u.stage.clone(), u.field.clone())
        })
        .collect();
    found.sort();
    let mut want = vec![
        (live.clone(), "live".to_owned(), "field_reviewer".to_owned()),
        (
            staged.clone(),
            "draft".to_owned(),
            "field_reviewer".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(found, want);
    assert!(!found.iter().any(|(i, _, _)| *i == unrelated));
    // The administrator wrote every page but no field references them.
    let authored = trovato::item::references_to_user(&mut conn, admin)
        .await
        .expect("uses");
    assert!(authored.is_empty(), "{authored:?}");

    // Publishing moves the stage's reference to live; clearing both leaves none.
    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);
    for id in [&live, &staged] {
        let r = app
            .update_item(id, json!({"fields": {"field_reviewer": null}}), None)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    let left = trovato::item::references_to_user(&mut conn, reviewer.id)
        .await
        .expect("uses");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_field_given_twice_in_an_item_body_is_422_naming_it_and_nothing_is_written() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .json_request(reqwest::Method::POST, "/api/items")
        .body(
            r#"{"type": "article", "title": "Twice", "fields": {
                 "field_body": {"value": "first"}, "field_body": {"value": "second"}}}"#,
        )
        .send()
        .await
        .expect("POST");
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        body["details"]["fields"]["field_body"],
        json!(["is given more than once"]),
        "{body}"
    );
    assert_eq!(item_count(&app).await, 0);

    let item = app.create_item("Once", None).await;
    let id = item["id"].as_str().expect("id");
    let r = app
        .json_request(reqwest::Method::PUT, &format!("/api/items/{id}"))
        .body(r#"{"fields": {"field_rating": {"value": 1, "value": 2}}}"#)
        .send()
        .await
        .expect("PUT");
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        body["details"]["fields"]["field_rating"],
        json!(["`value` is given more than once"]),
        "{body}"
    );
    let stored: Value = sqlx::query_scalar("SELECT fields FROM item WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("row");
    assert_eq!(stored, item["fields"]);
}

#[tokio::test]
async fn an_unknown_member_inside_a_field_value_is_422_naming_it_and_nothing_is_written() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .post_item(
            json!({"type": "article", "title": "Extra", "fields": {
                "field_body": {"value": "x", "extra": "<script>"}}}),
            None,
        )
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        body["details"]["fields"]["field_body"],
        json!(["has an unknown member `extra`: a value holds only `value`"]),
        "{body}"
    );
    assert_eq!(item_count(&app).await, 0);

    let item = app.create_item("Clean", None).await;
    let id = item["id"].as_str().expect("id");
    let r = app
        .update_item(
            id,
            json!({"fields": {"field_tags": [{"target_id": uuid::Uuid::now_v7(), "label": "x"}]}}),
            None,
        )
        .await;
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let messages = body["details"]["fields"]["field_tags"].to_string();
    assert!(messages.contains("unknown member `label`"), "{body}");
    let stored: Value = sqlx::query_scalar("SELECT fields FROM item WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("row");
    assert_eq!(stored, item["fields"]);
}

#[tokio::test]
async fn a_value_stored_with_an_extra_member_before_the_rule_does_not_stop_other_edits() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Old", None).await;
    let id = item["id"].as_str().expect("id");
    // As an earlier kernel stored it.
    sqlx::query(
        "UPDATE item SET fields = jsonb_set(fields, '{field_body,extra}', '\"kept\"') WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&app.state.db)
    .await
    .expect("legacy value");
    app.rename_item(id, "Retitled", None).await;
    // Sending it again as it is stored is refused; sending it clean is not.
    let r = app
        .update_item(
            id,
            json!({"fields": {"field_body": {"value": "text", "extra": "kept"}}}),
            None,
        )
        .await;
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = app
        .update_item(
            id,
            json!({"fields": {"field_body": {"value": "clean"}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stored: Value = sqlx::query_scalar("SELECT fields FROM item WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("row");
    assert_eq!(stored["field_body"], json!({"value": "clean"}));
}

async fn put_article_type(app: &TestApp, fields: Value) -> reqwest::Response {
    app.json_request(reqwest::Method::PUT, "/api/item-types/article")
        .json(&json!({"label": "Article", "fields": fields}))
        .send()
        .await
        .expect("PUT type")
}

/// The article fields without `name`.
fn article_fields_without(name: &str) -> Value {
    let mut fields = crate::harness::content::article_fields();
    fields
        .as_array_mut()
        .expect("array")
        .retain(|f| f["name"] != name);
    fields
}

async fn stored_fields(app: &TestApp, id: &str) -> Value {
    sqlx::query_scalar("SELECT fields FROM item WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("row")
}

async fn stored_type_fields(app: &TestApp) -> Value {
    sqlx::query_scalar("SELECT fields FROM item_type WHERE type = 'article'")
        .fetch_one(&app.state.db)
        .await
        .expect("type row")
}

#[tokio::test]
async fn removing_a_field_removes_its_values_from_items_and_unpublished_stage_revisions() {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let rated = json!({"field_body": {"value": "x"}, "field_rating": {"value": 3}});
    let live = app
        .post_item(
            json!({"type": "article", "title": "Live", "fields": rated}),
            None,
        )
        .await;
    let live = crate::harness::content::expect_json(live, StatusCode::CREATED).await;
    let live = live["id"].as_str().expect("id").to_owned();
    let edited = app.create_item("Edited in the stage", None).await;
    let edited = edited["id"].as_str().expect("id").to_owned();
    let r = app
        .update_item(
            &edited,
            json!({"fields": {"field_rating": {"value": 4}}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let born = app
        .post_item(
            json!({"type": "article", "title": "Born in the stage", "fields": rated}),
            Some("draft"),
        )
        .await;
    let born = crate::harness::content::expect_json(born, StatusCode::CREATED).await;
    let born = born["id"].as_str().expect("id").to_owned();
    // Cached views before the change.
    let before: Value = app.read_item(&live, None).await.json().await.expect("json");
    assert_eq!(before["fields"]["field_rating"]["value"], 3);

    let r = put_article_type(&app, article_fields_without("field_rating")).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

    for id in [&live, &edited, &born] {
        let fields = stored_fields(&app, id).await;
        assert!(fields.get("field_rating").is_none(), "{fields}");
        assert!(fields["field_body"]["value"].is_string(), "{fields}");
    }
    let pending: Vec<Value> = sqlx::query_scalar(
        "SELECT r.fields FROM stage_association a JOIN item_revision r ON r.id = a.revision_id",
    )
    .fetch_all(&app.state.db)
    .await
    .expect("pending revisions");
    assert_eq!(pending.len(), 1);
    assert!(pending[0].get("field_rating").is_none(), "{}", pending[0]);
    // History keeps what the items held.
    let first: Value = sqlx::query_scalar(
        "SELECT fields FROM item_revision WHERE item_id = $1::uuid ORDER BY id LIMIT 1",
    )
    .bind(&live)
    .fetch_one(&app.state.db)
    .await
    .expect("first revision");
    assert_eq!(first["field_rating"]["value"], 3);
    // Readers see the change at once, and every item saves and publishes.
    let after: Value = app.read_item(&live, None).await.json().await.expect("json");
    assert!(after["fields"].get("field_rating").is_none(), "{after}");
    let staged: Value = app
        .read_item(&edited, Some("draft"))
        .await
        .json()
        .await
        .expect("json");
    assert!(staged["fields"].get("field_rating").is_none(), "{staged}");
    app.rename_item(&live, "Live, retitled", None).await;
    app.rename_item(&born, "Born, retitled", Some("draft"))
        .await;
    let r = app.publish_stage("draft").await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(
        app.listed_titles(None).await,
        ["Born, retitled", "Edited in the stage", "Live, retitled"]
    );
}

#[tokio::test]
async fn a_field_change_existing_values_cannot_satisfy_is_refused_with_the_number_of_failing_items()
{
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    // Two items whose body has 4 characters ("text"), one rated 2 live.
    let a = app.create_item("A", None).await;
    let a = a["id"].as_str().expect("id").to_owned();
    app.create_item("B", None).await;
    let r = app
        .update_item(&a, json!({"fields": {"field_rating": {"value": 2}}}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stored = stored_type_fields(&app).await;

    let mut shorter = crate::harness::content::article_fields();
    shorter[0]["max_length"] = json!(3);
    let body = error_body(
        put_article_type(&app, shorter).await,
        StatusCode::CONFLICT,
        "item_type_conflict",
    )
    .await;
    assert_eq!(body["details"]["items"], json!({"field_body": 2}), "{body}");
    let message = body["details"]["fields"]["field_body"][0]
        .as_str()
        .expect("message");
    assert!(
        message.starts_with("2 items would fail; e.g. item ")
            && message.contains("at most 3 allowed"),
        "{message}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("field_body (2 items)"),
        "{body}"
    );

    // Another kind for values that exist.
    let mut as_text = crate::harness::content::article_fields();
    as_text[1] = json!({"name": "field_rating", "label": "Rating", "kind": "text"});
    let body = error_body(
        put_article_type(&app, as_text).await,
        StatusCode::CONFLICT,
        "item_type_conflict",
    )
    .await;
    assert_eq!(
        body["details"]["items"],
        json!({"field_rating": 1}),
        "{body}"
    );

    // A new required field no item has; a "renamed" required field is one.
    let mut renamed = article_fields_without("field_body");
    renamed
        .as_array_mut()
        .expect("array")
        .push(json!({"name": "field_text", "label": "Body", "kind": "text", "required": true}));
    let body = error_body(
        put_article_type(&app, renamed).await,
        StatusCode::CONFLICT,
        "item_type_conflict",
    )
    .await;
    assert_eq!(body["details"]["items"], json!({"field_text": 2}), "{body}");

    // A range the stage's revision alone breaks.
    let r = app
        .update_item(
            &a,
            json!({"fields": {"field_rating": {"value": 5}}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut lower = crate::harness::content::article_fields();
    lower[1]["max"] = json!(4);
    let body = error_body(
        put_article_type(&app, lower).await,
        StatusCode::CONFLICT,
        "item_type_conflict",
    )
    .await;
    assert_eq!(
        body["details"]["items"],
        json!({"field_rating": 1}),
        "{body}"
    );

    // Nothing of any refused change was stored, and nothing was removed.
    assert_eq!(stored_type_fields(&app).await, stored);
    assert_eq!(stored_fields(&app, &a).await["field_rating"]["value"], 2);

    // Changes the values satisfy pass: a new label, a wider limit.
    let mut fine = crate::harness::content::article_fields();
    fine[0]["label"] = json!("Text");
    fine[0]["max_length"] = json!(4);
    let r = put_article_type(&app, fine).await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    assert_eq!(stored_type_fields(&app).await[0]["label"], "Text");
}

#[tokio::test]
async fn a_single_value_field_cannot_become_one_its_arrays_break() {
    let app = TestApp::spawn_with_articles().await;
    app.update_item(
        app.create_item("Tagged", None).await["id"]
            .as_str()
            .expect("id"),
        json!({"fields": {"field_tags": []}}),
        None,
    )
    .await;
    let mut single = crate::harness::content::article_fields();
    single[3]["cardinality"] = json!(1);
    let body = error_body(
        put_article_type(&app, single).await,
        StatusCode::CONFLICT,
        "item_type_conflict",
    )
    .await;
    assert_eq!(body["details"]["items"], json!({"field_tags": 1}), "{body}");
    // Turning the title on for a type whose items have none is refused too.
    let r = app.create_item_type("note", json!([])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .json_request(reqwest::Method::PUT, "/api/item-types/note")
        .json(&json!({"label": "Note", "has_title": false}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post_item(json!({"type": "note", "title": "ignored"}), None)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .json_request(reqwest::Method::PUT, "/api/item-types/note")
        .json(&json!({"label": "Note", "has_title": true}))
        .send()
        .await
        .expect("PUT");
    let body = error_body(r, StatusCode::CONFLICT, "item_type_conflict").await;
    assert_eq!(body["details"]["items"], json!({"title": 1}), "{body}");
}
