//! A site team runs the site in a real headless Chromium, logged in
//! through the real login form: a type with several field kinds, an item
//! with a term and an uploaded image, an edit in a stage that live does not
//! see until the stage is published. And an account without permissions
//! sees no admin sections and gets 403 pages.

use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::files::PNG;
use crate::harness::browser::Browser;
use crate::harness::content::PASSWORD;
use crate::harness::{PATIENCE, TestApp, eventually};

async fn fill(c: &Client, css: &str, text: &str) {
    let el = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    el.clear().await.expect("clear");
    el.send_keys(text).await.expect("type");
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// Clicks a form's submit button and waits until the browser has replaced
/// the page, so what follows reads the answer, not the form (whose notice
/// may already say the same thing).
async fn submit(c: &Client, css: &str) {
    let before = c.find(Locator::Css("html")).await.expect("the page");
    click(c, css).await;
    // The old page's root goes stale once the next page has loaded.
    let replaced = eventually(PATIENCE, || async { before.tag_name().await.is_err() }).await;
    assert!(replaced.is_some(), "submitting {css} never loaded a page");
}

async fn choose(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("{css} = {value}: {e}"));
}

/// Waits for the page after a form post to show `expected` as its
/// notice (the page before it may still be showing an older one).
async fn expect_notice(c: &Client, expected: &str) {
    let shown = eventually(PATIENCE, || async {
        match c.find(Locator::Css("p.notice")).await {
            Ok(el) => el.text().await.is_ok_and(|t| t == expected),
            Err(_) => false,
        }
    })
    .await;
    if shown.is_none() {
        let page = c.source().await.unwrap_or_default();
        panic!("no notice “{expected}” on {page}");
    }
}

/// Waits for the stage switcher to say `expected`.
async fn expect_stage_note(c: &Client, expected: &str) {
    let shown = eventually(PATIENCE, || async {
        match c.find(Locator::Css("#stage-note")).await {
            Ok(el) => el.text().await.is_ok_and(|t| t == expected),
            Err(_) => false,
        }
    })
    .await;
    assert!(shown.is_some(), "the switcher never said “{expected}”");
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .expect("text")
}

/// Adds one field through the type page's "Add a field" row.
async fn add_field(c: &Client, label: &str, kind: &str, values: &str, required: bool) {
    fill(c, "#new-label", label).await;
    choose(c, "#new-kind", kind).await;
    fill(c, "#new-card", values).await;
    if required {
        click(c, "#new-req").await;
    }
    submit(c, "form.type-form .actions button").await;
    expect_notice(c, "The item type was saved.").await;
}

