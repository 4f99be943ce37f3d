//! Login, logout, sessions, CSRF and bearer tokens.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{PATIENCE, TestApp, eventually};

const PASSWORD: &str = "correct horse battery";

/// The Redis key of the session whose cookie token is `token`.
fn session_key(app: &TestApp, token: &str) -> String {
    trovato::user::session::companion_key(&app.state.kv, token, "").expect("a session token")
}

/// Every session key under this test's prefix.
async fn session_keys(app: &TestApp) -> Vec<String> {
    crate::harness::session_keys(&app.state.kv).await
}

/// A refused login left nothing behind: no session cookie in the answer,
/// no session in Redis, and the client is not signed in.
async fn assert_no_session_started(app: &TestApp, resp: &reqwest::Response) {
    assert!(
        app.session_token(resp).is_none(),
        "a refused login set a session cookie"
    );
    let keys = session_keys(app).await;
    assert!(
        keys.is_empty(),
        "a refused login stored a session: {keys:?}"
    );
    assert_eq!(app.get("/user/me").await.status(), StatusCode::UNAUTHORIZED);
}

fn csrf_from_html(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("csrf field in form") + marker.len();
    let end = html[start..].find('"').expect("end of value") + start;
    html[start..end].to_owned()
}

#[tokio::test]
async fn json_login_starts_a_session_stored_in_redis() {
    let app = TestApp::spawn().await;
    let alice = app.create_user("Alice", PASSWORD, false).await;

    let resp = app.login("alice", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("trovato_session="))
        .expect("session cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP must not get Secure: {cookie}"
    );
    let token = app.session_token(&resp).expect("token");
    assert!(
        trovato::user::session::exists(&app.state.kv, &token)
            .await
            .expect("redis")
    );

    let me: Value = app.get("/user/me").await.json().await.expect("json");
    assert_eq!(me["user"]["id"], alice.id.to_string());
    assert_eq!(me["user"]["name"], "Alice");
    assert!(
        me["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .any(|r| r == "authenticated")
    );
}

#[tokio::test]
async fn session_cookie_is_secure_behind_tls() {
    let app = TestApp::spawn().await;
    app.create_user("bob", PASSWORD, false).await;
    let resp = app
        .client
        .post(app.url("/user/login"))
        .header("x-forwarded-proto", "https")
        .json(&serde_json::json!({"name": "bob", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.create_user("carol", PASSWORD, false).await;

    let wrong = app.login("carol", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_no_session_started(&app, &wrong).await;
    let wrong_body: Value = wrong.json().await.expect("json");

    let unknown = app.login("nobody", "not the password").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let unknown_body: Value = unknown.json().await.expect("json");

    assert_eq!(wrong_body, unknown_body);
    assert_eq!(wrong_body["error"], "invalid_credentials");
    assert!(session_keys(&app).await.is_empty());
}

#[tokio::test]
async fn blocked_user_cannot_log_in() {
    let app = TestApp::spawn().await;
    let u = app.create_user("dave", PASSWORD, false).await;
    sqlx::query("UPDATE users SET status = 0 WHERE id = $1")
        .bind(u.id)
        .execute(&app.state.db)
        .await
        .expect("block");
    let resp = app.login("dave", PASSWORD).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_no_session_started(&app, &resp).await;
}

#[tokio::test]
async fn blocking_a_user_ends_their_session_and_voids_their_tokens() {
    let app = TestApp::spawn().await;
    // An administrator, so a protected route answers 200 before the block.
    let u = app.create_user("dora", PASSWORD, true).await;
    let session = app
        .session_token(&app.login("dora", PASSWORD).await)
        .expect("session");
    let bearer = trovato::user::token::create(&app.state.db, u.id, "ci")
        .await
        .expect("token");
    let script = reqwest::Client::new();
    let with_bearer = |path: &str| script.get(app.url(path)).bearer_auth(&bearer).send();
    assert_eq!(app.get("/api/plugins").await.status(), StatusCode::OK);
    assert_eq!(
        with_bearer("/api/plugins").await.expect("GET").status(),
        StatusCode::OK
    );

    sqlx::query("UPDATE users SET status = 0 WHERE id = $1")
        .bind(u.id)
        .execute(&app.state.db)
        .await
        .expect("block");

    for path in ["/api/plugins", "/user/me"] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "session on {path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "unauthenticated", "{body}");
        let r = with_bearer(path).await.expect("GET");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "bearer on {path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"], "unauthenticated", "{body}");
    }
    // The void session is gone from Redis, not merely refused.
    assert!(
        !trovato::user::session::exists(&app.state.kv, &session)
            .await
            .expect("redis")
    );
}

#[tokio::test]
async fn form_login_without_csrf_token_is_403_and_starts_no_session() {
    let app = TestApp::spawn().await;
    app.create_user("erin", PASSWORD, false).await;
    let resp = app
        .client
        .post(app.url("/user/login"))
        .form(&[("name", "erin"), ("password", PASSWORD)])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_no_session_started(&app, &resp).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "csrf_token_missing");
    assert_eq!(app.get("/user/me").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn form_login_with_a_forged_csrf_token_is_403_and_starts_no_session() {
    let app = TestApp::spawn().await;
    app.create_user("frank", PASSWORD, false).await;
    // Load the page so a CSRF cookie is set, then submit a different token
    // with the right password.
    let page = app.get("/user/login").await;
    assert!(
        page.cookies().any(|c| c.name() == "trovato_csrf"),
        "the login page set no CSRF cookie"
    );
    let resp = app
        .client
        .post(app.url("/user/login"))
        .form(&[
            ("name", "frank"),
            ("password", PASSWORD),
            ("csrf_token", "forged"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_no_session_started(&app, &resp).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "csrf_token_invalid");
}

#[tokio::test]
async fn form_login_through_the_login_page_redirects_with_a_session() {
    let app = TestApp::spawn().await;
    app.create_user("grace", PASSWORD, false).await;
    let page = app.get("/user/login").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let csrf = csrf_from_html(&page.text().await.expect("html"));

    let resp = app
        .client
        .post(app.url("/user/login"))
        .form(&[
            ("name", "grace"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/");
    let me: Value = app.get("/user/me").await.json().await.expect("json");
    assert_eq!(me["user"]["name"], "grace");
}

#[tokio::test]
async fn form_login_with_wrong_password_shows_the_form_again_with_401() {
    let app = TestApp::spawn().await;
    app.create_user("heidi", PASSWORD, false).await;
    let csrf = csrf_from_html(&app.get("/user/login").await.text().await.expect("html"));
    let resp = app
        .client
        .post(app.url("/user/login"))
        .form(&[
            ("name", "heidi"),
            ("password", "nope nope"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_no_session_started(&app, &resp).await;
    let html = resp.text().await.expect("html");
    assert!(html.contains("Invalid user name or password"), "{html}");
}

#[tokio::test]
async fn login_page_sets_the_csrf_cookie_its_form_token_is_bound_to() {
    let app = TestApp::spawn().await;
    let resp = app.get("/user/login").await;
    let cookie = resp
        .cookies()
        .find(|c| c.name() == "trovato_csrf")
        .map(|c| c.value().to_owned())
        .expect("CSRF cookie");
    let html = resp.text().await.expect("html");
    assert!(html.contains("name=\"password\""), "{html}");
    assert_ne!(csrf_from_html(&html), cookie);
    assert!(cookie.len() >= 32, "{cookie}");
}

#[tokio::test]
async fn logout_deletes_the_session_from_redis() {
    let app = TestApp::spawn().await;
    let ivan = app.create_user("ivan", PASSWORD, false).await;
    let resp = app.login("ivan", PASSWORD).await;
    let token = app.session_token(&resp).expect("token");
    let indexed = || trovato::user::session::indexed(&app.state.kv, ivan.id);
    assert_eq!(indexed().await.expect("redis"), 1);

    let out = app
        .client
        .post(app.url("/user/logout"))
        .header("x-csrf-token", app.csrf_token())
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(
        !trovato::user::session::exists(&app.state.kv, &token)
            .await
            .expect("redis")
    );
    assert_eq!(
        indexed().await.expect("redis"),
        0,
        "the user's index forgets it"
    );
    assert_eq!(app.get("/user/me").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn form_logout_without_csrf_token_keeps_the_session() {
    let app = TestApp::spawn().await;
    app.create_user("judy", PASSWORD, false).await;
    let token = app
        .session_token(&app.login("judy", PASSWORD).await)
        .expect("token");
    let out = app
        .client
        .post(app.url("/user/logout"))
        .form(&[("x", "y")])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::FORBIDDEN);
    assert!(
        trovato::user::session::exists(&app.state.kv, &token)
            .await
            .expect("redis")
    );
}

#[tokio::test]
async fn logout_without_a_session_is_401() {
    let app = TestApp::spawn().await;
    let out = app
        .client
        .post(app.url("/user/logout"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn session_ends_after_the_idle_timeout() {
    // One second, against a default of two hours: within the test's
    // patience only the configured timeout can end the session.
    let app = TestApp::spawn_with(|c| c.session.idle_timeout_secs = 1, axum::Router::new()).await;
    app.create_user("ken", PASSWORD, false).await;
    let token = app
        .session_token(&app.login("ken", PASSWORD).await)
        .expect("token");
    assert_eq!(app.get("/user/me").await.status(), StatusCode::OK);
    // Watched in Redis, not through requests (each would renew it).
    let ended = eventually(PATIENCE, || async {
        !trovato::user::session::exists(&app.state.kv, &token)
            .await
            .expect("redis")
    })
    .await;
    assert!(ended.is_some(), "the idle session never ended");
    assert_eq!(app.get("/user/me").await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_request_renews_the_session_idle_timeout() {
    let app = TestApp::spawn().await;
    app.create_user("kay", PASSWORD, false).await;
    let token = app
        .session_token(&app.login("kay", PASSWORD).await)
        .expect("token");
    let key = session_key(&app, &token);
    let idle = app.state.config.session.idle_timeout().as_secs() as i64;
    let ttl = || async {
        app.state
            .kv
            .query::<i64>(redis::cmd("TTL").arg(&key))
            .await
            .expect("TTL")
    };
    assert!(ttl().await > 60, "a new session lives for the idle timeout");
    // Age the session as Redis would: a minute left.
    let _: i64 = app
        .state
        .kv
        .query(redis::cmd("EXPIRE").arg(&key).arg(60))
        .await
        .expect("EXPIRE");
    assert!(ttl().await <= 60);
    assert_eq!(app.get("/user/me").await.status(), StatusCode::OK);
    let renewed = ttl().await;
    assert!(
        renewed > 60 && renewed <= idle,
        "the request did not renew the session (TTL {renewed} s of {idle} s)"
    );
}

#[tokio::test]
async fn a_session_that_expired_in_redis_is_not_served() {
    let app = TestApp::spawn().await;
    app.create_user("kit", PASSWORD, false).await;
    let token = app
        .session_token(&app.login("kit", PASSWORD).await)
        .expect("token");
    assert_eq!(app.get("/user/me").await.status(), StatusCode::OK);
    // What the end of the idle timeout does in Redis, done at once.
    let removed: i64 = app
        .state
        .kv
        .query(redis::cmd("DEL").arg(session_key(&app, &token)))
        .await
        .expect("DEL");
    assert_eq!(removed, 1, "the session key is where the test looks");
    let r = app.get("/user/me").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        session_keys(&app).await.is_empty(),
        "a session was recreated"
    );
}

#[tokio::test]
async fn session_keys_live_under_the_configured_prefix() {
    let app = TestApp::spawn().await;
    app.create_user("leo", PASSWORD, false).await;
    app.login("leo", PASSWORD).await;
    let prefix = app.state.config.redis.prefix.clone();
    let keys: Vec<String> = app
        .state
        .kv
        .query(redis::cmd("KEYS").arg(format!("{prefix}*")))
        .await
        .expect("keys");
    // The session, and the index of the user's sessions.
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{prefix}{{session:")) && !k.contains("}:user:")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("{prefix}{{session:")) && k.contains("}:user:")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn bearer_token_authenticates_and_only_its_hash_is_stored() {
    let app = TestApp::spawn().await;
    let u = app.create_user("mallory", PASSWORD, true).await;
    let token = trovato::user::token::create(&app.state.db, u.id, "ci")
        .await
        .expect("token");

    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM api_token WHERE user_id = $1")
        .bind(u.id)
        .fetch_one(&app.state.db)
        .await
        .expect("token row");
    use sha2::Digest;
    assert_eq!(stored, sha2::Sha256::digest(token.as_bytes()).to_vec());
    assert_ne!(stored, token.as_bytes());

    let me: Value = reqwest::Client::new()
        .get(app.url("/user/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["name"], "mallory");
    assert!(
        me["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .any(|r| r == "administrator")
    );
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used FROM api_token WHERE user_id = $1")
            .bind(u.id)
            .fetch_one(&app.state.db)
            .await
            .expect("row");
    assert!(used.is_some());
}

#[tokio::test]
async fn invalid_bearer_token_is_401() {
    let app = TestApp::spawn().await;
    let resp = reqwest::Client::new()
        .get(app.url("/user/me"))
        .bearer_auth("trv_not-a-real-token")
        .send()
        .await
        .expect("me");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "unauthenticated");
}

#[tokio::test]
async fn user_names_are_unique_regardless_of_case() {
    let app = TestApp::spawn().await;
    app.create_user("Nina", PASSWORD, false).await;
    let err = trovato::user::create(
        &app.state.db,
        trovato::user::NewUser {
            name: "NINA",
            email: "n2@example.com",
            password: PASSWORD,
            admin: false,
        },
    )
    .await
    .expect_err("duplicate");
    assert!(
        matches!(err, trovato::user::UserError::NameTaken),
        "{err:?}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn json_login_with_a_malformed_body_is_400() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/user/login"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_no_session_started(&app, &resp).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_body");
}

#[tokio::test]
async fn login_with_an_unsupported_content_type_is_415() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .post(app.url("/user/login"))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_no_session_started(&app, &resp).await;
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_media_type");
}

#[tokio::test]
async fn email_addresses_are_unique_regardless_of_case() {
    let app = TestApp::spawn().await;
    app.create_user("olive", PASSWORD, false).await;
    let err = trovato::user::create(
        &app.state.db,
        trovato::user::NewUser {
            name: "oscar",
            email: "OLIVE@Example.com",
            password: PASSWORD,
            admin: false,
        },
    )
    .await
    .expect_err("the address is taken");
    assert!(
        matches!(err, trovato::user::UserError::EmailTaken),
        "{err:?}"
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM users ORDER BY name")
        .fetch_all(&app.state.db)
        .await
        .expect("names");
    assert_eq!(names, vec!["olive"]);
}

/// The email migration's own text.
const EMAIL_MIGRATION: &str = include_str!("../../migrations/0009_users_email_unique.sql");

#[tokio::test]
async fn the_email_migration_names_the_shared_addresses_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let db = &app.state.db;
    // The database as it was before the migration, with users sharing
    // an address in two spellings.
    sqlx::query("DROP INDEX users_email_lower_key")
        .execute(db)
        .await
        .expect("drop the index");
    for (name, email) in [
        ("pat", "shared@example.com"),
        ("Pia", "Shared@Example.com"),
        ("quentin", "own@example.com"),
    ] {
        sqlx::query("INSERT INTO users (id, name, email, pass) VALUES ($1, $2, $3, 'x')")
            .bind(uuid::Uuid::now_v7())
            .bind(name)
            .bind(email)
            .execute(db)
            .await
            .expect("insert");
    }
    let err = sqlx::raw_sql(EMAIL_MIGRATION)
        .execute(db)
        .await
        .expect_err("shared addresses stop the migration")
        .to_string();
    assert!(
        err.contains("shared@example.com (Pia, pat)") && !err.contains("own@example.com"),
        "{err}"
    );
    let index: Option<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE indexname = 'users_email_lower_key'",
    )
    .fetch_optional(db)
    .await
    .expect("query");
    assert_eq!(index, None, "a failed migration left its index");

    // Once the addresses differ it applies.
    sqlx::query("UPDATE users SET email = 'pia@example.com' WHERE name = 'Pia'")
        .execute(db)
        .await
        .expect("update");
    sqlx::raw_sql(EMAIL_MIGRATION)
        .execute(db)
        .await
        .expect("the migration applies");
    let dup = sqlx::query("UPDATE users SET email = 'SHARED@example.com' WHERE name = 'Pia'")
        .execute(db)
        .await
        .expect_err("the index holds");
    assert!(dup.to_string().contains("users_email_lower_key"), "{dup}");
}

#[tokio::test]
async fn an_administrator_is_shown_every_declared_permission() {
    let app = TestApp::spawn().await;
    app.create_user("rose", PASSWORD, true).await;
    app.login("rose", PASSWORD).await;
    let me: Value = app.get("/user/me").await.json().await.expect("json");
    let shown: Vec<&str> = me["permissions"]
        .as_array()
        .expect("permissions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut declared: Vec<&str> = trovato::user::permission::KERNEL
        .iter()
        .map(|(name, _)| *name)
        .collect();
    declared.sort_unstable();
    assert_eq!(shown, declared);

    // Anyone else is shown what their roles grant.
    let app = TestApp::spawn().await;
    app.create_user("sam", PASSWORD, false).await;
    app.login("sam", PASSWORD).await;
    let me: Value = app.get("/user/me").await.json().await.expect("json");
    assert_eq!(me["permissions"], serde_json::json!(["access content"]));
}
