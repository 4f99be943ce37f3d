//! The `plugin_status` table: which plugins are enabled.

use std::collections::HashMap;

use sqlx::PgExecutor;

use crate::db::{DbError, timed};

/// The stored choice for every plugin that has one.
pub async fn enabled_states(db: impl PgExecutor<'_>) -> Result<HashMap<String, bool>, DbError> {
    let rows: Vec<(String, bool)> = timed(
        "plugin.enabled_states",
        sqlx::query_as("SELECT name, enabled FROM plugin_status").fetch_all(db),
    )
    .await?;
    Ok(rows.into_iter().collect())
}

/// The channel on which every change of `plugin_status` is announced (the
/// payload is the plugin's name), so running kernels apply it at once.
pub const STATUS_CHANNEL: &str = "trovato_plugin_status";

/// Records the choice for `name` and announces it on [`STATUS_CHANNEL`]
/// (delivered when the statement commits); idempotent.
pub async fn set_enabled(
    db: impl PgExecutor<'_>,
    name: &str,
    enabled: bool,
) -> Result<(), DbError> {
    timed(
        "plugin.set_enabled",
        sqlx::query(
            "WITH changed AS (
                 INSERT INTO plugin_status (name, enabled) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, changed = now()
                 RETURNING name
             )
             SELECT pg_notify('trovato_plugin_status', name) FROM changed",
        )
        .bind(name)
        .bind(enabled)
        .execute(db),
    )
    .await?;
    Ok(())
}

/// The stored choice for `name`, if any.
pub async fn stored_state(db: impl PgExecutor<'_>, name: &str) -> Result<Option<bool>, DbError> {
    let row: Option<(bool,)> = timed(
        "plugin.stored_state",
        sqlx::query_as("SELECT enabled FROM plugin_status WHERE name = $1")
            .bind(name)
            .fetch_optional(db),
    )
    .await?;
    Ok(row.map(|(e,)| e))
}
