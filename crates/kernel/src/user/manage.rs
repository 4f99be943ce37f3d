//! User management: list, show, create, change, block, unblock and delete
//! users, reset their passwords, list and revoke their API tokens. The
//! functions here are what `/api/users...` (permission `administer users`)
//! and `trovato user ...` both call.
//!
//! An administrator's account is changed only by an administrator
//! (`by_administrator`; the command line counts as one): whoever could
//! reset an administrator's password could become one. The last active
//! administrator can be neither blocked nor deleted.
//!
//! Blocking a user or deleting one ends their sessions (through the
//! per-user session index, [`session::end_all`]) and revokes their API
//! tokens at once; a new password ends their sessions.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::roles::{keeps_an_administrator, lock_administrators};
use super::token::{self, TokenInfo};
use super::{Account, NewUser, User, UserError, UserName, password, permission, role, session};
use crate::db::{DbError, timed};
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::state::AppState;

/// A user's account state, as filters and commands name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Blocked,
}

impl Status {
    fn code(self) -> i16 {
        match self {
            Status::Active => 1,
            Status::Blocked => 0,
        }
    }
}

/// A user with the roles they hold explicitly.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct UserSummary {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// 1 = active, 0 = blocked.
    pub status: i16,
    pub created: DateTime<Utc>,
    pub changed: DateTime<Utc>,
    /// Explicit roles (`anonymous` and `authenticated` are implicit).
    pub roles: Vec<String>,
}

/// A page of users, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<UserSummary>,
    /// Users matching the filter, on every page.
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

/// Which users to list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserFilter {
    /// Users whose name contains this, ignoring case.
    pub name: Option<String>,
    /// Only active or only blocked users.
    #[param(inline)]
    pub status: Option<Status>,
    /// Only holders of this role (`authenticated`: everyone).
    pub role: Option<String>,
    /// Page number, from 1 [default: 1].
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Users per page, 1 to 200 [default: 50].
    #[param(minimum = 1, maximum = 200)]
    pub per_page: Option<u32>,
}

impl UserFilter {
    pub const MAX_PER_PAGE: u32 = 200;
    pub const MAX_PAGE: u32 = 1_000_000;

    fn page(&self) -> Result<(u32, u32), UserError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(50);
        if page == 0 || page > Self::MAX_PAGE {
            return Err(UserError::InvalidQuery(format!(
                "page must be 1 to {}",
                Self::MAX_PAGE
            )));
        }
        if per_page == 0 || per_page > Self::MAX_PER_PAGE {
            return Err(UserError::InvalidQuery(format!(
                "per_page must be 1 to {}",
                Self::MAX_PER_PAGE
            )));
        }
        Ok((page, per_page))
    }
}

/// A new user (without roles; `PUT /api/users/{id}/roles` gives them).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// 1 to 60 characters, no control characters, no surrounding space;
    /// unique regardless of case.
    #[schema(value_type = UserNameText)]
    pub name: String,
    /// One `@`, a dot inside the domain, no spaces; unique regardless of
    /// case.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@\s.\x00-\x1f\x7f-\x9f]$"
    )]
    pub email: String,
    /// 8 to 1024 characters.
    #[schema(value_type = PasswordText)]
    pub password: String,
}

/// A user name: 1 to 60 characters, no control characters, no surrounding
/// space ([`UserName::parse`]).
#[derive(utoipa::ToSchema)]
#[schema(
    value_type = String,
    pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,58}[^\s\x00-\x1f\x7f-\x9f])?$"
)]
pub struct UserNameText(pub String);

/// A password: 8 to 1024 characters (`password::check_strength`).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^[\s\S]{8,1024}$")]
pub struct PasswordText(pub String);

/// A change of a user's name or email address (absent: unchanged).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// As for a new user.
    #[schema(value_type = Option<UserNameText>)]
    pub name: Option<String>,
    /// As for a new user.
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@\s.\x00-\x1f\x7f-\x9f]$"
    )]
    pub email: Option<String>,
}

/// A new password; absent, one is generated and answered once.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// 8 to 1024 characters.
    #[schema(value_type = Option<PasswordText>)]
    pub password: Option<String>,
}

/// The user after a password reset.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PasswordReset {
    pub user: UserSummary,
    /// The generated password, shown this once (absent when the request
    /// gave one).
    pub password: Option<String>,
}

