//! The administration pages, in a real headless Chromium, logged in
//! through the real login form.

use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::json;

use crate::files::{PNG, Site};
use crate::harness::PATIENCE;
use crate::harness::browser::Browser;
use crate::harness::content::{PASSWORD, error_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_page_lists_files_and_their_uses_and_deletes_an_unused_one() {
    let site = Site::new().await;
    let used = site.upload("public", "cover.png", "image/png", PNG).await;
    let unused = site
        .upload("private", "stray-notes.txt", "text/plain", b"notes")
        .await;
    let r = site
        .app
        .client
        .post(site.app.url("/api/items"))
        .bearer_auth(&site.token)
        .json(&json!({"type": "article", "title": "Spring issue",
                      "fields": {"field_image": {"file_id": used["id"]}}}))
        .send()
        .await
        .expect("create item");
    assert_eq!(r.status(), StatusCode::CREATED);
    let unused_id = unused["id"].as_str().expect("id").to_owned();
    let unused_path = site.object_path(&unused_id).await;

    let browser = Browser::start().await;
    let base = site.app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    let table = browser.open_admin_page(&base, "Files", "table tbody").await;
    let text = table.text().await.expect("table text");
    assert!(
        text.contains("cover.png") && text.contains("stray-notes.txt"),
        "{text}"
    );
    assert!(text.contains("Spring issue"), "the use is shown: {text}");
    assert!(
        text.contains("permanent") && text.contains("temporary"),
        "{text}"
    );
    browser.screenshot("admin-files").await;

    // Only the unused file has a delete button; press it.
    let buttons = c
        .find_all(Locator::Css("table tbody button"))
        .await
        .expect("buttons");
    assert_eq!(
        buttons.len(),
        1,
        "a used file cannot be deleted from the page"
    );
    buttons[0].click().await.expect("delete");
    let notice = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.notice"))
        .await
        .expect("notice");
    assert_eq!(notice.text().await.expect("text"), "The file was deleted.");
    browser.screenshot("admin-files-deleted").await;
    let text = c
        .find(Locator::Css("table tbody"))
        .await
        .expect("table")
        .text()
        .await
        .expect("text");
    assert!(!text.contains("stray-notes.txt"), "{text}");
    assert_eq!(site.status_of(&unused_id).await, None, "row gone");
    assert!(!unused_path.exists(), "object gone");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_pages_send_visitors_to_the_login_form_and_refuse_others() {
    let site = Site::new().await;
    let anonymous = crate::harness::client();
    for path in ["/admin", "/admin/files", "/admin/cron"] {
        let r = anonymous.get(site.app.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()["location"], "/user/login");
    }
    let (_, editor) = site.editor("editor").await;
    let r = site
        .app
        .client
        .get(site.app.url("/admin/files"))
        .bearer_auth(&editor)
        .send()
        .await
        .expect("GET");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    for (method, path) in [("GET", "/admin/cron"), ("POST", "/admin/cron/run")] {
        let r = site
            .app
            .client
            .request(method.parse().expect("method"), site.app.url(path))
            .bearer_auth(&editor)
            .send()
            .await
            .expect("request");
        error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let r = site
        .app
        .client
        .get(site.app.url("/admin/cron?notice=bogus"))
        .bearer_auth(&site.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // The overview shows an editor nothing to administer.
    let r = site
        .app
        .client
        .get(site.app.url("/admin"))
        .bearer_auth(&editor)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("html");
    assert!(!page.contains("/admin/files"), "{page}");

    let r = site
        .app
        .client
        .get(site.app.url("/admin/files?status=lost"))
        .bearer_auth(&site.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A form post without the session's token never reaches the handler.
    let f = site.upload("public", "x.png", "image/png", PNG).await;
    let r = site
        .app
        .client
        .post(site.app.url(&format!(
            "/admin/files/{}/delete",
            f["id"].as_str().expect("id")
        )))
        .form(&[("confirm", "1")])
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::FORBIDDEN, "csrf_token_missing").await;
    assert_eq!(site.status_of(f["id"].as_str().expect("id")).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_page_shows_the_last_passes_and_runs_one_on_request() {
    let site = Site::new().await;
    let state = &site.app.state;
    // One failed pass already in the history.
    let failing = vec![trovato::cron::Step::new(
        "example.failing",
        std::time::Duration::from_secs(60),
        |_, _| async { Err("the example step failed".to_owned()) },
    )];
    trovato::cron::run_steps(state, trovato::cron::Trigger::Cli, failing)
        .await
        .expect("pass");

    let browser = Browser::start().await;
    let base = site.app.url("");
    browser.log_in(&base, "admin", PASSWORD).await;
    let c = &browser.client;
    let table = browser.open_admin_page(&base, "Cron", "table tbody").await;
    let text = table.text().await.expect("table text");
    assert!(text.contains("example.failing: failed"), "{text}");
    assert!(text.contains("the example step failed"), "{text}");
    let summary = c
        .find(Locator::Css("strong.outcome-failed"))
        .await
        .expect("summary");
    assert_eq!(summary.text().await.expect("text"), "1 failed");

    c.find(Locator::Css("form[action='/admin/cron/run'] button"))
        .await
        .expect("run button")
        .click()
        .await
        .expect("click");
    let notice = c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("p.notice"))
        .await
        .expect("notice");
    assert_eq!(notice.text().await.expect("text"), "Cron ran.");
    let rows = c
        .find_all(Locator::Css("table tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "the new pass is listed");
    let newest = rows[0].text().await.expect("text");
    assert!(
        newest.contains("files.cleanup: ok") && newest.contains("http"),
        "{newest}"
    );
    browser.screenshot("admin-cron").await;
    let recorded = trovato::cron::recent(&state.db, 10).await.expect("recent");
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].trigger, trovato::cron::Trigger::Http);
    assert_eq!(recorded[0].outcome, trovato::cron::RunOutcome::Ok);
    browser.close().await;
}
