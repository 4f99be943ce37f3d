//! The OpenAPI document and the router are one declaration: every route is
//! served and described, the document is self-contained, and it says
//! which operations take credentials.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::harness::content::error_body;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn served_document(app: &TestApp) -> Value {
    let r = app.get("/api/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.expect("json")
}

/// (path, method) of every operation in a served document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((path.clone(), m.to_owned()));
            }
        }
    }
    out
}

/// A concrete URL path for a template (routing ignores the values).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "019a0000-0000-7000-8000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_served_document_lists_exactly_the_declared_routes() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    let declared: BTreeSet<(String, String)> = trovato::app::declared_routes()
        .into_iter()
        .map(|r| (r.path, r.method.as_str().to_ascii_lowercase()))
        .collect();
    assert_eq!(operations(&doc), declared);
    // HTML pages and the form endpoints are declared like JSON ones.
    for (path, method) in [
        ("/", "get"),
        ("/user/login", "get"),
        ("/user/login", "post"),
        ("/user/logout", "post"),
        ("/item/{id}", "get"),
        ("/items/{type}", "get"),
        ("/api/stages/{id}/publish", "post"),
        ("/stage/{id}/publish", "post"),
        ("/api/openapi.json", "get"),
    ] {
        assert!(
            declared.contains(&(path.to_owned(), method.to_owned())),
            "{method} {path} is not declared"
        );
    }
}

/// Every declared path is routed, and a method it does not declare gets a
/// 405 whose `Allow` lists exactly the declared methods (HEAD comes with
/// GET): the router serves nothing on these paths the document omits.
#[tokio::test]
async fn every_declared_path_is_routed_with_exactly_the_declared_methods() {
    let app = TestApp::spawn().await;
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in trovato::app::declared_routes() {
        by_path
            .entry(r.path)
            .or_default()
            .insert(r.method.as_str().to_owned());
    }
    assert!(by_path.len() > 20, "{by_path:?}");
    let client = reqwest::Client::new();
    for (path, methods) in &by_path {
        let r = client
            .request(Method::PATCH, app.url(&concrete(path)))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "PATCH {path}");
        let allow: BTreeSet<String> = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("405 without Allow on {path}"))
            .to_str()
            .expect("ascii")
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| m != "HEAD")
            .collect();
        assert_eq!(&allow, methods, "Allow of {path}");
        let body: Value = r.json().await.expect("json 405");
        assert_eq!(body["error"], "method_not_allowed");
    }
}

/// Routes are registered only through `utoipa_axum::routes!`, which
/// declares them in the document too; a plain axum `.route(...)` in the
/// kernel's sources would serve a path the document does not know.
#[test]
fn no_route_is_registered_outside_the_declarations() {
    fn visit(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if [".route(", ".route_service(", ".nest(", ".nest_service("]
                        .iter()
                        .any(|c| code.contains(c))
                    {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    let mut found = Vec::new();
    visit(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut found,
    );
    assert!(found.is_empty(), "undeclared routes:\n{}", found.join("\n"));
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.insert(v.as_str().expect("$ref is a string").to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_in_the_document_resolves() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    let mut refs = BTreeSet::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.contains("#/components/schemas/ErrorBody"), "{refs:?}");
    for r in &refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} points outside the document's schemas"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling {r}"
        );
    }
    // The listing's sort and order are spelled out where they are used.
    let params = doc["paths"]["/api/items"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let sort = params
        .iter()
        .find(|p| p["name"] == "sort")
        .expect("sort parameter");
    assert_eq!(sort["in"], "query");
    assert_eq!(sort["required"], false);
    assert_eq!(
        sort["schema"]["enum"],
        json!(["created", "changed", "title"])
    );
    assert!(params.iter().all(|p| p["in"] != "path"), "{params:?}");
}

/// True when the operation may be called without credentials.
fn allows_anonymous(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|alts| {
        alts.iter()
            .any(|a| a.as_object().is_some_and(|o| o.is_empty()))
    })
}

