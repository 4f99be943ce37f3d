//! Roles and their permissions, and the roles a user holds: the data layer
//! and `/api/roles`, `/api/users/{id}/roles`, `/api/permissions`. Every change clears this
//! process's permission cache; other processes see it within
//! [`PermissionCache::TTL`](super::permissions::PermissionCache::TTL).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, PgPool};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::permissions::{PermissionInfo, Registry};
use super::{Account, UserError, permission, role};
use crate::db::timed;
use crate::error::{AppError, ErrorBody};
use crate::http::JsonBody;
use crate::state::AppState;

/// A role and the permissions it grants (the administrator role holds
/// every permission whatever is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Role {
    pub name: String,
    pub label: String,
    pub permissions: Vec<String>,
}

/// A new role.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// `[a-z][a-z0-9_]*`, at most 64 characters.
    #[schema(pattern = "^[a-z][a-z0-9_]*$", max_length = 64)]
    pub name: String,
    /// 1 to 128 characters, no control characters, no surrounding space.
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,126}[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub label: String,
}

/// A role's label and its whole permission set (replacing the old one).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleUpdate {
    /// 1 to 128 characters, no control characters, no surrounding space.
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,126}[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    pub label: String,
    /// Permission names, each declared by the kernel or an enabled plugin
    /// (`GET /api/permissions`).
    #[schema(value_type = Vec<PermissionName>)]
    pub permissions: Vec<String>,
}

/// A permission name: 1 to 128 characters, no control characters, no
/// surrounding space. The served document lists the declared ones as its
/// `enum` ([`crate::openapi::describe_permissions`]).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]{0,126}[^\s\x00-\x1f\x7f-\x9f])?$")]
pub struct PermissionName(pub String);

/// The roles a user holds explicitly (replacing the old set); `anonymous`
/// and `authenticated` are implicit and cannot be listed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserRoles {
    /// Names of existing roles.
    #[schema(value_type = Vec<RoleName>)]
    pub roles: Vec<String>,
}

/// A role name: `[a-z][a-z0-9_]*`, at most 64 characters.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^[a-z][a-z0-9_]{0,63}$")]
pub struct RoleName(pub String);

const BUILT_IN: [&str; 3] = [role::ANONYMOUS, role::AUTHENTICATED, role::ADMINISTRATOR];

fn check_name(name: &str) -> Result<(), UserError> {
    if crate::text::is_machine_name(name, 64) {
        Ok(())
    } else {
        Err(UserError::InvalidRole(format!(
            "role name `{name}` must be a lowercase letter followed by letters, digits or \
             underscores, at most 64 characters"
        )))
    }
}

/// Labels and permission names: 1 to 128 characters, no control
/// characters, no surrounding space.
fn check_text(what: &str, text: &str) -> Result<(), UserError> {
    let len = text.chars().count();
    if len == 0 || len > 128 || text.trim() != text || text.chars().any(char::is_control) {
        return Err(UserError::InvalidRole(format!(
            "{what} `{}` must be 1 to 128 characters without control characters or \
             surrounding space",
            text.escape_debug()
        )));
    }
    Ok(())
}

const SELECT_ROLES: &str = "SELECT r.name, r.label,
        COALESCE(array_agg(p.permission ORDER BY p.permission)
                 FILTER (WHERE p.permission IS NOT NULL), '{}') AS permissions
     FROM role r LEFT JOIN role_permission p ON p.role = r.name";

/// Every role, by name.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Role>, UserError> {
    Ok(timed(
        "role.list",
        sqlx::query_as::<_, Role>(&format!(
            "{SELECT_ROLES} GROUP BY r.name, r.label ORDER BY r.name"
        ))
        .fetch_all(db),
    )
    .await?)
}

/// One role.
pub async fn get(db: impl PgExecutor<'_>, name: &str) -> Result<Role, UserError> {
    timed(
        "role.get",
        sqlx::query_as::<_, Role>(&format!(
            "{SELECT_ROLES} WHERE r.name = $1 GROUP BY r.name, r.label"
        ))
        .bind(name)
        .fetch_optional(db),
    )
    .await?
    .ok_or_else(|| UserError::RoleNotFound(name.to_owned()))
}

