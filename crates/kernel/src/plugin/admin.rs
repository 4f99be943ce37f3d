//! `/admin/plugins`: every plugin with its state, taps, dependencies and
//! load error, and enabling or disabling one ([`super::Plugins::set_enabled`]).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, ErrorBody};
use crate::page::admin;
use crate::state::AppState;
use crate::user::{Account, permission};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(plugins_page))
        .routes(routes!(enable_from_page))
        .routes(routes!(disable_from_page))
}

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Enabled,
    Disabled,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Enabled => "The plugin was enabled.",
            Notice::Disabled => "The plugin was disabled: no tap is dispatched to it.",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// What the last action did (set by the page's own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

/// Every plugin in dispatch order with its state.
#[utoipa::path(get, path = "/admin/plugins", tag = "page", params(PageQuery),
    responses(
        (status = 200, description = "The plugins page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer plugins`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn plugins_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_PLUGINS)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let html = admin::render(
        &state,
        &account,
        "/admin/plugins",
        "Plugins",
        "admin/plugins.html",
        minijinja::context! {
            plugins => state.plugins.list(),
            notice => q.notice.map(Notice::text),
        },
    )
    .await?;
    Ok(html.into_response())
}

/// A plugin's name in a path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PluginPath {
    /// The plugin's name.
    name: String,
}

/// A form with nothing but the token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenOnly {
    csrf_token: String,
}

async fn set(
    state: &AppState,
    account: &Account,
    name: &str,
    on: bool,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(account, Some(permission::ADMINISTER_PLUGINS)) {
        return Ok(r);
    }
    state.plugins.set_enabled(&state.db, name, on).await?;
    let notice = if on { "enabled" } else { "disabled" };
    Ok(Redirect::to(&format!("/admin/plugins?notice={notice}")).into_response())
}

/// Enable a plugin from the plugins page.
#[utoipa::path(post, path = "/admin/plugins/{name}/enable", tag = "page", params(PluginPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer plugins`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn enable_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    set(&state, &account, &name, true).await
}

/// Disable a plugin from the plugins page.
#[utoipa::path(post, path = "/admin/plugins/{name}/disable", tag = "page", params(PluginPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer plugins`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn disable_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    set(&state, &account, &name, false).await
}
