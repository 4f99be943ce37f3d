//! What an attacker tries against the pages: open redirects through the
//! login form's `destination`, framing, sniffing, and caching of pages
//! rendered for a signed-in user.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::harness::TestApp;
use crate::harness::content::PASSWORD;

/// The value of the hidden input `name` in `html`, if the form has one,
/// with the template engine's escapes undone as a browser would.
fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    let mut value = html[start..end].to_owned();
    for (escaped, raw) in [
        ("&#x2f;", "/"),
        ("&quot;", "\""),
        ("&#x27;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&amp;", "&"),
    ] {
        value = value.replace(escaped, raw);
    }
    Some(value)
}

/// Logs in through the login form with `destination` from a fresh browser;
/// returns the answer's status, its `Location`, and whether a session
/// cookie was set.
async fn form_login(app: &TestApp, destination: &str) -> (StatusCode, String, bool) {
    let browser = crate::harness::client();
    let page = browser
        .get(app.url("/user/login"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("html");
    let csrf = hidden_field(&page, "csrf_token").expect("csrf field");
    let resp = browser
        .post(app.url("/user/login"))
        .form(&[
            ("name", "grace"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
            ("destination", destination),
        ])
        .send()
        .await
        .expect("POST");
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let session = resp
        .cookies()
        .any(|c| c.name() == trovato::user::session::COOKIE);
    (resp.status(), location, session)
}

#[tokio::test]
async fn the_login_form_goes_only_to_a_local_path() {
    let app = TestApp::spawn().await;
    app.create_user("grace", PASSWORD, false).await;
    for hostile in [
        "/\n/evil.example",
        "/\r/evil.example",
        "/\u{b}/evil.example",
        "/\t/evil.example",
        "/\u{7f}/evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "evil.example",
        // Percent-encoded once more: decoded, these are the same tricks.
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/%09/evil.example",
        "/%0A/evil.example",
        "/%ff",
        "",
    ] {
        assert_eq!(
            form_login(&app, hostile).await,
            (StatusCode::SEE_OTHER, "/".to_owned(), true),
            "{hostile:?}"
        );
    }
    for local in ["/admin", "/items/article?page=2", "/search?q=caf%C3%A9"] {
        assert_eq!(
            form_login(&app, local).await,
            (StatusCode::SEE_OTHER, local.to_owned(), true),
            "{local:?}"
        );
    }
}

#[tokio::test]
async fn the_login_page_carries_a_local_destination_into_its_form() {
    let app = TestApp::spawn().await;
    let html = app
        .get("/user/login?destination=%2Fadmin%2Fbatch")
        .await
        .text()
        .await
        .expect("html");
    assert_eq!(
        hidden_field(&html, "destination").as_deref(),
        Some("/admin/batch")
    );
    for hostile in [
        "%2F%2Fevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%09%2Fx",
    ] {
        let html = app
            .get(&format!("/user/login?destination={hostile}"))
            .await
            .text()
            .await
            .expect("html");
        assert_eq!(hidden_field(&html, "destination"), None, "{hostile}");
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_page_headers(headers: &HeaderMap) {
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    let csp = header(headers, "content-security-policy");
    for directive in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert_eq!(header(headers, "x-frame-options"), "DENY");
    assert_eq!(
        header(headers, "referrer-policy"),
        "strict-origin-when-cross-origin"
    );
}

#[tokio::test]
async fn pages_forbid_framing_and_sniffing_and_signed_in_pages_are_not_stored() {
    let app = TestApp::spawn_with_articles().await;
    let item = app.create_item("Public", None).await;
    let id = item["id"].as_str().expect("id");
    let anon = crate::harness::client();
    for path in [
        "/".to_owned(),
        format!("/item/{id}"),
        "/user/login".to_owned(),
    ] {
        let r = anon.get(app.url(&path)).send().await.expect("GET");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_page_headers(r.headers());
        assert_ne!(
            header(r.headers(), "cache-control"),
            "private, no-store",
            "{path}: an anonymous page may be cached"
        );
        // The same pages rendered for the signed-in administrator.
        let r = app.get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_page_headers(r.headers());
        assert_eq!(
            header(r.headers(), "cache-control"),
            "private, no-store",
            "{path}"
        );
    }
    // HTML error pages too; JSON answers are not sniffed either.
    let json = anon
        .get(app.url("/api/item-types"))
        .send()
        .await
        .expect("GET");
    assert_eq!(header(json.headers(), "x-content-type-options"), "nosniff");
    assert_eq!(header(json.headers(), "content-security-policy"), "");
}

#[tokio::test]
async fn page_scripts_are_served_from_the_site() {
    let app = TestApp::spawn().await;
    let r = app.get("/assets/batch-progress.js").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(r.headers(), "content-type").starts_with("text/javascript"));
    assert!(r.text().await.expect("js").contains("/status"));
    let missing = app.get("/assets/nope.js").await;
    crate::harness::content::error_body(missing, StatusCode::NOT_FOUND, "not_found").await;
}
