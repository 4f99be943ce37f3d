//! CSRF: every unsafe route of the router, enumerated from the kernel's own
//! route table, refuses a browser session's request without its token
//! whatever the body, accepts it with the token, and leaves bearer requests
//! alone; the login form's token is bound to its cookie.

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::harness::content::{PASSWORD, error_body};

const BOUNDARY: &str = "csrf-test-boundary";

/// A browser session held explicitly: its cookie and its CSRF token.
#[derive(Clone)]
struct Session {
    cookie: String,
    csrf: String,
}

/// Logs `name` in with the JSON API on a fresh client (no cookie store).
async fn sign_in(app: &TestApp, name: &str) -> Session {
    let resp = reqwest::Client::new()
        .post(app.url("/user/login"))
        .json(&json!({"name": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = app.session_token(&resp).expect("session cookie");
    let me: Value = resp.json().await.expect("me");
    Session {
        cookie,
        csrf: me["csrf_token"].as_str().expect("csrf token").to_owned(),
    }
}

/// How a request carries (or not) a token, and in what body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Json,
    Form,
    Multipart,
    TextPlain,
    None,
}

const BODIES: [Body; 5] = [
    Body::Json,
    Body::Form,
    Body::Multipart,
    Body::TextPlain,
    Body::None,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Absent,
    Header(&'a str),
    /// In the body: the urlencoded field or the first multipart part.
    Field(&'a str),
}

/// A concrete request for one route: path and a JSON body that succeeds.
struct Target {
    path: String,
    json: Option<Value>,
    /// The request that succeeds is a multipart upload, not JSON.
    multipart: bool,
    /// The request that succeeds is this urlencoded form, not JSON.
    form: Option<Vec<(&'static str, String)>>,
    /// The session to send it with, when not the shared one (logout).
    session: Option<Session>,
    /// The multipart request that succeeds is a page's form with these
    /// text parts (not an upload).
    parts: Option<Vec<(&'static str, String)>>,
}

fn request(
    app: &TestApp,
    method: &Method,
    target: &Target,
    session: &Session,
    body: Body,
    token: Token<'_>,
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .request(method.clone(), app.url(&target.path))
        .header(
            "cookie",
            format!("{}={}", trovato::user::session::COOKIE, session.cookie),
        );
    if let Token::Header(t) = token {
        req = req.header("x-csrf-token", t);
    }
    let json_text = target
        .json
        .as_ref()
        .map_or("{}".to_owned(), Value::to_string);
    let field = match token {
        Token::Field(t) => Some(t),
        _ => None,
    };
    match body {
        Body::Json => req
            .header("content-type", "application/json")
            .body(json_text),
        Body::TextPlain => req.header("content-type", "text/plain").body(json_text),
        Body::Form => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            if let Some(t) = field {
                form.append_pair("csrf_token", t);
            }
            match &target.form {
                Some(fields) => {
                    for (k, v) in fields {
                        form.append_pair(k, v);
                    }
                }
                None => {
                    form.append_pair("title", "from a form");
                }
            }
            req.header("content-type", "application/x-www-form-urlencoded")
                .body(form.finish())
        }
        Body::Multipart => {
            let mut text = String::new();
            if let Some(t) = field {
                text.push_str(&format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{t}\r\n"
                ));
            }
            if let Some(parts) = &target.parts {
                for (k, v) in parts {
                    text.push_str(&format!(
                        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                    ));
                }
                text.push_str(&format!("--{BOUNDARY}--\r\n"));
                return req
                    .header(
                        "content-type",
                        format!("multipart/form-data; boundary={BOUNDARY}"),
                    )
                    .body(text);
            }
            text.push_str(&format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\
                 Content-Type: text/plain\r\n\r\n{}\r\n--{BOUNDARY}--\r\n",
                "x".repeat(40_000)
            ));
            req.header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(text)
        }
        Body::None => req,
    }
}

/// Everything a request could have changed: every table's rows and every
/// Redis key of this kernel (sessions, the session's stage, cache).
async fn snapshot(app: &TestApp) -> (Vec<(String, Option<String>)>, Vec<(String, Vec<u8>)>) {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&app.state.db)
    .await
    .expect("tables");
    let mut rows = Vec::new();
    for t in tables {
        let digest: Option<String> = sqlx::query_scalar(&format!(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{t}\" t"
        ))
        .fetch_one(&app.state.db)
        .await
        .expect("table digest");
        rows.push((t, digest));
    }
    let kv = &app.state.kv;
    let mut keys: Vec<String> = Vec::new();
    let mut scan = kv.scan("*").await.expect("scan");
    while let Some(batch) = scan.next_batch().await.expect("scan") {
        keys.extend(batch);
    }
    keys.sort();
    let mut values = Vec::new();
    for k in keys {
        let v: Option<Vec<u8>> = kv.query(redis::cmd("DUMP").arg(&k)).await.expect("dump");
        values.push((k, v.unwrap_or_default()));
    }
    (rows, values)
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(stem: &str) -> String {
    format!("{stem}{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

async fn created(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::CREATED);
    resp.json().await.expect("json")
}

async fn new_item(app: &TestApp, stage: Option<&str>) -> String {
    app.create_item(&unique("item "), stage).await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn new_role(app: &TestApp) -> String {
    let name = unique("role_");
    created(
        app.json_request(Method::POST, "/api/roles")
            .json(&json!({"name": name, "label": "Role"}))
            .send()
            .await
            .expect("role"),
    )
    .await;
    name
}

/// A fresh user (blocked if asked); returns its id.
async fn new_user(app: &TestApp, blocked: bool) -> String {
    let user = app.create_user(&unique("user_"), PASSWORD, false).await;
    if blocked {
        sqlx::query("UPDATE users SET status = 0 WHERE id = $1")
            .bind(user.id)
            .execute(&app.state.db)
            .await
            .expect("block");
    }
    user.id.to_string()
}

/// The path of a fresh user's fresh API token.
async fn new_token(app: &TestApp) -> String {
    let user = app.create_user(&unique("user_"), PASSWORD, false).await;
    trovato::user::token::create(&app.state.db, user.id, "t")
        .await
        .expect("token");
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM api_token WHERE user_id = $1")
        .bind(user.id)
        .fetch_one(&app.state.db)
        .await
        .expect("token id");
    format!("/api/users/{}/tokens/{id}", user.id)
}

async fn new_type(app: &TestApp) -> String {
    let name = unique("type_");
    let r = app.create_item_type(&name, json!([])).await;
    created(r).await;
    name
}

async fn new_category(app: &TestApp) -> String {
    let id = unique("cat_");
    created(
        app.json_request(Method::POST, "/api/categories")
            .json(&json!({"id": id, "label": "Tags"}))
            .send()
            .await
            .expect("category"),
    )
    .await;
    id
}

async fn new_term(app: &TestApp) -> String {
    let category = new_category(app).await;
    created(
        app.json_request(Method::POST, &format!("/api/categories/{category}/terms"))
            .json(&json!({"name": "term"}))
            .send()
            .await
            .expect("term"),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// A temporary upload of the signed-in administrator.
/// A batch that has not run yet.
async fn new_batch(app: &TestApp) -> String {
    trovato::batch::start(
        &app.state,
        None,
        trovato::batch::NewBatch {
            operation: "noop".into(),
            params: json!({"count": 1}),
        },
    )
    .await
    .expect("batch")
    .id
    .to_string()
}

/// A queue holding one dead item.
async fn dead_queue(app: &TestApp) -> String {
    use trovato::queue::Queue;
    let q = &app.state.queues;
    let name = format!("csrf.q{}", uuid::Uuid::now_v7().simple());
    q.push(&name, trovato::queue::NewJob::new(&json!({})).expect("job"))
        .await
        .expect("push");
    let job = q
        .pop(&name, std::time::Duration::from_secs(60))
        .await
        .expect("pop")
        .expect("job");
    q.nack(
        &job,
        &trovato::queue::Failure::Fail { error: "x".into() },
        std::time::Duration::ZERO,
    )
    .await
    .expect("nack");
    name
}

async fn new_file(app: &TestApp) -> String {
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"n.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nnotes\r\n--{BOUNDARY}--\r\n"
    );
    created(
        app.client
            .post(app.url("/file/upload"))
            .header("x-csrf-token", app.csrf_token())
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload"),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// A permission the `authenticated` role does not hold yet, so a grid
/// granting it changes something.
async fn unique_grant(app: &TestApp) -> String {
    let held: Vec<String> =
        sqlx::query_scalar("SELECT permission FROM role_permission WHERE role = 'authenticated'")
            .fetch_all(&app.state.db)
            .await
            .expect("grants");
    trovato::user::permission::KERNEL
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .find(|p| !held.contains(p))
        .expect("a permission to grant")
}

/// A stage with one item in it, so publishing it changes live.
async fn new_stage_with_an_item(app: &TestApp) -> String {
    let id = unique("stage_");
    assert_eq!(app.create_stage(&id).await.status(), StatusCode::CREATED);
    new_item(app, Some(&id)).await;
    id
}

fn type_body(name: &str) -> Value {
    json!({"type": name, "label": "Renamed", "description": "", "has_title": true,
           "title_label": "Title", "plugin": "kernel", "fields": []})
}

/// A fresh request for `method template` that succeeds with a valid token.
/// A route without an entry here fails the test: every unsafe route the
/// kernel declares must be exercised.
async fn target(app: &TestApp, method: &Method, template: &str, other_user: &str) -> Target {
    let t = |path: String, json: Option<Value>| Target {
        path,
        json,
        multipart: false,
        form: None,
        session: None,
        parts: None,
    };
    let form = |path: String, fields: Vec<(&'static str, String)>| Target {
        path,
        json: None,
        multipart: false,
        form: Some(fields),
        session: None,
        parts: None,
    };
    let item_form = |path: String, parts: Vec<(&'static str, String)>| Target {
        path,
        json: None,
        multipart: true,
        form: None,
        session: None,
        parts: Some(parts),
    };
    match (method.as_str(), template) {
        ("POST", "/user/logout") => Target {
            path: "/user/logout".into(),
            json: None,
            multipart: false,
            form: None,
            session: Some(sign_in(app, "admin").await),
            parts: None,
        },
        ("POST", "/api/roles") => t(
            "/api/roles".into(),
            Some(json!({"name": unique("role_"), "label": "Role"})),
        ),
        ("PUT", "/api/roles/{name}") => t(
            format!("/api/roles/{}", new_role(app).await),
            Some(json!({"label": "Renamed", "permissions": ["access content"]})),
        ),
        ("DELETE", "/api/roles/{name}") => t(format!("/api/roles/{}", new_role(app).await), None),
        ("PUT", "/api/users/{id}/roles") => {
            let role = new_role(app).await;
            t(
                format!("/api/users/{other_user}/roles"),
                Some(json!({"roles": [role]})),
            )
        }
        ("POST", "/api/users") => {
            let name = unique("user_");
            t(
                "/api/users".into(),
                Some(json!({"name": name, "email": format!("{name}@example.com"),
                            "password": PASSWORD})),
            )
        }
        ("PUT", "/api/users/{id}") => t(
            format!("/api/users/{}", new_user(app, false).await),
            Some(json!({"email": format!("{}@example.org", unique("changed_"))})),
        ),
        ("DELETE", "/api/users/{id}") => {
            t(format!("/api/users/{}", new_user(app, false).await), None)
        }
        ("POST", "/api/users/{id}/block") => t(
            format!("/api/users/{}/block", new_user(app, false).await),
            None,
        ),
        ("POST", "/api/users/{id}/unblock") => t(
            format!("/api/users/{}/unblock", new_user(app, true).await),
            None,
        ),
        ("POST", "/api/users/{id}/password") => t(
            format!("/api/users/{}/password", new_user(app, false).await),
            Some(json!({})),
        ),
        ("DELETE", "/api/users/{id}/tokens/{token_id}") => t(new_token(app).await, None),
        ("POST", "/api/item-types") => {
            let name = unique("type_");
            t("/api/item-types".into(), Some(type_body(&name)))
        }
        ("PUT", "/api/item-types/{type}") => {
            let name = new_type(app).await;
            t(format!("/api/item-types/{name}"), Some(type_body(&name)))
        }
        ("DELETE", "/api/item-types/{type}") => {
            t(format!("/api/item-types/{}", new_type(app).await), None)
        }
        ("POST", "/api/items") => t(
            "/api/items".into(),
            Some(json!({"type": "article", "title": "created",
                        "fields": {"field_body": {"value": "text"}}})),
        ),
        ("PUT", "/api/items/{id}") => t(
            format!("/api/items/{}", new_item(app, None).await),
            Some(json!({"title": "renamed"})),
        ),
        ("DELETE", "/api/items/{id}") => {
            t(format!("/api/items/{}", new_item(app, None).await), None)
        }
        ("POST", "/api/stages") => t(
            "/api/stages".into(),
            Some(json!({"id": unique("stage_"), "label": "Stage"})),
        ),
        ("POST", "/stage/{id}/publish") => t(
            format!("/stage/{}/publish", new_stage_with_an_item(app).await),
            None,
        ),
        ("POST", "/api/stages/{id}/publish") => t(
            format!("/api/stages/{}/publish", new_stage_with_an_item(app).await),
            None,
        ),
        ("PUT", "/api/stage/current") => {
            let stage = new_stage_with_an_item(app).await;
            t("/api/stage/current".into(), Some(json!({"stage": stage})))
        }
        ("POST", "/api/categories") => t(
            "/api/categories".into(),
            Some(json!({"id": unique("cat_"), "label": "Tags"})),
        ),
        ("PUT", "/api/categories/{id}") => t(
            format!("/api/categories/{}", new_category(app).await),
            Some(json!({"label": "Topics"})),
        ),
        ("DELETE", "/api/categories/{id}") => {
            t(format!("/api/categories/{}", new_category(app).await), None)
        }
        ("POST", "/api/categories/{id}/terms") => t(
            format!("/api/categories/{}/terms", new_category(app).await),
            Some(json!({"name": "term"})),
        ),
        ("PUT", "/api/terms/{id}") => t(
            format!("/api/terms/{}", new_term(app).await),
            Some(json!({"name": "renamed"})),
        ),
        ("DELETE", "/api/terms/{id}") => t(format!("/api/terms/{}", new_term(app).await), None),
        ("POST", "/file/upload") => Target {
            path: "/file/upload".into(),
            json: None,
            multipart: true,
            form: None,
            session: None,
            parts: None,
        },
        ("DELETE", "/api/files/{id}") => t(format!("/api/files/{}", new_file(app).await), None),
        ("POST", "/cron") | ("POST", "/admin/cron/run") => t(template.into(), None),
        ("POST", "/api/batch") => t(
            "/api/batch".into(),
            Some(json!({"operation": "noop", "params": {"count": 1}})),
        ),
        ("POST", "/api/batch/{id}/cancel") => {
            t(format!("/api/batch/{}/cancel", new_batch(app).await), None)
        }
        ("POST", "/admin/batch/{id}/cancel") => t(
            format!("/admin/batch/{}/cancel", new_batch(app).await),
            None,
        ),
        ("POST", "/admin/batch/start") => Target {
            path: "/admin/batch/start".into(),
            json: None,
            multipart: false,
            form: Some(vec![
                ("operation", "noop".into()),
                ("params", r#"{"count": 1}"#.into()),
            ]),
            session: None,
            parts: None,
        },
        ("POST", "/admin/queues/{name}/retry-dead") => t(
            format!("/admin/queues/{}/retry-dead", dead_queue(app).await),
            None,
        ),
        ("POST", "/admin/files/{id}/delete") => {
            t(format!("/admin/files/{}/delete", new_file(app).await), None)
        }
        ("PUT", "/api/search/config/{type}") => t(
            format!("/api/search/config/{}", new_type(app).await),
            Some(json!({"language": "simple", "fields": []})),
        ),
        ("POST", "/api/search/reindex") => t("/api/search/reindex".into(), Some(json!({}))),
        ("POST", "/admin/search/{type}") => Target {
            path: format!("/admin/search/{}", new_type(app).await),
            json: None,
            multipart: false,
            form: Some(vec![("language", "simple".into())]),
            session: None,
            parts: None,
        },
        ("POST", "/admin/search/{type}/reindex") => Target {
            path: format!("/admin/search/{}/reindex", new_type(app).await),
            json: None,
            multipart: false,
            form: Some(Vec::new()),
            session: None,
            parts: None,
        },
        ("POST", "/admin/stage/select") => {
            let stage = new_stage_with_an_item(app).await;
            // A session of its own: the shared one stays in live.
            Target {
                session: Some(sign_in(app, "admin").await),
                ..form(
                    "/admin/stage/select".into(),
                    vec![("stage", stage), ("destination", "/admin".into())],
                )
            }
        }
        ("POST", "/admin/stages") => form(
            "/admin/stages".into(),
            vec![("id", unique("stage_")), ("label", "A stage".into())],
        ),
        ("POST", "/admin/stages/{id}/publish") => form(
            format!(
                "/admin/stages/{}/publish",
                new_stage_with_an_item(app).await
            ),
            vec![("confirm", "yes".into())],
        ),
        ("POST", "/admin/content/bulk") => form(
            "/admin/content/bulk".into(),
            vec![
                ("action", "unpublish".into()),
                ("ids", new_item(app, None).await),
            ],
        ),
        ("POST", "/admin/content/new/{type}") => item_form(
            "/admin/content/new/article".into(),
            vec![
                ("title", "From the form".into()),
                ("v.field_body.0", "x".into()),
                ("op", "save".into()),
            ],
        ),
        ("POST", "/admin/content/{id}/edit") => item_form(
            format!("/admin/content/{}/edit", new_item(app, None).await),
            vec![
                ("title", "Edited in the form".into()),
                ("v.field_body.0", "y".into()),
                ("op", "save".into()),
            ],
        ),
        ("POST", "/admin/content/{id}/delete") => t(
            format!("/admin/content/{}/delete", new_item(app, None).await),
            None,
        ),
        ("POST", "/admin/structure/types") => form(
            "/admin/structure/types".into(),
            vec![("type", unique("type_")), ("label", "A type".into())],
        ),
        ("POST", "/admin/structure/types/{type}") => form(
            format!("/admin/structure/types/{}", new_type(app).await),
            vec![("label", "Renamed".into()), ("has_title", "1".into())],
        ),
        ("POST", "/admin/structure/types/{type}/delete") => t(
            format!("/admin/structure/types/{}/delete", new_type(app).await),
            None,
        ),
        ("POST", "/admin/people") => form(
            "/admin/people".into(),
            vec![
                ("name", unique("person_")),
                ("email", format!("{}@example.com", unique("p"))),
                ("password", PASSWORD.into()),
            ],
        ),
        ("POST", "/admin/people/{id}/block") => t(
            format!("/admin/people/{}/block", new_user(app, false).await),
            None,
        ),
        ("POST", "/admin/people/{id}/unblock") => t(
            format!("/admin/people/{}/unblock", new_user(app, true).await),
            None,
        ),
        ("POST", "/admin/people/{id}/roles") => {
            let role = new_role(app).await;
            form(
                format!("/admin/people/{}/roles", new_user(app, false).await),
                vec![("roles", role)],
            )
        }
        ("POST", "/admin/people/{id}/password") => t(
            format!("/admin/people/{}/password", new_user(app, false).await),
            None,
        ),
        ("POST", "/admin/people/{id}") => form(
            format!("/admin/people/{}", new_user(app, false).await),
            vec![
                ("name", unique("renamed_")),
                ("email", format!("{}@example.com", unique("r"))),
            ],
        ),
        ("POST", "/admin/people/{id}/tokens/{token}/revoke") => t(
            format!(
                "{}/revoke",
                new_token(app)
                    .await
                    .replacen("/api/users/", "/admin/people/", 1)
            ),
            None,
        ),
        ("POST", "/admin/people/{id}/delete") => t(
            format!("/admin/people/{}/delete", new_user(app, false).await),
            None,
        ),
        ("POST", "/admin/roles") => form(
            "/admin/roles".into(),
            vec![
                ("anonymous", "access content".into()),
                ("authenticated", "access content".into()),
                ("authenticated", unique_grant(app).await),
            ],
        ),
        ("POST", "/admin/roles/new") => form(
            "/admin/roles/new".into(),
            vec![("name", unique("role_")), ("label", "A role".into())],
        ),
        ("POST", "/admin/plugins/{name}/enable") => {
            app.state
                .plugins
                .set_enabled(&app.state.db, "no_alloc", false)
                .await
                .expect("disable");
            t("/admin/plugins/no_alloc/enable".into(), None)
        }
        ("POST", "/admin/plugins/{name}/disable") => {
            app.state
                .plugins
                .set_enabled(&app.state.db, "no_alloc", true)
                .await
                .expect("enable");
            t("/admin/plugins/no_alloc/disable".into(), None)
        }
        ("POST", "/admin/structure/categories") => form(
            "/admin/structure/categories".into(),
            vec![("id", unique("cat_")), ("label", "A category".into())],
        ),
        ("POST", "/admin/structure/categories/{id}/terms") => form(
            format!(
                "/admin/structure/categories/{}/terms",
                new_category(app).await
            ),
            vec![("name", unique("term "))],
        ),
        ("POST", "/admin/structure/terms/{id}") => form(
            format!("/admin/structure/terms/{}", new_term(app).await),
            vec![("name", unique("renamed ")), ("weight", "3".into())],
        ),
        ("POST", "/admin/structure/terms/{id}/delete") => t(
            format!("/admin/structure/terms/{}/delete", new_term(app).await),
            None,
        ),
        (m, p) => panic!("no request for {m} {p}: add one to csrf.rs"),
    }
}

/// The unsafe routes the kernel serves and the CSRF rule covers.
fn guarded_routes() -> Vec<(Method, String)> {
    trovato::app::route_table()
        .into_iter()
        .filter(|(m, _)| !m.is_safe())
        .filter(|(m, p)| {
            !trovato::user::routes::CSRF_EXEMPT
                .iter()
                .any(|e| e.method == m.as_str() && e.path == p)
        })
        .collect()
}

/// A kernel with the article type, signed in as `admin` (the harness
/// client), and another user whose roles can be set.
async fn site() -> (TestApp, String) {
    let app = TestApp::spawn_with_articles_and_a_plugin().await;
    let other = app.create_user("other", PASSWORD, false).await;
    (app, other.id.to_string())
}

#[test]
fn the_route_table_lists_every_write_route_and_the_exempt_login() {
    let routes = trovato::app::route_table();
    for (m, p) in [
        (Method::POST, "/user/login"),
        (Method::POST, "/user/logout"),
        (Method::POST, "/api/items"),
        (Method::DELETE, "/api/items/{id}"),
        (Method::POST, "/api/stages/{id}/publish"),
        (Method::PUT, "/api/stage/current"),
        (Method::GET, "/user/login"),
    ] {
        assert!(
            routes.iter().any(|(rm, rp)| *rm == m && rp == p),
            "{m} {p} missing from {routes:?}"
        );
    }
    // Every exemption names a route that exists.
    for e in trovato::user::routes::CSRF_EXEMPT {
        assert!(
            routes
                .iter()
                .any(|(m, p)| m.as_str() == e.method && p == e.path),
            "stale exemption {e:?}"
        );
        assert!(!e.reason.is_empty());
    }
}

#[tokio::test]
async fn no_unsafe_method_is_served_on_a_route_path_beyond_the_route_table() {
    let (app, other) = site().await;
    let routes = trovato::app::route_table();
    let mut paths: Vec<&str> = routes.iter().map(|(_, p)| p.as_str()).collect();
    paths.dedup();
    for template in paths {
        let concrete = template
            .replace("{id}", &other)
            .replace("{name}", "editor")
            .replace("{type}", "article");
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            if routes.iter().any(|(m, p)| *m == method && p == template) {
                continue;
            }
            // No cookie: the CSRF rule does not apply, the router answers.
            let r = reqwest::Client::new()
                .request(method.clone(), app.url(&concrete))
                .send()
                .await
                .expect("request");
            assert_eq!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template} is served but not in the route table"
            );
        }
    }
}

#[tokio::test]
async fn every_unsafe_route_refuses_a_session_request_without_a_valid_token_and_changes_nothing() {
    let (app, other) = site().await;
    let session = sign_in(&app, "admin").await;
    let routes = guarded_routes();
    assert!(routes.len() >= 20, "{routes:?}");
    for (method, template) in &routes {
        let target = target(&app, method, template, &other).await;
        let session = target.session.clone().unwrap_or_else(|| session.clone());
        let before = snapshot(&app).await;
        for body in BODIES {
            let mut cases = vec![
                (Token::Absent, "csrf_token_missing"),
                (Token::Header(""), "csrf_token_missing"),
                (Token::Header("wrong"), "csrf_token_invalid"),
                // A token that is right for another session is wrong here.
                (Token::Header(&session.cookie), "csrf_token_invalid"),
            ];
            if matches!(body, Body::Form | Body::Multipart) {
                cases.push((Token::Field("wrong"), "csrf_token_invalid"));
            }
            for (token, code) in cases {
                let r = request(&app, method, &target, &session, body, token)
                    .send()
                    .await
                    .expect("request");
                let what = format!("{method} {} {body:?} {token:?}", target.path);
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
                let v: Value = r.json().await.expect("JSON error");
                assert_eq!(v["error"], code, "{what}: {v}");
                assert!(v["message"].is_string(), "{what}: {v}");
                assert_eq!(snapshot(&app).await, before, "{what} changed something");
            }
        }
    }
}

#[tokio::test]
async fn every_unsafe_route_accepts_a_session_request_with_its_token() {
    let (app, other) = site().await;
    let session = sign_in(&app, "admin").await;
    for (method, template) in guarded_routes() {
        // The JSON request (or the bodiless one) with the header token
        // succeeds and has its effect.
        let target = target(&app, &method, &template, &other).await;
        let s = target.session.clone().unwrap_or_else(|| session.clone());
        let body = if target.multipart {
            Body::Multipart
        } else if target.form.is_some() {
            Body::Form
        } else if target.json.is_some() {
            Body::Json
        } else {
            Body::None
        };
        let before = snapshot(&app).await;
        let r = request(&app, &method, &target, &s, body, Token::Header(&s.csrf))
            .send()
            .await
            .expect("request");
        let what = format!("{method} {}", target.path);
        // Success, or a form endpoint's redirect back to its page.
        assert!(
            r.status().is_success() || r.status() == StatusCode::SEE_OTHER,
            "{what}: {:?}",
            r.text().await
        );
        assert_ne!(snapshot(&app).await, before, "{what} had no effect");

        // The token in a form field or a multipart body's first part
        // passes the rule too: whatever the handler answers, it is not a
        // CSRF refusal.
        for body in [Body::Form, Body::Multipart] {
            let target = self::target(&app, &method, &template, &other).await;
            let s = target.session.clone().unwrap_or_else(|| session.clone());
            let r = request(&app, &method, &target, &s, body, Token::Field(&s.csrf))
                .send()
                .await
                .expect("request");
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                !v["error"].as_str().unwrap_or("").starts_with("csrf_"),
                "{what} {body:?}: {status} {v}"
            );
        }
    }
}

#[tokio::test]
async fn a_form_logout_with_the_token_in_the_form_ends_the_session() {
    let (app, other) = site().await;
    let target = target(&app, &Method::POST, "/user/logout", &other).await;
    let s = target.session.clone().expect("own session");
    let r = request(
        &app,
        &Method::POST,
        &target,
        &s,
        Body::Form,
        Token::Field(&s.csrf),
    )
    .send()
    .await
    .expect("logout");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        !trovato::user::session::exists(&app.state.kv, &s.cookie)
            .await
            .expect("redis")
    );
}

#[tokio::test]
async fn the_handler_reads_the_body_the_csrf_rule_read_first() {
    let (app, _) = site().await;
    let s = sign_in(&app, "admin").await;
    // A JSON body after a header token, and the same fields as a form
    // after a form token: the handler still sees them whole.
    let target = Target {
        path: "/api/items".into(),
        json: Some(json!({"type": "article", "title": "whole body",
                          "fields": {"field_body": {"value": "text"}}})),
        multipart: false,
        form: None,
        session: None,
        parts: None,
    };
    let r = request(
        &app,
        &Method::POST,
        &target,
        &s,
        Body::Json,
        Token::Header(&s.csrf),
    )
    .send()
    .await
    .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        app.item_title(&id, None).await.as_deref(),
        Some("whole body")
    );
    // The multipart body after its token part reaches the handler intact:
    // the items route refuses it as 415, not as a broken body.
    let r = request(
        &app,
        &Method::POST,
        &target,
        &s,
        Body::Multipart,
        Token::Field(&s.csrf),
    )
    .send()
    .await
    .expect("multipart");
    error_body(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn a_multipart_token_after_the_first_part_is_not_looked_for() {
    let (app, _) = site().await;
    let s = sign_in(&app, "admin").await;
    let before = snapshot(&app).await;
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nx\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{}\r\n\
         --{BOUNDARY}--\r\n",
        s.csrf
    );
    let r = reqwest::Client::new()
        .post(app.url("/api/items"))
        .header("cookie", format!("trovato_session={}", s.cookie))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn an_oversized_form_is_refused_as_413_by_the_csrf_rule_without_effect() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 1024, axum::Router::new()).await;
    app.create_user("admin", PASSWORD, true).await;
    let s = sign_in(&app, "admin").await;
    let before = snapshot(&app).await;
    let body = format!("csrf_token={}&title={}", s.csrf, "x".repeat(4096));
    let r = reqwest::Client::new()
        .post(app.url("/user/logout"))
        .header("cookie", format!("trovato_session={}", s.cookie))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(futures::stream::once(
            async move { Ok::<_, std::io::Error>(body) },
        )))
        .send()
        .await
        .expect("post");
    error_body(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(snapshot(&app).await, before);
    assert!(
        trovato::user::session::exists(&app.state.kv, &s.cookie)
            .await
            .expect("redis")
    );
}

#[tokio::test]
async fn bearer_requests_need_no_csrf_token_even_with_a_session_cookie() {
    let (app, _) = site().await;
    let admin = trovato::user::find_by_name(&app.state.db, "admin")
        .await
        .expect("db")
        .expect("admin");
    let bearer = trovato::user::token::create(&app.state.db, admin.id, "script")
        .await
        .expect("token");
    let s = sign_in(&app, "admin").await;
    for with_cookie in [false, true] {
        let mut req = reqwest::Client::new()
            .post(app.url("/api/items"))
            .bearer_auth(&bearer)
            .json(
                &json!({"type": "article", "title": format!("by script {with_cookie}"),
                          "fields": {"field_body": {"value": "text"}}}),
            );
        if with_cookie {
            req = req.header("cookie", format!("trovato_session={}", s.cookie));
        }
        let r = req.send().await.expect("post");
        assert_eq!(r.status(), StatusCode::CREATED, "cookie: {with_cookie}");
        let id = r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(
            app.item_title(&id, None).await,
            Some(format!("by script {with_cookie}"))
        );
    }
}

#[tokio::test]
async fn a_request_without_a_session_cookie_is_not_asked_for_a_token() {
    let (app, _) = site().await;
    // Anonymous: the route answers (its body rejection, 415), not the CSRF
    // rule (403).
    let r = reqwest::Client::new()
        .post(app.url("/api/items"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("post");
    error_body(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // A stale session cookie is no credential either.
    let r = reqwest::Client::new()
        .delete(app.url("/api/item-types/article"))
        .header("cookie", "trovato_session=expired")
        .send()
        .await
        .expect("delete");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(
        app.get("/api/item-types/article").await.status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- login CSRF

fn form_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

/// Number of sessions in Redis.
async fn sessions(app: &TestApp) -> usize {
    crate::harness::session_keys(&app.state.kv).await.len()
}

async fn form_login(app: &TestApp, cookie: Option<&str>, token: Option<&str>) -> reqwest::Response {
    let mut form = vec![("name", "admin"), ("password", PASSWORD)];
    if let Some(t) = token {
        form.push(("csrf_token", t));
    }
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(app.url("/user/login"))
        .form(&form);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("trovato_csrf={c}"));
    }
    req.send().await.expect("login")
}

#[tokio::test]
async fn a_planted_csrf_cookie_with_the_same_form_value_does_not_log_in() {
    let app = TestApp::spawn().await;
    app.create_user("admin", PASSWORD, true).await;
    let planted = trovato::user::session::random_token();
    let r = form_login(&app, Some(&planted), Some(&planted)).await;
    assert!(app.session_token(&r).is_none());
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_invalid").await;
    assert_eq!(sessions(&app).await, 0);
}

#[tokio::test]
async fn a_login_form_token_only_works_with_the_cookie_it_was_made_for() {
    let app = TestApp::spawn().await;
    app.create_user("admin", PASSWORD, true).await;
    let page = app.get("/user/login").await;
    let cookie = page
        .cookies()
        .find(|c| c.name() == "trovato_csrf")
        .map(|c| c.value().to_owned())
        .expect("csrf cookie");
    let token = form_token(&page.text().await.expect("html"));
    assert_ne!(token, cookie, "the form token must not be the cookie value");

    let other_cookie = trovato::user::session::random_token();
    let r = form_login(&app, Some(&other_cookie), Some(&token)).await;
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_invalid").await;
    let r = form_login(&app, None, Some(&token)).await;
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_invalid").await;
    let r = form_login(&app, Some(&cookie), None).await;
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    let r = form_login(&app, Some(&cookie), Some("not base64 !")).await;
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_invalid").await;
    assert_eq!(sessions(&app).await, 0);

    // The page's own pair logs in.
    let r = form_login(&app, Some(&cookie), Some(&token)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = app.session_token(&r).expect("session cookie");
    assert!(
        trovato::user::session::exists(&app.state.kv, &session)
            .await
            .expect("redis")
    );
}

#[tokio::test]
async fn a_real_form_login_through_the_page_works_on_another_kernel_instance() {
    // Two kernels on one database and Redis share the secret the login
    // token is bound with: a form shown by one is accepted by the other.
    let app = TestApp::spawn().await;
    app.create_user("admin", PASSWORD, true).await;
    let other = trovato::Kernel::connect((*app.state.config).clone())
        .await
        .expect("second kernel");
    let second = trovato::app::app(other);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, second).await;
    });
    let page = app.get("/user/login").await;
    let cookie = page
        .cookies()
        .find(|c| c.name() == "trovato_csrf")
        .map(|c| c.value().to_owned())
        .expect("csrf cookie");
    let token = form_token(&page.text().await.expect("html"));
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("http://{addr}/user/login"))
        .header("cookie", format!("trovato_csrf={cookie}"))
        .form(&[
            ("name", "admin"),
            ("password", PASSWORD),
            ("csrf_token", token.as_str()),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = app.session_token(&r).expect("session cookie");
    assert!(
        trovato::user::session::exists(&app.state.kv, &session)
            .await
            .expect("redis")
    );
    server.abort();
}
