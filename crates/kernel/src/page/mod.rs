//! Server-rendered HTML: the template environment ([`templates`]:
//! autoescaping, templates compiled into the binary), the front page, and
//! the administration shell ([`admin`]).

pub mod admin;
pub mod security;
pub mod templates;

use axum::response::Html;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::AppError;
use crate::state::AppState;
use crate::user::Account;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(front))
        .routes(routes!(asset))
        .merge(admin::router())
}

/// The front page.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "The front page", body = String, content_type = "text/html")),
    security((), ("bearer" = []), ("session" = [])))]
async fn front(
    axum::extract::State(state): axum::extract::State<AppState>,
    account: Account,
) -> Result<Html<String>, AppError> {
    let html = state.templates.render(
        "front.html",
        minijinja::context! { user => account.user.as_ref().map(|u| u.name.clone()) },
    )?;
    Ok(Html(html))
}

/// The pages' scripts, compiled into the binary (the CSP allows scripts
/// from the site only, never inline).
const ASSETS: &[(&str, &str)] = &[
    (
        "batch-progress.js",
        include_str!("../../assets/batch-progress.js"),
    ),
    (
        "search-reindex.js",
        include_str!("../../assets/search-reindex.js"),
    ),
];

/// A page script by name.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct AssetPath {
    /// The script's file name, e.g. `batch-progress.js`.
    name: String,
}

/// A script the kernel's pages load.
#[utoipa::path(get, path = "/assets/{name}", tag = "page", params(AssetPath),
    responses(
        (status = 200, description = "The script", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such asset", body = crate::error::ErrorBody),
    ),
    security(()))]
async fn asset(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<axum::response::Response, AppError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let (_, body) = ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| AppError::NotFound(format!("asset {name}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        *body,
    )
        .into_response())
}
