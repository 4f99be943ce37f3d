//! `/api/stages` (create, list) and `POST /stage/{id}/publish`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{PublishReport, SelectedStage, Stage, StageId};
use crate::error::{AppError, ErrorBody};
use crate::item::routes::require_stage_access;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/stages", get(list_stages).post(create_stage))
        .route("/stage/{id}/publish", post(publish_stage))
        .route("/api/stages/{id}/publish", post(publish_stage))
        .route("/api/stage/current", get(current_stage).put(select_stage))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStage {
    /// `[a-z][a-z0-9_]{0,31}`.
    pub id: String,
    pub label: String,
}

/// The stage the session works in.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSelection {
    pub stage: String,
}

/// The stage this request works in (query, header, session, else live).
#[utoipa::path(get, path = "/api/stage/current", tag = "stage",
    responses((status = 200, description = "The selected stage", body = StageSelection)))]
pub(crate) async fn current_stage(SelectedStage(stage): SelectedStage) -> Json<StageSelection> {
    Json(StageSelection {
        stage: stage.to_string(),
    })
}

/// Select the stage the browser session works in (`live` to leave stages).
#[utoipa::path(put, path = "/api/stage/current", tag = "stage", request_body = StageSelection,
    responses(
        (status = 200, description = "Selected", body = StageSelection),
        (status = 401, description = "No browser session", body = ErrorBody),
        (status = 403, description = "May not work in stages", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
    ))]
pub(crate) async fn select_stage(
    State(state): State<AppState>,
    account: Account,
    Json(sel): Json<StageSelection>,
) -> Result<Json<StageSelection>, AppError> {
    let Some((token, _)) = &account.session else {
        return Err(AppError::Unauthenticated);
    };
    let id = StageId::parse(&sel.stage)?;
    require_stage_access(&account, &id)?;
    if !id.is_live() && !super::exists(&state.db, &id).await? {
        return Err(super::StageError::NotFound(id.to_string()).into());
    }
    super::select_for_session(&state, token, &id).await?;
    Ok(Json(StageSelection {
        stage: id.to_string(),
    }))
}

/// Every stage, live first.
#[utoipa::path(get, path = "/api/stages", tag = "stage",
    responses(
        (status = 200, description = "Stages", body = [Stage]),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
    ))]
pub(crate) async fn list_stages(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<Stage>>, AppError> {
    account.require(permission::ADMINISTER_STAGES)?;
    Ok(Json(super::list(&state.db).await?))
}

/// Create a stage upstream of live.
#[utoipa::path(post, path = "/api/stages", tag = "stage", request_body = NewStage,
    responses(
        (status = 201, description = "Created", body = Stage),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
        (status = 409, description = "Stage exists", body = ErrorBody),
        (status = 422, description = "Invalid id or blank label", body = ErrorBody),
    ))]
pub(crate) async fn create_stage(
    State(state): State<AppState>,
    account: Account,
    Json(new): Json<NewStage>,
) -> Result<(StatusCode, Json<Stage>), AppError> {
    account.require(permission::ADMINISTER_STAGES)?;
    let id = StageId::parse(&new.id)?;
    if new.label.trim().is_empty() {
        return Err(AppError::Validation {
            details: serde_json::json!({"fields": {"label": ["must not be blank"]}}),
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(super::create(&state.db, &id, new.label.trim()).await?),
    ))
}

/// Apply every change of the stage to live, in one transaction.
#[utoipa::path(post, path = "/stage/{id}/publish", tag = "stage",
    params(("id" = String, Path, description = "Stage id")),
    responses(
        (status = 200, description = "Published", body = PublishReport),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 409, description = "Live cannot be published", body = ErrorBody),
        (status = 422, description = "An item no longer validates; nothing was published", body = ErrorBody),
    ))]
pub(crate) async fn publish_stage(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<PublishReport>, AppError> {
    account.require(permission::ADMINISTER_STAGES)?;
    let id = StageId::parse(&id).map_err(|_| super::StageError::NotFound(id.clone()))?;
    Ok(Json(super::publish(&state, &id).await?))
}
