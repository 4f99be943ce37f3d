//! Cron: one pass of periodic work, on exactly one server at a time.
//!
//! A pass ([`run`]) takes the cluster-wide lock ([`lock`]), keeps it alive
//! with a heartbeat while it works, and runs its [`Step`]s one after
//! another, each in a task of its own with its own time budget, so one
//! that fails, panics or overruns does not stop the others. The steps are
//! every enabled plugin's `tap_cron`, the temporary-file cleanup, the
//! bookkeeping of ended sessions and, when queues are declared, queue
//! processing. Each pass is recorded in `cron_run` (holder, start, end,
//! each step's outcome) for `trovato cron status` and `/admin/cron`.
//!
//! A pass is cancelled when the lock is lost (its heartbeat finds the key
//! gone or taken) or the kernel shuts down: the running step's token is
//! cancelled and the step is stopped, and the steps after it are skipped.

pub mod lock;
pub mod routes;
pub mod settings;

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use crate::db::{DbError, timed};
use crate::kv::KvError;
use crate::plugin::tap::Tap;
use crate::state::AppState;
use crate::tasks::TaskError;

pub use lock::{Acquired, CronLock, LockLost};
pub use settings::CronSettings;

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// The lock could not be asked for: Redis is unavailable.
    #[error("cron lock: {0}")]
    Lock(#[from] KvError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A key was sent, but none is configured.
    #[error("cron is not triggered by key on this site (cron.key is unset)")]
    KeyDisabled,
    #[error("the cron key is wrong")]
    BadKey,
}

impl From<sqlx::Error> for CronError {
    fn from(e: sqlx::Error) -> Self {
        CronError::Db(e.into())
    }
}

impl crate::error::HttpError for CronError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            CronError::Lock(_) => (S::SERVICE_UNAVAILABLE, "cron_lock_unavailable"),
            CronError::Db(e) => e.status_code(),
            CronError::Task(TaskError::ShuttingDown(_)) => {
                (S::SERVICE_UNAVAILABLE, "shutting_down")
            }
            CronError::Task(TaskError::Panicked(_)) => (S::INTERNAL_SERVER_ERROR, "internal"),
            CronError::KeyDisabled => (S::FORBIDDEN, "cron_key_disabled"),
            CronError::BadKey => (S::FORBIDDEN, "invalid_cron_key"),
        }
    }
}

/// What started a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `trovato cron` (a systemd timer, a Kubernetes CronJob).
    Cli,
    /// `POST /cron`.
    Http,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Http => "http",
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// Still running (or its server died; see `abandoned`).
    Running,
    /// Every step succeeded.
    Ok,
    /// At least one step failed or ran out of time.
    Failed,
    /// The lock was lost or the server shut down mid-pass.
    Cancelled,
    /// Its server stopped without finishing it; marked so by the next pass.
    Abandoned,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ok" => RunOutcome::Ok,
            "failed" => RunOutcome::Failed,
            "cancelled" => RunOutcome::Cancelled,
            "abandoned" => RunOutcome::Abandoned,
            _ => RunOutcome::Running,
        }
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Ok,
    Failed,
    /// It ran past its budget and was stopped.
    TimedOut,
    /// The pass was cancelled while it ran.
    Cancelled,
    /// The pass was cancelled before it began.
    Skipped,
}

impl StepOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Failed => "failed",
            StepOutcome::TimedOut => "timed_out",
            StepOutcome::Cancelled => "cancelled",
            StepOutcome::Skipped => "skipped",
        }
    }
}

/// One step of a recorded pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepReport {
    pub name: String,
    pub outcome: StepOutcome,
    /// What it did, or why it failed.
    pub detail: String,
    pub millis: u64,
}

/// A recorded pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: Uuid,
    /// The server (`host:pid`) that held the lock.
    pub holder: String,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    pub steps: Vec<StepReport>,
}

/// What a request for a pass came to.
#[derive(Debug, Clone)]
pub enum Pass {
    Ran(RunRecord),
    /// Another server holds the lock: `holder` is its `host:pid`.
    Busy {
        holder: String,
    },
}

type StepWork =
    Box<dyn FnOnce(AppState, CancellationToken) -> BoxFuture<'static, StepResult> + Send>;

/// A step's own result: what it did, or why it failed.
pub type StepResult = Result<String, String>;

/// One unit of cron work with its time budget. The work receives the
/// pass's token; it is stopped (dropped) when the token is cancelled or
/// the budget runs out, so it should keep nothing half-done across an
/// `await` that a retry cannot repair.
pub struct Step {
    pub name: String,
    pub budget: Duration,
    work: StepWork,
}

impl Step {
    pub fn new<F, Fut>(name: impl Into<String>, budget: Duration, work: F) -> Self
    where
        F: FnOnce(AppState, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self {
            name: name.into(),
            budget,
            work: Box::new(move |state, token| Box::pin(work(state, token))),
        }
    }
}

