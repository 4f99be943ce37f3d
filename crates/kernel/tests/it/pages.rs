//! The content administration pages and the public pages, over HTTP: what
//! each form writes, every refusal, the HTML error pages, the front page.
//! The whole journey in a real browser is in `pages_browser.rs`.

use reqwest::header::ACCEPT;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::files::{BOUNDARY, PNG, Part, multipart};
use crate::harness::content::{PASSWORD, error_body};
use crate::harness::{PATIENCE, TestApp, eventually};

const HTML: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8";

/// Sends the item form (multipart, the token first) as a browser would.
async fn send_item_form(
    client: &Client,
    url: &str,
    csrf: &str,
    fields: &[(&str, &str)],
    files: &[Part<'_>],
) -> reqwest::Response {
    let mut parts = vec![Part::text("csrf_token", csrf)];
    parts.extend(fields.iter().map(|(k, v)| Part::text(k, v)));
    for f in files {
        parts.push(Part {
            name: f.name,
            filename: f.filename,
            content_type: f.content_type,
            body: f.body.clone(),
        });
    }
    client
        .post(url)
        .header(ACCEPT, HTML)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(&parts))
        .send()
        .await
        .expect("POST the item form")
}

async fn item_row(app: &TestApp, id: Uuid) -> Option<(String, Value, String, i16)> {
    sqlx::query_as("SELECT title, fields, stage_id, status FROM item WHERE id = $1")
        .bind(id)
        .fetch_optional(&app.state.db)
        .await
        .expect("item row")
}

async fn make_term(app: &TestApp, name: &str) -> String {
    let r = app
        .json_request(reqwest::Method::POST, "/api/categories")
        .json(&json!({"id": "tags", "label": "Tags"}))
        .send()
        .await
        .expect("category");
    assert!(
        r.status() == StatusCode::CREATED || r.status() == StatusCode::CONFLICT,
        "{}",
        r.status()
    );
    let r = app
        .json_request(reqwest::Method::POST, "/api/categories/tags/terms")
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("term");
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("term json");
    v["id"].as_str().expect("id").to_owned()
}

fn id_from_location(r: &reqwest::Response) -> Uuid {
    let loc = r.headers()["location"].to_str().expect("location");
    let id = loc
        .trim_start_matches("/admin/content/")
        .split('/')
        .next()
        .expect("id");
    id.parse().unwrap_or_else(|_| panic!("no id in {loc}"))
}

