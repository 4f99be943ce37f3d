//! `/api/stages` (create, list), `POST /api/stages/{id}/publish` (also at
//! `/stage/{id}/publish`) and `/api/stage/current`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{PublishReport, SelectedStage, Stage, StageId};
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_stages, create_stage))
        .routes(routes!(publish_stage))
        .routes(routes!(publish_stage_api))
        .routes(routes!(current_stage, select_stage))
}

/// A stage id: `live` or a machine name (what [`StageId::parse`] accepts).
pub const STAGE_ID_PATTERN: &str = "^[a-z][a-z0-9_]{0,31}$";

/// The stage one request works in: `?stage=` or the `X-Trovato-Stage`
/// header (the query wins), else the session's, else live. Declared on
/// every operation that reads [`SelectedStage`].
pub struct StageParams;

impl utoipa::IntoParams for StageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, place: ParameterIn| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(place)
                .required(Required::False)
                .description(Some(
                    "Stage to work in (`live` or a stage id); one that does not exist is a 404",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(STAGE_ID_PATTERN)),
                ))
                .build()
        };
        vec![
            param("stage", ParameterIn::Query),
            param(super::STAGE_HEADER, ParameterIn::Header),
        ]
    }
}

/// A stage id in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StagePath {
    /// Stage id.
    #[param(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub id: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStage {
    /// `[a-z][a-z0-9_]{0,31}`.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub id: String,
    /// Not blank.
    #[schema(pattern = r"\S")]
    pub label: String,
}

/// The stage the session works in.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSelection {
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub stage: String,
}

/// The stage this request works in (query, header, session, else live).
#[utoipa::path(get, path = "/api/stage/current", tag = "stage",
    params(StageParams),
    responses(
        (status = 200, description = "The selected stage", body = StageSelection),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn current_stage(SelectedStage(stage): SelectedStage) -> Json<StageSelection> {
    Json(StageSelection {
        stage: stage.to_string(),
    })
}

/// Select the stage the browser session works in (`live` to leave stages).
#[utoipa::path(put, path = "/api/stage/current", tag = "stage", request_body = StageSelection,
    responses(
        (status = 200, description = "Selected", body = StageSelection),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "May not work in stages, or not a browser session (API clients pass `?stage=` or `X-Trovato-Stage` instead)", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 422, description = "Bad stage id", body = ErrorBody),
    ),
    security(("session" = [])))]
pub(crate) async fn select_stage(
    State(state): State<AppState>,
    account: Account,
    JsonBody(sel): JsonBody<StageSelection>,
) -> Result<Json<StageSelection>, AppError> {
    let Some((token, _)) = &account.session else {
        if account.is_authenticated() {
            return Err(super::StageError::SessionOnly.into());
        }
        return Err(AppError::Unauthenticated);
    };
    let id = StageId::parse(&sel.stage)?;
    super::require_access(&account, &id)?;
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
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
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
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_stage(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewStage>,
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

/// Apply every change of the stage to live, in one transaction (the same
/// operation as `POST /api/stages/{id}/publish`).
#[utoipa::path(post, path = "/stage/{id}/publish", tag = "stage",
    params(StagePath),
    responses(
        (status = 200, description = "Published", body = PublishReport),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 409, description = "Live cannot be published", body = ErrorBody),
        (status = 422, description = "An item no longer validates; nothing was published", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn publish_stage(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<PublishReport>, AppError> {
    account.require(permission::ADMINISTER_STAGES)?;
    let id = StageId::parse(&id).map_err(|_| super::StageError::NotFound(id.clone()))?;
    Ok(Json(super::publish(&state, &id).await?))
}

/// Apply every change of the stage to live, in one transaction.
#[utoipa::path(post, path = "/api/stages/{id}/publish", tag = "stage",
    params(StagePath),
    responses(
        (status = 200, description = "Published", body = PublishReport),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer stages`, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such stage", body = ErrorBody),
        (status = 409, description = "Live cannot be published", body = ErrorBody),
        (status = 422, description = "An item no longer validates; nothing was published", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn publish_stage_api(
    state: State<AppState>,
    account: Account,
    id: Path<String>,
) -> Result<Json<PublishReport>, AppError> {
    publish_stage(state, account, id).await
}
