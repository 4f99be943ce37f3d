//! The files subsystem's routes: upload, content, metadata and deletion.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::usage::FileUse;
use super::{FileError, FileInfo, FileRecord, FileStatus, serve, upload, usage};
use crate::error::{AppError, ErrorBody};
use crate::state::AppState;
use crate::user::Account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload::upload))
        .routes(routes!(serve::file_by_id))
        .routes(routes!(serve::public_file))
        .routes(routes!(file_meta, delete_file))
        .routes(routes!(super::admin::files_page))
        .routes(routes!(super::admin::delete_from_page))
}

/// Routes that bound their own request body (`files.max_upload_bytes`)
/// instead of `server.max_body_bytes`.
pub const OWN_BODY_LIMIT: &[&str] = &["/file/upload"];

/// A file's metadata and where it is used.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileDetail {
    #[serde(flatten)]
    pub file: FileInfo,
    pub usage: Vec<FileUse>,
}

fn parse_id(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| AppError::NotFound(format!("file {raw}")))
}

/// The file if `account` owns it or administers files; otherwise 404.
async fn owned(state: &AppState, account: &Account, raw: &str) -> Result<FileRecord, AppError> {
    if !account.is_authenticated() {
        return Err(AppError::Unauthenticated);
    }
    let id = parse_id(raw)?;
    super::find(&state.db, id)
        .await?
        .filter(|f| f.status() != FileStatus::Released)
        .filter(|f| super::administers(account) || f.is_owned_by(account))
        .ok_or_else(|| FileError::NotFound(id).into())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct FileIdParam {
    /// The file's id.
    id: String,
}

/// A file's metadata and uses, for its owner and file administrators.
#[utoipa::path(get, path = "/api/files/{id}", tag = "file", params(FileIdParam),
    responses(
        (status = 200, description = "The file", body = FileDetail),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 404, description = "No such file, or not yours", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn file_meta(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<FileDetail>, AppError> {
    let file = owned(&state, &account, &id).await?;
    let usage = usage::uses_of(&state.db, file.id).await?;
    Ok(Json(FileDetail {
        file: state.files.info(&file),
        usage,
    }))
}

/// Delete a file: a temporary one by its owner, any unused one by a file
/// administrator. Refused while an item revision uses it.
#[utoipa::path(delete, path = "/api/files/{id}", tag = "file", params(FileIdParam),
    responses(
        (status = 204, description = "Deleted: its object and its row"),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Your file, but permanent: only file administrators delete those", body = ErrorBody),
        (status = 404, description = "No such file, or not yours", body = ErrorBody),
        (status = 409, description = "An item revision uses it", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let file = owned(&state, &account, &id).await?;
    if !super::administers(&account) && file.status() != FileStatus::Temporary {
        return Err(AppError::Forbidden(
            "only file administrators delete a permanent file".into(),
        ));
    }
    super::usage::release(&state, file.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
