//! Batches: one registered operation applied to a set of targets in
//! chunks, each chunk one job of the kernel's `batch` queue, run by any
//! worker on any instance (cron or `trovato queue work`).
//!
//! The batch and its chunks are rows in PostgreSQL ([`start`] writes them
//! and enqueues the chunks in one transaction with the PostgreSQL queue
//! backend). A chunk is done once: its effects and its record (counts,
//! message, errors) are one transaction, so a redelivered job finds the
//! chunk done and acks it without redoing it; a batch survives kernel and
//! Redis restarts. The batch row holds no counts (they are its chunks'),
//! so concurrent chunks never queue on one row lock. Live progress for the
//! status endpoint is a Redis hash per batch ([`progress`]) that each
//! committed chunk adds itself to once; the chunk whose report settles the
//! last targets ends the batch, after checking in PostgreSQL that no chunk
//! is pending. The hash is rebuilt from PostgreSQL when Redis lost it.
//!
//! A chunk that fails is retried by the queue; one that keeps failing marks
//! its targets failed and the batch goes on, unless its operation aborts
//! on failure. Cancelling stops the chunks not yet begun.

pub mod error;
pub mod ops;
pub mod progress;
pub mod routes;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::timed;
use crate::queue::worker::{QueueInfo, Verdict, Worker};
use crate::queue::{Failure, Job, NewJob, Queue, QueueBackend, QueueError};
use crate::state::AppState;

pub use error::{BatchError, MAX_TARGETS};
pub use ops::{Operation, TargetFailure};

/// The kernel queue every chunk goes through.
pub const QUEUE: &str = "batch";
/// Errors a batch keeps (the newest).
pub const ERRORS_KEPT: usize = 20;

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

/// Each batch with its chunks' counts, newest errors and latest message
/// (append `WHERE ...`): the batch row itself holds no counts, so
/// concurrent chunks never update one row.
fn batch_select() -> String {
    format!(
        "SELECT b.id, b.operation, b.owner_id, b.state, b.total,
                n.processed, n.failed,
                CASE WHEN b.state IN ('done', 'failed', 'cancelled') THEN b.message
                     ELSE coalesce(latest.message, b.message) END AS message,
                e.errors, b.created, b.started, b.finished
         FROM batch b
         CROSS JOIN LATERAL (
             SELECT coalesce(sum(c.processed), 0)::int4 AS processed,
                    coalesce(sum(c.failed), 0)::int4 AS failed
             FROM batch_chunk c WHERE c.batch_id = b.id) n
         LEFT JOIN LATERAL (
             SELECT c.message FROM batch_chunk c
             WHERE c.batch_id = b.id AND c.state IN ('done', 'failed')
             ORDER BY c.done_at DESC, c.seq DESC LIMIT 1) latest ON true
         CROSS JOIN LATERAL (
             SELECT coalesce(jsonb_agg(x.e ORDER BY x.done_at, x.seq, x.n), '[]') AS errors
             FROM (SELECT err.e, c.done_at, c.seq, err.n FROM batch_chunk c
                   CROSS JOIN LATERAL jsonb_array_elements(c.errors) WITH ORDINALITY AS err(e, n)
                   WHERE c.batch_id = b.id AND c.failed > 0
                   ORDER BY c.done_at DESC, c.seq DESC, err.n DESC
                   LIMIT {ERRORS_KEPT}) x) e "
    )
}

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
        sqlx::query_as(
            "INSERT INTO batch (id, operation, params, owner_id, total, chunks,
                                state, finished, message)
             VALUES ($1, $2, $3, $4, $5, $6,
                     CASE WHEN $6 = 0 THEN 'done' ELSE 'queued' END,
                     CASE WHEN $6 = 0 THEN now() END,
                     CASE WHEN $6 = 0 THEN 'nothing to do' ELSE 'queued' END)
             RETURNING id, operation, owner_id, state, total, 0 AS processed,
                       0 AS failed, message, '[]'::jsonb AS errors, created, started, finished",
        )
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
        let jobs = seqs
            .iter()
            .map(|&seq| chunk_job(id, seq))
            .collect::<Result<Vec<_>, _>>()?;
        crate::queue::store_pg::push_many_in(&mut tx, QUEUE, jobs, settings.max_attempts).await?;
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
    progress::sync(state, &status, &[]).await;
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
        Ok(()) => Verdict::Ack,
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
    processed: i32,
    failed: i32,
    message: Option<String>,
    errors: sqlx::types::Json<Vec<TargetFailure>>,
    operation: String,
    params: sqlx::types::Json<Value>,
    owner_id: Option<Uuid>,
    batch_state: String,
    started: Option<DateTime<Utc>>,
}

/// A chunk's outcome as it is recorded and reported.
struct Outcome {
    chunk: progress::SettledChunk,
    message: String,
    errors: Vec<TargetFailure>,
}

