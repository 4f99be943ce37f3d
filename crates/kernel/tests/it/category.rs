//! Categories and terms: CRUD, constraints, and the term cache.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use trovato::cache::CacheKey;

use crate::harness::TestApp;
use crate::harness::content::error_body;

async fn create_category(app: &TestApp, id: &str) -> reqwest::Response {
    app.json_request(Method::POST, "/api/categories")
        .json(&json!({"id": id, "label": "Tags"}))
        .send()
        .await
        .expect("POST category")
}

async fn add_term(app: &TestApp, category: &str, body: Value) -> reqwest::Response {
    app.json_request(Method::POST, &format!("/api/categories/{category}/terms"))
        .json(&body)
        .send()
        .await
        .expect("POST term")
}

async fn term_names(app: &TestApp, category: &str) -> Vec<String> {
    let v: Value = app
        .get(&format!("/api/categories/{category}/terms"))
        .await
        .json()
        .await
        .expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn terms_are_created_listed_renamed_and_deleted_through_the_cache() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    assert_eq!(
        create_category(&app, "tags").await.status(),
        StatusCode::CREATED
    );
    let rust: Value = add_term(&app, "tags", json!({"name": "Rust", "weight": 1}))
        .await
        .json()
        .await
        .expect("json");
    add_term(&app, "tags", json!({"name": "Go", "weight": 2})).await;
    assert_eq!(term_names(&app, "tags").await, ["Rust", "Go"]);
    let id = rust["id"].as_str().expect("id");
    let key = CacheKey::new("term_list:tags").expect("key");
    assert!(
        app.state
            .cache
            .peek_l2(&key)
            .await
            .expect("redis")
            .is_some()
    );

    // Read the term (cached), rename it, read again.
    let t: Value = app
        .get(&format!("/api/terms/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(t["name"], "Rust");
    let r = app
        .json_request(Method::PUT, &format!("/api/terms/{id}"))
        .json(&json!({"name": "Rust lang", "weight": 3}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = app
        .get(&format!("/api/terms/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(t["name"], "Rust lang");
    assert_eq!(term_names(&app, "tags").await, ["Go", "Rust lang"]);

    let r = app
        .json_request(Method::DELETE, &format!("/api/terms/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    error_body(
        app.get(&format!("/api/terms/{id}")).await,
        StatusCode::NOT_FOUND,
        "term_not_found",
    )
    .await;
    assert_eq!(term_names(&app, "tags").await, ["Go"]);
}

#[tokio::test]
async fn term_hierarchy_rules_are_enforced() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    create_category(&app, "tags").await;
    create_category(&app, "places").await;
    let parent: Value = add_term(&app, "tags", json!({"name": "Parent"}))
        .await
        .json()
        .await
        .expect("json");
    let pid = parent["id"].as_str().expect("id");
    let child: Value = add_term(&app, "tags", json!({"name": "Child", "parent": pid}))
        .await
        .json()
        .await
        .expect("json");
    let cid = child["id"].as_str().expect("id");

    let dup = add_term(&app, "tags", json!({"name": "child", "parent": pid})).await;
    error_body(dup, StatusCode::CONFLICT, "term_exists").await;
    let foreign = add_term(&app, "places", json!({"name": "X", "parent": pid})).await;
    let body = error_body(
        foreign,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(body["details"]["fields"]["parent"].is_array());
    let blank = add_term(&app, "tags", json!({"name": "  "})).await;
    error_body(blank, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let cycle = app
        .json_request(Method::PUT, &format!("/api/terms/{pid}"))
        .json(&json!({"name": "Parent", "parent": cid}))
        .send()
        .await
        .expect("PUT");
    error_body(cycle, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = app
        .json_request(Method::DELETE, &format!("/api/terms/{pid}"))
        .send()
        .await
        .expect("DELETE");
    error_body(r, StatusCode::CONFLICT, "term_has_children").await;
    assert_eq!(term_names(&app, "tags").await.len(), 2);
    let missing = add_term(&app, "nope", json!({"name": "X"})).await;
    error_body(missing, StatusCode::NOT_FOUND, "category_not_found").await;
}

#[tokio::test]
async fn category_crud_and_errors() {
    let app = TestApp::spawn().await;
    error_body(
        create_category(&app, "tags").await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
    app.sign_in_as_admin().await;
    create_category(&app, "tags").await;
    error_body(
        create_category(&app, "tags").await,
        StatusCode::CONFLICT,
        "category_exists",
    )
    .await;
    error_body(
        create_category(&app, "Bad Id").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let r = app
        .json_request(Method::PUT, "/api/categories/tags")
        .json(&json!({"label": "Topics"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let c: Value = app
        .get("/api/categories/tags")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(c["label"], "Topics");
    add_term(&app, "tags", json!({"name": "T"})).await;
    assert_eq!(term_names(&app, "tags").await, ["T"]);
    let r = app
        .json_request(Method::DELETE, "/api/categories/tags")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    error_body(
        app.get("/api/categories/tags").await,
        StatusCode::NOT_FOUND,
        "category_not_found",
    )
    .await;
    error_body(
        app.get("/api/categories/tags/terms").await,
        StatusCode::NOT_FOUND,
        "category_not_found",
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM category_tag")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn items_may_reference_existing_terms_only() {
    let app = TestApp::spawn_with_articles().await;
    create_category(&app, "tags").await;
    let t: Value = add_term(&app, "tags", json!({"name": "Rust"}))
        .await
        .json()
        .await
        .expect("json");
    let ok = app
        .post_item(
            json!({"type": "article", "title": "Tagged", "fields": {
                "field_body": {"value": "x"}, "field_tags": [{"target_id": t["id"]}]}}),
            None,
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let created: Value = ok.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    let stored: Value = app.read_item(id, None).await.json().await.expect("json");
    assert_eq!(
        stored["fields"]["field_tags"][0]["target_id"], t["id"],
        "{stored}"
    );
}

async fn new_term(app: &TestApp, category: &str, name: &str) -> String {
    let r = add_term(app, category, json!({"name": name})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Value = r.json().await.expect("json");
    t["id"].as_str().expect("id").to_owned()
}

/// Creates an article tagged with `terms` (in `stage` when given).
async fn tagged_article(app: &TestApp, title: &str, terms: &[&str], stage: Option<&str>) -> String {
    let tags: Vec<Value> = terms.iter().map(|t| json!({"target_id": t})).collect();
    let r = app
        .post_item(
            json!({"type": "article", "title": title, "fields": {
                "field_body": {"value": "x"}, "field_tags": tags}}),
            stage,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_owned()
}

async fn delete_term(app: &TestApp, id: &str) -> reqwest::Response {
    app.json_request(Method::DELETE, &format!("/api/terms/{id}"))
        .send()
        .await
        .expect("DELETE term")
}

async fn term_exists(app: &TestApp, id: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM category_tag WHERE id = $1::uuid)")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("term row")
}

#[tokio::test]
async fn a_term_items_reference_live_or_in_a_stage_is_not_deleted_and_its_uses_are_listed() {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    create_category(&app, "tags").await;
    let live_tag = new_term(&app, "tags", "Live").await;
    let revision_tag = new_term(&app, "tags", "Revision").await;
    let born_tag = new_term(&app, "tags", "Born").await;
    let a = tagged_article(&app, "A", &[&live_tag], None).await;
    // B is live without tags; only its draft revision references the term.
    let b = tagged_article(&app, "B", &[], None).await;
    let r = app
        .update_item(
            &b,
            json!({"fields": {"field_tags": [{"target_id": revision_tag}]}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // C was created in the stage and is not live yet.
    let c = tagged_article(&app, "C", &[&born_tag], Some("draft")).await;

    for (term, item, stage) in [
        (&live_tag, &a, "live"),
        (&revision_tag, &b, "draft"),
        (&born_tag, &c, "draft"),
    ] {
        let body = error_body(
            delete_term(&app, term).await,
            StatusCode::CONFLICT,
            "term_in_use",
        )
        .await;
        assert_eq!(body["details"]["total"], 1, "{body}");
        let used = &body["details"]["uses"][0];
        assert_eq!(
            (
                used["item"].as_str(),
                used["stage"].as_str(),
                used["field"].as_str(),
                used["target"].as_str()
            ),
            (
                Some(item.as_str()),
                Some(stage),
                Some("field_tags"),
                Some(term.as_str())
            ),
            "{body}"
        );
        assert!(term_exists(&app, term).await, "{term} kept");
    }
    // The whole category is refused too, listing every use.
    let r = app
        .json_request(Method::DELETE, "/api/categories/tags")
        .send()
        .await
        .expect("DELETE category");
    let body = error_body(r, StatusCode::CONFLICT, "category_in_use").await;
    assert_eq!(body["details"]["total"], 3, "{body}");
    assert_eq!(term_names(&app, "tags").await.len(), 3);

    // Everything still saves and publishes.
    app.rename_item(&a, "A again", None).await;
    app.rename_item(&b, "B again", Some("draft")).await;
    assert_eq!(app.publish_stage("draft").await.status(), StatusCode::OK);

    // Once the item lets go, the term goes.
    let r = app
        .update_item(&a, json!({"fields": {"field_tags": null}}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        delete_term(&app, &live_tag).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!term_exists(&app, &live_tag).await);
    app.rename_item(&a, "A once more", None).await;
}

#[tokio::test]
async fn a_reference_kept_only_in_revision_history_does_not_hold_a_term() {
    let app = TestApp::spawn_with_articles().await;
    create_category(&app, "tags").await;
    let term = new_term(&app, "tags", "Old").await;
    let id = tagged_article(&app, "Tagged once", &[&term], None).await;
    let r = app
        .update_item(&id, json!({"fields": {"field_tags": []}}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        delete_term(&app, &term).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!term_exists(&app, &term).await);
    // The first revision still names the term; the item still saves.
    app.rename_item(&id, "Still editable", None).await;
    let r = app
        .json_request(Method::DELETE, "/api/categories/tags")
        .send()
        .await
        .expect("DELETE category");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// Whether `n` backends of the test's database come to wait on a lock
/// (within a generous deadline).
async fn lock_waiters_reach(app: &TestApp, n: i64) -> bool {
    let db = app.state.db.clone();
    crate::harness::eventually(std::time::Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&db)
            .await
            .unwrap_or(0)
                >= n
        }
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_delete_waits_for_a_save_referencing_the_term_and_then_refuses() {
    let app = TestApp::spawn_with_articles().await;
    create_category(&app, "tags").await;
    let term = new_term(&app, "tags", "Contested").await;
    // The commit of an item insert waits on an advisory lock this test
    // holds (a deferred trigger runs at COMMIT), so the save stays open
    // after it validated the term.
    sqlx::raw_sql(
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_advisory_xact_lock(4343); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON item
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit();",
    )
    .execute(&app.state.db)
    .await
    .expect("trigger");
    let mut holder = app.state.db.acquire().await.expect("conn");
    sqlx::query("SELECT pg_advisory_lock(4343)")
        .execute(&mut *holder)
        .await
        .expect("lock");

    let save = tokio::spawn(
        app.json_request(Method::POST, "/api/items")
            .json(&json!({"type": "article", "title": "Tagging", "fields": {
                "field_body": {"value": "x"}, "field_tags": [{"target_id": term}]}}))
            .send(),
    );
    assert!(
        lock_waiters_reach(&app, 1).await,
        "the save must reach its commit"
    );
    let delete = tokio::spawn(
        app.json_request(Method::DELETE, &format!("/api/terms/{term}"))
            .send(),
    );
    // Two backends wait now: the save on the advisory lock, the delete on
    // the save's lock of the term row.
    assert!(
        lock_waiters_reach(&app, 2).await,
        "the delete must wait for the save"
    );

    sqlx::query("SELECT pg_advisory_unlock(4343)")
        .execute(&mut *holder)
        .await
        .expect("unlock");
    drop(holder);
    let saved = save.await.expect("join").expect("POST");
    assert_eq!(saved.status(), StatusCode::CREATED);
    let refused = delete.await.expect("join").expect("DELETE");
    error_body(refused, StatusCode::CONFLICT, "term_in_use").await;
    assert!(term_exists(&app, &term).await);
}