/// Creates a role without permissions.
pub async fn create(db: impl PgExecutor<'_>, new: &NewRole) -> Result<Role, UserError> {
    check_name(&new.name)?;
    check_text("label", &new.label)?;
    let created = timed(
        "role.create",
        sqlx::query("INSERT INTO role (name, label) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&new.name)
            .bind(&new.label)
            .execute(db),
    )
    .await?;
    if created.rows_affected() == 0 {
        return Err(UserError::RoleExists(new.name.clone()));
    }
    Ok(Role {
        name: new.name.clone(),
        label: new.label.clone(),
        permissions: Vec::new(),
    })
}

/// Sets a role's label and replaces its permissions, in one transaction.
/// Every permission must be in `registry`.
pub async fn update(
    db: &PgPool,
    registry: &Registry,
    name: &str,
    update: &RoleUpdate,
) -> Result<Role, UserError> {
    let mut tx = db.begin().await?;
    let role = update_in(&mut tx, registry, name, update).await?;
    tx.commit().await?;
    Ok(role)
}

/// Sets the label and permissions of each role in `updates`, all in one
/// transaction: when one is refused or fails, none changes.
pub async fn update_all(
    db: &PgPool,
    registry: &Registry,
    updates: &[(String, RoleUpdate)],
) -> Result<Vec<Role>, UserError> {
    let mut tx = db.begin().await?;
    let mut out = Vec::with_capacity(updates.len());
    for (name, update) in updates {
        out.push(update_in(&mut tx, registry, name, update).await?);
    }
    tx.commit().await?;
    Ok(out)
}

/// [`update`] inside the caller's transaction.
async fn update_in(
    tx: &mut PgConnection,
    registry: &Registry,
    name: &str,
    update: &RoleUpdate,
) -> Result<Role, UserError> {
    check_text("label", &update.label)?;
    for p in &update.permissions {
        check_text("permission", p)?;
    }
    let unknown = registry.unknown(&update.permissions);
    if !unknown.is_empty() {
        return Err(UserError::UnknownPermission(unknown));
    }
    if name == role::ADMINISTRATOR {
        return Err(UserError::BuiltInRole(format!(
            "`{name}` holds every permission; its permissions cannot be edited"
        )));
    }
    let mut permissions = update.permissions.clone();
    permissions.sort();
    permissions.dedup();
    let found = timed(
        "role.update",
        sqlx::query("UPDATE role SET label = $2 WHERE name = $1")
            .bind(name)
            .bind(&update.label)
            .execute(&mut *tx),
    )
    .await?;
    if found.rows_affected() == 0 {
        return Err(UserError::RoleNotFound(name.to_owned()));
    }
    timed(
        "role.clear_permissions",
        sqlx::query("DELETE FROM role_permission WHERE role = $1")
            .bind(name)
            .execute(&mut *tx),
    )
    .await?;
    timed(
        "role.grant_permissions",
        sqlx::query("INSERT INTO role_permission (role, permission) SELECT $1, unnest($2::text[])")
            .bind(name)
            .bind(&permissions)
            .execute(&mut *tx),
    )
    .await?;
    Ok(Role {
        name: name.to_owned(),
        label: update.label.clone(),
        permissions,
    })
}

/// Deletes a role; its holders lose it. Built-in roles stay.
pub async fn delete(db: impl PgExecutor<'_>, name: &str) -> Result<(), UserError> {
    if BUILT_IN.contains(&name) {
        return Err(UserError::BuiltInRole(format!(
            "`{name}` is built in and cannot be deleted"
        )));
    }
    let deleted = timed(
        "role.delete",
        sqlx::query("DELETE FROM role WHERE name = $1")
            .bind(name)
            .execute(db),
    )
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(UserError::RoleNotFound(name.to_owned()));
    }
    Ok(())
}

/// Replaces the roles `user_id` holds explicitly, in one transaction.
/// Granting or revoking `administrator` takes an administrator
/// (`by_administrator`), and the last active administrator keeps it.
pub async fn set_user_roles(
    db: &PgPool,
    user_id: Uuid,
    roles: &[String],
    by_administrator: bool,
) -> Result<Vec<String>, UserError> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if let Some(implicit) = roles
        .iter()
        .find(|r| *r == role::ANONYMOUS || *r == role::AUTHENTICATED)
    {
        return Err(UserError::InvalidRole(format!(
            "`{implicit}` is implicit and cannot be assigned"
        )));
    }
    let mut tx = db.begin().await?;
    let user: Option<Uuid> = timed(
        "role.lock_user",
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx),
    )
    .await?;
    if user.is_none() {
        return Err(UserError::NotFound(user_id.to_string()));
    }
    let had_admin = super::roles_of(&mut *tx, user_id)
        .await?
        .iter()
        .any(|r| r == role::ADMINISTRATOR);
    let keeps_admin = roles.iter().any(|r| r == role::ADMINISTRATOR);
    if had_admin != keeps_admin {
        if !by_administrator {
            return Err(UserError::AdministratorOnly);
        }
        lock_administrators(&mut tx).await?;
        if had_admin {
            keeps_an_administrator(&mut tx, user_id).await?;
        }
    }
    let known: Vec<String> = timed(
        "role.known",
        sqlx::query_scalar("SELECT name FROM role WHERE name = ANY($1) FOR SHARE")
            .bind(&roles)
            .fetch_all(&mut *tx),
    )
    .await?;
    let unknown: Vec<&str> = roles
        .iter()
        .filter(|r| !known.contains(r))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(UserError::InvalidRole(format!(
            "no such role: {}",
            unknown.join(", ")
        )));
    }
    timed(
        "role.clear_user",
        sqlx::query("DELETE FROM user_role WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx),
    )
    .await?;
    timed(
        "role.assign",
        sqlx::query("INSERT INTO user_role (user_id, role) SELECT $1, unnest($2::text[])")
            .bind(user_id)
            .bind(&roles)
            .execute(&mut *tx),
    )
    .await?;
    tx.commit().await?;
    Ok(roles)
}