async fn anonymous_page(app: &TestApp, path: &str) -> String {
    crate::harness::client()
        .get(app.url(path))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_team_builds_a_type_writes_an_item_edits_it_in_a_stage_and_publishes_it() {
    let app = TestApp::spawn().await;
    app.sign_in_as_admin().await;
    let r = app
        .json_request(reqwest::Method::POST, "/api/categories")
        .json(&json!({"id": "topics", "label": "Topics"}))
        .send()
        .await
        .expect("category");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .json_request(reqwest::Method::POST, "/api/categories/topics/terms")
        .json(&json!({"name": "Gardening"}))
        .send()
        .await
        .expect("term");
    let term: Value = r.json().await.expect("term");
    let image = std::env::temp_dir().join(format!("trovato-{}.png", Uuid::now_v7()));
    std::fs::write(&image, PNG).expect("image file");

    let browser = Browser::start().await;
    let base = app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    c.goto(&format!("{base}/admin")).await.expect("overview");
    browser.shots("admin-overview").await;

    // Structure: a type with text, integer, date, term reference and file fields.
    browser
        .open_admin_page(&base, "Types", "#new-type-label")
        .await;
    fill(c, "#new-type-label", "Story").await;
    fill(c, "#new-type-name", "story").await;
    submit(c, "form[action='/admin/structure/types'] button").await;
    expect_notice(c, "The item type was created; add its fields below.").await;
    add_field(c, "Body", "text", "1", true).await;
    add_field(c, "Rating", "integer", "1", false).await;
    add_field(c, "Published on", "date", "1", false).await;
    add_field(c, "Topics", "ref_term", "0", false).await;
    add_field(c, "Image", "file", "1", false).await;
    browser.shots("admin-type").await;
    c.goto(&format!("{base}/admin/structure/types"))
        .await
        .expect("types");
    browser.shots("admin-types").await;
    let defined: Value = app
        .json_request(reqwest::Method::GET, "/api/item-types/story")
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = defined["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "field_body",
            "field_rating",
            "field_published_on",
            "field_topics",
            "field_image"
        ]
    );

    // Content: the form refuses a missing body, keeping what was typed.
    browser.open_admin_page(&base, "Content", "p.create").await;
    browser.shots("admin-content-empty").await;
    c.find(Locator::LinkText("Story"))
        .await
        .expect("create link")
        .click()
        .await
        .expect("click");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("form.item-form"))
        .await
        .expect("form");
    browser.shots("admin-item-new").await;
    fill(c, "#title", "Tomatoes in May").await;
    fill(c, "input[name='v.field_rating.0']", "4").await;
    fill(c, "input[name='v.field_topics.0']", "Gardening").await;
    c.execute(
        "document.querySelector(\"input[name='v.field_published_on.0']\").value = '2024-05-01'",
        vec![],
    )
    .await
    .expect("date");
    c.find(Locator::Css("#upload-field_image"))
        .await
        .expect("file input")
        .send_keys(image.to_str().expect("path"))
        .await
        .expect("choose file");
    click(c, "form.item-form .actions:not(.top) button").await;
    let error = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("#field-field_body .field-error"))
        .await
        .expect("the body's error");
    assert_eq!(error.text().await.expect("text"), "is required");
    let kept = c
        .find(Locator::Css("#title"))
        .await
        .expect("title")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(kept.as_deref(), Some("Tomatoes in May"));
    assert!(
        text_of(c, "#field-field_image").await.contains(".png"),
        "the uploaded image is kept and shown"
    );
    browser.shots("admin-item-errors").await;
    fill(
        c,
        "input[name='v.field_body.0']",
        "Plant them out after the frost.",
    )
    .await;
    click(c, "#promote").await;
    submit(c, "form.item-form .actions:not(.top) button").await;
    expect_notice(c, "The item was created.").await;
    let url = c.current_url().await.expect("url");
    let id: Uuid = url
        .path()
        .trim_start_matches("/admin/content/")
        .trim_end_matches("/edit")
        .parse()
        .expect("item id in the URL");
    let (title, fields): (String, Value) =
        sqlx::query_as("SELECT title, fields FROM item WHERE id = $1")
            .bind(id)
            .fetch_one(&app.state.db)
            .await
            .expect("item row");
    assert_eq!(title, "Tomatoes in May");
    assert_eq!(fields["field_topics"], json!([{"target_id": term["id"]}]));
    assert_eq!(fields["field_rating"], json!({"value": 4}));
    assert!(fields["field_image"]["file_id"].is_string(), "{fields}");
    browser.shots("admin-item-edit").await;

    // The public pages.
    c.goto(&format!("{base}/item/{id}"))
        .await
        .expect("item page");
    browser.shots("item-page").await;
    c.find(Locator::LinkText("Gardening"))
        .await
        .expect("the term's link")
        .click()
        .await
        .expect("click");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("article.term"))
        .await
        .expect("the term page");
    assert_eq!(text_of(c, "h1").await, "Gardening");
    assert!(text_of(c, "ul.teasers").await.contains("Tomatoes in May"));
    browser.shots("term-page").await;
    let page = anonymous_page(&app, &format!("/item/{id}")).await;
    for needle in [
        "<dt>Topics</dt>",
        ">Gardening</a>",
        "1 May 2024",
        "<img src=",
    ] {
        assert!(page.contains(needle), "{needle}: {page}");
    }
    c.goto(&base).await.expect("front");
    assert!(text_of(c, "ul.teasers").await.contains("Tomatoes in May"));
    browser.shots("front-page").await;

    // Stages: create one, switch to it, edit the item there.
    browser.open_admin_page(&base, "Stages", "#new-label").await;
    fill(c, "#new-label", "Summer issue").await;
    fill(c, "#new-id", "summer").await;
    submit(c, "form[action='/admin/stages'] button").await;
    expect_notice(c, "The stage was created.").await;
    choose(c, "#working-stage", "summer").await;
    click(c, "form.switcher button").await;
    expect_stage_note(c, "Changes are saved in stage summer, not live.").await;
    c.goto(&format!("{base}/admin/content/{id}/edit"))
        .await
        .expect("edit");
    fill(c, "#title", "Tomatoes in June").await;
    fill(c, "#log", "later this year").await;
    submit(c, "form.item-form .actions:not(.top) button").await;
    expect_notice(c, "The item was saved.").await;
    assert!(
        text_of(c, "table.revisions").await.contains("summer"),
        "the revision names its stage"
    );
    browser.shots("admin-item-staged").await;
    let live: String = sqlx::query_scalar("SELECT title FROM item WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("title");
    assert_eq!(live, "Tomatoes in May", "live is unchanged");
    let page = anonymous_page(&app, &format!("/item/{id}")).await;
    assert!(page.contains("Tomatoes in May") && !page.contains("June"));

    // The stage page shows the change; publishing needs the confirmation.
    c.goto(&format!("{base}/admin/stages/summer"))
        .await
        .expect("stage");
    let diff = text_of(c, "table.diff").await;
    assert!(
        diff.contains("Tomatoes in May") && diff.contains("Tomatoes in June"),
        "{diff}"
    );
    browser.shots("admin-stage").await;
    click(c, "#confirm").await;
    submit(c, "form.publish button").await;
    expect_notice(c, "The stage was published: its changes are live.").await;
    let live: String = sqlx::query_scalar("SELECT title FROM item WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("title");
    assert_eq!(live, "Tomatoes in June");
    let page = anonymous_page(&app, &format!("/item/{id}")).await;
    assert!(page.contains("Tomatoes in June"), "{page}");
    c.goto(&format!("{base}/admin/stages"))
        .await
        .expect("stages");
    browser.shots("admin-stages").await;
    c.goto(&format!("{base}/admin/content"))
        .await
        .expect("content");
    browser.shots("admin-content").await;
    // Back in live, the listing offers the bulk actions.
    choose(c, "#working-stage", "live").await;
    click(c, "form.switcher button").await;
    expect_stage_note(c, "Changes go live at once.").await;
    assert!(c.find(Locator::Css("#bulk-action")).await.is_ok());
    browser.shots("admin-content-live").await;
    let _ = std::fs::remove_file(&image);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_permissions_sees_no_sections_and_gets_403_pages() {
    let app = TestApp::spawn().await;
    app.create_user("reader", PASSWORD, false).await;
    let browser = Browser::start().await;
    let base = app.url("");
    browser.log_in(&base, "reader", PASSWORD).await;
    let c = &browser.client;
    c.goto(&format!("{base}/admin")).await.expect("admin");
    let links = c
        .find_all(Locator::Css("nav.admin a"))
        .await
        .expect("links");
    assert_eq!(links.len(), 1, "only the overview");
    assert!(
        text_of(c, "main")
            .await
            .contains("Your account administers nothing here.")
    );
    assert!(c.find(Locator::Css("form.switcher")).await.is_err());
    for path in [
        "/admin/content",
        "/admin/stages",
        "/admin/structure/types",
        "/admin/files",
    ] {
        c.goto(&format!("{base}{path}")).await.expect("page");
        assert_eq!(text_of(c, "h1").await, "Access denied", "{path}");
        let login = c
            .find(Locator::Css("a#login"))
            .await
            .expect("a login link")
            .attr("href")
            .await
            .expect("href");
        assert_eq!(
            login.map(|l| l.replace("%2F", "/")),
            Some(format!("/user/login?destination={path}"))
        );
    }
    browser.shots("error-403").await;
    c.goto(&format!("{base}/admin")).await.expect("overview");
    browser.shots("admin-overview-reader").await;
    c.goto(&format!("{base}/item/{}", Uuid::now_v7()))
        .await
        .expect("missing");
    assert_eq!(text_of(c, "h1").await, "Page not found");
    browser.shots("error-404").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_roles_categories_and_plugins_are_run_from_their_pages() {
    let app = TestApp::spawn_with_articles_and_a_plugin().await;
    let browser = Browser::start().await;
    let base = app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;

    // Categories: a category and a tree of terms.
    browser
        .open_admin_page(&base, "Categories", "#cat-label")
        .await;
    fill(c, "#cat-label", "Topics").await;
    fill(c, "#cat-id", "topics").await;
    submit(c, "form[action='/admin/structure/categories'] button").await;
    expect_notice(c, "The category was created; add its terms below.").await;
    fill(c, "#term-name", "Garden").await;
    click(
        c,
        "form[action='/admin/structure/categories/topics/terms'] button",
    )
    .await;
    expect_notice(c, "The term was added.").await;
    fill(c, "#term-name", "Tomatoes").await;
    let garden: Uuid = sqlx::query_scalar("SELECT id FROM category_tag WHERE name = 'Garden'")
        .fetch_one(&app.state.db)
        .await
        .expect("garden");
    choose(c, "#term-parent", &garden.to_string()).await;
    click(
        c,
        "form[action='/admin/structure/categories/topics/terms'] button",
    )
    .await;
    expect_notice(c, "The term was added.").await;
    let parent: Option<Uuid> =
        sqlx::query_scalar("SELECT parent FROM category_tag WHERE name = 'Tomatoes'")
            .fetch_one(&app.state.db)
            .await
            .expect("tomatoes");
    assert_eq!(parent, Some(garden));
    assert!(c.find(Locator::Css("li.term.depth-1")).await.is_ok());
    // Each term links its public page.
    click(c, &format!("#term-{garden} a[href='/term/{garden}']")).await;
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("article.term"))
        .await
        .expect("the term page");
    assert_eq!(text_of(c, "h1").await, "Garden");
    assert!(
        text_of(c, "main")
            .await
            .contains("Nothing published uses this term yet.")
    );
    c.back().await.expect("back");
    browser.shots("admin-category").await;
    c.goto(&format!("{base}/admin/structure/categories"))
        .await
        .expect("categories");
    browser.shots("admin-categories").await;

    // People: a new user; Roles: a permission ticked in the grid.
    browser.open_admin_page(&base, "People", "#new-name").await;
    fill(c, "#new-name", "Rosa").await;
    fill(c, "#new-email", "rosa@example.com").await;
    fill(c, "#new-password", PASSWORD).await;
    submit(c, "form[method='post'][action='/admin/people'] button").await;
    expect_notice(c, "The user was created.").await;
    assert!(text_of(c, "main").await.contains("rosa@example.com"));
    browser.shots("admin-people").await;
    // Rosa's own page: a rename, and one of her API tokens revoked.
    let rosa: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE name = 'Rosa'")
        .fetch_one(&app.state.db)
        .await
        .expect("rosa");
    trovato::user::token::create(&app.state.db, rosa, "deploy")
        .await
        .expect("token");
    c.find(Locator::LinkText("Rosa"))
        .await
        .expect("the person link")
        .click()
        .await
        .expect("click");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("table.tokens"))
        .await
        .expect("the person page");
    fill(c, "#name", "Rosa Parks").await;
    submit(c, &format!("form[action='/admin/people/{rosa}'] button")).await;
    expect_notice(c, "The account was saved.").await;
    assert_eq!(text_of(c, "h1").await, "Rosa Parks");
    browser.shots("admin-person").await;
    submit(c, "table.tokens button").await;
    expect_notice(c, "The token was revoked: it signs nobody in any more.").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM api_token WHERE user_id = $1")
        .bind(rosa)
        .fetch_one(&app.state.db)
        .await
        .expect("tokens");
    assert_eq!(left, 0);
    browser.open_admin_page(&base, "Roles", "table.grid").await;
    click(c, "input[name='authenticated'][value='upload files']").await;
    submit(c, "form.grid-form > button").await;
    expect_notice(c, "The permissions were saved.").await;
    let granted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM role_permission WHERE role = 'authenticated' AND permission = 'upload files'",
    )
    .fetch_one(&app.state.db)
    .await
    .expect("grant");
    assert_eq!(granted, 1);
    browser.shots("admin-roles").await;

    // Plugins: the failed plugin with its error, disabled from the page.
    browser
        .open_admin_page(&base, "Plugins", "section.plugin")
        .await;
    assert!(text_of(c, "#plugin-no_alloc").await.contains("failed"));
    submit(c, "#plugin-no_alloc button").await;
    expect_notice(c, "The plugin was disabled: no tap is dispatched to it.").await;
    browser.shots("admin-plugins").await;
    browser.close().await;
}

