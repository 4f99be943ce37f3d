//! `/health`, `/healthz`, `/metrics`.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::health::Health;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health_check))
        .routes(routes!(liveness))
        .routes(routes!(metrics_text))
}

/// Readiness: 200 only when every dependency answers within 1 s; 503 with
/// the same shape naming each failing dependency and its reason otherwise.
/// The underlying error text is logged, and shown only to the networks in
/// `observe.metrics_allow`.
#[utoipa::path(
    get, path = "/health", tag = "observe",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "At least one dependency fails", body = Health),
    ),
    security(())
)]
pub(crate) async fn health_check(State(state): State<AppState>, req: Request) -> Response {
    let h = state.probes.check().await;
    let status = if h.is_ok() {
        StatusCode::OK
    } else {
        tracing::warn!(health = ?h.checks, "health check failed");
        StatusCode::SERVICE_UNAVAILABLE
    };
    let h = if is_operator(&state, &req) {
        h
    } else {
        h.without_details()
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(h)).into_response()
}

/// Whether the request comes from a network in `observe.metrics_allow`
/// (the operators' networks). Without connection info, no.
fn is_operator(state: &AppState, req: &Request) -> bool {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| allowed(state, peer.ip()))
}

fn allowed(state: &AppState, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    state
        .config
        .observe
        .metrics_allow
        .iter()
        .any(|net| net.contains(&ip))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

/// Liveness: the process answers. No dependency is checked.
#[utoipa::path(
    get, path = "/healthz", tag = "observe",
    responses((status = 200, description = "The process is alive", body = Liveness)),
    security(())
)]
pub(crate) async fn liveness() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Prometheus text exposition, for the networks in `metrics_allow` only.
#[utoipa::path(
    get, path = "/metrics", tag = "observe",
    responses(
        (status = 200, description = "Prometheus text format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 403, description = "Client address not allowed", body = ErrorBody),
    ),
    security(())
)]
pub(crate) async fn metrics_text(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, AppError> {
    if !allowed(&state, peer.ip()) {
        return Err(AppError::Forbidden(format!(
            "metrics are not served to {}",
            peer.ip().to_canonical()
        )));
    }
    // Queue lengths are read from the backend at each scrape, bounded so a
    // slow backend cannot stall the scrape (the last values stay).
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        crate::queue::record_gauges(&state.queues),
    )
    .await;
    let body = super::metrics::render(&state.metrics, &state.db, state.config.db.max_connections);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