/// Where a deleted user's content goes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// The name of the user who becomes the author of the deleted user's
    /// items and revisions; absent, they keep no author.
    #[param(value_type = Option<UserNameText>)]
    pub reassign_to: Option<String>,
}

/// What a deletion did.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub user: User,
    /// Items whose rows or revisions changed author.
    pub items: usize,
    /// Who they went to; `None`: no one.
    pub heir: Option<User>,
}

const SELECT_SUMMARY: &str = "SELECT u.id, u.name, u.email, u.status, u.created, u.changed,
        COALESCE((SELECT array_agg(r.role ORDER BY r.role) FROM user_role r
                  WHERE r.user_id = u.id), '{}') AS roles
     FROM users u";

/// One user with their roles.
pub async fn summary(db: impl PgExecutor<'_>, id: Uuid) -> Result<UserSummary, UserError> {
    timed(
        "user.summary",
        sqlx::query_as::<_, UserSummary>(&format!("{SELECT_SUMMARY} WHERE u.id = $1"))
            .bind(id)
            .fetch_optional(db),
    )
    .await?
    .ok_or_else(|| UserError::NotFound(id.to_string()))
}

/// The users matching `filter`, by name (case-insensitively), a page at a time.
pub async fn list(db: &sqlx::PgPool, filter: &UserFilter) -> Result<UserPage, UserError> {
    let (page, per_page) = filter.page()?;
    // `authenticated` is every user's implicit role, never stored.
    let role = filter.role.as_deref().filter(|r| *r != role::AUTHENTICATED);
    const WHERE: &str = "WHERE ($1::text IS NULL OR strpos(lower(u.name), lower($1)) > 0)
          AND ($2::smallint IS NULL OR u.status = $2)
          AND ($3::text IS NULL OR EXISTS
               (SELECT 1 FROM user_role x WHERE x.user_id = u.id AND x.role = $3))";
    let status = filter.status.map(Status::code);
    let total: i64 = timed(
        "user.count",
        sqlx::query_scalar(&format!("SELECT count(*) FROM users u {WHERE}"))
            .bind(&filter.name)
            .bind(status)
            .bind(role)
            .fetch_one(db),
    )
    .await?;
    let users = timed(
        "user.list",
        sqlx::query_as::<_, UserSummary>(&format!(
            "{SELECT_SUMMARY} {WHERE} ORDER BY lower(u.name), u.id LIMIT $4 OFFSET $5"
        ))
        .bind(&filter.name)
        .bind(status)
        .bind(role)
        .bind(i64::from(per_page))
        .bind(i64::from(page - 1) * i64::from(per_page))
        .fetch_all(db),
    )
    .await?;
    Ok(UserPage {
        users,
        total,
        page,
        per_page,
    })
}