/// Runs one chunk: its effects and its record in one transaction, then
/// its report to the live progress; the chunk that settles the last
/// targets ends the batch. On the last attempt a failure marks the
/// chunk's targets failed instead of asking for a retry.
async fn work_chunk(state: &AppState, chunk: &ChunkJob, last_attempt: bool) -> Result<(), String> {
    let db_err = |e: sqlx::Error| e.to_string();
    let mut tx = begin_chunk(state).await.map_err(db_err)?;
    // The chunk, locked (a second delivery waits here, then finds it
    // done), with its batch.
    let row: Option<ChunkRow> = sqlx::query_as(
        "SELECT c.state AS chunk_state, c.targets, c.processed, c.failed, c.message, c.errors,
                b.operation, b.params, b.owner_id, b.state AS batch_state, b.started
         FROM batch_chunk c JOIN batch b ON b.id = c.batch_id
         WHERE c.batch_id = $1 AND c.seq = $2
         FOR UPDATE OF c",
    )
    .bind(chunk.batch)
    .bind(chunk.seq)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        // The batch is gone.
        return Ok(());
    };
    if row.chunk_state != "pending" {
        // Settled by an earlier delivery: never done twice, but reported
        // again (a report counts once), in case that delivery stopped
        // between its commit and its report.
        drop(tx);
        if row.chunk_state != "skipped" {
            let outcome = Outcome {
                chunk: progress::SettledChunk {
                    seq: chunk.seq,
                    processed: row.processed,
                    failed: row.failed,
                },
                message: row.message.unwrap_or_default(),
                errors: row.errors.0,
            };
            settle(state, chunk.batch, &outcome, row.started).await?;
        }
        return Ok(());
    }
    if BatchState::parse(&row.batch_state).is_final() {
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
        return Ok(());
    }
    let Some(op) = ops::find(state, &row.operation).await else {
        return Err(format!("operation `{}` is not registered", row.operation));
    };
    let info = op.info();
    let started = match row.started {
        Some(t) => t,
        // The first chunks: the batch is running from now. Only they touch
        // the batch row.
        None => sqlx::query_scalar(
            "UPDATE batch SET started = coalesce(started, now()),
                 state = CASE WHEN state = 'queued' THEN 'running' ELSE state END
             WHERE id = $1 RETURNING started",
        )
        .bind(chunk.batch)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?,
    };
    let targets = row.targets.0;
    let mut effects = crate::item::Effects::default();
    let result = op
        .run_chunk(
            state,
            &mut tx,
            &mut effects,
            &row.params.0,
            row.owner_id,
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
            tx = begin_chunk(state).await.map_err(db_err)?;
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
    let mut errors: Vec<TargetFailure> = failures.iter().rev().take(ERRORS_KEPT).cloned().collect();
    errors.reverse();
    let message = if failed == 0 {
        format!(
            "chunk {} of {}: {} done",
            chunk.seq + 1,
            info.name,
            processed
        )
    } else {
        format!(
            "chunk {} of {}: {} done, {} failed",
            chunk.seq + 1,
            info.name,
            processed,
            failed
        )
    };
    sqlx::query(
        "UPDATE batch_chunk SET state = $3, processed = $4, failed = $5, message = $6,
             errors = $7, done_at = now()
         WHERE batch_id = $1 AND seq = $2",
    )
    .bind(chunk.batch)
    .bind(chunk.seq)
    .bind(if chunk_failed { "failed" } else { "done" })
    .bind(processed)
    .bind(failed)
    .bind(&message)
    .bind(sqlx::types::Json(&errors))
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    let abort = chunk_failed && info.aborts_on_failure;
    if abort {
        sqlx::query(
            "UPDATE batch SET state = 'failed', finished = now(), message = $2
             WHERE id = $1 AND state IN ('queued', 'running')",
        )
        .bind(chunk.batch)
        .bind(format!("failed: {message}"))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    }
    crate::item::write::commit(state, tx, effects)
        .await
        .map_err(|e| e.to_string())?;
    let outcome = Outcome {
        chunk: progress::SettledChunk {
            seq: chunk.seq,
            processed,
            failed,
        },
        message,
        errors,
    };
    if abort {
        publish_from_db(state, chunk.batch)
            .await
            .map_err(|e| e.to_string())?;
    } else {
        settle(state, chunk.batch, &outcome, Some(started)).await?;
    }
    Ok(())
}

/// A chunk's transaction. With the PostgreSQL queue its commit does not
/// wait for the WAL flush: the job's ack, committed synchronously after
/// it, flushes the WAL past this commit too, so a crash before the ack is
/// durable loses both and the job is delivered again (chunks are
/// idempotent). With the Redis queue the ack does not pass through
/// PostgreSQL, so the commit waits for its own flush.
async fn begin_chunk(
    state: &AppState,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    if state.queues.backend() == QueueBackend::Postgres {
        state
            .db
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await
    } else {
        state.db.begin().await
    }
}

