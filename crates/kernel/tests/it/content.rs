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

    let author = crate::harness::client();
    let author_csrf = crate::harness::content::csrf_of(
        author
            .post(app.url("/user/login"))
            .json(&json!({"name": "author", "password": PASSWORD}))
            .send()
            .await
            .expect("login"),
    )
    .await;
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
    let other = crate::harness::client();
    let other_csrf = crate::harness::content::csrf_of(
        other
            .post(app.url("/user/login"))
            .json(&json!({"name": "other", "password": PASSWORD}))
            .send()
            .await
            .expect("login"),
    )
    .await;
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
