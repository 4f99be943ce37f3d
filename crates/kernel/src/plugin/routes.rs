//! `GET /api/plugins`: what is installed and in what state.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::PluginInfo;
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::user::Account;
use crate::user::permission::ADMINISTER_PLUGINS;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PluginList {
    /// In dispatch order (weight, then name).
    pub plugins: Vec<PluginInfo>,
}

/// Every plugin in the plugin directory with its version, taps, enabled
/// flag and load status. Requires `administer plugins`.
#[utoipa::path(
    get, path = "/api/plugins", tag = "plugin",
    responses(
        (status = 200, description = "Installed plugins", body = PluginList),
        (status = 401, description = "Not logged in", body = ErrorBody),
        (status = 403, description = "Lacks `administer plugins`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<PluginList>, AppError> {
    account.require(ADMINISTER_PLUGINS)?;
    Ok(Json(PluginList {
        plugins: state.plugins.list(),
    }))
}
