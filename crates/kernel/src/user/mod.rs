//! Users and access: accounts, Argon2id passwords, roles with named
//! permissions, server-side sessions in Redis, CSRF tokens and API bearer
//! tokens.

pub mod access;
pub mod admin;
pub mod flood;
pub mod manage;
pub mod password;
pub mod permissions;
pub mod roles;
pub mod routes;
pub mod session;
pub mod settings;
pub mod token;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::db::{DbError, timed};
use crate::error::HttpError;
use crate::kv::KvError;

pub use access::Account;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Wrong password or unknown user: deliberately indistinguishable.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// Flood control: too many failed logins from this address.
    #[error("too many failed login attempts; try again in {} s", retry_after.as_millis().div_ceil(1000))]
    TooManyLoginAttempts { retry_after: std::time::Duration },
    #[error("a user with this name already exists")]
    NameTaken,
    /// Email addresses are unique regardless of case.
    #[error("another user already has this email address")]
    EmailTaken,
    #[error("invalid user name: {0}")]
    InvalidName(String),
    #[error("invalid email: {0}")]
    InvalidEmail(String),
    #[error("password rejected: {0}")]
    WeakPassword(String),
    #[error("user {0} not found")]
    NotFound(String),
    #[error("role {0} not found")]
    RoleNotFound(String),
    #[error("API token {0} not found")]
    TokenNotFound(String),
    /// A listing's page or page size out of range.
    #[error("{0}")]
    InvalidQuery(String),
    /// Where a deleted user's content should go names no other user.
    #[error("cannot reassign the content: {0}")]
    InvalidReassignment(String),
    #[error("a role named {0} already exists")]
    RoleExists(String),
    #[error("{0}")]
    InvalidRole(String),
    #[error("{0}")]
    BuiltInRole(String),
    #[error("only administrators grant or revoke the administrator role")]
    AdministratorOnly,
    /// Blocking, deleting or taking over an administrator's account.
    #[error("only administrators change, block or delete an administrator's account")]
    AdministratorAccount,
    /// A permission neither the kernel nor a plugin declares.
    #[error("no such permission: {} (GET /api/permissions lists them)", .0.join(", "))]
    UnknownPermission(Vec<String>),
    #[error("the last active administrator keeps the administrator role")]
    LastAdministrator,
    /// Items' user reference fields name the user; deleting them would
    /// leave those values pointing nowhere.
    #[error("user {id} is referenced by {items}; remove those references first")]
    InUse {
        id: Uuid,
        /// How many items hold the references ("3 items").
        items: String,
        /// The references, as the error body's details list them.
        uses: serde_json::Value,
    },
    /// An unsafe request of a browser session (or a login form) without
    /// its CSRF token.
    #[error(
        "this request needs the CSRF token: send it as X-CSRF-Token or the csrf_token form field"
    )]
    CsrfTokenMissing,
    /// A CSRF token that is present but not the one expected.
    #[error("the CSRF token does not match; reload the page or read it again from GET /user/me")]
    CsrfTokenInvalid,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Kv(#[from] KvError),
}

impl UserError {
    /// Whole seconds until the error ends by itself, for `Retry-After`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            UserError::TooManyLoginAttempts { retry_after } => {
                Some(u64::try_from(retry_after.as_millis().div_ceil(1000)).unwrap_or(u64::MAX))
            }
            _ => None,
        }
    }
}