/// Locks `id`'s row for the transaction and returns the user and whether
/// they are an administrator; an administrator's account only for an
/// administrator.
async fn lock_target(
    tx: &mut PgConnection,
    id: Uuid,
    by_administrator: bool,
) -> Result<(User, bool), UserError> {
    let user = timed(
        "user.lock",
        sqlx::query_as::<_, User>(
            "SELECT id, name, email, status, created, changed FROM users WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx),
    )
    .await?
    .ok_or_else(|| UserError::NotFound(id.to_string()))?;
    let is_admin = super::roles_of(&mut *tx, id)
        .await?
        .iter()
        .any(|r| r == role::ADMINISTRATOR);
    if is_admin && !by_administrator {
        return Err(UserError::AdministratorAccount);
    }
    Ok((user, is_admin))
}

/// Creates a user without roles.
pub async fn create(state: &AppState, new: &NewUserRequest) -> Result<UserSummary, UserError> {
    let user = super::create(
        &state.db,
        NewUser {
            name: &new.name,
            email: &new.email,
            password: &new.password,
            admin: false,
        },
    )
    .await?;
    summary(&state.db, user.id).await
}

/// Changes a user's name or email address; after the commit, the cached
/// pages showing their name ([`super::user_tag`]) are invalidated.
pub async fn update(
    state: &AppState,
    id: Uuid,
    change: &UserUpdate,
    by_administrator: bool,
) -> Result<UserSummary, UserError> {
    let name = change.name.as_deref().map(UserName::parse).transpose()?;
    if let Some(email) = &change.email {
        super::check_email(email)?;
    }
    let mut tx = state.db.begin().await?;
    lock_target(&mut tx, id, by_administrator).await?;
    timed(
        "user.update",
        sqlx::query(
            "UPDATE users SET name = COALESCE($2, name), email = COALESCE($3, email),
                 changed = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(name.as_ref().map(UserName::as_str))
        .bind(&change.email)
        .execute(&mut *tx),
    )
    .await
    .map_err(super::unique_violation)?;
    let user = summary(&mut *tx, id).await?;
    tx.commit().await?;
    if name.is_some() {
        state.cache.invalidate(&[super::user_tag(id)]).await;
    }
    Ok(user)
}

/// Blocks (`Status::Blocked`) or unblocks a user. Blocking revokes their
/// API tokens in the same transaction and, after it, ends their sessions;
/// the last active administrator stays active.
pub async fn set_status(
    state: &AppState,
    id: Uuid,
    status: Status,
    by_administrator: bool,
) -> Result<UserSummary, UserError> {
    let mut tx = state.db.begin().await?;
    let (_, is_admin) = lock_target(&mut tx, id, by_administrator).await?;
    if status == Status::Blocked {
        if is_admin {
            lock_administrators(&mut tx).await?;
            keeps_an_administrator(&mut tx, id).await?;
        }
        token::revoke_all(&mut *tx, id).await?;
    }
    timed(
        "user.set_status",
        sqlx::query("UPDATE users SET status = $2, changed = now() WHERE id = $1")
            .bind(id)
            .bind(status.code())
            .execute(&mut *tx),
    )
    .await?;
    let user = summary(&mut *tx, id).await?;
    tx.commit().await?;
    if status == Status::Blocked {
        end_sessions(state, id).await;
    }
    tracing::info!(user_id = %id, ?status, "user status set");
    Ok(user)
}

/// Ends `id`'s sessions after a committed change. Never fails: a session
/// of a blocked or deleted user is refused at its next request anyway
/// (and deleted then), so a Redis outage here only leaves it for later.
async fn end_sessions(state: &AppState, id: Uuid) {
    match session::end_all(&state.kv, id).await {
        Ok(n) => tracing::info!(user_id = %id, sessions = n, "sessions ended"),
        Err(e) => {
            tracing::warn!(user_id = %id, error = %e, "could not end the sessions; they end at their next request")
        }
    }
}

/// Sets a new password (`None`: a generated one, returned) and ends the
/// user's sessions.
pub async fn reset_password(
    state: &AppState,
    id: Uuid,
    new_password: Option<&str>,
    by_administrator: bool,
) -> Result<PasswordReset, UserError> {
    let generated = new_password.is_none().then(password::generate);
    let chosen = new_password.or(generated.as_deref()).unwrap_or_default();
    password::check_strength(chosen)?;
    let hash = password::hash(chosen.to_owned()).await?;
    let mut tx = state.db.begin().await?;
    lock_target(&mut tx, id, by_administrator).await?;
    timed(
        "user.set_password",
        sqlx::query("UPDATE users SET pass = $2, changed = now() WHERE id = $1")
            .bind(id)
            .bind(&hash)
            .execute(&mut *tx),
    )
    .await?;
    let user = summary(&mut *tx, id).await?;
    tx.commit().await?;
    end_sessions(state, id).await;
    Ok(PasswordReset {
        user,
        password: generated,
    })
}

/// `id`'s API tokens (an administrator's only for an administrator).
pub async fn tokens(
    state: &AppState,
    id: Uuid,
    by_administrator: bool,
) -> Result<Vec<TokenInfo>, UserError> {
    let mut tx = state.db.begin().await?;
    lock_target(&mut tx, id, by_administrator).await?;
    let tokens = token::list(&mut *tx, id).await?;
    tx.commit().await?;
    Ok(tokens)
}

/// Revokes token `token_id` of user `id`.
pub async fn revoke_token(
    state: &AppState,
    id: Uuid,
    token_id: Uuid,
    by_administrator: bool,
) -> Result<(), UserError> {
    let mut tx = state.db.begin().await?;
    lock_target(&mut tx, id, by_administrator).await?;
    if !token::revoke(&mut *tx, id, token_id).await? {
        return Err(UserError::TokenNotFound(token_id.to_string()));
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes user `id` in one transaction: the content they wrote goes to
/// the user named `reassign_to`, or to no one; their roles and API tokens
/// go with them. Then their sessions end and the changed items' cached
/// copies are invalidated. The last active administrator stays.
pub async fn delete(
    state: &AppState,
    id: Uuid,
    reassign_to: Option<&str>,
    by_administrator: bool,
) -> Result<Deleted, UserError> {
    let mut tx = state.db.begin().await?;
    let (user, is_admin) = lock_target(&mut tx, id, by_administrator).await?;
    if is_admin && user.status == Status::Active.code() {
        lock_administrators(&mut tx).await?;
        keeps_an_administrator(&mut tx, id).await?;
    }
    // The row is locked: an edit adding a reference now waits for this
    // transaction, then finds the user gone.
    let uses = crate::item::references_to_user(&mut tx, id)
        .await
        .map_err(|e| match e {
            crate::item::ItemError::Db(d) => UserError::Db(d),
            other => UserError::Db(DbError::Unavailable(other.to_string())),
        })?;
    if !uses.is_empty() {
        return Err(UserError::InUse {
            id,
            items: crate::item::references::items_phrase(&uses),
            uses: crate::item::references::uses_json(&uses),
        });
    }
    let heir = match reassign_to {
        None => None,
        Some(name) => {
            let heir = super::find_by_name(&mut *tx, name)
                .await?
                .ok_or_else(|| UserError::InvalidReassignment(format!("no user named `{name}`")))?;
            if heir.id == id {
                return Err(UserError::InvalidReassignment(format!(
                    "`{name}` is the user being deleted"
                )));
            }
            // Kept until the commit: the heir cannot vanish meanwhile.
            timed(
                "user.lock_heir",
                sqlx::query("SELECT id FROM users WHERE id = $1 FOR SHARE")
                    .bind(heir.id)
                    .execute(&mut *tx),
            )
            .await?;
            Some(heir)
        }
    };
    let items = reassign_references(&mut tx, id, heir.as_ref().map(|h| h.id)).await?;
    timed(
        "user.delete",
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&mut *tx),
    )
    .await?;
    tx.commit().await?;
    end_sessions(state, id).await;
    let tags: Vec<_> = items
        .iter()
        .map(|&item| crate::item::item_tag(item))
        .collect();
    state.cache.invalidate(&tags).await;
    tracing::info!(user_id = %id, items = items.len(), heir = ?heir.as_ref().map(|h| h.id), "user deleted");
    Ok(Deleted {
        user,
        items: items.len(),
        heir,
    })
}

/// The columns that name a user as the author of content: `(table,
/// column, the item id column)`. Constants, never input: they are
/// formatted into the statements below.
const AUTHOR_COLUMNS: [(&str, &str, &str); 2] = [
    ("item", "author", "id"),
    ("item_revision", "author", "item_id"),
];

/// Hands every reference to user `from` in content to `to` (`None`: no
/// one), inside the deletion's transaction; returns the items touched.
/// Everything that refers to a user and should not simply lose them on
/// deletion belongs here.
async fn reassign_references(
    tx: &mut PgConnection,
    from: Uuid,
    to: Option<Uuid>,
) -> Result<Vec<Uuid>, UserError> {
    let mut items = Vec::new();
    for (table, column, item) in AUTHOR_COLUMNS {
        let touched: Vec<Uuid> = timed(
            "user.reassign_content",
            sqlx::query_scalar(&format!(
                "UPDATE {table} SET {column} = $2 WHERE {column} = $1 RETURNING {item}"
            ))
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx),
        )
        .await?;
        items.extend(touched);
    }
    items.sort_unstable();
    items.dedup();
    Ok(items)
}

// ---------------------------------------------------------------- routes

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(block_user))
        .routes(routes!(unblock_user))
        .routes(routes!(reset_user_password))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_user_token))
}

