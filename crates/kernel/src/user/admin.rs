//! The people pages: `/admin/people` (users: find, create, block, unblock,
//! give roles; `administer users`, roles `administer permissions`),
//! `/admin/people/{id}` (one user: rename, change the email address, list
//! and revoke their API tokens; `administer users`) and
//! `/admin/roles` (every role's permissions as a grid of checkboxes from
//! the permission registry, a new role; `administer permissions`). Every
//! action is the user module's own operation ([`super::manage`],
//! [`super::roles`]); a refusal shows the page again with the kernel's
//! sentence.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::manage::{self, NewUserRequest, Status, UserFilter};
use super::roles::{self, NewRole, RoleUpdate};
use super::{Account, UserError, permission, role};
use crate::error::{AppError, ErrorBody, HttpError};
use crate::page::admin;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(people_page, create_user_from_page))
        .routes(routes!(person_page, update_user_from_page))
        .routes(routes!(revoke_token_from_page))
        .routes(routes!(block_from_page))
        .routes(routes!(unblock_from_page))
        .routes(routes!(user_roles_from_page))
        .routes(routes!(password_from_page))
        .routes(routes!(delete_from_page))
        .routes(routes!(roles_page, save_roles_from_page))
        .routes(routes!(create_role_from_page))
}

/// What the last action did, shown once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    Created,
    Blocked,
    Unblocked,
    RolesSaved,
    PermissionsSaved,
    RoleCreated,
    Deleted,
    AccountSaved,
    TokenRevoked,
}

impl Notice {
    fn text(self) -> &'static str {
        match self {
            Notice::Created => "The user was created.",
            Notice::Blocked => "The user was blocked: their sessions and API tokens are gone.",
            Notice::Unblocked => "The user was unblocked.",
            Notice::RolesSaved => "The user's roles were saved.",
            Notice::PermissionsSaved => "The permissions were saved.",
            Notice::RoleCreated => "The role was created; tick its permissions below.",
            Notice::Deleted => "The user was deleted.",
            Notice::AccountSaved => "The account was saved.",
            Notice::TokenRevoked => "The token was revoked: it signs nobody in any more.",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Notice::Created => "created",
            Notice::Blocked => "blocked",
            Notice::Unblocked => "unblocked",
            Notice::RolesSaved => "roles_saved",
            Notice::PermissionsSaved => "permissions_saved",
            Notice::RoleCreated => "role_created",
            Notice::Deleted => "deleted",
            Notice::AccountSaved => "account_saved",
            Notice::TokenRevoked => "token_revoked",
        }
    }
}

/// The people page's filters and page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeopleQuery {
    /// Users whose name contains this.
    name: Option<String>,
    /// `active` or `blocked` (empty: both).
    #[param(pattern = "^(active|blocked)?$")]
    status: Option<String>,
    /// 1-based page.
    #[param(minimum = 1, maximum = 1000000)]
    page: Option<u32>,
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

/// A refusal the page shows: 4xx errors of the user module become the
/// page again with their sentence; anything else is the request's error.
fn shown_refusal(e: UserError) -> Result<(StatusCode, String), AppError> {
    let (status, _) = e.status_code();
    if status.is_client_error() {
        Ok((status, sentence(&e.to_string())))
    } else {
        Err(e.into())
    }
}

fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => {
            let mut out: String = f.to_uppercase().chain(c).collect();
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

#[derive(Serialize)]
struct PersonRow {
    id: Uuid,
    name: String,
    email: String,
    active: bool,
    roles: Vec<String>,
    created: String,
}

struct PeopleView<'a> {
    query: &'a PeopleQuery,
    notice: Option<&'a str>,
    error: Option<String>,
    form: BTreeMap<String, String>,
}

