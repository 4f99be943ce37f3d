//! The router and the server loop, kept apart so tests can drive the real
//! router in-process or on port 0.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;
use crate::{
    batch, category, cron, file, http, item, observe, openapi, page, plugin, search, stage, user,
};

/// Every route of the kernel with its OpenAPI entry, declared together:
/// each subsystem's `router()` registers its handlers through
/// `utoipa_axum::routes!`, so a route cannot be served without being
/// described, and the document is never a hand-kept list.
pub fn api() -> OpenApiRouter<AppState> {
    let mut api = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(page::router())
        .merge(user::routes::router())
        .merge(user::roles::router())
        .merge(user::manage::router())
        .merge(user::admin::router())
        .merge(observe::routes::router())
        .merge(plugin::routes::router())
        .merge(plugin::admin::router())
        .merge(openapi::router())
        .merge(item::routes::router())
        .merge(item::admin::router())
        .merge(item::structure::router())
        .merge(stage::routes::router())
        .merge(stage::admin::router())
        .merge(category::routes::router())
        .merge(category::admin::router())
        .merge(category::page::router())
        .merge(file::routes::router())
        .merge(cron::routes::router())
        .merge(batch::routes::router())
        .merge(search::routes::router());
    openapi::add_shared_responses(api.get_openapi_mut());
    api
}

/// One declared route: an HTTP method and a path template as the router
/// and the OpenAPI document both spell it (`/api/items/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRoute {
    pub method: Method,
    pub path: String,
}

/// Every route the kernel serves (JSON, HTML and form endpoints alike),
/// sorted by path then method, read from the same declarations the router
/// is built from.
pub fn declared_routes() -> Vec<DeclaredRoute> {
    openapi::operations(&api().into_openapi())
        .map(|(path, method, _)| DeclaredRoute {
            method,
            path: path.to_owned(),
        })
        .collect()
}

/// The whole HTTP surface of the kernel.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// The kernel's router with `extra` routes mounted inside the same
/// middleware (tests use it to add fault-injecting routes).
///
/// Two tiers. The layers that act by route (the CSRF rule, the body
/// limits, panics caught into a 500) wrap each route, and so are rebuilt
/// for every request; the rest (request id, span, metrics, error bodies and
/// pages, security headers) wrap the whole router once, and read the route
/// from the response ([`http::RouteOnResponse`]).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let (routes, mut document) = api().split_for_parts();
    openapi::describe_permissions(&mut document, state.permissions.registry());
    let edge = Edge {
        templates: state.templates.clone(),
        security: page::security::SecurityHeaders::new(&state.config),
    };
    let routed = Router::new()
        .merge(extra)
        .merge(routes)
        .layer(Extension(openapi::Document::new(&document)))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // Innermost first. CSRF sits inside the body limit, which bounds
        // the form it reads.
        .layer(from_fn_with_state(
            user::access::CsrfRule::new(state.clone(), [user::routes::CSRF_EXEMPT]),
            user::access::require_csrf,
        ))
        .layer(CatchPanicLayer::custom(http::panic_response))
        .layer(from_fn_with_state(
            http::BodyLimit {
                max: body_limit,
                own: [file::routes::OWN_BODY_LIMIT, item::admin::OWN_BODY_LIMIT].concat(),
            },
            http::limit_body,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(http::RouteOnResponse)
        .with_state(state);
    Router::new()
        .fallback_service(routed)
        .layer(from_fn_with_state(edge, edge_of_every_request))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http::make_span)
                .on_request(())
                .on_response(http::on_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// What [`edge_of_every_request`] needs, built once.
#[derive(Clone)]
struct Edge {
    templates: std::sync::Arc<page::templates::Templates>,
    security: page::security::SecurityHeaders,
}

/// Around every answer, innermost first: a framework error body becomes
/// the JSON error shape, a JSON error to a browser's page request becomes
/// an HTML page, the security headers are added, and the request is
/// counted in `trovato_http_request_duration_seconds`.
async fn edge_of_every_request(
    axum::extract::State(edge): axum::extract::State<Edge>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let credentials = page::security::has_credentials(req.headers());
    let page_request = page::errors::PageRequest::of(&req);
    let resp = next.run(req).await;
    let resp = http::json_error_body(resp).await;
    let mut resp = page::errors::html_error_page(&edge.templates, page_request, resp).await;
    page::security::add_security_headers(&edge.security, credentials, &mut resp);
    http::record_request(&method, start, &resp);
    resp
}

/// [`declared_routes`] as (method, path) pairs.
pub fn route_table() -> Vec<(Method, String)> {
    declared_routes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

/// Serves `app(state)` on `listener` until `shutdown` resolves. Then the
/// kernel's background tasks are told to stop (their token is cancelled)
/// and in-flight requests may finish, for at most the shutdown grace
/// period; connections still open after it are closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace();
    let token = state.tasks.token();
    let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        token.cancel();
        let _ = begun_tx.send(());
    });
    let drain_deadline = async move {
        if begun_rx.await.is_err() {
            // The server ended without a shutdown signal.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server.into_future() => r,
        () = drain_deadline => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "requests still in flight after the shutdown grace period; closing their connections"
            );
            Ok(())
        }
    }
}

/// Binds `loops` listening sockets to `addr` with `SO_REUSEPORT`, so each
/// HTTP event loop of [`serve_loops`] accepts its own share of the
/// connections (the kernel spreads them by address). The first bind
/// resolves port 0; the others join the port it got.
pub async fn bind_loops(addr: SocketAddr, loops: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(loops.max(1));
    let mut at = addr;
    for _ in 0..loops.max(1) {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.set_nodelay(true)?;
        socket.bind(at)?;
        let listener = socket.listen(1024)?;
        at = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves `app(state)` with one event loop per listener: a thread running
/// a current-thread runtime. A request's connection, parsing, handler and
/// response then stay on one thread (no work stealing, no wake-ups across
/// threads on the cached-page path); background tasks stay on the
/// kernel's runtime ([`crate::tasks`]). Shutdown works as in [`serve`],
/// for every loop at once; a loop that fails stops the others.
///
/// `finally` (the kernel's own shutdown) runs once serving has stopped but
/// before the loops' runtimes are dropped: connections to PostgreSQL or
/// Redis a loop opened stay usable by the tasks that finish in it.
pub async fn serve_loops(
    listeners: Vec<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    finally: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use futures::StreamExt;
    use tokio::sync::{oneshot, watch};

    let (stop_tx, stop_rx) = watch::channel(false);
    let (release_tx, release_rx) = watch::channel(false);
    let mut served = futures::stream::FuturesUnordered::new();
    let mut threads = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let listener = listener.into_std()?;
        let state = state.clone();
        let mut stop = stop_rx.clone();
        let mut release = release_rx.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("trovato-http-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = done_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let result = match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            serve(listener, state, async move {
                                let _ = stop.wait_for(|s| *s).await;
                            })
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    let _ = done_tx.send(result);
                    // Keeps this loop's I/O driver running until released.
                    let _ = release.wait_for(|r| *r).await;
                });
            })?;
        threads.push(thread);
        served.push(done_rx);
    }
    let mut result = Ok(());
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {},
        Some(first) = served.next() => {
            result = first.unwrap_or(Ok(()));
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = served.next().await {
        if let Ok(Err(e)) = done
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    finally.await;
    let _ = release_tx.send(true);
    for thread in threads {
        if thread.join().is_err() {
            tracing::error!("an HTTP event loop panicked");
        }
    }
    result
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
