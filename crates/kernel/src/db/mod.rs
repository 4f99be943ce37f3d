//! PostgreSQL: the pool, embedded migrations, and query timing.
//!
//! Queries live next to the subsystem that owns them, in small functions
//! taking `impl PgExecutor<'_>` so the caller owns the transaction; each is
//! wrapped in [`timed`] so its duration lands in
//! `trovato_db_query_duration_seconds{query=...}`.

use std::future::Future;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_url, redact_url};
use crate::error::HttpError;

/// The `[db]` section: which PostgreSQL, and how many connections to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "PostgreSQL")]
pub struct DbSettings {
    /// PostgreSQL URL; unset starts an embedded PostgreSQL under the data dir.
    #[arg(
        id = "db.url",
        long = "database-url",
        env = "DATABASE_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// PostgreSQL pool size per process.
    #[arg(
        id = "db.max_connections",
        long = "db-max-connections",
        env = "TROVATO_DB_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub max_connections: u32,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 16,
        }
    }
}

impl DbSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            check_url::<Self>("db.url", url, &["postgres", "postgresql"])?;
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid::<Self>(
                "db.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached (refused, timed out, pool closed).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Client text PostgreSQL cannot store (a NUL character, or bytes
    /// invalid in the server encoding): the client's fault, not ours. The
    /// server's own message is logged, not sent.
    #[error("text must not contain NUL (U+0000) characters")]
    InvalidText(String),
    #[error("database query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                DbError::Unavailable(e.to_string())
            }
            // character_not_in_repertoire (NUL in text) and
            // untranslatable_character (\u0000 in JSONB).
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                tracing::info!(
                    detail = db.message(),
                    "client text the database cannot store"
                );
                DbError::InvalidText(db.message().to_owned())
            }
            other => DbError::Query(other),
        }
    }
}

impl HttpError for DbError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            DbError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "database_unavailable"),
            DbError::InvalidText(_) => (S::UNPROCESSABLE_ENTITY, "invalid_text"),
            DbError::Query(_) | DbError::Migrate(_) => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl DbError {
    /// The name of the violated constraint, if this is a constraint error.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Query(sqlx::Error::Database(db)) => db.constraint(),
            _ => None,
        }
    }
}

/// Parses `url` and opens a pool, failing within `timeout` if the server
/// does not answer. The error names the (redacted) URL.
pub async fn connect(
    url: &str,
    max_connections: u32,
    timeout: Duration,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|e| DbError::Unavailable(format!("{}: {e}", redact_url(url))))?
        .application_name("trovato");
    // One direct connection first: its error says what is wrong (refused,
    // authentication, unknown database) where the pool would only time out.
    let probe = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
        .await
        .map_err(|_| {
            DbError::Unavailable(format!("{}: timed out after {timeout:?}", redact_url(url)))
        })?
        .map_err(|e| DbError::Unavailable(format!("{}: {e}", redact_url(url))))?;
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(timeout)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| DbError::Unavailable(format!("{}: {e}", redact_url(url))))?;
    Ok(pool)
}

/// Applies all pending migrations; idempotent.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Runs `fut`, recording its duration under the query name `query`
/// (a short fixed string such as `"user.find_by_name"`).
pub async fn timed<T, E>(
    query: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let start = Instant::now();
    let result = fut.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!(
        "trovato_db_query_duration_seconds",
        "query" => query,
        "outcome" => outcome
    )
    .record(start.elapsed().as_secs_f64());
    result
}