async fn render_people(
    state: &AppState,
    account: &Account,
    v: PeopleView<'_>,
) -> Result<Html<String>, AppError> {
    let status = match v.query.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some("active") => Some(Status::Active),
        Some("blocked") => Some(Status::Blocked),
        Some(other) => {
            return Err(AppError::bad_request(
                "bad_filter",
                format!("status must be active or blocked, not `{other}`"),
            ));
        }
    };
    let filter = UserFilter {
        name: v
            .query
            .name
            .as_ref()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        status,
        role: None,
        page: v.query.page,
        per_page: Some(50),
    };
    let page = match manage::list(&state.db, &filter).await {
        Ok(p) => p,
        Err(e) => {
            let (_, message) = shown_refusal(e)?;
            return Err(AppError::bad_request("bad_filter", message));
        }
    };
    let roles: Vec<(String, String)> = if account.has(permission::ADMINISTER_PERMISSIONS) {
        roles::list(&state.db)
            .await?
            .into_iter()
            .filter(|r| r.name != role::ANONYMOUS && r.name != role::AUTHENTICATED)
            .filter(|r| r.name != role::ADMINISTRATOR || account.is_admin())
            .map(|r| (r.name, r.label))
            .collect()
    } else {
        vec![]
    };
    let rows: Vec<PersonRow> = page
        .users
        .into_iter()
        .map(|u| PersonRow {
            id: u.id,
            active: u.status == 1,
            created: crate::item::display::readable_time(u.created),
            name: u.name,
            email: u.email,
            roles: u.roles,
        })
        .collect();
    let pages = (page.total + i64::from(page.per_page) - 1) / i64::from(page.per_page);
    admin::render(
        state,
        account,
        "/admin/people",
        "People",
        "admin/people.html",
        minijinja::context! {
            users => rows,
            total => page.total,
            page => page.page,
            pages => pages,
            f_name => filter.name,
            f_status => v.query.status.clone().unwrap_or_default(),
            roles => roles,
            may_manage => account.has(permission::ADMINISTER_USERS),
            notice => v.notice,
            error => v.error,
            form => v.form,
        },
    )
    .await
}

/// Every user (by name, filtered), their roles, and a form for a new one.
#[utoipa::path(get, path = "/admin/people", tag = "page", params(PeopleQuery),
    responses(
        (status = 200, description = "The people page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad filter or page", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn people_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<PeopleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let Query(q) = query?;
    let view = PeopleView {
        query: &q,
        notice: q.notice.map(Notice::text),
        error: None,
        form: BTreeMap::new(),
    };
    Ok(render_people(&state, &account, view).await?.into_response())
}

/// A page form's fields by name.
fn form_map(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn empty_query() -> PeopleQuery {
    PeopleQuery {
        name: None,
        status: None,
        page: None,
        notice: None,
    }
}

/// The new user form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NewUserForm {
    name: String,
    email: String,
    password: String,
    csrf_token: String,
}

/// Create a user from the people page (a form post). A taken name or
/// address, or a weak password, shows the form again with the reason.
#[utoipa::path(post, path = "/admin/people", tag = "page",
    request_body(content = NewUserForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Created: back to the page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 409, description = "The name or address is taken: the form again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "A bad name or address, or a weak password: the form again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_user_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let form = form_map(&body);
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let new = NewUserRequest {
        name: get("name").trim().to_owned(),
        email: get("email").trim().to_owned(),
        password: get("password"),
    };
    match manage::create(&state, &new).await {
        Ok(_) => Ok(
            Redirect::to(&format!("/admin/people?notice={}", Notice::Created.param()))
                .into_response(),
        ),
        Err(e) => {
            let (status, message) = shown_refusal(e)?;
            let mut kept = form.clone();
            kept.remove("password");
            let q = empty_query();
            let view = PeopleView {
                query: &q,
                notice: None,
                error: Some(message),
                form: kept,
            };
            let page = render_people(&state, &account, view).await?;
            Ok((status, page).into_response())
        }
    }
}

fn parse_user(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| UserError::NotFound(raw.to_owned()).into())
}

/// A user id in a path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct UserPath {
    /// The user's id.
    id: String,
}

/// A form with nothing but the token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct TokenOnly {
    csrf_token: String,
}

async fn set_status_from_page(
    state: &AppState,
    account: &Account,
    raw: &str,
    status: Status,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(raw)?;
    match manage::set_status(state, id, status, account.is_admin()).await {
        Ok(_) => {
            let notice = match status {
                Status::Blocked => Notice::Blocked,
                Status::Active => Notice::Unblocked,
            };
            Ok(Redirect::to(&format!("/admin/people?notice={}", notice.param())).into_response())
        }
        Err(e) => {
            let (status, message) = shown_refusal(e)?;
            let q = empty_query();
            let view = PeopleView {
                query: &q,
                notice: None,
                error: Some(message),
                form: BTreeMap::new(),
            };
            let page = render_people(state, account, view).await?;
            Ok((status, page).into_response())
        }
    }
}

/// Block a user from the people page: their sessions and tokens end.
#[utoipa::path(post, path = "/admin/people/{id}/block", tag = "page", params(UserPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last active administrator: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn block_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    set_status_from_page(&state, &account, &id, Status::Blocked).await
}

