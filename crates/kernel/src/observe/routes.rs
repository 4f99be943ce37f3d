//! `/health`, `/healthz`, `/metrics`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::health::Health;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health_check))
        .route("/healthz", get(liveness))
        .route("/metrics", get(metrics_text))
}

/// Readiness: 200 only when PostgreSQL and Redis both answer within 1 s;
/// 503 with the same shape naming each failing dependency otherwise.
#[utoipa::path(
    get, path = "/health", tag = "observe",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "At least one dependency fails", body = Health),
    )
)]
pub(crate) async fn health_check(State(state): State<AppState>) -> Response {
    let h = state.probes.check().await;
    let status = if h.is_ok() {
        StatusCode::OK
    } else {
        tracing::warn!(health = ?h.checks, "health check failed");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(h)).into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

/// Liveness: the process answers. No dependency is checked.
#[utoipa::path(
    get, path = "/healthz", tag = "observe",
    responses((status = 200, description = "The process is alive", body = Liveness))
)]
pub(crate) async fn liveness() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Prometheus text exposition, for the networks in `metrics_allow` only.
#[utoipa::path(
    get, path = "/metrics", tag = "observe",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 403, description = "Client address not allowed", body = ErrorBody),
    )
)]
pub(crate) async fn metrics_text(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Response, AppError> {
    let ip = peer.ip().to_canonical();
    if !state
        .config
        .observe
        .metrics_allow
        .iter()
        .any(|net| net.contains(&ip))
    {
        return Err(AppError::Forbidden(format!(
            "metrics are not served to {ip}"
        )));
    }
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
