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
