//! Batches: one registered operation applied to a set of targets in
//! chunks, each chunk one job of the kernel's `batch` queue, run by any
//! worker on any instance (cron or `trovato queue work`).
//!
//! The batch and its chunks are rows in PostgreSQL ([`start`] writes them
//! and enqueues the chunks in one transaction with the PostgreSQL queue
//! backend). A chunk is done once: its effects, its `done` mark and the
//! batch's counters are one transaction, so a redelivered job finds the
//! chunk done and acks it without redoing it; a batch survives kernel and
//! Redis restarts. Live progress for the status endpoint is a Redis hash
//! per batch ([`progress`]), set from the counters each chunk commits and
//! rebuilt from PostgreSQL when Redis lost it.
//!
//! A chunk that fails is retried by the queue; one that keeps failing marks
//! its targets failed and the batch goes on, unless its operation aborts
//! on failure. Cancelling stops the chunks not yet begun.

pub mod ops;
pub mod progress;
pub mod routes;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{DbError, timed};
use crate::queue::worker::{QueueInfo, Verdict, Worker};
use crate::queue::{Failure, Job, NewJob, Queue, QueueBackend, QueueError};
use crate::state::AppState;

pub use ops::{Operation, TargetFailure};

/// The kernel queue every chunk goes through.
pub const QUEUE: &str = "batch";
/// Targets one batch may have.
pub const MAX_TARGETS: usize = 1_000_000;
/// Errors a batch keeps (the newest).
pub const ERRORS_KEPT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch {0} not found")]
    NotFound(String),
    #[error("no batch operation named `{0}`")]
    UnknownOperation(String),
    #[error("invalid parameters for `{operation}`: {message}")]
    BadParams { operation: String, message: String },
    #[error("a batch has at most {MAX_TARGETS} targets; this one would have {0}")]
    TooManyTargets(usize),
    #[error("batch {0} has already ended")]
    Ended(Uuid),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(e.into())
    }
}

impl crate::error::HttpError for BatchError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            BatchError::NotFound(_) => (S::NOT_FOUND, "batch_not_found"),
            BatchError::UnknownOperation(_) => (S::UNPROCESSABLE_ENTITY, "unknown_operation"),
            BatchError::BadParams { .. } => (S::UNPROCESSABLE_ENTITY, "invalid_params"),
            BatchError::TooManyTargets(_) => (S::UNPROCESSABLE_ENTITY, "too_many_targets"),
            BatchError::Ended(_) => (S::CONFLICT, "batch_ended"),
            BatchError::Db(e) => e.status_code(),
            BatchError::Queue(e) => e.status_code(),
        }
    }
}

/// Where a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    Queued,
    Running,
    Done,
    /// An operation that aborts on failure met one.
    Failed,
    Cancelled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Queued => "queued",
            BatchState::Running => "running",
            BatchState::Done => "done",
            BatchState::Failed => "failed",
            BatchState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "running" => BatchState::Running,
            "done" => BatchState::Done,
            "failed" => BatchState::Failed,
            "cancelled" => BatchState::Cancelled,
            _ => BatchState::Queued,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            BatchState::Done | BatchState::Failed | BatchState::Cancelled
        )
    }
}

/// A batch as `GET /batch/{id}/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchStatus {
    pub id: Uuid,
    pub operation: String,
    pub state: BatchState,
    pub total: u64,
    pub processed: u64,
    pub failed: u64,
    /// Targets settled (processed or failed), as a percentage of the total.
    pub percent: f64,
    /// What the last chunk did.
    pub message: String,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    /// Seconds left at the pace so far; unknown before the first chunk.
    pub eta_secs: Option<f64>,
    /// The newest errors, oldest first (at most 20).
    pub errors: Vec<TargetFailure>,
    #[serde(skip)]
    pub owner: Option<Uuid>,
}