/// Unblock a user from the people page.
#[utoipa::path(post, path = "/admin/people/{id}/unblock", tag = "page", params(UserPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn unblock_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    set_status_from_page(&state, &account, &id, Status::Active).await
}

/// Give a user a new, generated password (shown on the page this once);
/// their sessions end.
#[utoipa::path(post, path = "/admin/people/{id}/password", tag = "page", params(UserPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The people page showing the new password once", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn password_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(&raw)?;
    let reset = manage::reset_password(&state, id, None, account.is_admin()).await?;
    let message = format!(
        "New password for {}: {} (shown this once; their sessions have ended).",
        reset.user.name,
        reset.password.unwrap_or_default()
    );
    let q = empty_query();
    let view = PeopleView {
        query: &q,
        notice: Some(&message),
        error: None,
        form: BTreeMap::new(),
    };
    let mut resp = render_people(&state, &account, view).await?.into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

/// The delete form: optionally who takes over the user's items.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeleteUserForm {
    /// The name of the user who becomes the author of the deleted user's items (empty: no one).
    reassign_to: Option<String>,
    csrf_token: String,
}

/// Delete a user from the people page; their items go to `reassign_to`
/// or keep no author.
#[utoipa::path(post, path = "/admin/people/{id}/delete", tag = "page", params(UserPath),
    request_body(content = DeleteUserForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: back to the page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last active administrator: the page again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "No user to reassign to of that name: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(&raw)?;
    let form = form_map(&body);
    let heir = form
        .get("reassign_to")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    match manage::delete(&state, id, heir, account.is_admin()).await {
        Ok(_) => Ok(
            Redirect::to(&format!("/admin/people?notice={}", Notice::Deleted.param()))
                .into_response(),
        ),
        Err(e) => {
            let (status, message) = shown_refusal(e)?;
            let q = empty_query();
            let view = PeopleView {
                query: &q,
                notice: None,
                error: Some(message),
                form: BTreeMap::new(),
            };
            let page = render_people(&state, &account, view).await?;
            Ok((status, page).into_response())
        }
    }
}

// ---------------------------------------------------------------- one user

#[derive(Serialize)]
struct TokenRow {
    id: Uuid,
    label: String,
    created: String,
    last_used: Option<String>,
}

/// What the person page shows besides the user.
struct PersonView<'a> {
    notice: Option<&'a str>,
    error: Option<String>,
    /// The account form's values (a refused save keeps what was typed).
    form: Option<(String, String)>,
}

async fn render_person(
    state: &AppState,
    account: &Account,
    id: Uuid,
    v: PersonView<'_>,
) -> Result<Html<String>, AppError> {
    let person = manage::summary(&state.db, id).await?;
    let tokens: Vec<TokenRow> = manage::tokens(state, id, account.is_admin())
        .await?
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            label: t.label,
            created: crate::item::display::readable_time(t.created),
            last_used: t.last_used.map(crate::item::display::readable_time),
        })
        .collect();
    let (name, email) = v
        .form
        .unwrap_or_else(|| (person.name.clone(), person.email.clone()));
    admin::render(
        state,
        account,
        "/admin/people",
        &person.name,
        "admin/person.html",
        minijinja::context! {
            person => minijinja::Value::from_serialize(&person),
            active => person.status == 1,
            since => crate::item::display::readable_time(person.created),
            tokens => tokens,
            f_name => name,
            f_email => email,
            notice => v.notice,
            error => v.error,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonQuery {
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

/// One user: their account (name and email address) and API tokens.
#[utoipa::path(get, path = "/admin/people/{id}", tag = "page", params(UserPath, PersonQuery),
    responses(
        (status = 200, description = "The user's page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one)", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn person_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    query: Result<Query<PersonQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(&raw)?;
    let Query(q) = query?;
    let view = PersonView {
        notice: q.notice.map(Notice::text),
        error: None,
        form: None,
    };
    Ok(render_person(&state, &account, id, view)
        .await?
        .into_response())
}

/// The account form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AccountForm {
    /// The user's name (1 to 60 characters).
    name: String,
    /// The user's email address.
    email: String,
    csrf_token: String,
}

/// Rename a user or change their email address (the user module's
/// `manage::update`, as `PATCH /api/users/{id}`); pages showing their
/// name show the new one at once.
#[utoipa::path(post, path = "/admin/people/{id}", tag = "page", params(UserPath),
    request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: back to the user's page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The name or address is taken: the form again, with the reason and the values typed", body = String, content_type = "text/html"),
        (status = 422, description = "A bad name or address: the form again, with the reason and the values typed", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn update_user_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(&raw)?;
    let form = form_map(&body);
    let name = form
        .get("name")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let email = form
        .get("email")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let change = manage::UserUpdate {
        name: Some(name.clone()),
        email: Some(email.clone()),
    };
    match manage::update(&state, id, &change, account.is_admin()).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/admin/people/{id}?notice={}",
            Notice::AccountSaved.param()
        ))
        .into_response()),
        Err(e) => {
            // Not this account's to change, or gone: no form to show again.
            let (status, _) = e.status_code();
            if status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND {
                return Err(e.into());
            }
            let (status, message) = shown_refusal(e)?;
            let view = PersonView {
                notice: None,
                error: Some(message),
                form: Some((name, email)),
            };
            let page = render_person(&state, &account, id, view).await?;
            Ok((status, page).into_response())
        }
    }
}

