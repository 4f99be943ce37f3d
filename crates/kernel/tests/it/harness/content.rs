//! Test helpers for the content core, named after what an editor does.

use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use super::TestApp;

pub const PASSWORD: &str = "correct horse battery staple";

/// Adds `?stage=` when a stage is given.
pub fn staged(path: &str, stage: Option<&str>) -> String {
    match stage {
        Some(s) if path.contains('?') => format!("{path}&stage={s}"),
        Some(s) => format!("{path}?stage={s}"),
        None => path.to_owned(),
    }
}

/// The field definitions used by most tests: a required short text, a
/// bounded integer, a boolean, term references and a date.
pub fn article_fields() -> Value {
    json!([
        {"name": "field_body", "label": "Body", "kind": "text", "max_length": 100, "required": true},
        {"name": "field_rating", "label": "Rating", "kind": "integer", "min": 1, "max": 5},
        {"name": "field_featured", "label": "Featured", "kind": "boolean"},
        {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0},
        {"name": "field_date", "label": "Date", "kind": "date"},
    ])
}

impl TestApp {
    /// A kernel whose client is signed in as an administrator and which
    /// has the `article` type: where most content tests start.
    pub async fn spawn_with_articles() -> TestApp {
        let app = TestApp::spawn().await;
        app.sign_in_as_admin().await;
        app.create_article_type().await;
        app
    }

    /// Creates an administrator and logs this app's client in as them.
    pub async fn sign_in_as_admin(&self) -> trovato::user::User {
        let user = self.create_user("admin", PASSWORD, true).await;
        assert_eq!(self.login("admin", PASSWORD).await.status(), StatusCode::OK);
        user
    }

    /// A JSON request with this app's (cookie-keeping) client, carrying the
    /// session's CSRF token as a page's script would.
    pub fn json_request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .header("x-csrf-token", self.csrf_token())
    }

    pub async fn create_item_type(&self, name: &str, fields: Value) -> Response {
        self.json_request(reqwest::Method::POST, "/api/item-types")
            .json(&json!({
                "type": name, "label": name.to_uppercase(), "description": "",
                "has_title": true, "title_label": "Title", "plugin": "kernel",
                "fields": fields,
            }))
            .send()
            .await
            .expect("POST /api/item-types")
    }

    pub async fn create_article_type(&self) {
        let r = self.create_item_type("article", article_fields()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }

    /// Creates an item (in `stage` when given); returns the response.
    pub async fn post_item(&self, body: Value, stage: Option<&str>) -> Response {
        self.json_request(reqwest::Method::POST, &staged("/api/items", stage))
            .json(&body)
            .send()
            .await
            .expect("POST /api/items")
    }

    /// Creates an article with `title` and returns it as JSON.
    pub async fn create_item(&self, title: &str, stage: Option<&str>) -> Value {
        let r = self
            .post_item(
                json!({"type": "article", "title": title, "fields": {"field_body": {"value": "text"}}}),
                stage,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.expect("item JSON")
    }

    pub async fn update_item(&self, id: &str, patch: Value, stage: Option<&str>) -> Response {
        self.json_request(
            reqwest::Method::PUT,
            &staged(&format!("/api/items/{id}"), stage),
        )
        .json(&patch)
        .send()
        .await
        .expect("PUT /api/items/{id}")
    }

    pub async fn rename_item(&self, id: &str, title: &str, stage: Option<&str>) {
        let r = self.update_item(id, json!({"title": title}), stage).await;
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    }

    pub async fn read_item(&self, id: &str, stage: Option<&str>) -> Response {
        self.get(&staged(&format!("/api/items/{id}"), stage)).await
    }

    /// The title the item shows from `stage`, or `None` if not visible.
    pub async fn item_title(&self, id: &str, stage: Option<&str>) -> Option<String> {
        let r = self.read_item(id, stage).await;
        if r.status() != StatusCode::OK {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        v["title"].as_str().map(str::to_owned)
    }

    pub async fn create_stage(&self, id: &str) -> Response {
        self.json_request(reqwest::Method::POST, "/api/stages")
            .json(&json!({"id": id, "label": format!("Stage {id}")}))
            .send()
            .await
            .expect("POST /api/stages")
    }

    pub async fn publish_stage(&self, id: &str) -> Response {
        self.json_request(reqwest::Method::POST, &format!("/stage/{id}/publish"))
            .send()
            .await
            .expect("POST /stage/{id}/publish")
    }

    /// Titles of the published articles listed from `stage`.
    pub async fn listed_titles(&self, stage: Option<&str>) -> Vec<String> {
        let r = self
            .get(&staged(
                "/api/items?type=article&sort=title&order=asc",
                stage,
            ))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("page JSON");
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["title"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Grants `permission` to every authenticated user.
    pub async fn grant_authenticated(&self, permission: &str) {
        sqlx::query("INSERT INTO role_permission (role, permission) VALUES ('authenticated', $1)")
            .bind(permission)
            .execute(&self.state.db)
            .await
            .expect("grant permission");
    }
}

/// The CSRF token a JSON login hands to scripts (they send it as
/// `X-CSRF-Token` with every write).
pub async fn csrf_of(login: Response) -> String {
    assert_eq!(login.status(), StatusCode::OK);
    let me: Value = login.json().await.expect("login JSON");
    me["csrf_token"].as_str().expect("csrf_token").to_owned()
}

/// Asserts the JSON error shape and returns the body.
pub async fn error_body(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.expect("JSON error body");
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].is_string(), "{v}");
    assert!(v.get("details").is_some(), "{v}");
    v
}

/// Asserts `r` has `status` and returns its JSON body.
pub async fn expect_json(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

/// Logs `client` in as admin at `base` (a kernel process); returns the
/// session's CSRF token.
pub async fn sign_in_at(client: &reqwest::Client, base: &str) -> String {
    sign_in_as(client, base, "admin").await
}

/// Logs `client` in as `name` (password [`PASSWORD`]) at `base`; returns
/// the session's CSRF token.
pub async fn sign_in_as(client: &reqwest::Client, base: &str, name: &str) -> String {
    let r = client
        .post(format!("{base}/user/login"))
        .json(&serde_json::json!({"name": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    csrf_of(r).await
}

impl TestApp {
    /// A fresh browser signed in as `name`, and its session's CSRF token.
    pub async fn browser_for(&self, name: &str) -> (reqwest::Client, String) {
        let client = super::client();
        let csrf = sign_in_as(&client, &self.url(""), name).await;
        (client, csrf)
    }
}

/// A plugin directory of its own holding one plugin that fails to load
/// (`no_alloc`, which exports no `trovato_alloc`): listed with its error,
/// can be enabled and disabled, and never runs.
pub fn plugin_dir_with_a_failed_plugin() -> std::path::PathBuf {
    let from = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/no_alloc");
    let dir = std::env::temp_dir().join(format!(
        "trovato-pages-plugins-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let to = dir.join("no_alloc");
    std::fs::create_dir_all(&to).expect("plugin dir");
    for f in ["no_alloc.wat", "no_alloc.info.toml"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy fixture");
    }
    dir
}

impl TestApp {
    /// [`TestApp::spawn_with_articles`] with the plugin directory of
    /// [`plugin_dir_with_a_failed_plugin`].
    pub async fn spawn_with_articles_and_a_plugin() -> TestApp {
        let dir = plugin_dir_with_a_failed_plugin();
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
        app
    }
}
