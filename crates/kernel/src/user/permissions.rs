//! The permissions a set of roles grants, read from `role_permission` and
//! cached in process for a few seconds.

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::PgExecutor;

use crate::db::{DbError, timed};

/// Permissions by role set, cached in process for a few seconds: every
/// request needs them, and they change rarely (an edit takes effect within
/// [`PermissionCache::TTL`] on every process).
pub struct PermissionCache {
    cache: moka::future::Cache<Vec<String>, Arc<BTreeSet<String>>>,
}

impl PermissionCache {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);

    pub fn new() -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Self::TTL)
                .build(),
        }
    }

    /// Forgets every cached set, after roles or permissions changed.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// The union of the permissions of `roles` (order-insensitive).
    pub async fn of(
        &self,
        db: &sqlx::PgPool,
        roles: &[String],
    ) -> Result<BTreeSet<String>, DbError> {
        let mut key = roles.to_vec();
        key.sort();
        key.dedup();
        let loaded = self
            .cache
            .try_get_with(key.clone(), async move {
                permissions_of(db, &key).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<DbError>| match Arc::try_unwrap(e) {
                Ok(e) => e,
                // Another caller shared this load; its error cannot be moved out.
                Err(shared) => DbError::Unavailable(shared.to_string()),
            })?;
        Ok((*loaded).clone())
    }
}

impl Default for PermissionCache {
    fn default() -> Self {
        Self::new()
    }
}

/// The union of the permissions of `roles`.
pub async fn permissions_of(
    db: impl PgExecutor<'_>,
    roles: &[String],
) -> Result<BTreeSet<String>, DbError> {
    let perms = timed(
        "user.permissions",
        sqlx::query_scalar::<_, String>(
            "SELECT DISTINCT permission FROM role_permission WHERE role = ANY($1)",
        )
        .bind(roles)
        .fetch_all(db),
    )
    .await?;
    Ok(perms.into_iter().collect())
}
