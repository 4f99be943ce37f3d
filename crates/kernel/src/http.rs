//! HTTP plumbing shared by every route: body-kind detection, extractor
//! rejections as JSON errors, the request span, request metrics, and the
//! fallbacks that keep every error response JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Span;

use crate::config::ConfigError;
use crate::error::{AppError, code_for_status, error_response};

/// The `[server]` section: the kernel process, where it listens, what it
/// accepts, where it keeps local state, and how long it waits for its
/// services at start-up and for its tasks at shutdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Server")]
pub struct ServerSettings {
    /// HTTP listen address.
    #[arg(
        id = "server.listen",
        long = "listen",
        env = "TROVATO_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Largest request body in bytes; a larger one gets a 413 JSON error.
    #[arg(
        id = "server.max_body_bytes",
        long = "max-body-bytes",
        env = "TROVATO_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    pub max_body_bytes: usize,
    /// Local state: the embedded services' data and the plugin compile cache.
    #[arg(
        id = "server.data_dir",
        long = "data-dir",
        env = "TROVATO_DATA_DIR",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
    /// Seconds start-up waits for PostgreSQL and Redis.
    #[arg(
        id = "server.connect_timeout_secs",
        long = "connect-timeout",
        env = "TROVATO_CONNECT_TIMEOUT",
        value_name = "SECS"
    )]
    pub connect_timeout_secs: u64,
    /// Seconds a shutdown waits for in-flight requests and background tasks before it stops them.
    #[arg(
        id = "server.shutdown_grace_secs",
        long = "shutdown-grace",
        env = "TROVATO_SHUTDOWN_GRACE",
        value_name = "SECS"
    )]
    pub shutdown_grace_secs: u64,
    /// HTTP event loops, each a thread with its own listening socket on the same address (SO_REUSEPORT); 0: one per CPU.
    #[arg(
        id = "server.http_loops",
        long = "http-loops",
        env = "TROVATO_HTTP_LOOPS",
        value_name = "N"
    )]
    pub http_loops: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 2 * 1024 * 1024,
            data_dir: PathBuf::from("./var"),
            connect_timeout_secs: 5,
            shutdown_grace_secs: 10,
            http_loops: 0,
        }
    }
}

impl ServerSettings {
    /// How long start-up waits for PostgreSQL and Redis.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// How many HTTP event loops `serve` runs.
    pub fn http_loops(&self) -> usize {
        match self.http_loops {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// How long a shutdown waits for what is still running.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid::<Self>(
                "server.max_body_bytes",
                "must be at least 1 byte",
            ));
        }
        if self.http_loops > 1024 {
            return Err(ConfigError::invalid::<Self>(
                "server.http_loops",
                "must be at most 1024",
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "server.connect_timeout_secs",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

/// What a request body claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Other,
}

pub fn body_kind(headers: &HeaderMap) -> BodyKind {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        BodyKind::Json
    } else if mime == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

fn from_rejection(status: StatusCode, text: String) -> AppError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType(text),
        StatusCode::UNPROCESSABLE_ENTITY => AppError::InvalidBody(text),
        _ => AppError::bad_request("invalid_body", text),
    }
}

