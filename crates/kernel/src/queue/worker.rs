//! Running jobs: the declared queues (the kernel's and every active
//! plugin's `tap_queue_info`), who works each one, and the runner both
//! `trovato queue work` and cron use.
//!
//! A runner keeps `concurrency` slots busy. Each slot takes the next job of
//! its queues (round robin), runs its worker, and acks, retries (with
//! exponential backoff and jitter) or dead-letters it by the verdict. On
//! cancellation a slot stops taking jobs; a job in hand gets the shutdown
//! grace to finish and is otherwise released unprocessed, so it is
//! delivered again at once rather than after its lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Failure, Job, Nacked, Queue, QueueError, check_name};
use crate::plugin::tap::Tap;
use crate::state::AppState;

pub use super::info::Verdict;

/// A kernel job handler.
pub type KernelWorker = super::info::KernelWorker<AppState>;
/// Who works a queue.
pub type Worker = super::info::Worker<AppState>;
/// A declared queue.
pub type QueueInfo = super::info::QueueInfo<AppState>;

/// One queue as `tap_queue_info` declares it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    pub name: String,
    /// Seconds cron spends on it per pass (default 0: none).
    #[serde(default)]
    pub cron_secs: u64,
    /// Jobs worked at once (default 1).
    #[serde(default = "one")]
    pub concurrency: usize,
}

fn one() -> usize {
    1
}

/// The most jobs a queue may declare to work at once.
pub const MAX_CONCURRENCY: usize = 64;

/// Every declared queue, by name: the kernel's, then each active plugin's
/// `tap_queue_info` in dispatch order. A name declared twice keeps its
/// first declaration; a bad declaration is logged and skipped.
pub async fn declared(state: &AppState) -> BTreeMap<String, QueueInfo> {
    let mut queues: BTreeMap<String, QueueInfo> = state
        .kernel_queues
        .iter()
        .map(|q| (q.name.clone(), q.clone()))
        .collect();
    for (plugin, declared) in state.plugins.declarations::<Declared>(Tap::QueueInfo).await {
        for d in declared {
            if let Err(e) = check_name(&d.name) {
                tracing::warn!(%plugin, error = %e, "tap_queue_info declared a bad queue");
                continue;
            }
            if !super::in_namespace(&plugin, &d.name) {
                tracing::warn!(%plugin, queue = %d.name,
                    "tap_queue_info declared a queue outside the plugin's namespace (`<plugin>` or `<plugin>.<name>`)");
                continue;
            }
            if let Some(first) = queues.get(&d.name) {
                tracing::warn!(%plugin, queue = %d.name, first = ?first.worker, "queue declared twice; the first declaration is kept");
                continue;
            }
            queues.insert(
                d.name.clone(),
                QueueInfo {
                    name: d.name,
                    worker: Worker::Plugin(plugin.clone()),
                    cron_budget: Duration::from_secs(d.cron_secs),
                    concurrency: d.concurrency.clamp(1, MAX_CONCURRENCY),
                },
            );
        }
    }
    queues
}

/// What `tap_queue_worker` receives.
#[derive(Serialize)]
struct WorkerInput<'a> {
    queue: &'a str,
    id: uuid::Uuid,
    attempt: u32,
    payload: &'a RawValue,
}

/// What `tap_queue_worker` may return (no output: ack).
#[derive(Deserialize)]
#[serde(tag = "result", rename_all = "lowercase", deny_unknown_fields)]
enum WorkerOutput {
    Ack,
    Retry {
        #[serde(default)]
        delay_secs: Option<u64>,
        #[serde(default)]
        error: Option<String>,
    },
    Fail {
        #[serde(default)]
        error: Option<String>,
    },
}

async fn run_plugin(state: &AppState, plugin: &str, job: &Job) -> Verdict {
    let input = WorkerInput {
        queue: &job.queue,
        id: job.id,
        attempt: job.attempt,
        payload: &job.payload,
    };
    match state
        .plugins
        .invoke(plugin, Tap::QueueWorker.name(), &input)
        .await
    {
        Ok(None) => Verdict::Ack,
        Ok(Some(out)) => match serde_json::from_str::<WorkerOutput>(out.get()) {
            Ok(WorkerOutput::Ack) => Verdict::Ack,
            Ok(WorkerOutput::Retry { delay_secs, error }) => Verdict::Failed(Failure::Retry {
                delay: delay_secs.map(Duration::from_secs),
                error: error.unwrap_or_else(|| "the worker asked for a retry".into()),
            }),
            Ok(WorkerOutput::Fail { error }) => Verdict::Failed(Failure::Fail {
                error: error.unwrap_or_else(|| "the worker failed the job".into()),
            }),
            Err(e) => Verdict::Failed(Failure::Retry {
                delay: None,
                error: format!("tap_queue_worker output not understood: {e}"),
            }),
        },
        // A trap, a deadline, a disabled plugin: try again later.
        Err(e) => Verdict::Failed(Failure::Retry {
            delay: None,
            error: e.to_string(),
        }),
    }
}