#[tokio::test]
async fn the_item_form_creates_an_item_with_a_term_named_and_an_uploaded_image() {
    let app = TestApp::spawn_with_articles().await;
    let term = make_term(&app, "Rust").await;
    let r = app
        .json_request(reqwest::Method::PUT, "/api/item-types/article")
        .json(&json!({"label": "Article", "fields": [
            {"name": "field_body", "label": "Body", "kind": "text", "max_length": 100, "required": true},
            {"name": "field_rating", "label": "Rating", "kind": "integer", "min": 1, "max": 5},
            {"name": "field_tags", "label": "Tags", "kind": "reference", "target": "term", "cardinality": 0},
            {"name": "field_date", "label": "Date", "kind": "date"},
            {"name": "field_image", "label": "Image", "kind": "file"},
        ]}))
        .send()
        .await
        .expect("type");
    assert_eq!(r.status(), StatusCode::OK);
    let (client, csrf) = app.browser_for("admin").await;
    let r = send_item_form(
        &client,
        &app.url("/admin/content/new/article"),
        &csrf,
        &[
            ("title", "Hello"),
            ("v.field_body.0", "First words"),
            ("v.field_rating.0", "3"),
            ("v.field_tags.0", "rust"),
            ("id.field_tags.0", ""),
            ("v.field_date.0", "2024-05-01"),
            ("status", "published"),
            ("promote", "1"),
            ("op", "save"),
        ],
        &[Part {
            name: "upload.field_image",
            filename: Some("cover.png"),
            content_type: Some("image/png"),
            body: PNG.to_vec(),
        }],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let id = id_from_location(&r);
    let (title, fields, stage, status) = item_row(&app, id).await.expect("row");
    assert_eq!(
        (title.as_str(), stage.as_str(), status),
        ("Hello", "live", 1)
    );
    assert_eq!(fields["field_tags"], json!([{"target_id": term}]));
    assert_eq!(fields["field_rating"], json!({"value": 3}));
    assert_eq!(fields["field_date"], json!({"value": "2024-05-01"}));
    let file_id = fields["field_image"]["file_id"].as_str().expect("file id");
    let file_status: i16 = sqlx::query_scalar("SELECT status FROM file_managed WHERE id = $1")
        .bind(file_id.parse::<Uuid>().expect("uuid"))
        .fetch_one(&app.state.db)
        .await
        .expect("file row");
    assert_eq!(file_status, 1, "the used file is permanent");

    // The public page: labels, the term by name, the image, a readable date.
    let page = crate::harness::client()
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    for needle in [
        "<dt>Body</dt>",
        "First words",
        "<dt>Tags</dt>",
        ">Rust</a>",
        "1 May 2024",
        "<img src=",
        "cover.png",
        "by <span class=\"author\">admin</span>",
    ] {
        assert!(page.contains(needle), "{needle} missing from {page}");
    }
    // Shown by name, linking its page (minijinja writes `/` in attributes
    // as `&#x2f;`).
    assert!(
        page.contains(&format!("<a href=\"&#x2f;term&#x2f;{term}\">Rust</a>")),
        "the term is shown by name, linking its page: {page}"
    );
    assert!(!page.contains(&format!(">{term}<")), "not by its id");
}

#[tokio::test]
async fn a_refused_item_form_shows_each_error_next_to_its_field_and_keeps_the_values() {
    let app = TestApp::spawn_with_articles().await;
    let (client, csrf) = app.browser_for("admin").await;
    let r = send_item_form(
        &client,
        &app.url("/admin/content/new/article"),
        &csrf,
        &[
            ("title", "Kept title"),
            ("v.field_body.0", ""),
            ("v.field_rating.0", "9"),
            ("v.field_tags.0", "No such term"),
            ("id.field_tags.0", ""),
            ("op", "save"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.expect("html");
    assert!(page.contains("value=\"Kept title\""), "{page}");
    assert!(page.contains("no term named “No such term”"), "{page}");
    assert!(page.contains("The item was not saved"), "{page}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM item")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing was written");

    // The kernel's own checks (required, range) come back per field too.
    let r = send_item_form(
        &client,
        &app.url("/admin/content/new/article"),
        &csrf,
        &[
            ("title", "Kept title"),
            ("v.field_body.0", ""),
            ("v.field_rating.0", "9"),
            ("op", "save"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.expect("html");
    let body = page.find("field-field_body").expect("body field");
    let rating = page.find("field-field_rating").expect("rating field");
    let required = page.find("is required").expect("required error");
    let range = page.find("must be at most 5").expect("range error");
    assert!(
        body < required && required < rating && rating < range,
        "{page}"
    );
    assert!(page.contains("value=\"9\""), "the refused value is kept");

    // "Add another" shows one more slot and saves nothing.
    let r = send_item_form(
        &client,
        &app.url("/admin/content/new/article"),
        &csrf,
        &[
            ("title", "T"),
            ("v.field_tags.0", ""),
            ("id.field_tags.0", ""),
            ("op", "add:field_tags"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("html");
    assert!(page.contains("name=\"v.field_tags.1\""), "{page}");
}

#[tokio::test]
async fn an_edit_in_a_stage_leaves_live_alone_until_the_stage_page_publishes_it() {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let item = app.create_item("Live title", None).await;
    let id: Uuid = item["id"].as_str().expect("id").parse().expect("uuid");
    let (client, csrf) = app.browser_for("admin").await;
    // The switcher selects the session's working stage.
    let r = client
        .post(app.url("/admin/stage/select"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("stage", "draft"),
            ("destination", "/admin/content"),
        ])
        .send()
        .await
        .expect("select");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/admin/content");
    let r = send_item_form(
        &client,
        &app.url(&format!("/admin/content/{id}/edit")),
        &csrf,
        &[
            ("title", "Staged title"),
            ("v.field_body.0", "staged body"),
            ("log", "rewrite"),
            ("op", "save"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (title, _, _, _) = item_row(&app, id).await.expect("row");
    assert_eq!(title, "Live title", "live is untouched");
    let staged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stage_association WHERE stage_id = 'draft'")
            .fetch_one(&app.state.db)
            .await
            .expect("associations");
    assert_eq!(staged, 1);
    let anonymous = crate::harness::client();
    let page = anonymous
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(page.contains("Live title") && !page.contains("Staged title"));

    // The edit page lists the revision with its stage.
    let edit = client
        .get(app.url(&format!("/admin/content/{id}/edit")))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(edit.contains("<td class=\"stage\">draft</td>"), "{edit}");
    assert!(edit.contains("rewrite"), "{edit}");

    // The stage page shows the diff against live.
    let stage_page = client
        .get(app.url("/admin/stages/draft"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(
        stage_page.contains("Live title") && stage_page.contains("Staged title"),
        "{stage_page}"
    );

    // Without the confirmation nothing is published.
    let r = client
        .post(app.url("/admin/stages/draft/publish"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/admin/stages/draft?notice=not_confirmed"
    );
    assert_eq!(item_row(&app, id).await.expect("row").0, "Live title");

    let r = client
        .post(app.url("/admin/stages/draft/publish"))
        .form(&[("csrf_token", csrf.as_str()), ("confirm", "yes")])
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(item_row(&app, id).await.expect("row").0, "Staged title");
    let page = anonymous
        .get(app.url(&format!("/item/{id}")))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("Staged title"),
        "the cached page was invalidated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_page_filters_sorts_pages_and_bulk_publishes_through_a_batch() {
    let app = TestApp::spawn_with_articles().await;
    let mut ids = Vec::new();
    for title in ["Apple pie", "Banana bread", "Cherry tart"] {
        let r = app
            .post_item(
                json!({"type": "article", "title": title, "status": "unpublished",
                       "fields": {"field_body": {"value": "x"}}}),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.expect("json");
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    let (client, csrf) = app.browser_for("admin").await;
    let page = |q: &'static str| {
        let client = client.clone();
        let url = app.url(&format!("/admin/content{q}"));
        async move {
            let r = client.get(url).send().await.expect("GET");
            (r.status(), r.text().await.expect("html"))
        }
    };
    let (status, html) = page("?title=an&sort=title&order=asc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Banana bread") && !html.contains("Apple pie"),
        "{html}"
    );
    let (_, html) = page("?sort=title&order=desc").await;
    let c = html.find("Cherry tart").expect("cherry");
    let a = html.find("Apple pie").expect("apple");
    assert!(c < a, "descending by title");
    let (_, html) = page("?status=published").await;
    assert!(html.contains("0 items"), "{html}");
    let (_, html) = page("?author=nobody").await;
    assert!(html.contains("No user is named"), "{html}");
    for bad in ["?page=0", "?type=nosuch", "?sort=weight", "?bogus=1"] {
        let (status, _) = page(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    let mut form: Vec<(&str, &str)> = vec![("csrf_token", &csrf), ("action", "publish")];
    form.extend(ids[..2].iter().map(|i| ("ids", i.as_str())));
    let r = client
        .post(app.url("/admin/content/bulk"))
        .form(&form)
        .send()
        .await
        .expect("bulk");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/admin/content?notice=bulk_started"
    );
    let workers = crate::batch::Workers::start(&app, 1, 1);
    let published = eventually(PATIENCE, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM item WHERE status = 1")
            .fetch_one(&app.state.db)
            .await
            .expect("count");
        n == 2
    })
    .await;
    workers.stop().await;
    assert!(published.is_some(), "the batch published the two items");

    // Bulk delete: an item another item references stays, and is reported.
    let r = app
        .create_item_type(
            "link",
            json!([{"name": "field_to", "label": "To", "kind": "reference", "target": "item"}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .post_item(
            json!({"type": "link", "title": "Pointer", "fields": {"field_to": {"target_id": ids[1]}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .post(app.url("/admin/content/bulk"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("action", "delete"),
            ("ids", ids[0].as_str()),
            ("ids", ids[1].as_str()),
        ])
        .send()
        .await
        .expect("bulk");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let workers = crate::batch::Workers::start(&app, 1, 1);
    let deleted = eventually(PATIENCE, || async {
        let id: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM batch WHERE operation = 'items.delete'")
                .fetch_optional(&app.state.db)
                .await
                .expect("batch");
        match id {
            Some(id) => {
                let s = trovato::batch::load(&app.state.db, id).await.expect("load");
                s.state == trovato::batch::BatchState::Done && s.failed == 1
            }
            None => false,
        }
    })
    .await;
    workers.stop().await;
    assert!(deleted.is_some(), "the delete batch ended with one failure");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM item WHERE id::text = ANY($1)")
            .bind(&ids[..2])
            .fetch_all(&app.state.db)
            .await
            .expect("left");
    assert_eq!(left, [ids[1].clone()], "the referenced item stays");

    let r = client
        .post(app.url("/admin/content/bulk"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("action", "explode"),
            ("ids", &ids[0]),
        ])
        .send()
        .await
        .expect("bulk");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .post(app.url("/admin/content/bulk"))
        .form(&[("action", "delete"), ("ids", ids[0].as_str())])
        .send()
        .await
        .expect("bulk");
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM item")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(left, 3, "nothing more was deleted");
}

#[tokio::test]
async fn content_pages_refuse_what_the_account_may_not_do() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Theirs", None).await;
    let id = item["id"].as_str().expect("id").to_owned();
    app.create_user("reader", PASSWORD, false).await;
    let (reader, reader_csrf) = app.browser_for("reader").await;
    for path in [
        "/admin/content".to_owned(),
        "/admin/content/new".to_owned(),
        "/admin/content/new/article".to_owned(),
        format!("/admin/content/{id}/edit"),
        "/admin/stages".to_owned(),
        "/admin/stages/draft".to_owned(),
        "/admin/structure/types".to_owned(),
    ] {
        let r = reader.get(app.url(&path)).send().await.expect("GET");
        error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let r = send_item_form(
        &reader,
        &app.url(&format!("/admin/content/{id}/edit")),
        &reader_csrf,
        &[("title", "Hijacked"), ("op", "save")],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html"),
        "a browser gets the 403 as a page"
    );
    let page = r.text().await.expect("html");
    assert!(page.contains("id=\"login\""), "{page}");
    let r = reader
        .post(app.url("/admin/stage/select"))
        .form(&[("csrf_token", reader_csrf.as_str()), ("stage", "live")])
        .send()
        .await
        .expect("select");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "live is everyone's");
    app.create_stage("draft").await;
    let r = reader
        .post(app.url("/admin/stage/select"))
        .form(&[("csrf_token", reader_csrf.as_str()), ("stage", "draft")])
        .send()
        .await
        .expect("select");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(
        item_row(&app, id.parse().expect("uuid"))
            .await
            .expect("row")
            .0,
        "Theirs"
    );

    // The admin's own mistakes.
    let (admin, csrf) = app.browser_for("admin").await;
    for (stage, status) in [
        ("nosuch", StatusCode::NOT_FOUND),
        ("Bad Id", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = admin
            .post(app.url("/admin/stage/select"))
            .form(&[("csrf_token", csrf.as_str()), ("stage", stage)])
            .send()
            .await
            .expect("select");
        assert_eq!(r.status(), status, "{stage}");
    }
    let r = admin
        .post(app.url("/admin/content/new/article"))
        .form(&[("csrf_token", csrf.as_str()), ("title", "x")])
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::BAD_REQUEST, "invalid_body").await;
    let r = send_item_form(
        &admin,
        &app.url("/admin/content/new/nosuch"),
        &csrf,
        &[],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = admin
        .get(app.url(&format!("/admin/content/{}/edit", Uuid::now_v7())))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "item_not_found").await;
    let r = admin
        .get(app.url("/admin/stages/nosuch"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "stage_not_found").await;
    let anonymous = crate::harness::client();
    let r = anonymous
        .get(app.url("/admin/content"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().expect("location");
    assert!(
        to.starts_with("/user/login"),
        "anonymous goes to the login form: {to}"
    );
}

#[tokio::test]
async fn the_stage_and_type_forms_show_their_refusals_and_write_nothing() {
    let app = TestApp::spawn_with_articles().await;
    app.create_item("Keeps the type", None).await;
    let (admin, csrf) = app.browser_for("admin").await;
    let post = |path: &'static str, form: Vec<(&'static str, &'static str)>| {
        let admin = admin.clone();
        let csrf = csrf.clone();
        let url = app.url(path);
        async move {
            let mut form: Vec<(&str, String)> =
                form.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
            form.push(("csrf_token", csrf));
            admin.post(url).form(&form).send().await.expect("POST")
        }
    };
    let r = post("/admin/stages", vec![("id", "Not An Id"), ("label", "X")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("value=\"Not An Id\"")
    );
    let r = post("/admin/stages", vec![("id", "spring"), ("label", " ")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post("/admin/stages", vec![("id", "spring"), ("label", "Spring")]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post("/admin/stages", vec![("id", "spring"), ("label", "Again")]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let labels: Vec<String> = sqlx::query_scalar("SELECT label FROM stage WHERE id <> 'live'")
        .fetch_all(&app.state.db)
        .await
        .expect("stages");
    assert_eq!(labels, ["Spring"]);

    let r = post(
        "/admin/structure/types",
        vec![("type", "Bad Name"), ("label", "X")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post(
        "/admin/structure/types",
        vec![("type", "article"), ("label", "Again")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = post(
        "/admin/structure/types",
        vec![("type", "page"), ("label", "Page")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/admin/structure/types/page?notice=created"
    );
    // A field added to a type through its form.
    let r = post(
        "/admin/structure/types/page",
        vec![
            ("label", "Page"),
            ("has_title", "1"),
            ("new.label", "Summary"),
            ("new.kind", "text"),
            ("new.cardinality", "1"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let t: Value = app
        .json_request(reqwest::Method::GET, "/api/item-types/page")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(t["fields"][0]["name"], "field_summary");
    // A kind the article's existing body values would fail is refused.
    let r = post(
        "/admin/structure/types/article",
        vec![
            ("label", "Article"),
            ("has_title", "1"),
            ("f.0.name", "field_body"),
            ("f.0.label", "Body"),
            ("f.0.kind", "integer"),
            ("f.0.cardinality", "1"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("field_body (1 item)")
    );
    let t: Value = app
        .json_request(reqwest::Method::GET, "/api/item-types/article")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(t["fields"][0]["kind"], "text", "nothing changed");
    assert_eq!(t["fields"].as_array().map(Vec::len), Some(5));
    let r = post("/admin/structure/types/article/delete", vec![]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let still: i64 = sqlx::query_scalar("SELECT count(*) FROM item_type WHERE type = 'article'")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(still, 1);
    let r = admin
        .get(app.url("/admin/structure/types/nosuch"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "item_type_not_found").await;
}

#[tokio::test]
async fn html_routes_answer_html_error_pages_and_json_routes_keep_json() {
    let extra = axum::Router::new().route(
        "/test/html-panic",
        axum::routing::get(|| async {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 1;
            format!("{}", v[i])
        }),
    );
    let app = TestApp::spawn_with(|_| {}, extra).await;
    let browser = crate::harness::client();
    let get =
        |path: &str, accept: &'static str| browser.get(app.url(path)).header(ACCEPT, accept).send();
    let r = get(&format!("/item/{}", Uuid::now_v7()), HTML)
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    let page = r.text().await.expect("html");
    assert!(page.contains("Page not found"), "{page}");
    let r = get("/no/such/page", HTML).await.expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("<h1>Page not found</h1>")
    );
    let r = get("/test/html-panic", HTML).await.expect("GET");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = r.text().await.expect("html");
    assert!(page.contains("Something went wrong"), "{page}");
    assert!(!page.contains("index out of bounds"), "{page}");
    // Without `access content`, anonymous visitors are asked to log in.
    sqlx::query("DELETE FROM role_permission WHERE role = 'anonymous'")
        .execute(&app.state.db)
        .await
        .expect("revoke");
    app.state.permissions.invalidate_all();
    let r = get(&format!("/item/{}", Uuid::now_v7()), HTML)
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let page = r.text().await.expect("html");
    assert!(
        page.contains("Please log in") && page.contains("id=\"login\""),
        "{page}"
    );
    // JSON routes, and clients that do not ask for HTML, keep JSON.
    let r = get("/api/items/nope", HTML).await.expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = get("/no/such/page", "application/json").await.expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_front_page_lists_promoted_items_first_then_the_newest_under_the_site_name() {
    let app = TestApp::spawn_with(
        |c| {
            c.site.name = "The Gazette".into();
            c.site.front_page_items = 2;
        },
        axum::Router::new(),
    )
    .await;
    app.sign_in_as_admin().await;
    app.create_article_type().await;
    for (title, promote) in [("Old promoted", true), ("Newer", false), ("Newest", false)] {
        let r = app
            .post_item(
                json!({"type": "article", "title": title, "promote": promote,
                       "fields": {"field_body": {"value": "x"}}}),
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let anonymous = crate::harness::client();
    let first = anonymous
        .get(app.url("/"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(first.contains("<title>The Gazette</title>"), "{first}");
    let promoted = first.find("Old promoted").expect("promoted first");
    let newest = first.find("Newest").expect("newest");
    assert!(promoted < newest, "{first}");
    assert!(!first.contains(">Newer<"), "two per page: {first}");
    assert!(first.contains("Page 1 of 2"), "{first}");
    let second = anonymous
        .get(app.url("/?page=2"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(second.contains(">Newer<"), "{second}");
    let r = anonymous
        .get(app.url("/?page=0"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = anonymous
        .get(app.url("/?page=x"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::BAD_REQUEST, "invalid_query").await;
}

/// Posts an urlencoded page form with the session's token.
async fn post_form(
    client: &Client,
    url: String,
    csrf: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form: Vec<(&str, &str)> = vec![("csrf_token", csrf)];
    form.extend_from_slice(fields);
    client.post(url).form(&form).send().await.expect("POST")
}

#[tokio::test]
async fn the_people_and_roles_pages_create_block_and_grant_through_the_user_operations() {
    let app = TestApp::spawn_with_articles().await;
    let (admin, csrf) = app.browser_for("admin").await;
    let r = post_form(
        &admin,
        app.url("/admin/people"),
        &csrf,
        &[
            ("name", "Marta"),
            ("email", "marta@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let marta = trovato::user::find_by_name(&app.state.db, "Marta")
        .await
        .expect("find")
        .expect("created");
    let r = post_form(
        &admin,
        app.url("/admin/people"),
        &csrf,
        &[
            ("name", "marta"),
            ("email", "other@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let page = r.text().await.expect("html");
    assert!(page.contains("value=\"other@example.com\""), "kept: {page}");
    let r = post_form(
        &admin,
        app.url("/admin/people"),
        &csrf,
        &[
            ("name", "Nils"),
            ("email", "nils@example.com"),
            ("password", "short"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        trovato::user::find_by_name(&app.state.db, "Nils")
            .await
            .expect("find")
            .is_none()
    );

    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/block", marta.id)),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.headers()["location"], "/admin/people?notice=blocked");
    let status: i16 = sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
        .bind(marta.id)
        .fetch_one(&app.state.db)
        .await
        .expect("status");
    assert_eq!(status, 0);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/unblock", marta.id)),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let admin_id = trovato::user::find_by_name(&app.state.db, "admin")
        .await
        .expect("find")
        .expect("admin")
        .id;
    // The last administrator is not blocked; the page says why.
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{admin_id}/block")),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/block", Uuid::now_v7())),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A role, its permissions in the grid, and Marta holding it.
    let r = post_form(
        &admin,
        app.url("/admin/roles/new"),
        &csrf,
        &[("name", "editor"), ("label", "Editor")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_form(
        &admin,
        app.url("/admin/roles/new"),
        &csrf,
        &[("name", "Bad Name"), ("label", "X")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post_form(
        &admin,
        app.url("/admin/roles"),
        &csrf,
        &[
            ("anonymous", "access content"),
            ("authenticated", "access content"),
            ("editor", "create content"),
            ("editor", "edit own content"),
        ],
    )
    .await;
    assert_eq!(
        r.headers()["location"],
        "/admin/roles?notice=permissions_saved"
    );
    let granted: Vec<String> = sqlx::query_scalar(
        "SELECT permission FROM role_permission WHERE role = 'editor' ORDER BY permission",
    )
    .fetch_all(&app.state.db)
    .await
    .expect("grants");
    assert_eq!(granted, ["create content", "edit own content"]);
    let r = post_form(
        &admin,
        app.url("/admin/roles"),
        &csrf,
        &[("editor", "rule the world")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let still: i64 =
        sqlx::query_scalar("SELECT count(*) FROM role_permission WHERE role = 'editor'")
            .fetch_one(&app.state.db)
            .await
            .expect("count");
    assert_eq!(still, 2, "a refused grid changes nothing");
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/roles", marta.id)),
        &csrf,
        &[("roles", "editor")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let roles = trovato::user::roles_of(&app.state.db, marta.id)
        .await
        .expect("roles");
    assert_eq!(roles, ["editor"]);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/roles", marta.id)),
        &csrf,
        &[("roles", "nosuch")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = admin
        .get(app.url("/admin/roles"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("name=\"editor\" value=\"create content\" checked"),
        "{page}"
    );

    // A new password, shown once; a deletion handing the items on.
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/password", marta.id)),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("html");
    let shown = page
        .split("New password for Marta: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("the password on the page")
        .to_owned();
    assert_eq!(app.login("Marta", &shown).await.status(), StatusCode::OK);
    let doomed = app.create_user("doomed", PASSWORD, false).await;
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/delete", doomed.id)),
        &csrf,
        &[("reassign_to", "nobody")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/people/{}/delete", doomed.id)),
        &csrf,
        &[("reassign_to", "")],
    )
    .await;
    assert_eq!(r.headers()["location"], "/admin/people?notice=deleted");
    assert!(
        trovato::user::find_by_id(&app.state.db, doomed.id)
            .await
            .expect("find")
            .is_none()
    );
    // Back to the admin session for what follows.
    assert_eq!(app.login("admin", PASSWORD).await.status(), StatusCode::OK);

    // An editor sees Content, not People or Roles.
    let marta_client = crate::harness::client();
    let r = marta_client
        .post(app.url("/user/login"))
        .json(&json!({"name": "Marta", "password": shown}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/admin/people", "/admin/roles"] {
        let r = marta_client.get(app.url(path)).send().await.expect("GET");
        error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let overview = marta_client
        .get(app.url("/admin"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(overview.contains(">Content</a>"), "{overview}");
    assert!(!overview.contains(">People</a>"), "{overview}");
}

#[tokio::test]
async fn the_category_page_keeps_terms_in_a_tree_by_parent_and_weight() {
    let app = TestApp::spawn_with_articles().await;
    let (admin, csrf) = app.browser_for("admin").await;
    let r = post_form(
        &admin,
        app.url("/admin/structure/categories"),
        &csrf,
        &[("id", "food"), ("label", "Food")],
    )
    .await;
    assert_eq!(
        r.headers()["location"],
        "/admin/structure/categories/food?notice=created"
    );
    for (fields, status) in [
        (
            vec![("id", "food"), ("label", "Again")],
            StatusCode::CONFLICT,
        ),
        (
            vec![("id", "Bad Id"), ("label", "X")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            vec![("id", "drinks"), ("label", " ")],
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let r = post_form(
            &admin,
            app.url("/admin/structure/categories"),
            &csrf,
            &fields,
        )
        .await;
        assert_eq!(r.status(), status, "{fields:?}");
    }
    let db = app.state.db.clone();
    let term = |name: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (Uuid, Option<Uuid>, i32)>(
                "SELECT id, parent, weight FROM category_tag WHERE name = $1",
            )
            .bind(name)
            .fetch_one(&db)
            .await
            .expect("term")
        }
    };
    let add = |fields: Vec<(&'static str, String)>| {
        let admin = admin.clone();
        let csrf = csrf.clone();
        let url = app.url("/admin/structure/categories/food/terms");
        async move {
            let mut form: Vec<(&str, String)> = vec![("csrf_token", csrf)];
            form.extend(fields);
            admin.post(url).form(&form).send().await.expect("POST")
        }
    };
    assert_eq!(
        add(vec![("name", "Fruit".into())]).await.status(),
        StatusCode::SEE_OTHER
    );
    let (fruit, _, _) = term("Fruit").await;
    let r = add(vec![
        ("name", "Apple".into()),
        ("parent", fruit.to_string()),
        ("weight", "2".into()),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (apple, parent, weight) = term("Apple").await;
    assert_eq!((parent, weight), (Some(fruit), 2));
    assert_eq!(
        add(vec![("name", " ".into())]).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        add(vec![("name", "Pear".into()), ("weight", "heavy".into())])
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let page = admin
        .get(app.url("/admin/structure/categories/food"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    let f = page.find("id=\"term-").expect("a term");
    assert!(page[f..].contains("depth-1"), "Apple under Fruit: {page}");

    // Moving, reweighting; a term with children is not deleted.
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{apple}")),
        &csrf,
        &[("name", "Apple"), ("parent", ""), ("weight", "-1")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(term("Apple").await.1, None);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{fruit}")),
        &csrf,
        &[("name", "Fruit"), ("parent", &fruit.to_string())],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "its own parent"
    );
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{apple}")),
        &csrf,
        &[("name", "Apple"), ("parent", &fruit.to_string())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{fruit}/delete")),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{apple}/delete")),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM category_tag")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(left, 1);
    let r = admin
        .get(app.url("/admin/structure/categories/nosuch"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::NOT_FOUND, "category_not_found").await;
    let r = post_form(
        &admin,
        app.url(&format!("/admin/structure/terms/{}", Uuid::now_v7())),
        &csrf,
        &[("name", "x")],
    )
    .await;
    error_body(r, StatusCode::NOT_FOUND, "term_not_found").await;
}

#[tokio::test]
async fn the_plugins_page_shows_load_errors_and_enables_and_disables() {
    let app = TestApp::spawn_with_articles_and_a_plugin().await;
    let (admin, csrf) = app.browser_for("admin").await;
    let page = admin
        .get(app.url("/admin/plugins"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains("no_alloc") && page.contains("state-failed"),
        "{page}"
    );
    assert!(
        page.contains("trovato_alloc"),
        "the load error is shown: {page}"
    );
    let r = post_form(
        &admin,
        app.url("/admin/plugins/no_alloc/disable"),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.headers()["location"], "/admin/plugins?notice=disabled");
    let enabled: bool =
        sqlx::query_scalar("SELECT enabled FROM plugin_status WHERE name = 'no_alloc'")
            .fetch_one(&app.state.db)
            .await
            .expect("row");
    assert!(!enabled);
    let r = post_form(
        &admin,
        app.url("/admin/plugins/no_alloc/enable"),
        &csrf,
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = post_form(&admin, app.url("/admin/plugins/nosuch/enable"), &csrf, &[]).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    app.create_user("reader", PASSWORD, false).await;
    let (reader, reader_csrf) = app.browser_for("reader").await;
    let r = reader
        .get(app.url("/admin/plugins"))
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = post_form(
        &reader,
        app.url("/admin/plugins/no_alloc/disable"),
        &reader_csrf,
        &[],
    )
    .await;
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn the_item_form_route_bounds_a_body_that_is_not_multipart_like_any_other() {
    let app = TestApp::spawn_with(|c| c.server.max_body_bytes = 4096, axum::Router::new()).await;
    app.sign_in_as_admin().await;
    app.create_article_type().await;
    let (admin, csrf) = app.browser_for("admin").await;
    let big = "x".repeat(64 * 1024);
    let r = admin
        .post(app.url("/admin/content/new/article"))
        .form(&[("csrf_token", csrf.as_str()), ("title", big.as_str())])
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // A multipart form of the same size is the form's own to bound.
    let r = send_item_form(
        &admin,
        &app.url("/admin/content/new/article"),
        &csrf,
        &[
            ("title", "Big body"),
            ("v.field_body.0", "short"),
            ("op", "save"),
        ],
        &[Part::text("padding", &big)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

/// `GET /admin/content/references` as the form's script asks it.
async fn candidates(client: &Client, app: &TestApp, query: &str) -> reqwest::Response {
    client
        .get(app.url(&format!("/admin/content/references?{query}")))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .expect("GET references")
}

fn labels(v: &Value) -> Vec<String> {
    v["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["label"].as_str().expect("label").to_owned())
        .collect()
}

#[tokio::test]
async fn the_reference_search_offers_bounded_visible_candidates_and_the_form_resolves_exact_names()
{
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .create_item_type(
            "note",
            json!([
                {"name": "field_related", "label": "Related", "kind": "reference", "target": "item", "cardinality": 0},
                {"name": "field_editor", "label": "Editor", "kind": "reference", "target": "user"},
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for n in 1..=25 {
        make_term(&app, &format!("Topic {n:02}")).await;
    }
    let bold = make_term(&app, "<b>Bold</b> & co").await;
    let (admin, _) = app.browser_for("admin").await;

    // Bounded, best first: the exact name, then those starting with the text.
    let r = candidates(&admin, &app, "target=term&q=topic").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.expect("json");
    let listed = labels(&v);
    assert_eq!(listed.len(), 20, "{v}");
    assert_eq!(listed[0], "Topic 01");
    assert_eq!(v["more"], json!(true));
    assert_eq!(v["candidates"][0]["detail"], json!("Tags"));
    let v: Value = candidates(&admin, &app, "target=term&q=TOPIC%202")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        labels(&v),
        [
            "Topic 20", "Topic 21", "Topic 22", "Topic 23", "Topic 24", "Topic 25"
        ]
    );
    assert_eq!(v["more"], json!(false));
    let v: Value = candidates(&admin, &app, "target=term&q=pic%2012")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(labels(&v), ["Topic 12"], "the text may be anywhere");
    // Names come back as they are, for the script to set as text.
    let v: Value = candidates(&admin, &app, "target=term&q=%3Cb%3E")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        v["candidates"],
        json!([{"id": bold, "label": "<b>Bold</b> & co", "detail": "Tags"}])
    );
    let v: Value = candidates(&admin, &app, "target=term&q=%20%20")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        v,
        json!({"candidates": [], "more": false}),
        "blank: nothing"
    );

    // Refusals: a bad target, an over-long text, no account, no permission.
    let r = candidates(&admin, &app, "target=file&q=x").await;
    error_body(r, StatusCode::BAD_REQUEST, "invalid_query").await;
    let r = candidates(&admin, &app, "q=x").await;
    error_body(r, StatusCode::BAD_REQUEST, "invalid_query").await;
    let long = "x".repeat(256);
    let r = candidates(&admin, &app, &format!("target=term&q={long}")).await;
    error_body(r, StatusCode::BAD_REQUEST, "bad_query").await;
    let anonymous = crate::harness::client();
    let r = anonymous
        .get(app.url("/admin/content/references?target=term&q=topic"))
        .header(ACCEPT, HTML)
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.create_user("reader", PASSWORD, false).await;
    let (reader, _) = app.browser_for("reader").await;
    let r = candidates(&reader, &app, "target=user&q=a").await;
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;

    // Items: only those the account may see.
    let twin_a = app.create_item("Twin", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let twin_b = app.create_item("Twin", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let r = app
        .post_item(
            json!({"type": "article", "title": "Secret draft", "status": "unpublished",
                   "fields": {"field_body": {"value": "text"}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.create_user("writer", PASSWORD, false).await;
    app.grant_authenticated("create content").await;
    app.state.permissions.invalidate_all();
    let (writer, writer_csrf) = app.browser_for("writer").await;
    let v: Value = candidates(&admin, &app, "target=item&q=secret")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(labels(&v), ["Secret draft"]);
    assert_eq!(v["candidates"][0]["detail"], json!("ARTICLE, unpublished"));
    let v: Value = candidates(&writer, &app, "target=item&q=secret")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(labels(&v), Vec::<String>::new(), "not the writer's to see");
    let v: Value = candidates(&writer, &app, "target=item&q=twin")
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = v["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [twin_a.as_str(), twin_b.as_str()]);
    let v: Value = candidates(&writer, &app, "target=user&q=WRI")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(labels(&v), ["writer"]);

    // Without the script: the exact title or name, or an id, on save.
    let form = |related: &'static str| {
        vec![
            ("title", "A note"),
            ("v.field_related.0", related),
            ("id.field_related.0", ""),
            ("v.field_editor.0", "Writer"),
            ("id.field_editor.0", ""),
            ("op", "save"),
        ]
    };
    let url = app.url("/admin/content/new/note");
    for (typed, error) in [
        ("twin", "more than one item titled “twin”"),
        ("No such thing", "no item titled “No such thing”"),
        ("Secret draft", "no item titled “Secret draft”"),
    ] {
        let r = send_item_form(&writer, &url, &writer_csrf, &form(typed), &[]).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{typed}");
        let page = r.text().await.expect("html");
        let field = page.find("id=\"field-field_related\"").expect("field");
        let shown = page[field..].find(error).map(|at| at + field);
        assert!(shown.is_some(), "{error} next to its field: {page}");
        assert!(
            page.contains(&format!("value=\"{typed}\"")),
            "the typed text is kept: {page}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM item WHERE type = 'note'")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(count, 0, "nothing was written");
    let twin_b_text = twin_b.clone();
    let r = send_item_form(
        &writer,
        &url,
        &writer_csrf,
        &[
            ("title", "A note"),
            ("v.field_related.0", twin_b_text.as_str()),
            ("id.field_related.0", ""),
            ("v.field_editor.0", "Writer"),
            ("id.field_editor.0", ""),
            ("op", "save"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, fields, _, _) = item_row(&app, id_from_location(&r)).await.expect("row");
    let writer_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'writer'")
        .fetch_one(&app.state.db)
        .await
        .expect("writer");
    assert_eq!(
        fields,
        json!({
            "field_related": [{"target_id": twin_b}],
            "field_editor": {"target_id": writer_id.to_string()},
        })
    );
}

/// An anonymous visitor's view of `path`, as a page.
async fn anonymous_html(app: &TestApp, path: &str) -> (StatusCode, String) {
    let r = crate::harness::client()
        .get(app.url(path))
        .header(ACCEPT, HTML)
        .send()
        .await
        .expect("GET");
    let status = r.status();
    (status, r.text().await.expect("html"))
}

/// Creates a published article tagged with `terms`; returns its id.
async fn tagged(app: &TestApp, title: &str, terms: &[&str], status: &str) -> String {
    let tags: Vec<Value> = terms.iter().map(|t| json!({"target_id": t})).collect();
    let r = app
        .post_item(
            json!({"type": "article", "title": title, "status": status,
                   "fields": {"field_body": {"value": "text"}, "field_tags": tags}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.expect("item");
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_term_page_lists_the_published_live_items_using_it_and_follows_saves_and_renames() {
    let app = TestApp::spawn_with_articles().await;
    let rust = make_term(&app, "Rust").await;
    let go = make_term(&app, "Go").await;
    let alpha = tagged(&app, "Alpha", &[&rust], "published").await;
    let beta = tagged(&app, "Beta", &[&go, &rust], "published").await;
    tagged(&app, "Gamma draft", &[&rust], "unpublished").await;
    let delta = tagged(&app, "Delta", &[&go], "published").await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let r = app
        .post_item(
            json!({"type": "article", "title": "Epsilon in a stage",
                   "fields": {"field_body": {"value": "text"}, "field_tags": [{"target_id": rust}]}}),
            Some("draft"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let path = format!("/term/{rust}");
    let (status, page) = anonymous_html(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    for needle in ["<h1>Rust</h1>", "Tags · 2 items", ">Alpha</a>", ">Beta</a>"] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    for absent in ["Gamma", "Delta", "Epsilon"] {
        assert!(!page.contains(absent), "{absent}: {page}");
    }
    assert!(
        page.find(">Beta</a>") < page.find(">Alpha</a>"),
        "newest first: {page}"
    );
    // Served from the cache: a change that bypasses the write path (and
    // so invalidates nothing) does not show.
    sqlx::query("UPDATE item SET title = 'Alpha unseen' WHERE id = $1::uuid")
        .bind(&alpha)
        .execute(&app.state.db)
        .await
        .expect("direct update");
    let (_, again) = anonymous_html(&app, &path).await;
    assert!(again.contains(">Alpha</a>"), "{again}");
    // Item pages link their terms here.
    let (_, item_page) = anonymous_html(&app, &format!("/item/{alpha}")).await;
    // (minijinja writes the slashes of an attribute as `&#x2f;`.)
    assert!(
        item_page.contains(&format!("<a href=\"&#x2f;term&#x2f;{rust}\">Rust</a>")),
        "{item_page}"
    );

    // The cached list follows item saves and the term's rename.
    let r = app
        .update_item(
            &delta,
            json!({"fields": {"field_body": {"value": "text"}, "field_tags": [{"target_id": go}, {"target_id": rust}]}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.rename_item(&alpha, "Alpha, renamed", None).await;
    let r = app
        .update_item(&beta, json!({"status": "unpublished"}), None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .json_request(reqwest::Method::PUT, &format!("/api/terms/{rust}"))
        .json(&json!({"name": "Rust lang"}))
        .send()
        .await
        .expect("rename term");
    assert_eq!(r.status(), StatusCode::OK);
    let (_, page) = anonymous_html(&app, &path).await;
    for needle in [
        "<h1>Rust lang</h1>",
        ">Delta</a>",
        ">Alpha, renamed</a>",
        "2 items",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    assert!(
        !page.contains("Beta"),
        "unpublished leaves the list: {page}"
    );

    // Paged: 20 a page, the oldest on the last.
    for n in 0..20 {
        tagged(&app, &format!("Later {n:02}"), &[&rust], "published").await;
    }
    let (_, first) = anonymous_html(&app, &path).await;
    assert!(
        first.contains("22 items") && first.contains("Page 1 of 2"),
        "{first}"
    );
    assert!(first.contains(">Later 19</a>") && !first.contains(">Delta</a>"));
    let (status, second) = anonymous_html(&app, &format!("{path}?page=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        second.contains(">Alpha, renamed</a>") && second.contains(">Delta</a>"),
        "{second}"
    );
    assert!(!second.contains(">Later 00</a>"), "{second}");

    // An unknown term is an HTML 404; a bad page is refused.
    for missing in [format!("/term/{}", Uuid::now_v7()), "/term/rust".to_owned()] {
        let (status, page) = anonymous_html(&app, &missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert!(page.contains("Page not found"), "{page}");
    }
    let (status, _) = anonymous_html(&app, &format!("{path}?page=0")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Deleting the term is refused while items use it; the page stays.
    let r = app
        .json_request(reqwest::Method::DELETE, &format!("/api/terms/{go}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_person_page_renames_readdresses_and_revokes_tokens_and_cached_pages_show_the_new_name()
{
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .create_item_type(
            "note",
            json!([{"name": "field_editor", "label": "Editor", "kind": "reference", "target": "user"}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let vera = app.create_user("vera", PASSWORD, false).await;
    app.grant_authenticated("create content").await;
    app.state.permissions.invalidate_all();
    // An article by vera, and a note by the admin naming her as its editor.
    let (as_vera, vera_csrf) = app.browser_for("vera").await;
    let r = as_vera
        .post(app.url("/api/items"))
        .header("x-csrf-token", &vera_csrf)
        .json(&json!({"type": "article", "title": "By Vera", "fields": {"field_body": {"value": "text"}}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let article: Value = r.json().await.expect("item");
    let article = article["id"].as_str().expect("id").to_owned();
    let r = app
        .post_item(
            json!({"type": "note", "title": "Edited by Vera",
                   "fields": {"field_editor": {"target_id": vera.id}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let note: Value = r.json().await.expect("item");
    let note = note["id"].as_str().expect("id").to_owned();
    let (_, page) = anonymous_html(&app, &format!("/item/{article}")).await;
    assert!(
        page.contains("by <span class=\"author\">vera</span>"),
        "{page}"
    );
    let (_, page) = anonymous_html(&app, &format!("/item/{note}")).await;
    assert!(page.contains("<dd>vera</dd>"), "{page}");
    let ci = trovato::user::token::create(&app.state.db, vera.id, "ci")
        .await
        .expect("token");
    trovato::user::token::create(&app.state.db, vera.id, "laptop")
        .await
        .expect("token");

    let (admin, csrf) = app.browser_for("admin").await;
    let person = format!("/admin/people/{}", vera.id);
    let r = admin.get(app.url(&person)).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("html");
    for needle in [
        "value=\"vera\"",
        "value=\"vera@example.com\"",
        "<td>ci</td>",
        "<td>laptop</td>",
        "never",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    let people = admin
        .get(app.url("/admin/people"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(
        people.contains(&format!("href=\"/admin/people/{}\">vera</a>", vera.id)),
        "the list links the person page: {people}"
    );

    // Refusals keep what was typed and change nothing.
    for (name, email, status, reason) in [
        ("admin", "vera@example.com", StatusCode::CONFLICT, "name"),
        (
            "Vera",
            "not an address",
            StatusCode::UNPROCESSABLE_ENTITY,
            "email",
        ),
        (
            "  ",
            "vera@example.com",
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
    ] {
        let r = post_form(
            &admin,
            app.url(&person),
            &csrf,
            &[("name", name), ("email", email)],
        )
        .await;
        assert_eq!(r.status(), status, "{name} / {email}");
        let page = r.text().await.expect("html");
        assert!(page.contains("class=\"notice error\""), "{page}");
        assert!(page.to_lowercase().contains(reason), "{reason}: {page}");
        assert!(
            page.contains(&format!("value=\"{}\"", email)),
            "the typed address is kept: {page}"
        );
    }
    let (name, email): (String, String) =
        sqlx::query_as("SELECT name, email FROM users WHERE id = $1")
            .bind(vera.id)
            .fetch_one(&app.state.db)
            .await
            .expect("user");
    assert_eq!(
        (name.as_str(), email.as_str()),
        ("vera", "vera@example.com")
    );
    let r = admin
        .post(app.url(&person))
        .form(&[("name", "Vera Lynn"), ("email", "vera@lynn.example")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");

    // The rename, through the user module's update.
    let r = post_form(
        &admin,
        app.url(&person),
        &csrf,
        &[("name", " Vera Lynn "), ("email", "vera@lynn.example")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(to, format!("{person}?notice=account_saved"));
    let (name, email): (String, String) =
        sqlx::query_as("SELECT name, email FROM users WHERE id = $1")
            .bind(vera.id)
            .fetch_one(&app.state.db)
            .await
            .expect("user");
    assert_eq!(
        (name.as_str(), email.as_str()),
        ("Vera Lynn", "vera@lynn.example")
    );
    let page = admin
        .get(app.url(&to))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(page.contains("The account was saved."), "{page}");
    // The cached pages showing her name follow.
    let (_, page) = anonymous_html(&app, &format!("/item/{article}")).await;
    assert!(
        page.contains("by <span class=\"author\">Vera Lynn</span>"),
        "{page}"
    );
    let (_, page) = anonymous_html(&app, &format!("/item/{note}")).await;
    assert!(page.contains("<dd>Vera Lynn</dd>"), "{page}");

    // Revoking a token: it signs nobody in; the other stays.
    let token_of = |label: &'static str| {
        let db = app.state.db.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM api_token WHERE label = $1")
                .bind(label)
                .fetch_optional(&db)
                .await
                .expect("token row")
        }
    };
    let ci_id = token_of("ci").await.expect("ci");
    let revoke = format!("{person}/tokens/{ci_id}/revoke");
    let r = post_form(&admin, app.url(&revoke), &csrf, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        format!("{person}?notice=token_revoked").as_str()
    );
    assert_eq!(token_of("ci").await, None);
    assert!(token_of("laptop").await.is_some());
    let r = crate::harness::client()
        .get(app.url("/user/me"))
        .bearer_auth(&ci)
        .send()
        .await
        .expect("GET");
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the revoked token is refused"
    );
    let page = admin
        .get(app.url(&person))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    assert!(!page.contains("<td>ci</td>") && page.contains("<td>laptop</td>"));
    for path in [revoke.clone(), format!("{person}/tokens/nope/revoke")] {
        let r = admin
            .post(app.url(&path))
            .header(ACCEPT, HTML)
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Who may: a user manager is not an administrator, so not the admin's
    // account; anonymous visitors go to the login form.
    app.create_user("manager", PASSWORD, false).await;
    app.grant_authenticated("administer users").await;
    app.state.permissions.invalidate_all();
    let (manager, manager_csrf) = app.browser_for("manager").await;
    let admin_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'admin'")
        .fetch_one(&app.state.db)
        .await
        .expect("admin");
    let theirs = format!("/admin/people/{admin_id}");
    let r = manager.get(app.url(&theirs)).send().await.expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = post_form(
        &manager,
        app.url(&theirs),
        &manager_csrf,
        &[("name", "taken over"), ("email", "x@example.com")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = manager.get(app.url(&person)).send().await.expect("GET");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "others' accounts are theirs to manage"
    );
    let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
        .bind(admin_id)
        .fetch_one(&app.state.db)
        .await
        .expect("admin");
    assert_eq!(name, "admin");
    let r = crate::harness::client()
        .get(app.url(&person))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = admin
        .get(app.url(&format!("/admin/people/{}", Uuid::now_v7())))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Every `(role, permission)` granted, in order.
async fn grants(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT role, permission FROM role_permission ORDER BY role, permission")
        .fetch_all(&app.state.db)
        .await
        .expect("grants")
}

#[tokio::test]
async fn the_permission_grid_saves_every_role_or_none() {
    let app = TestApp::spawn_with_articles().await;
    let (admin, csrf) = app.browser_for("admin").await;
    let r = post_form(
        &admin,
        app.url("/admin/roles/new"),
        &csrf,
        &[("name", "zz_last"), ("label", "Last")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let before = grants(&app).await;
    // The grid as saved: every role's current grants, plus `upload files`
    // for authenticated users (saved before `zz_last`) and a first grant
    // for `zz_last`, which the database is made to refuse.
    let mut grid: Vec<(String, String)> = before.clone();
    grid.push(("authenticated".into(), "upload files".into()));
    grid.push(("zz_last".into(), "access content".into()));
    let send = |grid: Vec<(String, String)>| {
        let admin = admin.clone();
        let url = app.url("/admin/roles");
        let csrf = csrf.clone();
        async move {
            let mut form = vec![("csrf_token".to_owned(), csrf)];
            form.extend(grid);
            admin
                .post(url)
                .header(ACCEPT, HTML)
                .form(&form)
                .send()
                .await
                .expect("POST")
        }
    };
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_zz_last() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.role = 'zz_last' THEN RAISE EXCEPTION 'refused for the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_zz_last BEFORE INSERT ON role_permission
             FOR EACH ROW EXECUTE FUNCTION refuse_zz_last();",
    )
    .execute(&app.state.db)
    .await
    .expect("trigger");
    let r = send(grid.clone()).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(grants(&app).await, before, "no role changed");

    // A permission nobody declares is refused before anything is written.
    let mut unknown = grid.clone();
    unknown.push(("authenticated".into(), "fly".into()));
    let r = send(unknown).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.expect("html");
    assert!(page.contains("fly"), "{page}");
    assert_eq!(grants(&app).await, before);

    // Without the fault the same grid saves, every role.
    sqlx::raw_sql("DROP TRIGGER refuse_zz_last ON role_permission")
        .execute(&app.state.db)
        .await
        .expect("drop trigger");
    let r = send(grid.clone()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut expected = grid;
    expected.sort();
    assert_eq!(grants(&app).await, expected);
}