impl BatchStatus {
    /// Fills in the derived fields from the counts and times.
    fn derive(mut self, now: DateTime<Utc>) -> Self {
        let settled = self.processed + self.failed;
        self.percent = if self.total == 0 {
            100.0
        } else {
            (settled as f64 * 100.0 / self.total as f64).min(100.0)
        };
        self.eta_secs = match (self.state, self.started) {
            (BatchState::Running, Some(started)) if settled > 0 => {
                let elapsed = (now - started).num_milliseconds().max(0) as f64 / 1000.0;
                let left = self.total.saturating_sub(settled) as f64;
                Some(elapsed / settled as f64 * left)
            }
            (s, _) if s.is_final() => Some(0.0),
            _ => None,
        };
        self
    }
}

/// What `POST /api/batch` takes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    /// A registered operation, e.g. `items.publish`.
    pub operation: String,
    /// The operation's parameters (see `GET /api/batch/operations`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: Uuid,
    operation: String,
    params: sqlx::types::Json<Value>,
    owner_id: Option<Uuid>,
    state: String,
    total: i32,
    processed: i32,
    failed: i32,
    message: String,
    errors: sqlx::types::Json<Vec<TargetFailure>>,
    created: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
}

const BATCH_COLUMNS: &str = "id, operation, params, owner_id, state, total, processed, failed, \
                             message, errors, created, started, finished";

impl BatchRow {
    fn status(self) -> BatchStatus {
        BatchStatus {
            id: self.id,
            operation: self.operation,
            state: BatchState::parse(&self.state),
            total: self.total.max(0) as u64,
            processed: self.processed.max(0) as u64,
            failed: self.failed.max(0) as u64,
            percent: 0.0,
            message: self.message,
            created: self.created,
            started: self.started,
            finished: self.finished,
            eta_secs: None,
            errors: self.errors.0,
            owner: self.owner_id,
        }
        .derive(Utc::now())
    }
}

/// Starts `new` for `owner`: resolves its targets, writes the batch and
/// its chunks, and enqueues one job per chunk. Checking the operation's
/// permission is the caller's.
pub async fn start(
    state: &AppState,
    owner: Option<Uuid>,
    new: NewBatch,
) -> Result<BatchStatus, BatchError> {
    start_in(state, state.db.begin().await?, owner, new).await
}

/// [`start`] inside `tx`, which it commits: what the caller wrote in it
/// and the batch land together, or neither does.
pub async fn start_in(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    owner: Option<Uuid>,
    new: NewBatch,
) -> Result<BatchStatus, BatchError> {
    let op = ops::find(state, &new.operation)
        .await
        .ok_or_else(|| BatchError::UnknownOperation(new.operation.clone()))?;
    let params = if new.params.is_null() {
        Value::Object(Default::default())
    } else {
        new.params
    };
    let targets = op.targets(state, &params).await?;
    if targets.len() > MAX_TARGETS {
        return Err(BatchError::TooManyTargets(targets.len()));
    }
    let chunk_size = op.chunk_size().max(1);
    let chunks: Vec<Value> = targets
        .chunks(chunk_size)
        .map(|c| Value::from(c.to_vec()))
        .collect();
    let id = Uuid::now_v7();
    let row: BatchRow = timed(
        "batch.start",
        sqlx::query_as(&format!(
            "INSERT INTO batch (id, operation, params, owner_id, total, chunks,
                                state, finished, message)
             VALUES ($1, $2, $3, $4, $5, $6,
                     CASE WHEN $6 = 0 THEN 'done' ELSE 'queued' END,
                     CASE WHEN $6 = 0 THEN now() END,
                     CASE WHEN $6 = 0 THEN 'nothing to do' ELSE 'queued' END)
             RETURNING {BATCH_COLUMNS}"
        ))
        .bind(id)
        .bind(op.name())
        .bind(sqlx::types::Json(&params))
        .bind(owner)
        .bind(targets.len() as i32)
        .bind(chunks.len() as i32)
        .fetch_one(&mut *tx),
    )
    .await?;
    let seqs: Vec<i32> = (0..chunks.len() as i32).collect();
    timed(
        "batch.chunks",
        sqlx::query(
            "INSERT INTO batch_chunk (batch_id, seq, targets)
             SELECT $1, s, t FROM unnest($2::int4[], $3::jsonb[]) AS c(s, t)",
        )
        .bind(id)
        .bind(&seqs)
        .bind(&chunks)
        .execute(&mut *tx),
    )
    .await?;
    let settings = state.queues.settings();
    let in_tx = state.queues.backend() == QueueBackend::Postgres;
    if in_tx {
        for &seq in &seqs {
            crate::queue::store_pg::push_in(
                &mut tx,
                QUEUE,
                chunk_job(id, seq)?,
                settings.max_attempts,
            )
            .await?;
        }
    }
    tx.commit().await?;
    if !in_tx {
        // The Redis backend cannot join the transaction: enqueue after the
        // commit (`resume` re-enqueues the pending chunks if this is cut
        // short; a chunk enqueued twice is done once).
        for &seq in &seqs {
            state.queues.push(QUEUE, chunk_job(id, seq)?).await?;
        }
    }
    let status = row.status();
    progress::publish(state, &status).await;
    tracing::info!(batch = %id, operation = op.name(), targets = targets.len(), chunks = seqs.len(), "batch started");
    Ok(status)
}

