//! Server-rendered HTML: the template environment ([`templates`]:
//! autoescaping, templates compiled into the binary), the front page, and
//! the administration shell ([`admin`]).

pub mod admin;
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
