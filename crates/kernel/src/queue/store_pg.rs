//! The PostgreSQL queue backend: the `queue_item` table.
//!
//! A pop is one statement: the oldest available row of the queue is locked
//! with `FOR UPDATE SKIP LOCKED` (so concurrent workers never wait on each
//! other or take the same row), given a fresh lease token, and its
//! `available_at` moved to the end of the lease. Ack deletes the row, nack
//! moves `available_at` to the retry time or sets `dead_at`; both only
//! while the row still holds the worker's token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Failure, Job, Nacked, NewJob, Queue, QueueError, QueueStats, check_name, millis};
use crate::db::timed;

#[derive(Clone)]
pub struct PgQueue {
    db: PgPool,
    max_attempts: u32,
}

impl PgQueue {
    pub fn new(db: PgPool, max_attempts: u32) -> Self {
        Self { db, max_attempts }
    }
}

/// Enqueues `job` inside the caller's transaction (or on any connection):
/// the item exists if and only if that transaction commits.
/// `default_attempts` applies when the job names none.
pub async fn push_in(
    conn: &mut PgConnection,
    queue: &str,
    job: NewJob,
    default_attempts: u32,
) -> Result<Uuid, QueueError> {
    check_name(queue)?;
    let id = Uuid::now_v7();
    timed(
        "queue.push",
        sqlx::query(
            "INSERT INTO queue_item (id, queue, payload, max_attempts, available_at)
             VALUES ($1, $2, $3::jsonb, $4, now() + make_interval(secs => $5::float8 / 1000))",
        )
        .bind(id)
        .bind(queue)
        .bind(job.payload.get())
        .bind(job.max_attempts.unwrap_or(default_attempts) as i32)
        .bind(millis(job.delay) as f64)
        .execute(conn),
    )
    .await?;
    Ok(id)
}

/// [`push_in`] for many jobs at once: one statement, however many.
pub async fn push_many_in(
    conn: &mut PgConnection,
    queue: &str,
    jobs: Vec<NewJob>,
    default_attempts: u32,
) -> Result<Vec<Uuid>, QueueError> {
    check_name(queue)?;
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let payloads: Vec<&str> = jobs.iter().map(|j| j.payload.get()).collect();
    let attempts: Vec<i32> = jobs
        .iter()
        .map(|j| j.max_attempts.unwrap_or(default_attempts) as i32)
        .collect();
    let delays: Vec<f64> = jobs.iter().map(|j| millis(j.delay) as f64).collect();
    timed(
        "queue.push_many",
        sqlx::query(
            "INSERT INTO queue_item (id, queue, payload, max_attempts, available_at)
             SELECT id, $2, payload::jsonb, attempts,
                    now() + make_interval(secs => delay / 1000)
             FROM unnest($1::uuid[], $3::text[], $4::int4[], $5::float8[])
                  AS j(id, payload, attempts, delay)",
        )
        .bind(&ids)
        .bind(queue)
        .bind(&payloads)
        .bind(&attempts)
        .bind(&delays)
        .execute(conn),
    )
    .await?;
    Ok(ids)
}

/// Claims the next available item of `$1` for lease `$2` until `$3` ms
/// from now, never the row `$4` (which the same statement may be acking).
const CLAIM: &str = "
    next AS (
        SELECT id, lease_token IS NOT NULL AS expired FROM queue_item
        WHERE queue = $1 AND dead_at IS NULL AND available_at <= now() AND id <> $4
        ORDER BY available_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE queue_item q
        SET attempts = q.attempts + 1, lease_token = $2,
            available_at = now() + make_interval(secs => $3::float8 / 1000)
        FROM next WHERE q.id = next.id
        RETURNING q.id, q.payload::text AS payload, q.attempts, q.max_attempts,
                  q.last_error, q.enqueued, next.expired)";