/// A path's user id; one that is not a UUID names no user.
fn user_id(raw: &str) -> Result<Uuid, AppError> {
    raw.parse()
        .map_err(|_| UserError::NotFound(raw.to_owned()).into())
}

/// Users, filtered and paged.
#[utoipa::path(get, path = "/api/users", tag = "user", params(UserFilter),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "A page or page size out of range, or a malformed filter", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    account: Account,
    Query(filter): Query<UserFilter>,
) -> Result<Json<UserPage>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    Ok(Json(list(&state.db, &filter).await?))
}

/// Create a user (without roles).
#[utoipa::path(post, path = "/api/users", tag = "user", request_body = NewUserRequest,
    responses(
        (status = 201, description = "Created", body = UserSummary),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`", body = ErrorBody),
        (status = 409, description = "The name or the email address is taken", body = ErrorBody),
        (status = 422, description = "Invalid name, email address or password", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewUserRequest>,
) -> Result<(StatusCode, Json<UserSummary>), AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    Ok((StatusCode::CREATED, Json(create(&state, &new).await?)))
}

/// One user.
#[utoipa::path(get, path = "/api/users/{id}", tag = "user",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = UserSummary),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
) -> Result<Json<UserSummary>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    Ok(Json(summary(&state.db, user_id(&raw_id)?).await?))
}

/// Change a user's name or email address.
#[utoipa::path(put, path = "/api/users/{id}", tag = "user", request_body = UserUpdate,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user now", body = UserSummary),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The name or the email address is taken", body = ErrorBody),
        (status = 422, description = "Invalid name or email address", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
    JsonBody(change): JsonBody<UserUpdate>,
) -> Result<Json<UserSummary>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    Ok(Json(update(&state, id, &change, account.is_admin()).await?))
}

/// Delete a user; their items and revisions go to `reassign_to`, or to no one.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "user", params(("id" = String, Path, description = "User id"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted; their sessions and API tokens are gone"),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "`last_administrator`: the last active administrator stays; `user_in_use`: items' user reference fields name the user (details: `uses`, the first 50, and `total`)", body = ErrorBody),
        (status = 422, description = "`reassign_to` names no user, or the user being deleted", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    delete(&state, id, q.reassign_to.as_deref(), account.is_admin()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Block a user: their sessions end and their API tokens are revoked at once.
#[utoipa::path(post, path = "/api/users/{id}/block", tag = "user",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user, blocked", body = UserSummary),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last active administrator stays active", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn block_user(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
) -> Result<Json<UserSummary>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    Ok(Json(
        set_status(&state, id, Status::Blocked, account.is_admin()).await?,
    ))
}

/// Unblock a user (their revoked API tokens stay revoked).
#[utoipa::path(post, path = "/api/users/{id}/unblock", tag = "user",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user, active", body = UserSummary),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn unblock_user(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
) -> Result<Json<UserSummary>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    Ok(Json(
        set_status(&state, id, Status::Active, account.is_admin()).await?,
    ))
}

/// Set a user's password (absent: a generated one, answered once); their
/// sessions end.
#[utoipa::path(post, path = "/api/users/{id}/password", tag = "user", request_body = PasswordRequest,
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The password is set", body = PasswordReset),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "The password is too short or too long", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn reset_user_password(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
    JsonBody(req): JsonBody<PasswordRequest>,
) -> Result<Json<PasswordReset>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    let reset = reset_password(&state, id, req.password.as_deref(), account.is_admin()).await?;
    Ok(Json(reset))
}

/// A user's API tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/users/{id}/tokens", tag = "user",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user's tokens, oldest first", body = [TokenInfo]),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
) -> Result<Json<Vec<TokenInfo>>, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    Ok(Json(tokens(&state, id, account.is_admin()).await?))
}

/// Revoke one of a user's API tokens.
#[utoipa::path(delete, path = "/api/users/{id}/tokens/{token_id}", tag = "user",
    params(
        ("id" = String, Path, description = "User id"),
        ("token_id" = String, Path, description = "Token id"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer users`, or the user is an administrator and the caller is not", body = ErrorBody),
        (status = 404, description = "No such user, or no such token of theirs", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn revoke_user_token(
    State(state): State<AppState>,
    account: Account,
    Path((raw_id, raw_token)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_USERS)?;
    let id = user_id(&raw_id)?;
    let token_id: Uuid = raw_token
        .parse()
        .map_err(|_| UserError::TokenNotFound(raw_token.clone()))?;
    revoke_token(&state, id, token_id, account.is_admin()).await?;
    Ok(StatusCode::NO_CONTENT)
}
