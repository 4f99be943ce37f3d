//! Redis: one multiplexed, self-reconnecting connection shared by the whole
//! process, and the key namespace every kernel key lives under.
//!
//! Never open a connection per request: clone [`Kv`] (cheap) instead. Every
//! key the kernel writes goes through [`Kv::key`], so it starts with the
//! configured prefix (`TROVATO_REDIS_PREFIX`, default `trovato:`), and
//! nothing ever flushes a whole Redis database.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_url, redact_url};
use crate::error::HttpError;

/// The `[redis]` section: which Redis, and the namespace of the kernel's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Redis")]
pub struct RedisSettings {
    /// Redis URL (`redis://`, `rediss://`, `redis+unix://`); unset starts an embedded Redis under the data dir.
    #[arg(
        id = "redis.url",
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// Prefix of every Redis key the kernel writes.
    #[arg(
        id = "redis.prefix",
        long = "redis-prefix",
        env = "TROVATO_REDIS_PREFIX",
        value_name = "PREFIX"
    )]
    pub prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "trovato:".into(),
        }
    }
}

impl RedisSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            check_url::<Self>("redis.url", url, &["redis", "rediss", "redis+unix", "unix"])?;
        }
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[');
        if !prefix_ok {
            return Err(ConfigError::invalid::<Self>(
                "redis.prefix",
                "must be non-empty printable ASCII without spaces or glob characters",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("redis unreachable: {0}")]
    Unavailable(String),
    #[error("redis command timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
}

impl HttpError for KvError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            KvError::Unavailable(_) | KvError::Timeout(_) | KvError::Command(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            }
        }
    }
}

/// How long one command may take before it is abandoned.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared Redis handle: connection manager plus key prefix.
#[derive(Clone)]
pub struct Kv {
    conn: ConnectionManager,
    client: redis::Client,
    connect_timeout: Duration,
    prefix: Arc<str>,
}

/// A Redis connection of its own, for blocking commands (a queue worker's
/// `BLMOVE`, a pub/sub wait): a long block neither stalls the shared
/// multiplexed connection nor trips its [`COMMAND_TIMEOUT`]. Each call
/// states its own bound. Not reconnecting: a caller that gets
/// [`KvError::Unavailable`] opens a new one.
pub struct Dedicated {
    conn: redis::aio::MultiplexedConnection,
}

impl Dedicated {
    /// Runs `cmd`, abandoning it after `timeout` (give a blocking command
    /// a timeout longer than its own block time).
    pub async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T, KvError> {
        classify(
            tokio::time::timeout(timeout, cmd.query_async(&mut self.conn)).await,
            timeout,
        )
    }
}

impl Kv {
    /// Connects (failing within `timeout` if Redis does not answer) and
    /// returns a handle that reconnects by itself after Redis restarts.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, KvError> {
        let client = redis::Client::open(url)
            .map_err(|e| KvError::Unavailable(format!("{}: {e}", redact_url(url))))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(COMMAND_TIMEOUT)
            // Reconnect quickly: 50 ms, 100 ms, ... capped at 500 ms.
            .set_exponent_base(2)
            .set_factor(50)
            .set_max_delay(500)
            .set_number_of_retries(3);
        let conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| KvError::Unavailable(format!("{}: timed out", redact_url(url))))?
        .map_err(|e| KvError::Unavailable(format!("{}: {e}", redact_url(url))))?;
        Ok(Self {
            conn,
            client,
            connect_timeout: timeout,
            prefix: prefix.into(),
        })
    }

    /// Opens a [`Dedicated`] connection to the same server.
    pub async fn dedicated(&self) -> Result<Dedicated, KvError> {
        let config =
            redis::AsyncConnectionConfig::new().set_connection_timeout(self.connect_timeout);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(Dedicated { conn })
    }

    /// The namespace prefix, e.g. `trovato:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full Redis key for a kernel key: `<prefix><key>`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs one command, counting it as in flight while it runs.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        self.tracked(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a Lua script.
    pub async fn script<T: FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        self.tracked(async move { inv.invoke_async(&mut conn).await })
            .await
    }

    async fn tracked<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, KvError> {
        metrics::counter!("trovato_redis_commands_total").increment(1);
        let gauge = metrics::gauge!("trovato_redis_commands_in_flight");
        gauge.increment(1.0);
        let result = tokio::time::timeout(COMMAND_TIMEOUT, fut).await;
        gauge.decrement(1.0);
        classify(result, COMMAND_TIMEOUT)
    }

    /// Deletes every key under `<prefix><sub_prefix>`, by SCAN confined to
    /// that pattern; never touches keys outside the namespace.
    pub async fn delete_prefixed(&self, sub_prefix: &str) -> Result<u64, KvError> {
        let pattern = format!("{}{sub_prefix}*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500),
                )
                .await?;
            if !keys.is_empty() {
                let n: u64 = self.query(redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += n;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }
}

/// Maps a bounded command's result onto [`KvError`].
fn classify<T>(
    result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, KvError> {
    match result {
        Err(_) => Err(KvError::Timeout(timeout)),
        Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            Err(KvError::Unavailable(e.to_string()))
        }
        Ok(Err(e)) => Err(KvError::Command(e)),
        Ok(Ok(v)) => Ok(v),
    }
}