/// An ack and a claim in one statement: what a worker finishing a job
/// and taking the next sends.
#[derive(sqlx::FromRow)]
struct AckedClaim {
    acked: i64,
    id: Option<Uuid>,
    payload: Option<String>,
    attempts: Option<i32>,
    max_attempts: Option<i32>,
    last_error: Option<String>,
    enqueued: Option<DateTime<Utc>>,
    expired: Option<bool>,
}

impl PgQueue {
    fn job(&self, queue: &str, token: Uuid, c: Claimed) -> Result<Job, QueueError> {
        if c.expired {
            metrics::counter!("trovato_queue_lease_expired_total", "queue" => queue.to_owned())
                .increment(1);
        }
        let payload = RawValue::from_string(c.payload).map_err(|e| QueueError::Corrupt {
            id: c.id.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Job {
            id: c.id,
            queue: queue.to_owned(),
            payload,
            attempt: c.attempts.max(0) as u32,
            max_attempts: c.max_attempts.max(1) as u32,
            last_error: c.last_error,
            enqueued: c.enqueued,
            lease: token,
        })
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    payload: String,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    enqueued: DateTime<Utc>,
    /// The row still held a token: its previous lease ran out.
    expired: bool,
}

fn interval_ms(d: Duration) -> f64 {
    millis(d) as f64
}

impl Queue for PgQueue {
    async fn push(&self, queue: &str, job: NewJob) -> Result<Uuid, QueueError> {
        let mut conn = self.db.acquire().await?;
        push_in(&mut conn, queue, job, self.max_attempts).await
    }

    async fn pop(&self, queue: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        check_name(queue)?;
        let token = Uuid::new_v4();
        let claimed: Option<Claimed> = timed(
            "queue.pop",
            sqlx::query_as(&format!("WITH {CLAIM} SELECT * FROM claimed"))
                .bind(queue)
                .bind(token)
                .bind(interval_ms(lease))
                .bind(Uuid::nil())
                .fetch_optional(&self.db),
        )
        .await?;
        claimed.map(|c| self.job(queue, token, c)).transpose()
    }

    async fn ack_then_pop(
        &self,
        done: &Job,
        queue: &str,
        lease: Duration,
    ) -> Result<(bool, Option<Job>), QueueError> {
        check_name(queue)?;
        let token = Uuid::new_v4();
        let row: AckedClaim = timed(
            "queue.ack_then_pop",
            sqlx::query_as(&format!(
                "WITH done AS (
                     DELETE FROM queue_item WHERE id = $4 AND lease_token = $5 RETURNING 1),
                 {CLAIM}
                 SELECT (SELECT count(*) FROM done) AS acked, c.*
                 FROM (SELECT 1) AS one LEFT JOIN claimed c ON true"
            ))
            .bind(queue)
            .bind(token)
            .bind(interval_ms(lease))
            .bind(done.id)
            .bind(done.lease)
            .fetch_one(&self.db),
        )
        .await?;
        let acked = row.acked == 1;
        let claimed = match (
            row.id,
            row.payload,
            row.attempts,
            row.max_attempts,
            row.enqueued,
        ) {
            (Some(id), Some(payload), Some(attempts), Some(max_attempts), Some(enqueued)) => {
                Some(self.job(
                    queue,
                    token,
                    Claimed {
                        id,
                        payload,
                        attempts,
                        max_attempts,
                        last_error: row.last_error,
                        enqueued,
                        expired: row.expired.unwrap_or(false),
                    },
                )?)
            }
            _ => None,
        };
        Ok((acked, claimed))
    }

    async fn len(&self, queue: &str) -> Result<u64, QueueError> {
        check_name(queue)?;
        let n: i64 = timed(
            "queue.len",
            sqlx::query_scalar(
                "SELECT count(*) FROM queue_item WHERE queue = $1 AND dead_at IS NULL",
            )
            .bind(queue)
            .fetch_one(&self.db),
        )
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn ack(&self, job: &Job) -> Result<bool, QueueError> {
        let done = timed(
            "queue.ack",
            sqlx::query("DELETE FROM queue_item WHERE id = $1 AND lease_token = $2")
                .bind(job.id)
                .bind(job.lease)
                .execute(&self.db),
        )
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn nack(
        &self,
        job: &Job,
        failure: &Failure,
        backoff: Duration,
    ) -> Result<Nacked, QueueError> {
        let (give_up, delay) = failure.plan(backoff);
        let row: Option<(bool,)> = timed(
            "queue.nack",
            sqlx::query_as(
                "UPDATE queue_item
                 SET lease_token = NULL, last_error = $3,
                     dead_at = CASE WHEN $4 OR attempts >= max_attempts THEN now() END,
                     available_at = CASE WHEN $4 OR attempts >= max_attempts THEN available_at
                                    ELSE now() + make_interval(secs => $5::float8 / 1000) END
                 WHERE id = $1 AND lease_token = $2
                 RETURNING dead_at IS NOT NULL",
            )
            .bind(job.id)
            .bind(job.lease)
            .bind(failure.error())
            .bind(give_up)
            .bind(interval_ms(delay))
            .fetch_optional(&self.db),
        )
        .await?;
        Ok(match row {
            None => Nacked::LeaseLost,
            Some((true,)) => Nacked::Dead,
            Some((false,)) => Nacked::Retrying(delay),
        })
    }

    async fn release(&self, job: &Job) -> Result<bool, QueueError> {
        let done = timed(
            "queue.release",
            sqlx::query(
                "UPDATE queue_item
                 SET lease_token = NULL, available_at = now(), attempts = greatest(attempts - 1, 0)
                 WHERE id = $1 AND lease_token = $2",
            )
            .bind(job.id)
            .bind(job.lease)
            .execute(&self.db),
        )
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        check_name(queue)?;
        let (ready, delayed, in_flight, dead, oldest): (i64, i64, i64, i64, Option<f64>) = timed(
            "queue.stats",
            sqlx::query_as(
                "SELECT
                   count(*) FILTER (WHERE dead_at IS NULL AND available_at <= now()),
                   count(*) FILTER (WHERE dead_at IS NULL AND lease_token IS NULL
                                    AND available_at > now()),
                   count(*) FILTER (WHERE dead_at IS NULL AND lease_token IS NOT NULL
                                    AND available_at > now()),
                   count(*) FILTER (WHERE dead_at IS NOT NULL),
                   extract(epoch FROM now() - min(available_at)
                       FILTER (WHERE dead_at IS NULL AND available_at <= now()))::float8
                 FROM queue_item WHERE queue = $1",
            )
            .bind(queue)
            .fetch_one(&self.db),
        )
        .await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready: ready.max(0) as u64,
            delayed: delayed.max(0) as u64,
            in_flight: in_flight.max(0) as u64,
            dead: dead.max(0) as u64,
            oldest_ready_secs: oldest.unwrap_or(0.0).max(0.0),
        })
    }

    async fn names(&self) -> Result<Vec<String>, QueueError> {
        let names: Vec<String> = timed(
            "queue.names",
            sqlx::query_scalar("SELECT DISTINCT queue FROM queue_item ORDER BY queue")
                .fetch_all(&self.db),
        )
        .await?;
        Ok(names)
    }

    async fn retry_dead(&self, queue: &str) -> Result<u64, QueueError> {
        check_name(queue)?;
        let done = timed(
            "queue.retry_dead",
            sqlx::query(
                "UPDATE queue_item
                 SET dead_at = NULL, attempts = 0, lease_token = NULL, available_at = now()
                 WHERE queue = $1 AND dead_at IS NOT NULL",
            )
            .bind(queue)
            .execute(&self.db),
        )
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, queue: &str) -> Result<u64, QueueError> {
        check_name(queue)?;
        let done = timed(
            "queue.purge",
            sqlx::query("DELETE FROM queue_item WHERE queue = $1")
                .bind(queue)
                .execute(&self.db),
        )
        .await?;
        Ok(done.rows_affected())
    }
}