#[tokio::test]
async fn every_operation_declares_its_security_and_protected_ones_refuse_anonymous_callers() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        vec!["bearer", "cron_key", "session"]
    );
    let client = reqwest::Client::new();
    let mut protected = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let alternatives = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{m} {path} declares no security"));
            assert!(!alternatives.is_empty(), "{m} {path}");
            for alt in alternatives {
                for scheme in alt.as_object().expect("requirement").keys() {
                    assert!(schemes.contains_key(scheme), "{m} {path}: {scheme}");
                }
            }
            if op["responses"].get("401").is_some() && !allows_anonymous(op) {
                assert!(
                    alternatives
                        .iter()
                        .all(|a| !a.as_object().expect("req").is_empty()),
                    "{m} {path}"
                );
            }
            if allows_anonymous(op) {
                continue;
            }
            assert!(
                op["responses"].get("401").is_some(),
                "{m} {path} needs credentials but documents no 401"
            );
            protected += 1;
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).expect("method");
            let mut req = client.request(method, app.url(&concrete(path)));
            if op.get("requestBody").is_some() {
                req = req.json(&json!({}));
            }
            let r = req.send().await.expect("anonymous request");
            let status = r.status();
            if op.get("requestBody").is_some() {
                // The body is checked before the caller's permissions.
                assert!(status.is_client_error(), "{m} {path} anonymously: {status}");
            } else if path.contains('{') && status == StatusCode::NOT_FOUND {
                // The resource the path names does not exist, which an
                // anonymous caller may learn by reading it.
                let body: Value = r.json().await.expect("json");
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|e| e.ends_with("not_found")),
                    "{body}"
                );
            } else {
                error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
            }
        }
    }
    assert!(protected > 20, "{protected}");
}

#[tokio::test]
async fn publishing_answers_at_the_api_path_and_the_short_one() {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let item = app.create_item("Staged", Some("draft")).await;
    let id = item["id"].as_str().expect("id");
    for path in ["/api/stages/draft/publish", "/stage/draft/publish"] {
        let r = app
            .json_request(Method::POST, path)
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // The first publish took the item live; the second found nothing left.
    let r = app.read_item(id, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .json_request(Method::POST, "/api/stages/live/publish")
        .send()
        .await
        .expect("publish live");
    error_body(r, StatusCode::CONFLICT, "stage_is_live").await;
}

#[tokio::test]
async fn a_new_item_type_is_always_the_kernels() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let r = app
        .json_request(Method::POST, "/api/item-types")
        .json(&json!({"type": "page", "label": "Page", "plugin": "word_count"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("plugin")),
        "{body}"
    );
    let types: i64 = sqlx::query_scalar("SELECT count(*) FROM item_type")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(types, 0);
    // Only the name and label are needed; the rest has defaults.
    let r = app
        .json_request(Method::POST, "/api/item-types")
        .json(&json!({"type": "page", "label": "Page"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let stored: (String, bool, String) =
        sqlx::query_as("SELECT plugin, has_title, title_label FROM item_type WHERE type = 'page'")
            .fetch_one(&app.state.db)
            .await
            .expect("row");
    assert_eq!(stored, ("kernel".to_owned(), true, "Title".to_owned()));
}

#[tokio::test]
async fn an_item_type_update_naming_another_type_is_refused_and_changes_nothing() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .json_request(Method::PUT, "/api/item-types/article")
        .json(&json!({"type": "other", "label": "Renamed"}))
        .send()
        .await
        .expect("PUT");
    let body = error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["details"]["fields"]["type"].is_array(), "{body}");
    let label: String = sqlx::query_scalar("SELECT label FROM item_type WHERE type = 'article'")
        .fetch_one(&app.state.db)
        .await
        .expect("label");
    assert_eq!(label, "ARTICLE");
    // The definer is not the client's to set: the stored one is reported.
    let r = app
        .json_request(Method::PUT, "/api/item-types/article")
        .json(&json!({"label": "Renamed", "plugin": "someone_else"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let t: Value = r.json().await.expect("json");
    assert_eq!(
        (t["label"].as_str(), t["plugin"].as_str()),
        (Some("Renamed"), Some("kernel"))
    );
    let r = app
        .json_request(Method::PUT, "/api/item-types/nope")
        .json(&json!({"label": "Nope"}))
        .send()
        .await
        .expect("PUT");
    error_body(r, StatusCode::NOT_FOUND, "item_type_not_found").await;
}

#[tokio::test]
async fn an_item_update_without_fields_keeps_them() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Before", None).await;
    let id = item["id"].as_str().expect("id");
    let r = app.update_item(id, json!({"title": "After"}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let stored: (String, Value) =
        sqlx::query_as("SELECT title, fields FROM item WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.state.db)
            .await
            .expect("row");
    assert_eq!(stored.0, "After");
    assert_eq!(stored.1, item["fields"]);
}

#[tokio::test]
async fn a_roles_permissions_are_described_as_the_ones_this_site_declares() {
    let app = TestApp::spawn().await;
    let doc = served_document(&app).await;
    let update = &doc["components"]["schemas"]["RoleUpdate"]["properties"]["permissions"];
    assert_eq!(
        update["items"]["$ref"], "#/components/schemas/PermissionName",
        "{update}"
    );
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["PermissionName"]["enum"]
        .as_array()
        .expect("an enum of permission names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let declared: BTreeSet<&str> = app
        .state
        .permissions
        .registry()
        .all()
        .map(|p| p.name.as_str())
        .collect();
    assert!(listed.contains("administer users"), "{listed:?}");
    assert_eq!(listed, declared);
}
