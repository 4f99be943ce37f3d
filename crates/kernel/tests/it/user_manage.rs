//! User management through `/api/users...`: listing, creating, changing,
//! blocking, unblocking, deleting, password resets and API tokens.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;
use crate::harness::content::{PASSWORD, error_body, expect_json};

async fn send(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let req = app.json_request(method, path);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    req.send().await.expect("request")
}

/// A client of its own signed in as `name`, and its session's cookie token.
async fn session_of(app: &TestApp, name: &str, password: &str) -> (reqwest::Client, String) {
    let client = crate::harness::client();
    let r = client
        .post(app.url("/user/login"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::OK, "{name} logs in");
    let token = app.session_token(&r).expect("session cookie");
    (client, token)
}

async fn session_exists(app: &TestApp, token: &str) -> bool {
    trovato::user::session::exists(&app.state.kv, token)
        .await
        .expect("redis")
}

async fn token_count(app: &TestApp, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_token WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.state.db)
        .await
        .expect("count")
}

async fn status_of(app: &TestApp, user: Uuid) -> Option<i16> {
    sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(&app.state.db)
        .await
        .expect("status")
}

/// Gives `user` a role granting `permissions`.
async fn grant(app: &TestApp, user: Uuid, permissions: &[&str]) {
    let db = &app.state.db;
    sqlx::query("INSERT INTO role (name, label) VALUES ('staff', 'Staff') ON CONFLICT DO NOTHING")
        .execute(db)
        .await
        .expect("role");
    for p in permissions {
        sqlx::query("INSERT INTO role_permission (role, permission) VALUES ('staff', $1)")
            .bind(p)
            .execute(db)
            .await
            .expect("permission");
    }
    sqlx::query("INSERT INTO user_role (user_id, role) VALUES ($1, 'staff')")
        .bind(user)
        .execute(db)
        .await
        .expect("user role");
}

fn names(page: &Value) -> Vec<&str> {
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect()
}

