//! API bearer tokens for scripts: `Authorization: Bearer trv_...`.
//! Only the SHA-256 of a token is stored; the token is shown once.

use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::UserError;
use crate::db::timed;

pub const PREFIX: &str = "trv_";

/// Creates a token for `user_id` and returns it (the only time it is seen).
pub async fn create(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    label: &str,
) -> Result<String, UserError> {
    let token = format!("{PREFIX}{}", super::session::random_token());
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    timed(
        "token.insert",
        sqlx::query(
            "INSERT INTO api_token (id, user_id, token_hash, label) VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(hash)
        .bind(label)
        .execute(db),
    )
    .await?;
    Ok(token)
}

/// The user a token belongs to, recording its use; `None` if unknown.
pub async fn authenticate(db: impl PgExecutor<'_>, token: &str) -> Result<Option<Uuid>, UserError> {
    if !token.starts_with(PREFIX) {
        return Ok(None);
    }
    let hash = Sha256::digest(token.as_bytes()).to_vec();
    Ok(timed(
        "token.authenticate",
        sqlx::query_scalar::<_, Uuid>(
            "UPDATE api_token SET last_used = now() WHERE token_hash = $1 RETURNING user_id",
        )
        .bind(hash)
        .fetch_optional(db),
    )
    .await?)
}

/// What is shown of a token: never the token, nor its hash.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub label: String,
    pub created: chrono::DateTime<chrono::Utc>,
    pub last_used: Option<chrono::DateTime<chrono::Utc>>,
}

/// `user_id`'s tokens, oldest first.
pub async fn list(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Vec<TokenInfo>, UserError> {
    Ok(timed(
        "token.list",
        sqlx::query_as::<_, TokenInfo>(
            "SELECT id, label, created, last_used FROM api_token WHERE user_id = $1
             ORDER BY created, id",
        )
        .bind(user_id)
        .fetch_all(db),
    )
    .await?)
}

/// Revokes token `id` of `user_id`; `false` if the user has no such token.
pub async fn revoke(db: impl PgExecutor<'_>, user_id: Uuid, id: Uuid) -> Result<bool, UserError> {
    let deleted = timed(
        "token.revoke",
        sqlx::query("DELETE FROM api_token WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .execute(db),
    )
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Revokes every token of `user_id`; returns how many there were.
pub async fn revoke_all(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<u64, UserError> {
    let deleted = timed(
        "token.revoke_all",
        sqlx::query("DELETE FROM api_token WHERE user_id = $1")
            .bind(user_id)
            .execute(db),
    )
    .await?;
    Ok(deleted.rows_affected())
}