/// A user's token in a path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct UserTokenPath {
    /// The user's id.
    id: String,
    /// The token's id.
    token: String,
}

/// Revoke one of a user's API tokens: it signs nobody in from now on.
#[utoipa::path(post, path = "/admin/people/{id}/tokens/{token}/revoke", tag = "page", params(UserTokenPath),
    request_body(content = TokenOnly, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Revoked: back to the user's page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` (or, for an administrator's account, is not one), or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user, or no such token of theirs", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn revoke_token_from_page(
    State(state): State<AppState>,
    account: Account,
    Path((raw, raw_token)): Path<(String, String)>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    let id = parse_user(&raw)?;
    let token: Uuid = raw_token
        .parse()
        .map_err(|_| UserError::TokenNotFound(raw_token.clone()))?;
    manage::revoke_token(&state, id, token, account.is_admin()).await?;
    Ok(Redirect::to(&format!(
        "/admin/people/{id}?notice={}",
        Notice::TokenRevoked.param()
    ))
    .into_response())
}

/// The roles form: `roles` once per ticked role.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UserRolesForm {
    /// The role (the field repeats).
    roles: Vec<String>,
    csrf_token: String,
}

/// Replace a user's roles from the people page.
#[utoipa::path(post, path = "/admin/people/{id}/roles", tag = "page", params(UserPath),
    request_body(content = UserRolesForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the page with a notice; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer users` and `administer permissions`, granting or revoking administrator without being one, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last active administrator keeps the role: the page again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "An unknown role: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn user_roles_from_page(
    State(state): State<AppState>,
    account: Account,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_USERS)) {
        return Ok(r);
    }
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    let id = parse_user(&raw)?;
    let wanted: Vec<String> = url::form_urlencoded::parse(&body)
        .filter(|(k, _)| k == "roles")
        .map(|(_, v)| v.into_owned())
        .collect();
    match roles::set_user_roles(&state.db, id, &wanted, account.is_admin()).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/admin/people?notice={}",
            Notice::RolesSaved.param()
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = shown_refusal(e)?;
            let q = empty_query();
            let view = PeopleView {
                query: &q,
                notice: None,
                error: Some(message),
                form: BTreeMap::new(),
            };
            let page = render_people(&state, &account, view).await?;
            Ok((status, page).into_response())
        }
    }
}

/// One permission's row of the grid.
#[derive(Serialize)]
struct GridRow {
    name: String,
    description: String,
    owner: String,
    /// Per role (in the roles' order): granted.
    granted: Vec<bool>,
}

async fn render_roles(
    state: &AppState,
    account: &Account,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<Html<String>, AppError> {
    let all = roles::list(&state.db).await?;
    let registry = state.permissions.registry();
    let rows: Vec<GridRow> = registry
        .all()
        .map(|p| GridRow {
            name: p.name.clone(),
            description: p.description.clone(),
            owner: p.owner.clone(),
            granted: all
                .iter()
                .map(|r| r.name == role::ADMINISTRATOR || r.permissions.contains(&p.name))
                .collect(),
        })
        .collect();
    let columns: Vec<(String, String, bool)> = all
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.label.clone(),
                r.name == role::ADMINISTRATOR,
            )
        })
        .collect();
    admin::render(
        state,
        account,
        "/admin/roles",
        "Roles and permissions",
        "admin/roles.html",
        minijinja::context! {
            roles => columns,
            rows => rows,
            notice => notice,
            error => error,
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolesQuery {
    /// What the last action did (set by the pages' own redirects).
    #[param(inline)]
    notice: Option<Notice>,
}

/// Every role's permissions as a grid of checkboxes, and a new role form.
#[utoipa::path(get, path = "/admin/roles", tag = "page", params(RolesQuery),
    responses(
        (status = 200, description = "The roles page", body = String, content_type = "text/html"),
        (status = 303, description = "Anonymous: to the login form"),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn roles_page(
    State(state): State<AppState>,
    account: Account,
    query: Result<Query<RolesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_PERMISSIONS)) {
        return Ok(r);
    }
    let Query(q) = query?;
    Ok(
        render_roles(&state, &account, q.notice.map(Notice::text), None)
            .await?
            .into_response(),
    )
}

/// The grid: one `{role}` field per ticked permission.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct GridForm {
    /// The permissions a role grants: the field is named after the role and repeats.
    #[serde(rename = "{role}")]
    role: Option<Vec<String>>,
    /// The session's CSRF token (browser sessions; a bearer token needs none).
    csrf_token: Option<String>,
}

/// Save the grid: every role's permissions as ticked, all roles in one
/// transaction (the administrator role holds every permission and is left
/// as it is). A refused or failed save changes no role.
#[utoipa::path(post, path = "/admin/roles", tag = "page",
    request_body(content = Option<GridForm>, description = "Empty when nothing is ticked", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: back to the page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer permissions`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 422, description = "A permission nobody declares: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn save_roles_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_PERMISSIONS)) {
        return Ok(r);
    }
    let mut ticked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if k != "csrf_token" {
            ticked
                .entry(k.into_owned())
                .or_default()
                .insert(v.into_owned());
        }
    }
    let all = roles::list(&state.db).await?;
    let every: Vec<String> = ticked.values().flatten().cloned().collect();
    let unknown = state.permissions.registry().unknown(&every);
    let failed = if unknown.is_empty() {
        // Every role in one transaction: a refusal or failure of any
        // leaves them all as they were.
        let updates: Vec<(String, RoleUpdate)> = all
            .iter()
            .filter(|r| r.name != role::ADMINISTRATOR)
            .map(|r| {
                let permissions = ticked
                    .get(&r.name)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                (
                    r.name.clone(),
                    RoleUpdate {
                        label: r.label.clone(),
                        permissions,
                    },
                )
            })
            .collect();
        match roles::update_all(&state.db, state.permissions.registry(), &updates).await {
            Ok(_) => None,
            Err(e) => Some(shown_refusal(e)?),
        }
    } else {
        Some(shown_refusal(UserError::UnknownPermission(unknown))?)
    };
    state.permissions.invalidate_all();
    match failed {
        None => Ok(Redirect::to(&format!(
            "/admin/roles?notice={}",
            Notice::PermissionsSaved.param()
        ))
        .into_response()),
        Some((status, message)) => {
            let page = render_roles(&state, &account, None, Some(message)).await?;
            Ok((status, page).into_response())
        }
    }
}

