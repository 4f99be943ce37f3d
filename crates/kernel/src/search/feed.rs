//! The `search` queue: how item writes reach an engine of its own (one
//! whose [`SearchBackend::fed_by_queue`](super::SearchBackend::fed_by_queue)
//! holds), so a write never waits for the index. The write hook enqueues
//! one job per written row ([`on_write`]); a worker indexes the item as
//! its row then reads, so jobs may run late or twice and still leave the
//! entry right.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Search, SearchError};
use crate::item::{Change, Effects};
use crate::queue::worker::{QueueInfo, RunLimits, Verdict, Worker};
use crate::queue::{Failure, Job, NewJob, Queue, QueueBackend};
use crate::state::AppState;

/// The kernel queue that feeds the index: one job per written item.
pub const QUEUE: &str = "search";

/// A queued feed job's payload.
#[derive(Debug, Serialize, Deserialize)]
struct FeedJob {
    id: Uuid,
}

/// The kernel's `search` queue: worked by cron for up to 30 s a pass, four
/// items at a time, and by `trovato queue work`.
pub fn queue_info() -> QueueInfo {
    QueueInfo {
        name: QUEUE.to_owned(),
        worker: Worker::Kernel(Arc::new(|state, job| {
            Box::pin(async move { work(&state, &job).await })
        })),
        cron_budget: Duration::from_secs(30),
        concurrency: 4,
    }
}

/// The kernel queues `search` needs worked in this process: the feed,
/// where this process can write the index.
pub fn queues(search: &Search) -> Vec<QueueInfo> {
    let engine = search.backend();
    if engine.fed_by_queue() && engine.works_feed() {
        vec![queue_info()]
    } else {
        Vec::new()
    }
}

/// Works the feed in the background of a server process (so writes are
/// indexed without a separate worker), until shutdown.
pub fn spawn_indexer(state: &AppState) {
    let queues = queues(&state.search);
    if queues.is_empty() {
        return;
    }
    let limits = RunLimits {
        concurrency: queues.iter().map(|q| q.concurrency).sum(),
        until: None,
        until_empty: false,
        grace: state.config.server.shutdown_grace(),
    };
    let worker_state = state.clone();
    state
        .tasks
        .spawn("search indexer", move |cancel| async move {
            crate::queue::worker::run(&worker_state, queues, limits, &cancel).await;
        });
}

/// Enqueues the item `change` wrote, in the write's transaction where the
/// queue is PostgreSQL's, else after the commit.
pub async fn on_write(
    state: &AppState,
    tx: &mut PgConnection,
    change: &Change,
    effects: &mut Effects,
) -> Result<(), SearchError> {
    let id = change.item.id;
    let job = NewJob::new(&FeedJob { id })?;
    if state.queues.backend() == QueueBackend::Postgres {
        crate::queue::store_pg::push_in(&mut *tx, QUEUE, job, state.queues.settings().max_attempts)
            .await?;
    } else {
        // Redis cannot join the transaction: enqueue after the commit. A
        // lost push leaves the entry stale until the item's next write or
        // a reindex.
        let state = state.clone();
        effects.after_commit("search feed", async move {
            if let Err(e) = state.queues.push(QUEUE, job).await {
                tracing::error!(item = %id, error = %e,
                    "could not enqueue the item for the search index; a reindex repairs it");
            }
        });
    }
    Ok(())
}

/// Indexes one job's item, then drops the cached results (the index
/// changed after the write invalidated them).
async fn work(state: &AppState, job: &Job) -> Verdict {
    let FeedJob { id } = match serde_json::from_str(job.payload.get()) {
        Ok(j) => j,
        Err(e) => {
            return Verdict::Failed(Failure::Fail {
                error: format!("not a search feed job: {e}"),
            });
        }
    };
    match state.search.backend().index_item(id).await {
        Ok(()) => {
            super::query::forget_results(state).await;
            Verdict::Ack
        }
        Err(e) => Verdict::Failed(Failure::Retry {
            delay: None,
            error: e.to_string(),
        }),
    }
}
