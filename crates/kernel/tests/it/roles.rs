//! Roles, their permissions and the roles a user holds, through
//! `/api/roles` and `/api/users/{id}/roles`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::harness::content::{PASSWORD, error_body};

/// A separate client signed in as `name`, sending its session's CSRF
/// token with every request (as a script using a session would).
async fn signed_in(app: &TestApp, name: &str) -> reqwest::Client {
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let builder = || {
        reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
    };
    let resp = builder()
        .build()
        .expect("client")
        .post(app.url("/user/login"))
        .json(&json!({"name": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let token = crate::harness::content::csrf_of(resp).await;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-csrf-token",
        reqwest::header::HeaderValue::from_str(&token).expect("token is a header value"),
    );
    builder().default_headers(headers).build().expect("client")
}

async fn send(app: &TestApp, method: Method, path: &str, body: Value) -> reqwest::Response {
    app.json_request(method, path)
        .json(&body)
        .send()
        .await
        .expect("request")
}

async fn permissions_in_db(app: &TestApp, role: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT permission FROM role_permission WHERE role = $1 ORDER BY permission")
        .bind(role)
        .fetch_all(&app.state.db)
        .await
        .expect("query")
}

async fn roles_in_db(app: &TestApp, user: uuid::Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT role FROM user_role WHERE user_id = $1 ORDER BY role")
        .bind(user)
        .fetch_all(&app.state.db)
        .await
        .expect("query")
}

/// Creates `role` with `permissions` and gives it to `holder`, checking
/// each step.
async fn role_for(app: &TestApp, role: &str, permissions: &[&str], holder: Option<uuid::Uuid>) {
    let r = send(
        app,
        Method::POST,
        "/api/roles",
        json!({"name": role, "label": role}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(
        app,
        Method::PUT,
        &format!("/api/roles/{role}"),
        json!({"label": role, "permissions": permissions}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    if let Some(user) = holder {
        let r = send(
            app,
            Method::PUT,
            &format!("/api/users/{user}/roles"),
            json!({ "roles": [role] }),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_new_role_with_permissions_grants_them_to_its_holders_at_once() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let bob = app.create_user("bob", PASSWORD, false).await;
    let bob_client = signed_in(&app, "bob").await;
    let plugins = |c: reqwest::Client| {
        let url = app.url("/api/plugins");
        async move { c.get(url).send().await.expect("GET").status() }
    };
    assert_eq!(plugins(bob_client.clone()).await, StatusCode::FORBIDDEN);

    let resp = send(
        &app,
        Method::POST,
        "/api/roles",
        json!({"name": "site_ops", "label": "Site operations"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = send(
        &app,
        Method::PUT,
        "/api/roles/site_ops",
        json!({"label": "Operations", "permissions": ["administer plugins", "access content", "administer plugins"]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let role: Value = resp.json().await.expect("json");
    assert_eq!(
        role["permissions"],
        json!(["access content", "administer plugins"])
    );
    assert_eq!(
        permissions_in_db(&app, "site_ops").await,
        vec!["access content", "administer plugins"]
    );

    let resp = send(
        &app,
        Method::PUT,
        &format!("/api/users/{}/roles", bob.id),
        json!({"roles": ["site_ops"]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(roles_in_db(&app, bob.id).await, vec!["site_ops"]);
    assert_eq!(plugins(bob_client.clone()).await, StatusCode::OK);

    // Replacing the permissions takes the old ones away, at once here.
    let resp = send(
        &app,
        Method::PUT,
        "/api/roles/site_ops",
        json!({"label": "Operations", "permissions": ["access content"]}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        permissions_in_db(&app, "site_ops").await,
        vec!["access content"]
    );
    assert_eq!(plugins(bob_client.clone()).await, StatusCode::FORBIDDEN);

    let listed: Value = app.get("/api/roles").await.json().await.expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["administrator", "anonymous", "authenticated", "site_ops"]
    );
    let one: Value = app
        .get("/api/roles/anonymous")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(one["permissions"], json!(["access content"]));

    // Deleting the role takes it from its holders.
    let resp = send(&app, Method::DELETE, "/api/roles/site_ops", json!({})).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(roles_in_db(&app, bob.id).await.is_empty());
    assert!(permissions_in_db(&app, "site_ops").await.is_empty());
    error_body(
        app.get("/api/roles/site_ops").await,
        StatusCode::NOT_FOUND,
        "role_not_found",
    )
    .await;
}

#[tokio::test]
async fn only_holders_of_administer_permissions_see_or_change_roles() {
    let app = TestApp::spawn().await;
    let anon = crate::harness::client();
    let r = anon.get(app.url("/api/roles")).send().await.expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.create_user("carol", PASSWORD, false).await;
    let carol = signed_in(&app, "carol").await;
    let r = carol.get(app.url("/api/roles")).send().await.expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = carol
        .post(app.url("/api/roles"))
        .json(&json!({"name": "mine", "label": "Mine"}))
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = carol
        .put(app.url("/api/roles/authenticated"))
        .json(&json!({"label": "x", "permissions": ["administer site"]}))
        .send()
        .await
        .expect("PUT");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        permissions_in_db(&app, "authenticated").await,
        vec!["access content"]
    );
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM role WHERE name = 'mine')")
        .fetch_one(&app.state.db)
        .await
        .expect("query");
    assert!(!exists);
}

#[tokio::test]
async fn bad_role_requests_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let dave = app.create_user("dave", PASSWORD, false).await;
    role_for(&app, "editor", &["edit any content"], Some(dave.id)).await;

    for (body, code) in [
        (json!({"name": "Editor2", "label": "x"}), "invalid_role"),
        (json!({"name": "2nd", "label": "x"}), "invalid_role"),
        (json!({"name": "ok_name", "label": " "}), "invalid_role"),
        (
            json!({"name": "ok_name", "label": "a\u{7}b"}),
            "invalid_role",
        ),
    ] {
        let r = send(&app, Method::POST, "/api/roles", body.clone()).await;
        error_body(r, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let r = send(
        &app,
        Method::POST,
        "/api/roles",
        json!({"name": "editor", "label": "Again"}),
    )
    .await;
    error_body(r, StatusCode::CONFLICT, "role_exists").await;
    let r = send(
        &app,
        Method::POST,
        "/api/roles",
        json!({"name": "x", "label": "x", "extra": 1}),
    )
    .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let v: Value = r.json().await.expect("JSON error");
    assert!(v["error"].is_string(), "{v}");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM role ORDER BY name")
        .fetch_all(&app.state.db)
        .await
        .expect("query");
    assert_eq!(
        names,
        vec!["administrator", "anonymous", "authenticated", "editor"],
        "a refused create wrote a role"
    );

    // Bad permissions: nothing replaced.
    for perms in [json!([""]), json!(["  padded"]), json!(["x".repeat(129)])] {
        let r = send(
            &app,
            Method::PUT,
            "/api/roles/editor",
            json!({"label": "Renamed", "permissions": perms}),
        )
        .await;
        error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_role").await;
    }
    assert_eq!(
        permissions_in_db(&app, "editor").await,
        vec!["edit any content"]
    );
    let label: String = sqlx::query_scalar("SELECT label FROM role WHERE name = 'editor'")
        .fetch_one(&app.state.db)
        .await
        .expect("query");
    assert_eq!(label, "editor");

    let r = send(
        &app,
        Method::PUT,
        "/api/roles/nope",
        json!({"label": "x", "permissions": []}),
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "role_not_found").await;
    let r = send(&app, Method::DELETE, "/api/roles/nope", json!({})).await;
    error_body(r, StatusCode::NOT_FOUND, "role_not_found").await;
    let r = send(
        &app,
        Method::PUT,
        "/api/roles/administrator",
        json!({"label": "x", "permissions": []}),
    )
    .await;
    error_body(r, StatusCode::CONFLICT, "role_built_in").await;
    for built_in in ["anonymous", "authenticated", "administrator"] {
        let r = send(
            &app,
            Method::DELETE,
            &format!("/api/roles/{built_in}"),
            json!({}),
        )
        .await;
        error_body(r, StatusCode::CONFLICT, "role_built_in").await;
    }

    // Bad assignments: dave keeps what he had.
    let path = format!("/api/users/{}/roles", dave.id);
    for roles in [
        json!(["editor", "ghost"]),
        json!(["authenticated"]),
        json!(["anonymous"]),
    ] {
        let r = send(&app, Method::PUT, &path, json!({"roles": roles})).await;
        error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_role").await;
    }
    assert_eq!(roles_in_db(&app, dave.id).await, vec!["editor"]);
    let r = send(
        &app,
        Method::PUT,
        &format!("/api/users/{}/roles", uuid::Uuid::now_v7()),
        json!({"roles": []}),
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = send(
        &app,
        Method::PUT,
        "/api/users/not-a-uuid/roles",
        json!({"roles": []}),
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;

    // And an empty list takes every role away.
    let r = send(&app, Method::PUT, &path, json!({"roles": []})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(roles_in_db(&app, dave.id).await.is_empty());
}

#[tokio::test]
async fn only_administrators_change_who_is_one_and_the_last_one_stays() {
    let app = TestApp::spawn().await;
    let admin = app.sign_in_as_admin().await;
    let erin = app.create_user("erin", PASSWORD, false).await;
    role_for(
        &app,
        "role_admin",
        &["administer permissions"],
        Some(erin.id),
    )
    .await;
    role_for(&app, "editor", &[], None).await;

    // Erin manages roles, but cannot make herself an administrator, nor
    // take the role from one.
    let erin_client = signed_in(&app, "erin").await;
    let put_roles = |user: uuid::Uuid, roles: Value| {
        erin_client
            .put(app.url(&format!("/api/users/{user}/roles")))
            .json(&json!({ "roles": roles }))
            .send()
    };
    let r = put_roles(erin.id, json!(["role_admin", "administrator"]))
        .await
        .expect("PUT");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(roles_in_db(&app, erin.id).await, vec!["role_admin"]);
    let r = put_roles(admin.id, json!([])).await.expect("PUT");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(roles_in_db(&app, admin.id).await, vec!["administrator"]);
    let r = put_roles(erin.id, json!(["role_admin", "editor"]))
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        roles_in_db(&app, erin.id).await,
        vec!["editor", "role_admin"]
    );

    // The only administrator cannot stop being one...
    let own = format!("/api/users/{}/roles", admin.id);
    let r = send(&app, Method::PUT, &own, json!({"roles": []})).await;
    error_body(r, StatusCode::CONFLICT, "last_administrator").await;
    assert_eq!(roles_in_db(&app, admin.id).await, vec!["administrator"]);
    // ...until there is another.
    let r = send(
        &app,
        Method::PUT,
        &format!("/api/users/{}/roles", erin.id),
        json!({"roles": ["administrator"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(&app, Method::PUT, &own, json!({"roles": ["editor"]})).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(roles_in_db(&app, admin.id).await, vec!["editor"]);
}

#[tokio::test]
async fn a_permission_nobody_declares_is_refused_and_nothing_is_replaced() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    role_for(&app, "editor", &["edit any content"], None).await;
    let r = send(
        &app,
        Method::PUT,
        "/api/roles/editor",
        json!({"label": "Renamed", "permissions": ["access content", "frobnicate"]}),
    )
    .await;
    let v = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_permission").await;
    assert!(
        v["message"].as_str().unwrap_or("").contains("frobnicate"),
        "{v}"
    );
    assert_eq!(
        permissions_in_db(&app, "editor").await,
        vec!["edit any content"]
    );
    let label: String = sqlx::query_scalar("SELECT label FROM role WHERE name = 'editor'")
        .fetch_one(&app.state.db)
        .await
        .expect("query");
    assert_eq!(label, "editor");
}

/// A plugin directory with one plugin, `perm_demo`, whose manifest
/// declares a permission; removed by the caller.
fn plugin_declaring_a_permission() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trovato-perm-plugins-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let plugin = dir.join("perm_demo");
    std::fs::create_dir_all(&plugin).expect("mkdir");
    std::fs::write(
        plugin.join("perm_demo.info.toml"),
        "name = \"perm_demo\"\nversion = \"1.0.0\"\n\n[permissions]\n\
         \"moderate demos\" = \"Approve or reject demo submissions\"\n",
    )
    .expect("manifest");
    std::fs::write(
        plugin.join("perm_demo.wat"),
        "(module (memory (export \"memory\") 1)\n\
         (func (export \"trovato_alloc\") (param i32) (result i32) (i32.const 0)))\n",
    )
    .expect("module");
    dir
}

#[tokio::test]
async fn the_permission_list_names_the_kernels_and_the_plugins_permissions() {
    let dir = plugin_declaring_a_permission();
    let plugins = dir.clone();
    let app = TestApp::spawn_with(move |c| c.plugin.dir = plugins, axum::Router::new()).await;
    app.sign_in_as_admin().await;
    let r = app.get("/api/permissions").await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Vec<Value> = r.json().await.expect("json");
    let find = |name: &str| list.iter().find(|p| p["name"] == name).cloned();
    assert_eq!(
        find("administer users"),
        Some(json!({"name": "administer users", "owner": "kernel",
                    "description": trovato::user::permission::KERNEL.iter()
                        .find(|(n, _)| *n == "administer users").map(|(_, d)| *d)}))
    );
    assert_eq!(
        find("moderate demos"),
        Some(json!({"name": "moderate demos", "owner": "perm_demo",
                    "description": "Approve or reject demo submissions"}))
    );
    assert_eq!(list.len(), trovato::user::permission::KERNEL.len() + 1);

    // The plugin's permission can be granted; the administrator holds it.
    role_for(&app, "moderator", &["moderate demos"], None).await;
    assert_eq!(
        permissions_in_db(&app, "moderator").await,
        vec!["moderate demos"]
    );
    let me: Value = app.get("/user/me").await.json().await.expect("json");
    assert!(
        me["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .any(|p| p == "moderate demos"),
        "{me}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn only_holders_of_administer_permissions_list_the_permissions() {
    let app = TestApp::spawn().await;
    let r = crate::harness::client()
        .get(app.url("/api/permissions"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.create_user("erin", PASSWORD, false).await;
    let erin = signed_in(&app, "erin").await;
    let r = erin
        .get(app.url("/api/permissions"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
}
