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