async fn run_worker(state: &AppState, worker: &Worker, job: &Job) -> Verdict {
    match worker {
        Worker::Plugin(plugin) => run_plugin(state, plugin, job).await,
        Worker::Kernel(f) => f(state.clone(), job.clone()).await,
    }
}

/// What a runner did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkReport {
    pub acked: u64,
    pub retried: u64,
    pub dead: u64,
    /// Given back unprocessed at shutdown.
    pub released: u64,
    /// Finished after the lease had run out and the job had gone to
    /// another worker: its verdict was dropped.
    pub lease_lost: u64,
}

impl WorkReport {
    fn add(&mut self, other: &WorkReport) {
        self.acked += other.acked;
        self.retried += other.retried;
        self.dead += other.dead;
        self.released += other.released;
        self.lease_lost += other.lease_lost;
    }
}

/// How long and how a runner works.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Slots working at once.
    pub concurrency: usize,
    /// Stop taking jobs after this.
    pub until: Option<Instant>,
    /// Stop when every queue is empty, instead of waiting for more.
    pub until_empty: bool,
    /// Time a job in hand gets to finish after cancellation.
    pub grace: Duration,
}

/// Works `queues` until cancelled, or per `limits`. Errors of the backend
/// (a database restart, say) are logged and retried after a pause: a
/// worker process outlives them.
pub async fn run(
    state: &AppState,
    queues: Vec<QueueInfo>,
    limits: RunLimits,
    cancel: &CancellationToken,
) -> WorkReport {
    if queues.is_empty() {
        return WorkReport::default();
    }
    let queues = Arc::new(queues);
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..limits.concurrency.max(1) {
        let state = state.clone();
        let queues = queues.clone();
        let cancel = cancel.clone();
        slots.spawn(async move { run_slot(&state, &queues, slot, limits, &cancel).await });
    }
    let mut report = WorkReport::default();
    while let Some(done) = slots.join_next().await {
        match done {
            Ok(r) => report.add(&r),
            Err(e) => tracing::error!(error = %e, "queue worker slot ended abnormally"),
        }
    }
    report
}

async fn run_slot(
    state: &AppState,
    queues: &[QueueInfo],
    slot: usize,
    limits: RunLimits,
    cancel: &CancellationToken,
) -> WorkReport {
    let idle_max = Duration::from_millis(state.queues.settings().idle_poll_ms);
    let mut idle = Duration::from_millis(10).min(idle_max);
    let mut report = WorkReport::default();
    // Slots start at different queues, so one busy queue does not starve
    // the others.
    let mut next = slot % queues.len();
    // A finished job whose ack rides on the next take (one round trip for
    // both, where the backend can).
    let mut done: Option<Finished> = None;
    loop {
        if cancel.is_cancelled() || limits.until.is_some_and(|u| Instant::now() >= u) {
            if let Some(f) = done.take() {
                let acked = state.queues.ack(&f.job).await;
                record_ack(&f, acked, &mut report);
            }
            return report;
        }
        let mut took = None;
        let mut failed = false;
        for i in 0..queues.len() {
            let q = &queues[(next + i) % queues.len()];
            let taken = match done.take() {
                Some(f) => match state
                    .queues
                    .ack_then_pop(&f.job, &q.name, lease_for(state))
                    .await
                {
                    Ok((acked, job)) => {
                        record_ack(&f, Ok(acked), &mut report);
                        Ok(job)
                    }
                    Err(e) => {
                        // Neither happened: the ack is tried again alone.
                        tracing::warn!(queue = %q.name, error = %e, "cannot ack and take a job; retrying");
                        let acked = state.queues.ack(&f.job).await;
                        record_ack(&f, acked, &mut report);
                        Err(e)
                    }
                },
                None => state.queues.pop(&q.name, lease_for(state)).await,
            };
            match taken {
                Ok(Some(job)) => {
                    took = Some((q, job));
                    next = (next + i + 1) % queues.len();
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    failed = true;
                    tracing::warn!(queue = %q.name, error = %e, "cannot take a job; retrying");
                }
            }
        }
        let Some((q, job)) = took else {
            if limits.until_empty && !failed {
                return report;
            }
            let pause = if failed { idle_max } else { idle };
            tokio::select! {
                () = cancel.cancelled() => return report,
                () = tokio::time::sleep(pause) => {}
            }
            idle = (idle * 2).min(idle_max);
            continue;
        };
        idle = Duration::from_millis(10).min(idle_max);
        done = process(state, q, job, limits.grace, cancel, &mut report).await;
    }
}