/// A JSON request body read into `T`, which must be an object: serde
/// would otherwise read a struct from an array of its fields in order
/// (`[null, null]`), which no schema of ours describes. Rejections are the
/// JSON errors of [`AppError`]: 415 for another content type, 413 past
/// `max_body_bytes`, 400 `invalid_body` for what is not JSON or not an
/// object, 422 `invalid_body` for an object that is not the schema's shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if body_kind(req.headers()) != BodyKind::Json {
            return Err(AppError::UnsupportedMediaType(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|r| from_rejection(r.status(), r.body_text()))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AppError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<FormRejection> for AppError {
    fn from(r: FormRejection) -> Self {
        from_rejection(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::bad_request("invalid_query", r.body_text())
    }
}

/// The route template a response answered, or `unmatched`: the only path
/// label spans and metrics ever carry. The router's [`RouteOnResponse`]
/// layer puts the template on the response.
pub fn route_of(resp: &Response) -> &str {
    resp.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// Copies each request's matched route template ([`MatchedPath`]) onto its
/// response, so what wraps the router once (the request span, metrics,
/// error pages) can name the route. Applied to every route, outside the
/// other per-route layers, so their own answers (a CSRF refusal, a 413)
/// carry it too.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOnResponse;

impl<S> tower::Layer<S> for RouteOnResponse {
    type Service = RouteOnResponseService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteOnResponseService { inner }
    }
}

/// The service of [`RouteOnResponse`].
#[derive(Debug, Clone)]
pub struct RouteOnResponseService<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for RouteOnResponseService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RouteOnResponseFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        // The request span is current here: events the handler logs carry
        // the route too.
        if let Some(route) = &route {
            Span::current().record("route", route.as_str());
        }
        RouteOnResponseFuture {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RouteOnResponseService`].
    pub struct RouteOnResponseFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for RouteOnResponseFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(route) = this.route.take() {
            resp.extensions_mut().insert(route);
        }
        std::task::Poll::Ready(Ok(resp))
    }
}

/// The request span: request id and method; the route template once the
/// router has matched it ([`RouteOnResponse`]), status and latency when the
/// response is ready.
pub fn make_span(req: &Request) -> Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

pub fn on_response(resp: &Response, latency: std::time::Duration, span: &Span) {
    // Again for the answers no route matched (`unmatched`).
    span.record("route", route_of(resp));
    span.record("status", resp.status().as_u16());
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    // Route, status and latency are fields of the span this event belongs to.
    tracing::info!("request completed");
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Records `trovato_http_request_duration_seconds{method, route, status}`
/// for `resp`, answered to a `method` request that started at `start`.
pub fn record_request(method: &axum::http::Method, start: Instant, resp: &Response) {
    metrics::histogram!(
        "trovato_http_request_duration_seconds",
        "method" => method.as_str().to_owned(),
        "route" => route_of(resp).to_owned(),
        "status" => status_class(resp.status()),
    )
    .record(start.elapsed().as_secs_f64());
}

/// Rewrites an error response that is not already JSON or HTML (framework
/// rejections, 405s, body-limit 413s) into the JSON error shape.
pub async fn json_error_body(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") || ct.starts_with("text/html") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Framework rejection texts are short, client-facing explanations.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .filter(|t| !t.trim().is_empty() && !status.is_server_error())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    if status.is_server_error() {
        // Not an `AppError` (those log their cause and answer JSON): the
        // framework's own 5xx, logged here so none goes unexplained.
        tracing::error!(status = status.as_u16(), "request failed outside a handler");
    }
    let mut out = error_response(status, code_for_status(status), &text, Value::Null);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.extensions_mut().extend(parts.extensions);
    out
}

/// The request body limit: `server.max_body_bytes` for every route except
/// the multipart bodies of those that bound their own (an upload streams
/// far more, and counts it itself).
#[derive(Debug, Clone)]
pub struct BodyLimit {
    pub max: usize,
    pub own: Vec<&'static str>,
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Applies [`BodyLimit`]: a declared length over the limit is refused at
/// once (413); otherwise the body is cut off at the limit, which the
/// extractors report as 413.
pub async fn limit_body(
    axum::extract::State(limit): axum::extract::State<BodyLimit>,
    req: Request,
    next: Next,
) -> Response {
    // Only their multipart bodies: any other body (which the CSRF rule
    // may read whole) keeps the server's limit.
    let own = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| limit.own.contains(&p.as_str()))
        && is_multipart(req.headers());
    if own {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.max as u64) {
        return AppError::PayloadTooLarge.into_response();
    }
    let req = req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit.max)));
    next.run(req).await
}

/// Unknown routes.
pub async fn not_found() -> Response {
    AppError::NotFound("route".into()).into_response()
}

/// Known route, wrong method.
pub async fn method_not_allowed() -> Response {
    AppError::MethodNotAllowed.into_response()
}

/// A panic in a handler becomes a 500 JSON error, not a dropped connection.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = %detail, "handler panicked");
    metrics::counter!("trovato_http_panics_total").increment(1);
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal Server Error",
        Value::Null,
    )
}
