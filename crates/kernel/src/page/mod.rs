//! Server-rendered HTML: the template environment ([`templates`]:
//! autoescaping, templates compiled into the binary) and the front page.

pub mod templates;

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use crate::error::AppError;
use crate::state::AppState;
use crate::user::Account;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(front))
}

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
