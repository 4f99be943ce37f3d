//! `/api/categories` and `/api/terms`: categories and their terms.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Category, Term, TermInput};
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_categories, create_category))
        .routes(routes!(get_category, update_category, delete_category))
        .routes(routes!(list_terms, create_term))
        .routes(routes!(get_term, update_term, delete_term))
}

/// A category id in a path.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CategoryPath {
    /// Category id.
    #[param(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub id: String,
}

/// A term id in a path (anything else names no term: 404).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TermPath {
    /// Term id.
    pub id: Uuid,
}

/// A new category.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewCategory {
    /// Machine name.
    #[schema(pattern = "^[a-z][a-z0-9_]{0,31}$")]
    pub id: String,
    /// Not only spaces.
    #[schema(pattern = "[^ ]")]
    pub label: String,
    #[serde(default)]
    pub description: String,
}

fn term_id(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| AppError::NotFound(format!("term {raw}")))
}

/// Label and description of a category.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryInput {
    /// Not only spaces.
    #[schema(pattern = "[^ ]")]
    pub label: String,
    #[serde(default)]
    pub description: String,
}

/// Every category.
#[utoipa::path(get, path = "/api/categories", tag = "category",
    responses(
        (status = 200, description = "Categories", body = [Category]),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn list_categories(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<Category>>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::list(&state.db).await?))
}

/// Create a category.
#[utoipa::path(post, path = "/api/categories", tag = "category", request_body = NewCategory,
    responses(
        (status = 201, description = "Created", body = Category),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
        (status = 409, description = "Exists", body = ErrorBody),
        (status = 422, description = "Invalid id or blank label", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_category(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewCategory>,
) -> Result<(StatusCode, Json<Category>), AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    let c = Category {
        id: new.id,
        label: new.label,
        description: new.description,
    };
    Ok((
        StatusCode::CREATED,
        Json(super::create(&state.db, &c).await?),
    ))
}

/// One category.
#[utoipa::path(get, path = "/api/categories/{id}", tag = "category",
    params(CategoryPath),
    responses(
        (status = 200, description = "The category", body = Category),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn get_category(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<Category>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::get(&state.db, &id).await?))
}

/// Change a category's label and description.
#[utoipa::path(put, path = "/api/categories/{id}", tag = "category", request_body = CategoryInput,
    params(CategoryPath),
    responses(
        (status = 200, description = "Updated", body = Category),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
        (status = 422, description = "Blank label", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_category(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<CategoryInput>,
) -> Result<Json<Category>, AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    let c = Category {
        id,
        label: input.label,
        description: input.description,
    };
    Ok(Json(super::update(&state.db, &c).await?))
}

/// Delete a category and its terms, unless items reference one of them.
#[utoipa::path(delete, path = "/api/categories/{id}", tag = "category",
    params(CategoryPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
        (status = 409, description = "`category_in_use`: items (live, or unpublished in a stage) reference its terms (details: `uses`, the first 50, and `total`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_category(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    super::delete(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The terms of a category (cached, tag `term_list:{category}`).
#[utoipa::path(get, path = "/api/categories/{id}/terms", tag = "category",
    params(CategoryPath),
    responses(
        (status = 200, description = "Terms by weight and name", body = [Term]),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn list_terms(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<Vec<Term>>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::terms(&state, &id).await?))
}

/// Add a term to a category.
#[utoipa::path(post, path = "/api/categories/{id}/terms", tag = "category", request_body = TermInput,
    params(CategoryPath),
    responses(
        (status = 201, description = "Created", body = Term),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
        (status = 404, description = "No such category", body = ErrorBody),
        (status = 409, description = "Same name under the same parent", body = ErrorBody),
        (status = 422, description = "Blank name, or a parent missing or in another category", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_term(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<TermInput>,
) -> Result<(StatusCode, Json<Term>), AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    Ok((
        StatusCode::CREATED,
        Json(super::create_term(&state, &id, &input).await?),
    ))
}

/// One term (cached, tag `term:{id}`).
#[utoipa::path(get, path = "/api/terms/{id}", tag = "category",
    params(TermPath),
    responses(
        (status = 200, description = "The term", body = Term),
        (status = 401, description = "Anonymous, and anonymous visitors may not access content", body = ErrorBody),
        (status = 403, description = "Lacks `access content`", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn get_term(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Json<Term>, AppError> {
    account.require(permission::ACCESS_CONTENT)?;
    Ok(Json(super::term(&state, term_id(&id)?).await?))
}

/// Replace a term's name, description, parent and weight.
#[utoipa::path(put, path = "/api/terms/{id}", tag = "category", request_body = TermInput,
    params(TermPath),
    responses(
        (status = 200, description = "Updated", body = Term),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
        (status = 409, description = "Same name under the same parent", body = ErrorBody),
        (status = 422, description = "Blank name, or parent missing, foreign or a descendant", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_term(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<TermInput>,
) -> Result<Json<Term>, AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    Ok(Json(
        super::update_term(&state, term_id(&id)?, &input).await?,
    ))
}

/// Delete a term without children that no item references.
#[utoipa::path(delete, path = "/api/terms/{id}", tag = "category",
    params(TermPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Anonymous", body = ErrorBody),
        (status = 403, description = "Lacks `administer categories`, or a session request without its CSRF token", body = ErrorBody),
        (status = 404, description = "No such term", body = ErrorBody),
        (status = 409, description = "`term_has_children`: the term has children; `term_in_use`: items (live, or unpublished in a stage) reference it (details: `uses`, the first 50, and `total`)", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_term(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_CATEGORIES)?;
    let id = term_id(&id)?;
    super::delete_term(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