/// The values and labels of the options a reference input's list offers.
async fn offered(c: &Client, input: &str) -> Vec<(String, String)> {
    let options = c
        .execute(
            "const list = document.querySelector(arguments[0]).list;
             return list ? Array.from(list.options).map(o => [o.value, o.label]) : [];",
            vec![json!(input)],
        )
        .await
        .expect("options");
    serde_json::from_value(options).expect("pairs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_field_suggests_matches_as_the_editor_types_and_keeps_the_chosen_one() {
    let app = TestApp::spawn_with_articles().await;
    let r = app
        .create_item_type(
            "note",
            json!([{"name": "field_related", "label": "Related", "kind": "reference", "target": "item", "cardinality": 0}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = app.create_item("Twin", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = app.create_item("Twin", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other = app.create_item("Other <things>", None).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let browser = Browser::start().await;
    let base = app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    c.goto(&format!("{base}/admin/content/new/note"))
        .await
        .expect("form");
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("form.item-form"))
        .await
        .expect("form");
    fill(c, "#title", "Linked").await;
    let input = "input[name='v.field_related.0']";
    fill(c, input, "twi").await;
    let listed = eventually(PATIENCE, || async { offered(c, input).await.len() == 2 }).await;
    assert!(
        listed.is_some(),
        "no suggestions: {:?}",
        offered(c, input).await
    );
    // Two items share the title: their options are told apart by id.
    assert_eq!(
        offered(c, input).await,
        [
            (first.clone(), "Twin (ARTICLE)".to_owned()),
            (second.clone(), "Twin (ARTICLE)".to_owned())
        ]
    );
    browser.shots("admin-item-reference").await;
    // Choosing an option puts its value in the input and fires `input`.
    c.execute(
        "const i = document.querySelector(arguments[0]);
         i.value = arguments[1];
         i.dispatchEvent(new Event('input', { bubbles: true }));",
        vec![json!(input), json!(second)],
    )
    .await
    .expect("choose");
    let shown = c
        .find(Locator::Css(input))
        .await
        .expect("input")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(shown.as_deref(), Some("Twin"));
    let kept = c
        .find(Locator::Css("input[name='id.field_related.0']"))
        .await
        .expect("id input")
        .prop("value")
        .await
        .expect("value");
    assert_eq!(kept.as_deref(), Some(second.as_str()));
    click(c, "button[value='add:field_related']").await;
    let next = "input[name='v.field_related.1']";
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(next))
        .await
        .expect("a second slot");
    // A title typed in full that one item has takes that item's id.
    fill(c, next, "other <th").await;
    let listed = eventually(PATIENCE, || async {
        offered(c, next).await
            == [(
                "Other <things>".to_owned(),
                "Other <things> (ARTICLE)".to_owned(),
            )]
    })
    .await;
    assert!(listed.is_some(), "{:?}", offered(c, next).await);
    fill(c, next, "Other <things>").await;
    submit(c, "form.item-form .actions:not(.top) button").await;
    expect_notice(c, "The item was created.").await;
    let fields: Value = sqlx::query_scalar("SELECT fields FROM item WHERE title = 'Linked'")
        .fetch_one(&app.state.db)
        .await
        .expect("item");
    assert_eq!(
        fields["field_related"],
        json!([{"target_id": second}, {"target_id": other}])
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_pages_read_at_desktop_and_phone_widths() {
    let site = crate::files::Site::new().await;
    let app = &site.app;
    // Long words and names are where narrow pages break.
    let long = "Notes on photosynthesisandotherunbreakablylongwords in the garden";
    let file = site
        .upload(
            "public",
            "a-rather-long-file-name-for-the-garden-photos-2024.png",
            "image/png",
            PNG,
        )
        .await;
    let r = app
        .post_item(
            json!({"type": "article", "title": long, "promote": true,
                   "fields": {"field_image": {"file_id": file["id"]}}}),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .json_request(reqwest::Method::POST, "/cron")
        .send()
        .await
        .expect("cron");
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .json_request(reqwest::Method::POST, "/api/batch")
        .json(&json!({"operation": "cache.rebuild_listings", "params": {}}))
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let batch: Value = r.json().await.expect("batch");
    let batch = batch["id"].as_str().expect("id").to_owned();

    let browser = Browser::start().await;
    let base = app.url("");
    let c = &browser.client;
    c.goto(&format!("{base}/user/login")).await.expect("login");
    browser.shots("login").await;
    browser.log_in(&base, "admin", PASSWORD).await;
    for (path, ready, name) in [
        ("/items/article".to_owned(), "ul.items", "items-page"),
        ("/search?q=garden".to_owned(), "main", "search-page"),
        ("/admin/content/new".to_owned(), "main", "admin-content-new"),
        ("/admin/files".to_owned(), "main table", "admin-files"),
        ("/admin/cron".to_owned(), "main table", "admin-cron"),
        ("/admin/queues".to_owned(), "main", "admin-queues"),
        ("/admin/batch".to_owned(), "main", "admin-batches"),
        (format!("/admin/batch/{batch}"), "#batch", "admin-batch"),
        ("/admin/search".to_owned(), "main", "admin-search"),
    ] {
        c.goto(&format!("{base}{path}")).await.expect("page");
        c.wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(ready))
            .await
            .unwrap_or_else(|e| panic!("{path}: `{ready}`: {e}"));
        let heading = text_of(c, "h1").await;
        assert!(
            !heading.is_empty() && heading != "Page not found" && heading != "Access denied",
            "{path}: {heading}"
        );
        browser.shots(name).await;
    }
    browser.close().await;
}