/// Takes the lock every change of who is an active administrator holds
/// (until the transaction ends): one such change at a time, so two
/// administrators cannot each remove the other.
pub(super) async fn lock_administrators(tx: &mut PgConnection) -> Result<(), UserError> {
    timed(
        "role.lock_administrators",
        sqlx::query("SELECT name FROM role WHERE name = $1 FOR UPDATE")
            .bind(role::ADMINISTRATOR)
            .execute(&mut *tx),
    )
    .await?;
    Ok(())
}

/// `LastAdministrator` unless an active administrator other than
/// `user_id` remains. Call under [`lock_administrators`].
pub(super) async fn keeps_an_administrator(
    tx: &mut PgConnection,
    user_id: Uuid,
) -> Result<(), UserError> {
    let others: i64 = timed(
        "role.other_administrators",
        sqlx::query_scalar(
            "SELECT count(*) FROM user_role ur JOIN users u ON u.id = ur.user_id
             WHERE ur.role = $1 AND u.status = 1 AND u.id <> $2",
        )
        .bind(role::ADMINISTRATOR)
        .bind(user_id)
        .fetch_one(&mut *tx),
    )
    .await?;
    if others == 0 {
        return Err(UserError::LastAdministrator);
    }
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(set_roles))
        .routes(routes!(list_permissions))
}

/// Every permission that may be granted: the kernel's and the plugins'.
#[utoipa::path(get, path = "/api/permissions", tag = "user",
    responses(
        (status = 200, description = "Permissions by name, with their description and owner", body = [PermissionInfo]),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn list_permissions(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<PermissionInfo>>, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    Ok(Json(state.permissions.registry().all().cloned().collect()))
}

/// Every role with its permissions.
#[utoipa::path(get, path = "/api/roles", tag = "user",
    responses(
        (status = 200, description = "Roles", body = [Role]),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn list_roles(
    State(state): State<AppState>,
    account: Account,
) -> Result<Json<Vec<Role>>, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    Ok(Json(list(&state.db).await?))
}

/// Create a role (without permissions).
#[utoipa::path(post, path = "/api/roles", tag = "user", request_body = NewRole,
    responses(
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 201, description = "Created", body = Role),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
        (status = 409, description = "A role of that name exists", body = ErrorBody),
        (status = 422, description = "Invalid name or label", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn create_role(
    State(state): State<AppState>,
    account: Account,
    JsonBody(new): JsonBody<NewRole>,
) -> Result<(StatusCode, Json<Role>), AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    let created = create(&state.db, &new).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One role.
#[utoipa::path(get, path = "/api/roles/{name}", tag = "user",
    params(("name" = String, Path, description = "Role machine name")),
    responses(
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
        (status = 200, description = "The role", body = Role),
        (status = 404, description = "No such role", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn get_role(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<Json<Role>, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    Ok(Json(get(&state.db, &name).await?))
}

/// Set a role's label and replace its permissions.
#[utoipa::path(put, path = "/api/roles/{name}", tag = "user", request_body = RoleUpdate,
    params(("name" = String, Path, description = "Role machine name")),
    responses(
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
        (status = 200, description = "Updated", body = Role),
        (status = 404, description = "No such role", body = ErrorBody),
        (status = 409, description = "The administrator role holds every permission", body = ErrorBody),
        (status = 422, description = "Invalid label, or a permission nobody declares", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn update_role(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
    JsonBody(input): JsonBody<RoleUpdate>,
) -> Result<Json<Role>, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    let updated = update(&state.db, state.permissions.registry(), &name, &input).await?;
    state.permissions.invalidate_all();
    Ok(Json(updated))
}

/// Delete a role; its holders lose it.
#[utoipa::path(delete, path = "/api/roles/{name}", tag = "user",
    params(("name" = String, Path, description = "Role machine name")),
    responses(
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Lacks `administer permissions`", body = ErrorBody),
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such role", body = ErrorBody),
        (status = 409, description = "Built-in roles cannot be deleted", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn delete_role(
    State(state): State<AppState>,
    account: Account,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    delete(&state.db, &name).await?;
    state.permissions.invalidate_all();
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the roles a user holds.
#[utoipa::path(put, path = "/api/users/{id}/roles", tag = "user", request_body = UserRoles,
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 200, description = "The user's roles now", body = UserRoles),
        (status = 403, description = "Granting or revoking administrator takes an administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "The last active administrator keeps the role", body = ErrorBody),
        (status = 422, description = "Unknown or implicit role", body = ErrorBody),
    ),
    security(("bearer" = []), ("session" = [])))]
pub(crate) async fn set_roles(
    State(state): State<AppState>,
    account: Account,
    Path(raw_id): Path<String>,
    JsonBody(input): JsonBody<UserRoles>,
) -> Result<Json<UserRoles>, AppError> {
    account.require(permission::ADMINISTER_PERMISSIONS)?;
    let id: Uuid = raw_id
        .parse()
        .map_err(|_| AppError::NotFound(format!("user {raw_id}")))?;
    let roles = set_user_roles(&state.db, id, &input.roles, account.is_admin()).await?;
    Ok(Json(UserRoles { roles }))
}