/// A job its worker acked, waiting for its ack to be sent.
struct Finished {
    job: Job,
    start: std::time::Instant,
}

/// Counts an ack's result.
fn record_ack(f: &Finished, acked: Result<bool, QueueError>, report: &mut WorkReport) {
    let queue = f.job.queue.clone();
    let outcome = match acked {
        Ok(true) => {
            report.acked += 1;
            metrics::counter!("trovato_queue_acked_total", "queue" => queue.clone()).increment(1);
            tracing::debug!(queue = %queue, job = %f.job.id, attempt = f.job.attempt, "job acked");
            "acked"
        }
        Ok(false) => {
            report.lease_lost += 1;
            tracing::warn!(queue = %queue, job = %f.job.id, "job finished after its lease was lost; the verdict is dropped");
            "lease_lost"
        }
        Err(e) => {
            tracing::warn!(queue = %queue, job = %f.job.id, error = %e, "cannot ack a job; it will be delivered again");
            "error"
        }
    };
    metrics::histogram!(
        "trovato_queue_job_duration_seconds",
        "queue" => queue,
        "outcome" => outcome
    )
    .record(f.start.elapsed().as_secs_f64());
}

/// The lease a job is taken with: `queue.lease_secs`, and never shorter
/// than a plugin's deadline plus a margin.
fn lease_for(state: &AppState) -> Duration {
    let plugin = Duration::from_secs(state.config.plugin.background_deadline_secs);
    state
        .queues
        .settings()
        .lease()
        .max(plugin + Duration::from_secs(5))
}

/// Runs `job`; settles a failure at once and hands an acked job back, for
/// its ack to go with the next take.
async fn process(
    state: &AppState,
    q: &QueueInfo,
    job: Job,
    grace: Duration,
    cancel: &CancellationToken,
    report: &mut WorkReport,
) -> Option<Finished> {
    let start = std::time::Instant::now();
    let verdict = {
        let work = run_worker(state, &q.worker, &job);
        tokio::pin!(work);
        tokio::select! {
            v = &mut work => Some(v),
            () = cancel.cancelled() => tokio::time::timeout(grace, &mut work).await.ok(),
        }
    };
    let Some(verdict) = verdict else {
        match state.queues.release(&job).await {
            Ok(_) => report.released += 1,
            Err(e) => {
                tracing::warn!(queue = %q.name, job = %job.id, error = %e, "job not released; its lease will expire")
            }
        }
        return None;
    };
    let failure = match verdict {
        Verdict::Ack => return Some(Finished { job, start }),
        Verdict::Failed(failure) => failure,
    };
    let outcome = nack(state, &job, &failure, report).await;
    metrics::histogram!(
        "trovato_queue_job_duration_seconds",
        "queue" => q.name.clone(),
        "outcome" => outcome
    )
    .record(start.elapsed().as_secs_f64());
    None
}

/// Nacks `job` for `failure` (acks go through [`record_ack`]); returns
/// the outcome's label.
async fn nack(
    state: &AppState,
    job: &Job,
    failure: &Failure,
    report: &mut WorkReport,
) -> &'static str {
    let queue = job.queue.clone();
    let backoff = state
        .queues
        .settings()
        .backoff(job.attempt, rand::random::<f64>());
    match state.queues.nack(job, failure, backoff).await {
        Ok(Nacked::Retrying(after)) => {
            report.retried += 1;
            metrics::counter!("trovato_queue_retried_total", "queue" => queue.clone()).increment(1);
            tracing::info!(queue = %queue, job = %job.id, attempt = job.attempt,
                retry_in_ms = after.as_millis() as u64, error = failure.error(), "job failed; will retry");
            "retried"
        }
        Ok(Nacked::Dead) => {
            report.dead += 1;
            metrics::counter!("trovato_queue_dead_total", "queue" => queue.clone()).increment(1);
            tracing::warn!(queue = %queue, job = %job.id, attempt = job.attempt,
                error = failure.error(), "job moved to the dead letter list");
            "dead"
        }
        Ok(Nacked::LeaseLost) => {
            report.lease_lost += 1;
            tracing::warn!(queue = %queue, job = %job.id, "job finished after its lease was lost; the verdict is dropped");
            "lease_lost"
        }
        Err(e) => {
            // The item keeps its lease, which expires: it is delivered again.
            tracing::warn!(queue = %queue, job = %job.id, error = %e, "cannot settle a job; it will be delivered again");
            "error"
        }
    }
}