impl HttpError for UserError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            UserError::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials"),
            UserError::TooManyLoginAttempts { .. } => (S::TOO_MANY_REQUESTS, "too_many_attempts"),
            UserError::NameTaken => (S::CONFLICT, "name_taken"),
            UserError::EmailTaken => (S::CONFLICT, "email_taken"),
            UserError::InvalidName(_) => (S::UNPROCESSABLE_ENTITY, "invalid_name"),
            UserError::InvalidEmail(_) => (S::UNPROCESSABLE_ENTITY, "invalid_email"),
            UserError::WeakPassword(_) => (S::UNPROCESSABLE_ENTITY, "weak_password"),
            UserError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            UserError::RoleNotFound(_) => (S::NOT_FOUND, "role_not_found"),
            UserError::TokenNotFound(_) => (S::NOT_FOUND, "token_not_found"),
            UserError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query"),
            UserError::InvalidReassignment(_) => (S::UNPROCESSABLE_ENTITY, "invalid_reassignment"),
            UserError::RoleExists(_) => (S::CONFLICT, "role_exists"),
            UserError::InvalidRole(_) => (S::UNPROCESSABLE_ENTITY, "invalid_role"),
            UserError::BuiltInRole(_) => (S::CONFLICT, "role_built_in"),
            UserError::AdministratorOnly => (S::FORBIDDEN, "forbidden"),
            UserError::AdministratorAccount => (S::FORBIDDEN, "forbidden"),
            UserError::UnknownPermission(_) => (S::UNPROCESSABLE_ENTITY, "unknown_permission"),
            UserError::LastAdministrator => (S::CONFLICT, "last_administrator"),
            UserError::InUse { .. } => (S::CONFLICT, "user_in_use"),
            UserError::CsrfTokenMissing => (S::FORBIDDEN, "csrf_token_missing"),
            UserError::CsrfTokenInvalid => (S::FORBIDDEN, "csrf_token_invalid"),
            UserError::Db(e) => e.status_code(),
            UserError::Kv(e) => e.status_code(),
            UserError::Hash(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        self.retry_after_secs()
    }

    fn error_details(&self) -> serde_json::Value {
        match self {
            UserError::InUse { uses, .. } => uses.clone(),
            _ => serde_json::Value::Null,
        }
    }
}

impl From<sqlx::Error> for UserError {
    fn from(e: sqlx::Error) -> Self {
        UserError::Db(e.into())
    }
}