fn chunk_job(batch: Uuid, seq: i32) -> Result<NewJob, QueueError> {
    NewJob::new(&ChunkJob { batch, seq })
}

/// A chunk job's payload.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkJob {
    batch: Uuid,
    seq: i32,
}

/// Enqueues again every chunk of `id` not yet done (after a crash between
/// the commit and the pushes, with the Redis queue backend); harmless for
/// chunks already queued. Returns how many.
pub async fn resume(state: &AppState, id: Uuid) -> Result<u64, BatchError> {
    let seqs: Vec<i32> = sqlx::query_scalar(
        "SELECT c.seq FROM batch_chunk c JOIN batch b ON b.id = c.batch_id
         WHERE c.batch_id = $1 AND c.state = 'pending' AND b.state IN ('queued', 'running')
         ORDER BY c.seq",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    for &seq in &seqs {
        state.queues.push(QUEUE, chunk_job(id, seq)?).await?;
    }
    Ok(seqs.len() as u64)
}

/// The kernel's `batch` queue: worked by cron for up to 30 s a pass, two
/// chunks at a time, and by `trovato queue work`.
pub fn queue_info() -> QueueInfo {
    QueueInfo {
        name: QUEUE.to_owned(),
        worker: Worker::Kernel(std::sync::Arc::new(|state, job| {
            Box::pin(async move { run_chunk(&state, &job).await })
        })),
        cron_budget: Duration::from_secs(30),
        concurrency: 2,
    }
}

/// What a chunk job found and did.
#[derive(Debug)]
enum ChunkOutcome {
    /// Done now, with the batch's counts after it.
    Done,
    /// Done before (a redelivery), skipped for a cancelled batch, or its
    /// batch is gone.
    Nothing,
}

async fn run_chunk(state: &AppState, job: &Job) -> Verdict {
    let chunk: ChunkJob = match serde_json::from_str(job.payload.get()) {
        Ok(c) => c,
        Err(e) => {
            return Verdict::Failed(Failure::Fail {
                error: format!("not a batch chunk: {e}"),
            });
        }
    };
    let last_attempt = job.attempt >= job.max_attempts;
    match work_chunk(state, &chunk, last_attempt).await {
        Ok(_) => Verdict::Ack,
        Err(e) => Verdict::Failed(Failure::Retry {
            delay: None,
            error: e,
        }),
    }
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    chunk_state: String,
    targets: sqlx::types::Json<Vec<String>>,
    #[sqlx(flatten)]
    batch: BatchRow,
}

