//! The headers every HTML answer carries: no MIME sniffing, no framing, a
//! referrer policy, and a Content-Security-Policy that fits the kernel's
//! pages (scripts only from `/assets`, inline styles allowed for progress
//! bars, images from the site and its public file URL). A page answered to a
//! request with credentials (a session cookie or a bearer token) is
//! `Cache-Control: private, no-store`: it may show that user's name,
//! tokens or stage, and no shared or browser cache keeps it.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::settings::Config;
use crate::user::access::cookie;
use crate::user::session;

/// The header values, built once from the configuration.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
}

const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const DENY: HeaderValue = HeaderValue::from_static("DENY");
const REFERRER: HeaderValue = HeaderValue::from_static("strict-origin-when-cross-origin");
const PRIVATE: HeaderValue = HeaderValue::from_static("private, no-store");

impl SecurityHeaders {
    pub fn new(config: &Config) -> Self {
        let mut img = "'self' data:".to_owned();
        if let Some(origin) = origin_of(&config.files.public_url) {
            img.push(' ');
            img.push_str(&origin);
        }
        let policy = format!(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src {img}; object-src 'none'; base-uri 'self'; form-action 'self'; \
             frame-ancestors 'none'"
        );
        Self {
            // Built from a validated URL's origin: always a valid value.
            csp: HeaderValue::try_from(policy)
                .unwrap_or(HeaderValue::from_static("frame-ancestors 'none'")),
        }
    }

    /// The policy sent with HTML answers.
    pub fn csp(&self) -> &HeaderValue {
        &self.csp
    }
}

/// `scheme://host[:port]` of an absolute URL; `None` for a path.
fn origin_of(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"))
}

/// Whether the request carries credentials (a bearer token or the
/// session cookie): its HTML answer is then private to it.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || cookie(headers, session::COOKIE).is_some()
}

/// Adds the headers: `nosniff` on every answer, the rest on HTML.
/// `credentials`: [`has_credentials`] of the request.
pub fn add_security_headers(security: &SecurityHeaders, credentials: bool, resp: &mut Response) {
    let headers = resp.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    if is_html(headers) {
        headers.insert(header::CONTENT_SECURITY_POLICY, security.csp.clone());
        headers.insert(header::X_FRAME_OPTIONS, DENY);
        headers.insert(header::REFERRER_POLICY, REFERRER);
        if credentials {
            headers.insert(header::CACHE_CONTROL, PRIVATE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_public_file_url_adds_its_origin_to_img_src() {
        let mut config = Config::default();
        config.files.public_url = "https://cdn.example.com/files".into();
        let csp = SecurityHeaders::new(&config);
        let csp = csp.csp().to_str().expect("ascii");
        assert!(
            csp.contains("img-src 'self' data: https://cdn.example.com;"),
            "{csp}"
        );
        config.files.public_url = "/files".into();
        let csp = SecurityHeaders::new(&config);
        assert!(
            csp.csp()
                .to_str()
                .expect("ascii")
                .contains("img-src 'self' data:;")
        );
    }
}