#[tokio::test]
async fn users_are_listed_by_name_filtered_by_name_status_and_role_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    for name in ["bea", "Bert", "carl", "dora"] {
        app.create_user(name, PASSWORD, false).await;
    }
    let carl = trovato::user::find_by_name(&app.state.db, "carl")
        .await
        .expect("q")
        .expect("carl");
    grant(&app, carl.id, &["access content"]).await;
    sqlx::query("UPDATE users SET status = 0 WHERE name = 'dora'")
        .execute(&app.state.db)
        .await
        .expect("block");

    let all = expect_json(app.get("/api/users").await, StatusCode::OK).await;
    assert_eq!(names(&all), vec!["admin", "bea", "Bert", "carl", "dora"]);
    assert_eq!(all["total"], 5);
    assert_eq!(all["users"][0]["roles"], json!(["administrator"]));

    let page = expect_json(
        app.get("/api/users?name=B&per_page=1&page=2").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&page), vec!["Bert"]);
    assert_eq!(
        (page["total"].as_i64(), page["page"].as_i64()),
        (Some(2), Some(2))
    );

    let blocked = expect_json(app.get("/api/users?status=blocked").await, StatusCode::OK).await;
    assert_eq!(names(&blocked), vec!["dora"]);
    let staff = expect_json(app.get("/api/users?role=staff").await, StatusCode::OK).await;
    assert_eq!(names(&staff), vec!["carl"]);
    let everyone = expect_json(
        app.get("/api/users?role=authenticated").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(everyone["total"], 5);

    for query in ["per_page=201", "page=0", "per_page=0"] {
        let r = app.get(&format!("/api/users?{query}")).await;
        error_body(r, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let r = app.get("/api/users?status=sleeping").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let one = expect_json(
        app.get(&format!("/api/users/{}", carl.id)).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (one["name"].as_str(), one["roles"].clone()),
        (Some("carl"), json!(["staff"]))
    );
    let r = app.get(&format!("/api/users/{}", Uuid::now_v7())).await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.get("/api/users/not-an-id").await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn blocking_a_user_ends_their_sessions_and_revokes_their_tokens_at_once() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let erin = app.create_user("erin", PASSWORD, false).await;
    let (phone, phone_session) = session_of(&app, "erin", PASSWORD).await;
    let (_laptop, laptop_session) = session_of(&app, "erin", PASSWORD).await;
    let bearer = trovato::user::token::create(&app.state.db, erin.id, "ci")
        .await
        .expect("token");
    trovato::user::token::create(&app.state.db, erin.id, "backup")
        .await
        .expect("token");

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/block", erin.id),
        None,
    )
    .await;
    let body = expect_json(r, StatusCode::OK).await;
    assert_eq!(body["status"], 0);
    assert_eq!(status_of(&app, erin.id).await, Some(0));
    assert!(
        !session_exists(&app, &phone_session).await,
        "a session survived"
    );
    assert!(
        !session_exists(&app, &laptop_session).await,
        "a session survived"
    );
    let indexed = trovato::user::session::indexed(&app.state.kv, erin.id)
        .await
        .expect("redis");
    assert_eq!(indexed, 0, "the session index survived");
    assert_eq!(token_count(&app, erin.id).await, 0, "a token survived");
    assert_eq!(
        phone
            .get(app.url("/user/me"))
            .send()
            .await
            .expect("me")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = reqwest::Client::new()
        .get(app.url("/user/me"))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/unblock", erin.id),
        None,
    )
    .await;
    assert_eq!(expect_json(r, StatusCode::OK).await["status"], 1);
    assert_eq!(status_of(&app, erin.id).await, Some(1));
    let (_, session) = session_of(&app, "erin", PASSWORD).await;
    assert!(session_exists(&app, &session).await);
    assert_eq!(
        token_count(&app, erin.id).await,
        0,
        "revoked tokens came back"
    );

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/block", Uuid::now_v7()),
        None,
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}

/// Creates an article as the admin and makes `author` its author, in its
/// row and its revisions; returns its id.
async fn article_by(app: &TestApp, author: Uuid) -> String {
    let item = app.create_item("Written by someone", None).await;
    let id = item["id"].as_str().expect("id").to_owned();
    for table in ["item", "item_revision"] {
        let column = if table == "item" { "id" } else { "item_id" };
        sqlx::query(&format!(
            "UPDATE {table} SET author = $1 WHERE {column} = $2"
        ))
        .bind(author)
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .execute(&app.state.db)
        .await
        .expect("author");
    }
    id
}

async fn authors(app: &TestApp, item: &str) -> Vec<Option<Uuid>> {
    let id = Uuid::parse_str(item).expect("uuid");
    let mut found: Vec<Option<Uuid>> = sqlx::query_scalar(
        "SELECT author FROM item WHERE id = $1
         UNION ALL SELECT author FROM item_revision WHERE item_id = $1",
    )
    .bind(id)
    .fetch_all(&app.state.db)
    .await
    .expect("authors");
    found.dedup();
    found
}

#[tokio::test]
async fn a_deleted_users_content_goes_to_the_named_user_or_to_no_one() {
    let app = TestApp::spawn_with_articles().await;
    let fay = app.create_user("fay", PASSWORD, false).await;
    let gus = app.create_user("gus", PASSWORD, false).await;
    let heir = app.create_user("hal", PASSWORD, false).await;
    let by_fay = article_by(&app, fay.id).await;
    let by_gus = article_by(&app, gus.id).await;
    let (_, fay_session) = session_of(&app, "fay", PASSWORD).await;
    trovato::user::token::create(&app.state.db, fay.id, "ci")
        .await
        .expect("token");
    // Read once, so a cached copy exists that must not outlive the change.
    let before = expect_json(
        app.get(&format!("/api/items/{by_fay}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(before["author"], fay.id.to_string());

    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}?reassign_to=HAL", fay.id),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        status_of(&app, fay.id).await,
        None,
        "the user is still there"
    );
    assert_eq!(authors(&app, &by_fay).await, vec![Some(heir.id)]);
    assert_eq!(token_count(&app, fay.id).await, 0);
    assert!(!session_exists(&app, &fay_session).await);
    let after = expect_json(
        app.get(&format!("/api/items/{by_fay}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        after["author"],
        heir.id.to_string(),
        "a stale copy was served"
    );

    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}", gus.id),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_of(&app, gus.id).await, None);
    assert_eq!(authors(&app, &by_gus).await, vec![None]);
}

#[tokio::test]
async fn a_bad_heir_and_the_last_administrator_refuse_the_change_and_keep_everything() {
    let app = TestApp::spawn_with_articles().await;
    let admin = trovato::user::find_by_name(&app.state.db, "admin")
        .await
        .expect("q")
        .expect("admin");
    let ida = app.create_user("ida", PASSWORD, false).await;
    let item = article_by(&app, ida.id).await;
    for (query, needle) in [
        ("reassign_to=nobody", "nobody"),
        ("reassign_to=IDA", "being deleted"),
    ] {
        let r = send(
            &app,
            Method::DELETE,
            &format!("/api/users/{}?{query}", ida.id),
            None,
        )
        .await;
        let v = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_reassignment").await;
        assert!(v["message"].as_str().unwrap_or("").contains(needle), "{v}");
    }
    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}?owner=x", ida.id),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(status_of(&app, ida.id).await, Some(1));
    assert_eq!(authors(&app, &item).await, vec![Some(ida.id)]);

    for (method, path) in [
        (Method::DELETE, format!("/api/users/{}", admin.id)),
        (Method::POST, format!("/api/users/{}/block", admin.id)),
    ] {
        let r = send(&app, method, &path, None).await;
        error_body(r, StatusCode::CONFLICT, "last_administrator").await;
    }
    assert_eq!(status_of(&app, admin.id).await, Some(1));
    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}", Uuid::now_v7()),
        None,
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_user_named_by_a_reference_field_is_not_deleted_until_the_reference_goes() {
    let app = TestApp::spawn_with_articles().await;
    let ida = app.create_user("ida", PASSWORD, false).await;
    let r = send(
        &app,
        Method::POST,
        "/api/item-types",
        Some(json!({"type": "task", "label": "Task", "fields": [
            {"name": "field_owner", "label": "Owner", "kind": "reference", "target": "user"}]})),
    )
    .await;
    expect_json(r, StatusCode::CREATED).await;
    let r = send(
        &app,
        Method::POST,
        "/api/items",
        Some(json!({"type": "task", "title": "Review",
            "fields": {"field_owner": {"target_id": ida.id}}})),
    )
    .await;
    let task = expect_json(r, StatusCode::CREATED).await;
    let task_id = task["id"].as_str().expect("id").to_owned();

    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}", ida.id),
        None,
    )
    .await;
    let v = error_body(r, StatusCode::CONFLICT, "user_in_use").await;
    assert_eq!(v["details"]["total"], 1, "{v}");
    assert_eq!(v["details"]["uses"][0]["item"], task_id.as_str(), "{v}");
    assert_eq!(v["details"]["uses"][0]["field"], "field_owner", "{v}");
    assert_eq!(status_of(&app, ida.id).await, Some(1), "ida is kept");

    let r = send(
        &app,
        Method::PUT,
        &format!("/api/items/{task_id}"),
        Some(json!({"fields": {"field_owner": null}})),
    )
    .await;
    expect_json(r, StatusCode::OK).await;
    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}", ida.id),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_of(&app, ida.id).await, None, "ida is gone");
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_and_changes_nothing() {
    let app = TestApp::spawn_with_articles().await;
    let ida = app.create_user("ida", PASSWORD, false).await;
    for body in [
        json!([null, null]),
        json!(["x", "x@example.com"]),
        json!("ida2"),
        json!(7),
    ] {
        let r = send(
            &app,
            Method::PUT,
            &format!("/api/users/{}", ida.id),
            Some(body.clone()),
        )
        .await;
        let v = error_body(r, StatusCode::BAD_REQUEST, "invalid_body").await;
        assert!(
            v["message"].as_str().unwrap_or("").contains("JSON object"),
            "{body}: {v}"
        );
    }
    let r = send(
        &app,
        Method::POST,
        "/api/users",
        Some(json!(["eve", "eve@example.com", "long enough password"])),
    )
    .await;
    error_body(r, StatusCode::BAD_REQUEST, "invalid_body").await;
    let found = trovato::user::find_by_name(&app.state.db, "eve")
        .await
        .expect("q");
    assert!(found.is_none(), "no user from an array");
    let user = trovato::user::find_by_name(&app.state.db, "ida")
        .await
        .expect("q")
        .expect("ida");
    assert_eq!(user.email, ida.email, "ida unchanged");
}