/// The kernel's steps, in order: every active plugin's `tap_cron`, the
/// file cleanup, the session bookkeeping, then each declared queue with a
/// cron budget.
pub async fn kernel_steps(state: &AppState) -> Vec<Step> {
    let budget = state.config.cron.step_budget();
    // The plugin runtime enforces the plugin's own deadline; the budget
    // only backs it up.
    let plugin_budget =
        Duration::from_secs(state.config.plugin.background_deadline_secs) + Duration::from_secs(1);
    let mut steps: Vec<Step> = state
        .plugins
        .implementors(Tap::Cron)
        .into_iter()
        .map(|plugin| {
            let plugin = plugin.to_owned();
            Step::new(
                format!("plugin:{plugin}"),
                plugin_budget,
                move |state: AppState, _| async move {
                    let input = serde_json::json!({ "timestamp": Utc::now().timestamp() });
                    state
                        .plugins
                        .invoke(&plugin, Tap::Cron.name(), &input)
                        .await
                        .map(|_| String::new())
                        .map_err(|e| e.to_string())
                },
            )
        })
        .collect();
    steps.push(Step::new(
        "files.cleanup",
        budget,
        |state: AppState, _| async move {
            let r = crate::file::usage::cleanup(&state)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "expired {} temporary files, purged {} released, {} failed",
                r.expired, r.purged, r.failed
            ))
        },
    ));
    steps.push(Step::new(
        "sessions.stage_choices",
        budget,
        |state: AppState, _| async move {
            let n = crate::stage::forget_ended_sessions(&state)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("forgot the stage choice of {n} ended sessions"))
        },
    ));
    let grace = Duration::from_secs(state.config.plugin.background_deadline_secs);
    for q in crate::queue::worker::declared(state).await.into_values() {
        if q.cron_budget.is_zero() {
            continue;
        }
        let budget = q.cron_budget;
        // The queue's time box, then the time its last jobs take.
        let step_budget = budget + grace + Duration::from_secs(5);
        steps.push(Step::new(
            format!("queue:{}", q.name),
            step_budget,
            move |state: AppState, token| async move {
                let limits = crate::queue::worker::RunLimits {
                    concurrency: q.concurrency,
                    until: Some(tokio::time::Instant::now() + budget),
                    until_empty: true,
                    grace,
                };
                let r = crate::queue::worker::run(&state, vec![q], limits, &token).await;
                Ok(format!(
                    "acked {}, retried {}, dead {}, released {}",
                    r.acked, r.retried, r.dead, r.released
                ))
            },
        ));
    }
    steps
}

/// One pass of the kernel's steps, unless another server holds the lock.
pub async fn run(state: &AppState, trigger: Trigger) -> Result<Pass, CronError> {
    let steps = kernel_steps(state).await;
    run_steps(state, trigger, steps).await
}

/// One pass of `steps` under the lock.
pub async fn run_steps(
    state: &AppState,
    trigger: Trigger,
    steps: Vec<Step>,
) -> Result<Pass, CronError> {
    let settings = &state.config.cron;
    let lock = match CronLock::acquire(&state.kv, settings.lock_ttl()).await? {
        Acquired::Held(lock) => lock,
        Acquired::Busy { holder } => {
            metrics::counter!("trovato_cron_runs_total", "outcome" => "busy").increment(1);
            tracing::info!(%holder, "cron skipped: another server holds the lock");
            return Ok(Pass::Busy { holder });
        }
    };
    let id = Uuid::now_v7();
    let holder = lock.holder().to_owned();
    let started = match record_start(&state.db, id, &holder, trigger).await {
        Ok(t) => t,
        Err(e) => {
            release(lock).await;
            return Err(e.into());
        }
    };
    tracing::info!(run = %id, %holder, steps = steps.len(), "cron pass started");
    let run = state.tasks.token().child_token();
    let (reports, lost) = tokio::join!(
        async {
            let reports = execute(state, &run, steps).await;
            // Ends the heartbeat.
            run.cancel();
            reports
        },
        lock::heartbeat(&lock, &run),
    );
    let outcome = if lost.is_some()
        || reports
            .iter()
            .any(|r| matches!(r.outcome, StepOutcome::Cancelled | StepOutcome::Skipped))
    {
        RunOutcome::Cancelled
    } else if reports.iter().all(|r| r.outcome == StepOutcome::Ok) {
        RunOutcome::Ok
    } else {
        RunOutcome::Failed
    };
    let finished = record_finish(&state.db, id, outcome, &reports, settings.runs_kept).await;
    release(lock).await;
    metrics::counter!("trovato_cron_runs_total", "outcome" => outcome.as_str()).increment(1);
    tracing::info!(run = %id, outcome = outcome.as_str(), "cron pass finished");
    let finished = match finished {
        Ok(t) => Some(t),
        Err(e) => {
            // The work is done; only its record is missing.
            tracing::warn!(run = %id, error = %e, "cron pass not recorded");
            None
        }
    };
    Ok(Pass::Ran(RunRecord {
        id,
        holder,
        trigger,
        started,
        finished,
        outcome,
        steps: reports,
    }))
}

