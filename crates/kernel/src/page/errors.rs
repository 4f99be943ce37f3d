//! HTML error pages. A failing request that a browser made for a page (it
//! accepts `text/html`, and its route is neither under `/api/` nor one of
//! the [`JSON_ROUTES`] outside it) gets the error as a page: the status,
//! the kernel's sentence for a 4xx, a login link for 401 and 403, and
//! nothing but the status for a 5xx (whose cause was logged where it
//! happened). Everything else keeps the JSON error body.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::templates::Templates;

/// Routes outside `/api/` that answer JSON to whoever asks, browsers
/// included: their error bodies are what their callers read (health's
/// reason codes, a script's upload or progress poll, a scheduler's cron).
pub const JSON_ROUTES: &[&str] = &[
    "/health",
    "/healthz",
    "/metrics",
    "/cron",
    "/file/upload",
    "/batch/{id}/status",
    "/stage/{id}/publish",
    "/user/me",
    "/admin/content/references",
];

/// Whether the request is a browser asking for a page. `path` is the
/// matched route's template, or the raw path of an unmatched request.
fn wants_html(accept: Option<&HeaderValue>, path: &str) -> bool {
    if path == "/api" || path.starts_with("/api/") || JSON_ROUTES.contains(&path) {
        return false;
    }
    accept.and_then(|v| v.to_str().ok()).is_some_and(|accept| {
        accept
            .split(',')
            .any(|m| m.split(';').next().is_some_and(|m| m.trim() == "text/html"))
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Largest JSON error body read to find its message.
const BODY_LIMIT: usize = 64 * 1024;

/// What an error page needs to know of its request, taken before the
/// request is handled: what it accepts, and where it asked to go.
pub struct PageRequest {
    accept: Option<HeaderValue>,
    uri: Uri,
}

impl PageRequest {
    pub fn of(req: &Request) -> Self {
        Self {
            accept: req.headers().get(header::ACCEPT).cloned(),
            uri: req.uri().clone(),
        }
    }
}

/// Turns a JSON error answer to a page request into an HTML page. The
/// route is the one the router matched (a [`MatchedPath`] the response
/// carries), or the raw path of an unmatched request.
pub async fn html_error_page(
    templates: &Templates,
    request: PageRequest,
    resp: Response,
) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || !is_json(resp.headers()) {
        return resp;
    }
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri.path(), MatchedPath::as_str);
    if !wants_html(request.accept.as_ref(), route) {
        return resp;
    }
    let destination = request
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let (parts, body) = resp.into_parts();
    let message = if status.is_server_error() {
        None
    } else {
        axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["message"].as_str().map(sentence))
    };
    let page = render(templates, status, message.as_deref(), &destination);
    let mut out = (status, page).into_response();
    out.extensions_mut().extend(parts.extensions);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    out
}

/// The kernel's messages start in lower case; a page shows a sentence.
fn sentence(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().collect();
            out.push_str(chars.as_str());
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

fn render(
    templates: &Templates,
    status: StatusCode,
    message: Option<&str>,
    destination: &str,
) -> String {
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::UNAUTHORIZED => "Please log in",
        StatusCode::FORBIDDEN => "Access denied",
        s if s.is_server_error() => "Something went wrong",
        s => s.canonical_reason().unwrap_or("Error"),
    };
    let login = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    // Only a local path goes into the login link (the form checks it too).
    let login_href = if destination.starts_with('/') && !destination.starts_with("//") {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("destination", destination)
            .finish();
        format!("/user/login?{query}")
    } else {
        "/user/login".to_owned()
    };
    templates
        .render(
            "error.html",
            minijinja::context! {
                status => status.as_u16(),
                title => title,
                message => message,
                login => login,
                login_href => login_href,
            },
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "the error page did not render");
            format!(
                "<!doctype html><title>{0}</title><h1>{0}</h1>",
                status.as_u16()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_asking_for_pages_get_html_and_api_paths_never_do() {
        let h = HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        let h = Some(&h);
        assert!(wants_html(h, "/item/x"));
        assert!(!wants_html(h, "/api/items"));
        assert!(!wants_html(h, "/health"), "health keeps its reason codes");
        assert!(!wants_html(h, "/batch/{id}/status"));
        assert!(!wants_html(None, "/item/x"));
        let json = HeaderValue::from_static("application/json");
        assert!(!wants_html(Some(&json), "/item/x"));
        assert_eq!(sentence("item x not found"), "Item x not found.");
    }

    #[test]
    fn a_403_page_links_the_login_form_back_to_the_page_and_a_500_says_nothing_more() {
        let t = Templates::new("Site").expect("templates");
        let page = render(&t, StatusCode::FORBIDDEN, Some("Nope."), "/admin/x?a=1");
        assert!(page.contains("<h1>Access denied</h1>"), "{page}");
        assert!(
            page.contains("login?destination=%2Fadmin%2Fx%3Fa%3D1\""),
            "{page}"
        );
        let page = render(&t, StatusCode::INTERNAL_SERVER_ERROR, None, "//evil");
        assert!(page.contains("Something went wrong"), "{page}");
        assert!(!page.contains("/user/login"), "{page}");
    }
}