/// Every permission the kernel checks, each declared once with its
/// description: the constants handlers check and [`permission::KERNEL`],
/// the kernel's part of the registry ([`permissions::Registry`]; plugins
/// declare theirs in their manifests). Administrators hold all of them.
pub mod permission {
    macro_rules! kernel_permissions {
        ($($(#[$doc:meta])* $id:ident = $name:literal, $description:literal;)*) => {
            $($(#[$doc])* pub const $id: &str = $name;)*
            /// The kernel's permissions: name and description.
            pub const KERNEL: &[(&str, &str)] = &[$(($name, $description)),*];
        };
    }

    kernel_permissions! {
        ACCESS_CONTENT = "access content",
            "See published items, item types, categories and terms, and search them";
        VIEW_UNPUBLISHED_CONTENT = "view unpublished content",
            "See unpublished items of any author";
        CREATE_CONTENT = "create content", "Create items";
        EDIT_OWN_CONTENT = "edit own content", "Edit the items one wrote, and read their revisions";
        EDIT_ANY_CONTENT = "edit any content", "Edit every item, and read its revisions";
        DELETE_OWN_CONTENT = "delete own content", "Delete the items one wrote";
        DELETE_ANY_CONTENT = "delete any content", "Delete every item";
        ADMINISTER_CONTENT_TYPES = "administer content types",
            "Create, change and delete item types and their fields";
        ADMINISTER_STAGES = "administer stages",
            "List and create stages, publish them, and work in any stage";
        ADMINISTER_CATEGORIES = "administer categories", "Create, change and delete categories and terms";
        UPLOAD_FILES = "upload files", "Upload files (`POST /file/upload`)";
        ADMINISTER_FILES = "administer files",
            "See, and delete, every file, private ones included";
        ADMINISTER_SEARCH = "administer search",
            "Choose the indexed fields, weights and language of each item type, and reindex";
        ADMINISTER_PLUGINS = "administer plugins", "See the plugins and their state";
        ADMINISTER_PERMISSIONS = "administer permissions",
            "Create, change and delete roles, give users roles, and list the permissions";
        ADMINISTER_USERS = "administer users",
            "List, create, change, block, unblock and delete users, reset their passwords and revoke their API tokens";
        ADMINISTER_SITE = "administer site",
            "Open the administration pages of cron, queues and batches, run cron, retry dead queue items, and see every batch";
    }
}

/// The built-in role names.
pub mod role {
    pub const ANONYMOUS: &str = "anonymous";
    pub const AUTHENTICATED: &str = "authenticated";
    pub const ADMINISTRATOR: &str = "administrator";
}

/// A user row (without the password hash).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// 1 = active, 0 = blocked.
    pub status: i16,
    pub created: DateTime<Utc>,
    pub changed: DateTime<Utc>,
}

/// A validated user name: 1-60 characters, no control characters, no
/// leading or trailing space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, UserError> {
        let len = raw.chars().count();
        if len == 0 || len > 60 {
            return Err(UserError::InvalidName("must be 1 to 60 characters".into()));
        }
        if raw.trim() != raw {
            return Err(UserError::InvalidName(
                "must not start or end with a space".into(),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(UserError::InvalidName(
                "must not contain control characters".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically plausible email address (one `@`, non-empty parts, no
/// spaces); deliverability is not our concern.
pub(crate) fn check_email(raw: &str) -> Result<(), UserError> {
    let ok = raw.chars().count() <= 254
        && !raw.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(raw.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidEmail(format!(
            "`{raw}` is not an address"
        )))
    }
}

/// A violated uniqueness of the users table as the error it means.
fn unique_violation(e: sqlx::Error) -> UserError {
    let e = DbError::from(e);
    match e.constraint() {
        Some("users_name_lower_key") => UserError::NameTaken,
        Some("users_email_lower_key") => UserError::EmailTaken,
        _ => UserError::Db(e),
    }
}

/// What `create` needs.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub password: &'a str,
    pub admin: bool,
}

/// Creates a user (and its administrator role if asked) in one transaction.
pub async fn create(pool: &PgPool, new: NewUser<'_>) -> Result<User, UserError> {
    let name = UserName::parse(new.name)?;
    check_email(new.email)?;
    password::check_strength(new.password)?;
    let hash = password::hash(new.password.to_owned()).await?;
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let user = timed(
        "user.insert",
        sqlx::query_as::<_, User>(
            "INSERT INTO users (id, name, email, pass) VALUES ($1, $2, $3, $4)
             RETURNING id, name, email, status, created, changed",
        )
        .bind(id)
        .bind(name.as_str())
        .bind(new.email)
        .bind(&hash)
        .fetch_one(&mut *tx),
    )
    .await
    .map_err(unique_violation)?;
    if new.admin {
        timed(
            "user.grant_role",
            sqlx::query("INSERT INTO user_role (user_id, role) VALUES ($1, $2)")
                .bind(id)
                .bind(role::ADMINISTRATOR)
                .execute(&mut *tx),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(user)
}

/// Finds a user by name, case-insensitively, with the password hash.
pub async fn find_credentials(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<(User, String)>, UserError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        pass: String,
    }
    let row = timed(
        "user.find_credentials",
        sqlx::query_as::<_, Row>(
            "SELECT id, name, email, status, created, changed, pass
             FROM users WHERE lower(name) = lower($1)",
        )
        .bind(name)
        .fetch_optional(db),
    )
    .await?;
    Ok(row.map(|r| (r.user, r.pass)))
}

/// The cache tag of what shows a user's name (item pages of their items,
/// user reference values): a rename invalidates it.
pub fn user_tag(id: Uuid) -> crate::cache::CacheTag {
    crate::cache::CacheTag::for_id("user", id)
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<User>, UserError> {
    Ok(timed(
        "user.find_by_id",
        sqlx::query_as::<_, User>(
            "SELECT id, name, email, status, created, changed FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(db),
    )
    .await?)
}

pub async fn find_by_name(db: impl PgExecutor<'_>, name: &str) -> Result<Option<User>, UserError> {
    Ok(timed(
        "user.find_by_name",
        sqlx::query_as::<_, User>(
            "SELECT id, name, email, status, created, changed FROM users
             WHERE lower(name) = lower($1)",
        )
        .bind(name)
        .fetch_optional(db),
    )
    .await?)
}

/// The roles a user holds explicitly (administrator, custom roles).
pub async fn roles_of(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<String>, UserError> {
    Ok(timed(
        "user.roles",
        sqlx::query_scalar::<_, String>(
            "SELECT role FROM user_role WHERE user_id = $1 ORDER BY role",
        )
        .bind(user_id)
        .fetch_all(db),
    )
    .await?)
}