/// Reports a committed chunk and, when it may have been the last one,
/// ends the batch. Redis unreachable or without the batch: PostgreSQL
/// decides.
async fn settle(
    state: &AppState,
    batch: Uuid,
    outcome: &Outcome,
    started: Option<DateTime<Utc>>,
) -> Result<(), String> {
    let reported = progress::report(
        state,
        batch,
        &outcome.chunk,
        &outcome.message,
        &outcome.errors,
        started,
    )
    .await;
    match reported {
        Ok(progress::Reported {
            settled,
            total: Some(total),
        }) => {
            if settled >= total {
                finish(state, batch).await?;
            }
        }
        Ok(progress::Reported { total: None, .. }) => {
            // Redis lost the batch (a restart): rebuilt from PostgreSQL.
            if !finish(state, batch).await? {
                publish_from_db(state, batch)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Err(e) => {
            tracing::warn!(batch = %batch, error = %e, "batch progress not reported to Redis");
            finish(state, batch).await?;
        }
    }
    Ok(())
}

/// Ends the batch if no chunk is pending; true if this call ended it.
/// Run after a chunk's commit, so whichever chunk commits last sees every
/// other one settled.
async fn finish(state: &AppState, batch: Uuid) -> Result<bool, String> {
    let ended: Option<Uuid> = timed(
        "batch.finish",
        sqlx::query_scalar(
            "UPDATE batch b SET state = 'done', finished = now(),
                 started = coalesce(b.started, now()),
                 message = 'done: ' || n.processed || ' processed, ' || n.failed || ' failed'
             FROM (SELECT coalesce(sum(processed), 0) AS processed,
                          coalesce(sum(failed), 0) AS failed
                   FROM batch_chunk WHERE batch_id = $1) n
             WHERE b.id = $1 AND b.state IN ('queued', 'running')
               AND NOT EXISTS (SELECT 1 FROM batch_chunk
                               WHERE batch_id = $1 AND state = 'pending')
             RETURNING b.id",
        )
        .bind(batch)
        .fetch_optional(&state.db),
    )
    .await
    .map_err(|e| e.to_string())?;
    if ended.is_none() {
        return Ok(false);
    }
    publish_from_db(state, batch)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(batch = %batch, "batch done");
    Ok(true)
}

/// Writes PostgreSQL's view of the batch (its row and its settled chunks)
/// into the live progress, and returns it.
async fn publish_from_db(state: &AppState, batch: Uuid) -> Result<BatchStatus, BatchError> {
    let (status, chunks) = load_with_chunks(&state.db, batch).await?;
    progress::sync(state, &status, &chunks).await;
    Ok(status)
}

/// The batch's status: Redis's live copy, else PostgreSQL's (which also
/// puts it back in Redis).
pub async fn status(state: &AppState, id: Uuid) -> Result<BatchStatus, BatchError> {
    if let Some(s) = progress::read(state, id).await {
        return Ok(s.derive(Utc::now()));
    }
    publish_from_db(state, id).await
}

/// The batch as PostgreSQL has it.
pub async fn load(db: &PgPool, id: Uuid) -> Result<BatchStatus, BatchError> {
    let row: Option<BatchRow> = timed(
        "batch.load",
        sqlx::query_as(&format!("{} WHERE b.id = $1", batch_select()))
            .bind(id)
            .fetch_optional(db),
    )
    .await?;
    row.map(BatchRow::status)
        .ok_or_else(|| BatchError::NotFound(id.to_string()))
}

/// [`load`], with the chunks settled so far.
async fn load_with_chunks(
    db: &PgPool,
    id: Uuid,
) -> Result<(BatchStatus, Vec<progress::SettledChunk>), BatchError> {
    let status = load(db, id).await?;
    let chunks = timed(
        "batch.settled_chunks",
        sqlx::query_as(
            "SELECT seq, processed, failed FROM batch_chunk
             WHERE batch_id = $1 AND state IN ('done', 'failed')",
        )
        .bind(id)
        .fetch_all(db),
    )
    .await?;
    Ok((status, chunks))
}

/// Cancels a batch that has not ended: chunks not yet begun are skipped;
/// a chunk running now finishes.
pub async fn cancel(state: &AppState, id: Uuid) -> Result<BatchStatus, BatchError> {
    let cancelled: Option<Uuid> = timed(
        "batch.cancel",
        sqlx::query_scalar(
            "UPDATE batch SET state = 'cancelled', finished = now(), message = 'cancelled'
             WHERE id = $1 AND state IN ('queued', 'running') RETURNING id",
        )
        .bind(id)
        .fetch_optional(&state.db),
    )
    .await?;
    if cancelled.is_none() {
        // Gone, or ended already.
        load(&state.db, id).await?;
        return Err(BatchError::Ended(id));
    }
    let s = publish_from_db(state, id).await?;
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
            "{} WHERE $1::uuid IS NULL OR b.owner_id = $1
             ORDER BY b.created DESC LIMIT $2",
            batch_select()
        ))
        .bind(owner)
        .bind(limit)
        .fetch_all(db),
    )
    .await?;
    Ok(rows.into_iter().map(BatchRow::status).collect())
}
