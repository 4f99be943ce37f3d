//! Queues: reliable, at-least-once delivery of JSON jobs to workers.
//!
//! [`Queue`] is the spec's `push`/`pop`/`len`, made reliable: a pop takes a
//! **lease** on the item (it is invisible to other workers until the lease
//! ends), and the worker [`Queue::ack`]s it when done or [`Queue::nack`]s
//! it, which retries it after a backoff until its attempts are used up and
//! then moves it to the **dead letter** list. A worker that dies holding an
//! item lets its lease expire, and the item is delivered again. Every ack,
//! nack and release names the lease's token, so a worker whose lease ran
//! out and whose item went to another worker cannot ack it a second time.
//!
//! Two backends implement it with the same semantics (one test suite runs
//! against both): [`store_pg::PgQueue`] (the default; durable, and
//! [`store_pg::push_in`] joins the caller's transaction) and
//! [`store_redis::RedisQueue`]. [`Queues`] is the configured one, as
//! [`crate::state::AppState`] holds it; [`worker`] runs jobs.

pub mod info;
pub mod settings;
pub mod store_pg;
pub mod store_redis;
pub mod worker;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::db::DbError;
use crate::kv::KvError;

pub use settings::{QueueBackend, QueueSettings};

/// The largest payload a job may carry, serialized.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(
        "invalid queue name `{0}`: use 1-64 of a-z, 0-9, `_`, `.`, `:` and `-`, starting with a letter"
    )]
    BadName(String),
    #[error("the payload is {0} bytes; a job carries at most {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge(usize),
    #[error("the payload is not JSON: {0}")]
    BadPayload(String),
    #[error("no queue named `{0}` is declared")]
    UnknownQueue(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("queue: {0}")]
    Kv(#[from] KvError),
    /// An item's stored fields are not what the backend wrote.
    #[error("queue item {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        QueueError::Db(e.into())
    }
}

impl crate::error::HttpError for QueueError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            QueueError::BadName(_) => (S::BAD_REQUEST, "invalid_queue_name"),
            QueueError::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            QueueError::BadPayload(_) => (S::BAD_REQUEST, "invalid_payload"),
            QueueError::UnknownQueue(_) => (S::NOT_FOUND, "queue_not_found"),
            QueueError::Db(e) => e.status_code(),
            QueueError::Kv(_) => (S::SERVICE_UNAVAILABLE, "queue_unavailable"),
            QueueError::Corrupt { .. } => (S::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Checks a queue name: `[a-z][a-z0-9_.:-]{0,63}`.
pub fn check_name(name: &str) -> Result<(), QueueError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | ':' | '-')
        });
    if ok {
        Ok(())
    } else {
        Err(QueueError::BadName(name.to_owned()))
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Serialized JSON.
    pub payload: Box<RawValue>,
    /// Not delivered before this long from now.
    pub delay: Duration,
    /// Attempts before the dead letter list; `None`: `queue.max_attempts`.
    pub max_attempts: Option<u32>,
}

impl NewJob {
    /// A job carrying `payload`, due now.
    pub fn new(payload: &impl Serialize) -> Result<Self, QueueError> {
        let json =
            serde_json::to_string(payload).map_err(|e| QueueError::BadPayload(e.to_string()))?;
        Self::from_json(json)
    }

    /// A job carrying `json`, which must be JSON.
    pub fn from_json(json: String) -> Result<Self, QueueError> {
        if json.len() > MAX_PAYLOAD_BYTES {
            return Err(QueueError::PayloadTooLarge(json.len()));
        }
        let payload =
            RawValue::from_string(json).map_err(|e| QueueError::BadPayload(e.to_string()))?;
        Ok(Self {
            payload,
            delay: Duration::ZERO,
            max_attempts: None,
        })
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.clamp(1, settings::MAX_ATTEMPTS));
        self
    }
}

/// A leased item: what a worker got from [`Queue::pop`].
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub payload: Box<RawValue>,
    /// This delivery's number, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// Why the previous attempt failed.
    pub last_error: Option<String>,
    pub enqueued: DateTime<Utc>,
    /// Proves the lease: ack, nack and release name it.
    pub lease: Uuid,
}

/// How a job failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Try again after `delay` (or the backoff when `None`), unless the
    /// attempts are used up.
    Retry {
        delay: Option<Duration>,
        error: String,
    },
    /// Give up now: straight to the dead letter list.
    Fail { error: String },
}

impl Failure {
    /// Whether the item goes straight to the dead letter list, and else
    /// the wait before it is due again (the worker's delay, or `backoff`).
    pub fn plan(&self, backoff: Duration) -> (bool, Duration) {
        match self {
            Failure::Fail { .. } => (true, Duration::ZERO),
            Failure::Retry { delay, .. } => (false, delay.unwrap_or(backoff)),
        }
    }

