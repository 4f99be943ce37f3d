//! The router and the server loop, kept apart so tests can drive the real
//! router in-process or on port 0.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware::{from_fn, from_fn_with_state};
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
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.config.server.max_body_bytes;
    let (routes, mut document) = api().split_for_parts();
    openapi::describe_permissions(&mut document, state.permissions.registry());
    Router::new()
        .merge(extra)
        .merge(routes)
        .layer(Extension(openapi::Document::new(&document)))
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // Applied per route (innermost first), so each sees MatchedPath.
        // CSRF sits inside the body limit, which bounds the form it reads.
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
        .layer(from_fn(http::json_errors))
        .layer(from_fn_with_state(
            state.templates.clone(),
            page::errors::html_errors,
        ))
        .layer(from_fn_with_state(
            page::security::SecurityHeaders::new(&state.config),
            page::security::add_security_headers,
        ))
        .layer(from_fn(http::record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(http::make_span)
                .on_request(())
                .on_response(http::on_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
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