/// The new role form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct NewRoleForm {
    name: String,
    label: String,
    csrf_token: String,
}

/// Create a role from the roles page (a form post).
#[utoipa::path(post, path = "/admin/roles/new", tag = "page",
    request_body(content = NewRoleForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Created: back to the page; anonymous: to the login form"),
        (status = 403, description = "Lacks `administer permissions`, or a missing or wrong CSRF token", body = ErrorBody),
        (status = 409, description = "The role exists: the page again, with the reason", body = String, content_type = "text/html"),
        (status = 422, description = "A bad name or label: the page again, with the reason", body = String, content_type = "text/html"),
    ),
    security((), ("bearer" = []), ("session" = [])))]
pub(crate) async fn create_role_from_page(
    State(state): State<AppState>,
    account: Account,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    if let Some(r) = admin::refusal(&account, Some(permission::ADMINISTER_PERMISSIONS)) {
        return Ok(r);
    }
    let form = form_map(&body);
    let new = NewRole {
        name: form
            .get("name")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        label: form
            .get("label")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    };
    match roles::create(&state.db, &new).await {
        Ok(_) => Ok(Redirect::to(&format!(
            "/admin/roles?notice={}",
            Notice::RoleCreated.param()
        ))
        .into_response()),
        Err(e) => {
            let (status, message) = shown_refusal(e)?;
            let page = render_roles(&state, &account, None, Some(message)).await?;
            Ok((status, page).into_response())
        }
    }
}