#[tokio::test]
async fn only_an_administrator_changes_an_administrators_account() {
    let app = TestApp::spawn().await;
    let admin = app.create_user("admin", PASSWORD, true).await;
    let jo = app.create_user("jo", PASSWORD, false).await;
    let kim = app.create_user("kim", PASSWORD, false).await;
    grant(&app, jo.id, &["administer users"]).await;
    app.login("jo", PASSWORD).await;
    let admin_hash: String = sqlx::query_scalar("SELECT pass FROM users WHERE id = $1")
        .bind(admin.id)
        .fetch_one(&app.state.db)
        .await
        .expect("hash");

    for (method, path, body) in [
        (Method::POST, format!("/api/users/{}/block", admin.id), None),
        (
            Method::POST,
            format!("/api/users/{}/password", admin.id),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/api/users/{}", admin.id),
            Some(json!({"email": "jo@evil.example"})),
        ),
        (Method::DELETE, format!("/api/users/{}", admin.id), None),
        (Method::GET, format!("/api/users/{}/tokens", admin.id), None),
    ] {
        let r = send(&app, method.clone(), &path, body).await;
        let what = format!("{method} {path}");
        let v = error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("administrator"),
            "{what}: {v}"
        );
    }
    let (status, hash, email): (i16, String, String) =
        sqlx::query_as("SELECT status, pass, email FROM users WHERE id = $1")
            .bind(admin.id)
            .fetch_one(&app.state.db)
            .await
            .expect("admin");
    assert_eq!(
        (status, hash, email.as_str()),
        (1, admin_hash, "admin@example.com")
    );

    // Anyone else's account is theirs to manage.
    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/block", kim.id),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(status_of(&app, kim.id).await, Some(0));

    // Without the permission: 403; anonymous: 401.
    let (kim_client, _) = {
        sqlx::query("UPDATE users SET status = 1 WHERE id = $1")
            .bind(kim.id)
            .execute(&app.state.db)
            .await
            .expect("unblock");
        session_of(&app, "kim", PASSWORD).await
    };
    let r = kim_client
        .get(app.url("/api/users"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = crate::harness::client()
        .get(app.url("/api/users"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn a_password_reset_sets_the_new_password_and_ends_the_users_sessions() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let lea = app.create_user("lea", PASSWORD, false).await;
    let (_, session) = session_of(&app, "lea", PASSWORD).await;

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/password", lea.id),
        Some(json!({})),
    )
    .await;
    let reset = expect_json(r, StatusCode::OK).await;
    let generated = reset["password"]
        .as_str()
        .expect("a generated password")
        .to_owned();
    assert!(
        !session_exists(&app, &session).await,
        "the old session survived"
    );
    let (_, hash) = trovato::user::find_credentials(&app.state.db, "lea")
        .await
        .expect("q")
        .expect("lea");
    assert!(
        trovato::user::password::verify(generated.clone(), Some(hash))
            .await
            .expect("verify")
    );
    session_of(&app, "lea", &generated).await;

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/password", lea.id),
        Some(json!({"password": "chosen by the admin"})),
    )
    .await;
    assert_eq!(
        expect_json(r, StatusCode::OK).await["password"],
        Value::Null
    );
    session_of(&app, "lea", "chosen by the admin").await;

    let r = send(
        &app,
        Method::POST,
        &format!("/api/users/{}/password", lea.id),
        Some(json!({"password": "short"})),
    )
    .await;
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    session_of(&app, "lea", "chosen by the admin").await;
}

#[tokio::test]
async fn a_users_tokens_are_listed_and_revoked_one_at_a_time() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let max = app.create_user("max", PASSWORD, false).await;
    let first = trovato::user::token::create(&app.state.db, max.id, "ci")
        .await
        .expect("token");
    let second = trovato::user::token::create(&app.state.db, max.id, "laptop")
        .await
        .expect("token");

    let list = expect_json(
        app.get(&format!("/api/users/{}/tokens", max.id)).await,
        StatusCode::OK,
    )
    .await;
    let list = list.as_array().expect("tokens").clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["label"], "ci");
    let text = serde_json::to_string(&list).expect("json");
    assert!(!text.contains(&first) && !text.contains("hash"), "{text}");
    let first_id = list[0]["id"].as_str().expect("id").to_owned();

    let path = format!("/api/users/{}/tokens/{first_id}", max.id);
    assert_eq!(
        send(&app, Method::DELETE, &path, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(token_count(&app, max.id).await, 1);
    assert_eq!(
        trovato::user::token::authenticate(&app.state.db, &first)
            .await
            .expect("auth"),
        None
    );
    assert_eq!(
        trovato::user::token::authenticate(&app.state.db, &second)
            .await
            .expect("auth"),
        Some(max.id)
    );
    let r = send(&app, Method::DELETE, &path, None).await;
    error_body(r, StatusCode::NOT_FOUND, "token_not_found").await;
    let r = send(
        &app,
        Method::DELETE,
        &format!("/api/users/{}/tokens/x", max.id),
        None,
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "token_not_found").await;
    assert_eq!(token_count(&app, max.id).await, 1);
}

#[tokio::test]
async fn creating_or_changing_a_user_refuses_a_taken_name_or_email_address() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let r = send(
        &app,
        Method::POST,
        "/api/users",
        Some(json!({"name": "nell", "email": "nell@example.com", "password": PASSWORD})),
    )
    .await;
    let nell = expect_json(r, StatusCode::CREATED).await;
    assert_eq!(nell["roles"], json!([]));
    for (body, status, code) in [
        (
            json!({"name": "nora", "email": "NELL@example.COM", "password": PASSWORD}),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (
            json!({"name": "NELL", "email": "n2@example.com", "password": PASSWORD}),
            StatusCode::CONFLICT,
            "name_taken",
        ),
        (
            json!({"name": "nora", "email": "not an address", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        ),
        (
            json!({"name": "nora", "email": "nora@example.com", "password": "short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
        ),
    ] {
        let r = send(&app, Method::POST, "/api/users", Some(body)).await;
        error_body(r, status, code).await;
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(count, 2, "a refused create wrote a user");

    let path = format!("/api/users/{}", nell["id"].as_str().expect("id"));
    for (body, status, code) in [
        (
            json!({"email": "Admin@example.com"}),
            StatusCode::CONFLICT,
            "email_taken",
        ),
        (json!({"name": "ADMIN"}), StatusCode::CONFLICT, "name_taken"),
        (
            json!({"email": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        ),
        (
            json!({"name": " padded"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
        ),
    ] {
        let r = send(&app, Method::PUT, &path, Some(body)).await;
        error_body(r, status, code).await;
    }
    let r = send(
        &app,
        Method::PUT,
        &path,
        Some(json!({"email": "nell@elsewhere.example"})),
    )
    .await;
    assert_eq!(
        expect_json(r, StatusCode::OK).await["email"],
        "nell@elsewhere.example"
    );
    let (name, email): (String, String) =
        sqlx::query_as("SELECT name, email FROM users WHERE name = 'nell'")
            .fetch_one(&app.state.db)
            .await
            .expect("nell");
    assert_eq!(
        (name.as_str(), email.as_str()),
        ("nell", "nell@elsewhere.example")
    );
    let r = send(
        &app,
        Method::PUT,
        &format!("/api/users/{}", Uuid::now_v7()),
        Some(json!({})),
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}