async fn release(lock: CronLock) {
    match lock.release().await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("cron lock was no longer ours at release"),
        Err(e) => tracing::warn!(error = %e, "cron lock not released; it lapses by itself"),
    }
}

/// Runs each step in a task of its own, in order, until the pass is
/// cancelled.
async fn execute(state: &AppState, run: &CancellationToken, steps: Vec<Step>) -> Vec<StepReport> {
    let mut reports = Vec::with_capacity(steps.len());
    for step in steps {
        if run.is_cancelled() {
            reports.push(StepReport {
                name: step.name,
                outcome: StepOutcome::Skipped,
                detail: "the pass was cancelled".into(),
                millis: 0,
            });
            continue;
        }
        let start = Instant::now();
        let token = run.child_token();
        let work = (step.work)(state.clone(), token.clone());
        let budget = step.budget;
        let task = AbortOnDropHandle::new(tokio::spawn(async move {
            tokio::select! {
                r = tokio::time::timeout(budget, work) => match r {
                    Ok(Ok(detail)) => (StepOutcome::Ok, detail),
                    Ok(Err(why)) => (StepOutcome::Failed, why),
                    Err(_) => (
                        StepOutcome::TimedOut,
                        format!("stopped after its budget of {} s", budget.as_secs_f64()),
                    ),
                },
                () = token.cancelled() => (StepOutcome::Cancelled, "the pass was cancelled".into()),
            }
        }));
        let (mut outcome, detail) = match task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => (StepOutcome::Failed, "panicked".into()),
            Err(_) => (StepOutcome::Cancelled, "aborted".into()),
        };
        // A step that gave up because the pass was cancelled was cancelled.
        if run.is_cancelled() && outcome != StepOutcome::Ok {
            outcome = StepOutcome::Cancelled;
        }
        let elapsed = start.elapsed();
        let outcome_label = outcome.as_str();
        metrics::histogram!(
            "trovato_cron_step_duration_seconds",
            "step" => step.name.clone(),
            "outcome" => outcome_label
        )
        .record(elapsed.as_secs_f64());
        if outcome != StepOutcome::Ok {
            tracing::warn!(step = %step.name, outcome = outcome_label, %detail, "cron step did not succeed");
        }
        reports.push(StepReport {
            name: step.name,
            outcome,
            detail,
            millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
    }
    reports
}

/// Marks passes left running by a dead server (the lock is ours, so none
/// of them is alive), then records this one as begun.
async fn record_start(
    db: &PgPool,
    id: Uuid,
    holder: &str,
    trigger: Trigger,
) -> Result<DateTime<Utc>, DbError> {
    timed("cron.start", async {
        let mut tx = db.begin().await?;
        sqlx::query(
            "UPDATE cron_run SET outcome = 'abandoned', finished = clock_timestamp()
             WHERE outcome = 'running'",
        )
        .execute(&mut *tx)
        .await?;
        let started: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO cron_run (id, holder, trigger) VALUES ($1, $2, $3) RETURNING started",
        )
        .bind(id)
        .bind(holder)
        .bind(trigger.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(started)
    })
    .await
    .map_err(DbError::from)
}

/// Records the end of pass `id`, and forgets all but the newest `keep`.
async fn record_finish(
    db: &PgPool,
    id: Uuid,
    outcome: RunOutcome,
    steps: &[StepReport],
    keep: u32,
) -> Result<DateTime<Utc>, DbError> {
    let steps = serde_json::to_value(steps).unwrap_or_default();
    timed("cron.finish", async {
        let finished: DateTime<Utc> = sqlx::query_scalar(
            "UPDATE cron_run SET finished = clock_timestamp(), outcome = $2, steps = $3
             WHERE id = $1 RETURNING finished",
        )
        .bind(id)
        .bind(outcome.as_str())
        .bind(&steps)
        .fetch_one(db)
        .await?;
        sqlx::query(
            "DELETE FROM cron_run WHERE id IN (
                 SELECT id FROM cron_run ORDER BY started DESC OFFSET $1)",
        )
        .bind(i64::from(keep))
        .execute(db)
        .await?;
        Ok::<_, sqlx::Error>(finished)
    })
    .await
    .map_err(DbError::from)
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    holder: String,
    trigger: String,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    outcome: String,
    steps: sqlx::types::Json<Vec<StepReport>>,
}

/// The newest `limit` passes, newest first.
pub async fn recent(db: &PgPool, limit: u32) -> Result<Vec<RunRecord>, DbError> {
    let rows: Vec<RunRow> = timed(
        "cron.recent",
        sqlx::query_as(
            "SELECT id, holder, trigger, started, finished, outcome, steps
             FROM cron_run ORDER BY started DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(db),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RunRecord {
            id: r.id,
            holder: r.holder,
            trigger: if r.trigger == "http" {
                Trigger::Http
            } else {
                Trigger::Cli
            },
            started: r.started,
            finished: r.finished,
            outcome: RunOutcome::parse(&r.outcome),
            steps: r.steps.0,
        })
        .collect())
}