/// Runs one chunk: its effects, its record and the batch's counters in
/// one transaction. On the last attempt a failure marks the chunk's
/// targets failed instead of asking for a retry.
async fn work_chunk(
    state: &AppState,
    chunk: &ChunkJob,
    last_attempt: bool,
) -> Result<ChunkOutcome, String> {
    let db_err = |e: sqlx::Error| e.to_string();
    let mut tx = state.db.begin().await.map_err(db_err)?;
    // The chunk, locked (a second delivery waits here, then finds it
    // done), with its batch.
    let row: Option<ChunkRow> = sqlx::query_as(&format!(
        "SELECT c.state AS chunk_state, c.targets, {}
         FROM batch_chunk c JOIN batch b ON b.id = c.batch_id
         WHERE c.batch_id = $1 AND c.seq = $2
         FOR UPDATE OF c",
        BATCH_COLUMNS
            .split(", ")
            .map(|col| format!("b.{col}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(chunk.batch)
    .bind(chunk.seq)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        // The batch is gone.
        return Ok(ChunkOutcome::Nothing);
    };
    if row.chunk_state != "pending" {
        // Done by an earlier delivery: never twice.
        return Ok(ChunkOutcome::Nothing);
    }
    let batch = row.batch;
    if BatchState::parse(&batch.state).is_final() {
        // Cancelled (or aborted): the chunks not begun are skipped.
        sqlx::query(
            "UPDATE batch_chunk SET state = 'skipped', done_at = now()
             WHERE batch_id = $1 AND seq = $2",
        )
        .bind(chunk.batch)
        .bind(chunk.seq)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        return Ok(ChunkOutcome::Nothing);
    }
    let Some(op) = ops::find(state, &batch.operation).await else {
        return Err(format!("operation `{}` is not registered", batch.operation));
    };
    let targets = row.targets.0;
    let mut effects = crate::item::Effects::default();
    let result = op
        .run_chunk(
            state,
            &mut tx,
            &mut effects,
            &batch.params.0,
            batch.owner_id,
            &targets,
        )
        .await;
    let (failures, chunk_failed) = match result {
        Ok(failures) => (failures, false),
        Err(e) if !last_attempt => return Err(e),
        Err(e) => {
            // Out of attempts: this chunk's effects are dropped, its
            // targets failed; the batch goes on (or aborts).
            drop(tx);
            tx = state.db.begin().await.map_err(db_err)?;
            effects = crate::item::Effects::default();
            sqlx::query("SELECT 1 FROM batch_chunk WHERE batch_id = $1 AND seq = $2 FOR UPDATE")
                .bind(chunk.batch)
                .bind(chunk.seq)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let failures = targets
                .iter()
                .map(|t| TargetFailure {
                    target: t.clone(),
                    error: e.clone(),
                })
                .collect();
            (failures, true)
        }
    };
    let failed = failures.len() as i32;
    let processed = targets.len() as i32 - failed;
    let mut recent: Vec<TargetFailure> = failures.iter().rev().take(ERRORS_KEPT).cloned().collect();
    recent.reverse();
    let message = if failed == 0 {
        format!(
            "chunk {} of {}: {} done",
            chunk.seq + 1,
            op.name(),
            processed
        )
    } else {
        format!(
            "chunk {} of {}: {} done, {} failed",
            chunk.seq + 1,
            op.name(),
            processed,
            failed
        )
    };
    let abort = chunk_failed && op.aborts_on_failure();
    // One statement records the chunk and moves the batch on. The batch
    // row's update re-reads the row as the previous chunk committed it, so
    // `done_chunks` counts every chunk exactly and the last one to commit
    // ends the batch.
    let after: Option<BatchRow> = sqlx::query_as(&format!(
        "WITH chunk AS (
             UPDATE batch_chunk SET state = $7, processed = $2, failed = $3, done_at = now()
             WHERE batch_id = $1 AND seq = $8 AND state = 'pending'
             RETURNING 1)
         UPDATE batch SET
             processed = processed + $2, failed = failed + $3,
             done_chunks = done_chunks + 1,
             errors = CASE WHEN $3 = 0 THEN errors ELSE (
                 SELECT coalesce(jsonb_agg(e ORDER BY n), '[]') FROM (
                     SELECT e, n FROM jsonb_array_elements(errors || $5::jsonb)
                         WITH ORDINALITY AS x(e, n)
                     ORDER BY n DESC LIMIT {ERRORS_KEPT}) kept) END,
             started = coalesce(started, now()),
             state = CASE
                 WHEN state IN ('done', 'failed', 'cancelled') THEN state
                 WHEN $6 THEN 'failed'
                 WHEN done_chunks + 1 >= chunks THEN 'done'
                 ELSE 'running' END,
             finished = CASE
                 WHEN state IN ('done', 'failed', 'cancelled') THEN finished
                 WHEN $6 OR done_chunks + 1 >= chunks THEN now()
                 ELSE finished END,
             message = CASE
                 WHEN state IN ('done', 'failed', 'cancelled') THEN message
                 WHEN NOT $6 AND done_chunks + 1 >= chunks THEN
                     'done: ' || (processed + $2) || ' processed, ' || (failed + $3) || ' failed'
                 ELSE $4 END
         WHERE id = $1 AND EXISTS (SELECT 1 FROM chunk)
         RETURNING {BATCH_COLUMNS}"
    ))
    .bind(chunk.batch)
    .bind(processed)
    .bind(failed)
    .bind(&message)
    .bind(sqlx::types::Json(&recent))
    .bind(abort)
    .bind(if chunk_failed { "failed" } else { "done" })
    .bind(chunk.seq)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let Some(after) = after else {
        return Ok(ChunkOutcome::Nothing);
    };
    crate::item::write::commit(state, tx, effects)
        .await
        .map_err(|e| e.to_string())?;
    progress::publish(state, &after.status()).await;
    Ok(ChunkOutcome::Done)
}

/// The batch's status: Redis's live copy, else PostgreSQL's (which also
/// puts it back in Redis).
pub async fn status(state: &AppState, id: Uuid) -> Result<BatchStatus, BatchError> {
    if let Some(s) = progress::read(state, id).await {
        return Ok(s.derive(Utc::now()));
    }
    let s = load(&state.db, id).await?;
    progress::publish(state, &s).await;
    Ok(s)
}

/// The batch as PostgreSQL has it.
pub async fn load(db: &PgPool, id: Uuid) -> Result<BatchStatus, BatchError> {
    let row: Option<BatchRow> = timed(
        "batch.load",
        sqlx::query_as(&format!("SELECT {BATCH_COLUMNS} FROM batch WHERE id = $1"))
            .bind(id)
            .fetch_optional(db),
    )
    .await?;
    row.map(BatchRow::status)
        .ok_or_else(|| BatchError::NotFound(id.to_string()))
}

/// Cancels a batch that has not ended: chunks not yet begun are skipped;
/// a chunk running now finishes.
pub async fn cancel(state: &AppState, id: Uuid) -> Result<BatchStatus, BatchError> {
    let row: Option<BatchRow> = timed(
        "batch.cancel",
        sqlx::query_as(&format!(
            "UPDATE batch SET state = 'cancelled', finished = now(), message = 'cancelled'
             WHERE id = $1 AND state IN ('queued', 'running') RETURNING {BATCH_COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&state.db),
    )
    .await?;
    let Some(row) = row else {
        // Gone, or ended already.
        load(&state.db, id).await?;
        return Err(BatchError::Ended(id));
    };
    let s = row.status();
    progress::publish(state, &s).await;
    tracing::info!(batch = %id, "batch cancelled");
    Ok(s)
}

/// The newest batches (of `owner` only, when given).
pub async fn recent(
    db: &PgPool,
    owner: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BatchStatus>, BatchError> {
    let rows: Vec<BatchRow> = timed(
        "batch.recent",
        sqlx::query_as(&format!(
            "SELECT {BATCH_COLUMNS} FROM batch
             WHERE $1::uuid IS NULL OR owner_id = $1
             ORDER BY created DESC LIMIT $2"
        ))
        .bind(owner)
        .bind(limit)
        .fetch_all(db),
    )
    .await?;
    Ok(rows.into_iter().map(BatchRow::status).collect())
}