    pub fn error(&self) -> &str {
        match self {
            Failure::Retry { error, .. } | Failure::Fail { error } => error,
        }
    }
}

/// What a nack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nacked {
    /// Available again after this long.
    Retrying(Duration),
    /// Moved to the dead letter list.
    Dead,
    /// The lease was no longer ours: the item had been delivered again.
    LeaseLost,
}

/// A queue's counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub queue: String,
    /// Available now (including items whose lease expired).
    pub ready: u64,
    /// Waiting for their time (delayed pushes, retries in backoff).
    pub delayed: u64,
    /// Leased by a worker.
    pub in_flight: u64,
    /// In the dead letter list.
    pub dead: u64,
    /// How long the longest-waiting available item has waited, in seconds.
    pub oldest_ready_secs: f64,
}

/// The spec's queue, made reliable. Both backends implement it with the
/// same semantics.
pub trait Queue: Send + Sync {
    /// Enqueues `job` on `queue`; returns its id.
    fn push(
        &self,
        queue: &str,
        job: NewJob,
    ) -> impl Future<Output = Result<Uuid, QueueError>> + Send;

    /// Takes the next available item of `queue` for `lease`, or `None`.
    fn pop(
        &self,
        queue: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Job>, QueueError>> + Send;

    /// Items not yet acked and not dead: available, delayed or leased.
    fn len(&self, queue: &str) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Done: the item is deleted. `false` when the lease was lost (the
    /// item had been delivered again), in which case nothing changes.
    fn ack(&self, job: &Job) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Acks `done` and takes the next item of `queue`: a worker's step from
    /// one job to the next. Backends that can do both in one round trip
    /// override it.
    fn ack_then_pop(
        &self,
        done: &Job,
        queue: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<(bool, Option<Job>), QueueError>> + Send {
        async move {
            let acked = self.ack(done).await?;
            Ok((acked, self.pop(queue, lease).await?))
        }
    }

    /// Failed: retried after `backoff` (or the failure's own delay) while
    /// attempts remain, else dead.
    fn nack(
        &self,
        job: &Job,
        failure: &Failure,
        backoff: Duration,
    ) -> impl Future<Output = Result<Nacked, QueueError>> + Send;

    /// Gives the item back unprocessed (a worker shutting down): available
    /// at once, and this delivery does not count as an attempt.
    fn release(&self, job: &Job) -> impl Future<Output = Result<bool, QueueError>> + Send;

    fn stats(&self, queue: &str) -> impl Future<Output = Result<QueueStats, QueueError>> + Send;

    /// Every queue holding items (or dead ones), sorted.
    fn names(&self) -> impl Future<Output = Result<Vec<String>, QueueError>> + Send;

    /// Moves every dead item of `queue` back, with fresh attempts; returns
    /// how many.
    fn retry_dead(&self, queue: &str) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Deletes every item of `queue`, dead or alive; returns how many.
    fn purge(&self, queue: &str) -> impl Future<Output = Result<u64, QueueError>> + Send;
}

/// The configured backend, with the settings every push and nack need.
#[derive(Clone)]
pub struct Queues {
    backend: Backend,
    settings: QueueSettings,
}

#[derive(Clone)]
enum Backend {
    Pg(store_pg::PgQueue),
    Redis(store_redis::RedisQueue),
}

macro_rules! delegate {
    ($self:ident, $q:ident => $call:expr) => {
        match &$self.backend {
            Backend::Pg($q) => $call,
            Backend::Redis($q) => $call,
        }
    };
}

impl Queues {
    /// The configured backend.
    pub fn new(settings: &QueueSettings, db: &sqlx::PgPool, kv: &crate::kv::Kv) -> Self {
        let backend = match settings.backend {
            QueueBackend::Postgres => {
                Backend::Pg(store_pg::PgQueue::new(db.clone(), settings.max_attempts))
            }
            QueueBackend::Redis => Backend::Redis(store_redis::RedisQueue::new(
                kv.clone(),
                settings.max_attempts,
            )),
        };
        Self {
            backend,
            settings: settings.clone(),
        }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub fn backend(&self) -> QueueBackend {
        match self.backend {
            Backend::Pg(_) => QueueBackend::Postgres,
            Backend::Redis(_) => QueueBackend::Redis,
        }
    }
}

impl Queue for Queues {
    async fn push(&self, queue: &str, job: NewJob) -> Result<Uuid, QueueError> {
        let id = delegate!(self, q => q.push(queue, job).await)?;
        metrics::counter!("trovato_queue_pushed_total", "queue" => queue.to_owned()).increment(1);
        Ok(id)
    }

    async fn pop(&self, queue: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        delegate!(self, q => q.pop(queue, lease).await)
    }

    async fn len(&self, queue: &str) -> Result<u64, QueueError> {
        delegate!(self, q => q.len(queue).await)
    }

    async fn ack(&self, job: &Job) -> Result<bool, QueueError> {
        delegate!(self, q => q.ack(job).await)
    }

    async fn ack_then_pop(
        &self,
        done: &Job,
        queue: &str,
        lease: Duration,
    ) -> Result<(bool, Option<Job>), QueueError> {
        delegate!(self, q => q.ack_then_pop(done, queue, lease).await)
    }

    async fn nack(
        &self,
        job: &Job,
        failure: &Failure,
        backoff: Duration,
    ) -> Result<Nacked, QueueError> {
        delegate!(self, q => q.nack(job, failure, backoff).await)
    }

    async fn release(&self, job: &Job) -> Result<bool, QueueError> {
        delegate!(self, q => q.release(job).await)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        delegate!(self, q => q.stats(queue).await)
    }

    async fn names(&self) -> Result<Vec<String>, QueueError> {
        delegate!(self, q => q.names().await)
    }

    async fn retry_dead(&self, queue: &str) -> Result<u64, QueueError> {
        delegate!(self, q => q.retry_dead(queue).await)
    }

    async fn purge(&self, queue: &str) -> Result<u64, QueueError> {
        delegate!(self, q => q.purge(queue).await)
    }
}

/// Whether `plugin` may use `queue`: its own name, or names under it
/// (`<plugin>.<anything>`), so plugins never collide with each other or
/// with the kernel's queues.
pub fn in_namespace(plugin: &str, queue: &str) -> bool {
    queue == plugin
        || queue
            .strip_prefix(plugin)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The plugins' `queue_push`, into [`Queues`].
pub struct PluginPushes {
    queues: Queues,
}

impl PluginPushes {
    pub fn new(queues: Queues) -> Self {
        Self { queues }
    }
}

impl crate::plugin::host::QueueSink for PluginPushes {
    fn push(
        &self,
        plugin: &str,
        queue: &str,
        payload: Vec<u8>,
    ) -> futures::future::BoxFuture<'static, Result<(), i32>> {
        use crate::plugin::host::{PUSH_BAD_PAYLOAD, PUSH_BAD_QUEUE, PUSH_UNAVAILABLE};
        let queues = self.queues.clone();
        let plugin = plugin.to_owned();
        let queue = queue.to_owned();
        Box::pin(async move {
            if check_name(&queue).is_err() || !in_namespace(&plugin, &queue) {
                return Err(PUSH_BAD_QUEUE);
            }
            let json = String::from_utf8(payload).map_err(|_| PUSH_BAD_PAYLOAD)?;
            let job = NewJob::from_json(json).map_err(|_| PUSH_BAD_PAYLOAD)?;
            match queues.push(&queue, job).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!(%plugin, %queue, error = %e, "a plugin's push was not queued");
                    Err(PUSH_UNAVAILABLE)
                }
            }
        })
    }
}

/// Sets the per-queue gauges (items by state, the oldest ready item's
/// wait) from the backend; a queue that cannot be read keeps its last
/// values.
pub async fn record_gauges(queues: &Queues) {
    let Ok(names) = queues.names().await else {
        return;
    };
    for name in names {
        let Ok(s) = queues.stats(&name).await else {
            continue;
        };
        for (state, n) in [
            ("ready", s.ready),
            ("delayed", s.delayed),
            ("in_flight", s.in_flight),
            ("dead", s.dead),
        ] {
            metrics::gauge!("trovato_queue_items", "queue" => name.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("trovato_queue_oldest_ready_seconds", "queue" => name.clone())
            .set(s.oldest_ready_secs);
    }
}

/// Milliseconds of `d`, for the backends' arithmetic.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        for good in ["a", "search.index", "plugin:thumbs", "batch-1_x"] {
            check_name(good).expect(good);
        }
        for bad in ["", "1abc", "Upper", "sp ace", "a*", &"a".repeat(65), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plugins_own_their_name_and_what_is_under_it() {
        assert!(in_namespace("digest", "digest"));
        assert!(in_namespace("digest", "digest.outbox"));
        assert!(!in_namespace("digest", "digests"));
        assert!(!in_namespace("digest", "search.index"));
    }

    #[test]
    fn payloads_must_be_json_and_bounded() {
        assert!(matches!(
            NewJob::from_json("{nope".into()),
            Err(QueueError::BadPayload(_))
        ));
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        assert!(matches!(
            NewJob::from_json(big),
            Err(QueueError::PayloadTooLarge(_))
        ));
        let job = NewJob::new(&serde_json::json!({"n": 1}))
            .expect("json")
            .max_attempts(0);
        assert_eq!(job.payload.get(), r#"{"n":1}"#);
        assert_eq!(job.max_attempts, Some(1));
    }
}
