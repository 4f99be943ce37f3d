//! The home of every background task: one [`TaskTracker`] and one
//! [`CancellationToken`] per kernel.
//!
//! Long-lived work (the cache bus subscriber, the plugin status listener,
//! cron heartbeats, queue workers, batch runners) is started with
//! [`Tasks::spawn`]: it receives the kernel's token and must return soon
//! after it is cancelled. Work that follows a committed write (cache
//! invalidation, taps, indexing, file cleanup) goes through
//! [`Tasks::finish`]: it runs to the end even if the request that started
//! it is dropped because the client went away.
//!
//! Tasks run on the runtime the kernel was built on, whichever runtime
//! starts them: HTTP event loops of their own ([`crate::app::serve_loops`])
//! stop before the kernel does, and must not take post-commit work with
//! them.
//!
//! [`Tasks::shutdown`] cancels the token, waits for every task up to a
//! grace period, and names the tasks that did not finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why detached work gave no result.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} panicked")]
    Panicked(&'static str),
    #[error("task {0} was not started: the kernel is shutting down")]
    ShuttingDown(&'static str),
}

/// The kernel's background tasks. Cloning shares them.
#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    /// The runtime current when the tasks were created.
    runtime: Option<tokio::runtime::Handle>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    next_id: AtomicU64,
    /// Tasks running now, by id, for the shutdown report.
    running: Mutex<BTreeMap<u64, &'static str>>,
}

/// Removes a task from `running` when it ends, however it ends.
struct Running {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.lock_running().remove(&self.id);
    }
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            runtime: tokio::runtime::Handle::try_current().ok(),
            tracker: TaskTracker::default(),
            cancel: CancellationToken::default(),
            next_id: AtomicU64::default(),
            running: Mutex::default(),
        }
    }
}

impl Inner {
    fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(rt) => self.tracker.spawn_on(fut, rt),
            None => self.tracker.spawn(fut),
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, &'static str>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, name: &'static str) -> Running {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_running().insert(id, name);
        Running {
            inner: self.clone(),
            id,
        }
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// The kernel's cancellation token: cancelled when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Starts a long-lived task. `task` receives the kernel's token and
    /// must end soon after it is cancelled.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let running = self.inner.register(name);
        let fut = task(self.token());
        self.inner.spawn(async move {
            let _running = running;
            fut.await;
        });
    }

    /// Runs `work` as a task of its own and waits for its result. If the
    /// caller is dropped (a client that disconnects drops its request
    /// handler), `work` still runs to the end, and shutdown waits for it.
    pub async fn finish<T, Fut>(&self, name: &'static str, work: Fut) -> Result<T, TaskError>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        if self.inner.tracker.is_closed() {
            return Err(TaskError::ShuttingDown(name));
        }
        let running = self.inner.register(name);
        let handle = self.inner.spawn(async move {
            let _running = running;
            work.await
        });
        handle.await.map_err(|_| TaskError::Panicked(name))
    }

    /// Names of the tasks running now (sorted, with repeats).
    pub fn running(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.inner.lock_running().values().copied().collect();
        names.sort_unstable();
        names
    }

    /// Cancels every task and waits up to `grace` for them to end. Returns
    /// (and logs) the names of those still running after it.
    pub async fn shutdown(&self, grace: Duration) -> Vec<&'static str> {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        let left = self.running();
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            unfinished = ?left,
            "background tasks did not finish within the shutdown grace period"
        );
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_and_waits_for_cooperative_tasks() {
        let tasks = Tasks::new();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn("cooperative", |token| async move {
            token.cancelled().await;
            let _ = done_tx.send(());
        });
        assert_eq!(tasks.running(), vec!["cooperative"]);
        let left = tasks.shutdown(Duration::from_secs(30)).await;
        assert!(left.is_empty(), "{left:?}");
        done_rx.await.expect("the task saw the cancellation");
        assert!(tasks.running().is_empty());
    }

    #[tokio::test]
    async fn shutdown_names_tasks_that_outlive_the_grace_period() {
        let tasks = Tasks::new();
        tasks.spawn("stubborn", |_token| std::future::pending::<()>());
        tasks.spawn("polite", |token| async move { token.cancelled().await });
        // On this single-threaded runtime the polite task runs as soon as
        // the test awaits; the stubborn one never ends, whatever the grace.
        let left = tasks.shutdown(Duration::from_secs(1)).await;
        assert_eq!(left, vec!["stubborn"]);
    }

    #[tokio::test]
    async fn finished_work_survives_its_caller() {
        let tasks = Tasks::new();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                tasks
                    .finish("effects", async move {
                        let _ = started_tx.send(());
                        let _ = gate_rx.await;
                        let _ = done_tx.send(42);
                    })
                    .await
            }
        });
        // The caller goes away while the work waits at its gate.
        started_rx.await.expect("work started");
        caller.abort();
        let _ = caller.await;
        gate_tx.send(()).expect("work still waiting");
        assert_eq!(done_rx.await.expect("work ran to the end"), 42);
    }

    #[tokio::test]
    async fn finish_is_refused_after_shutdown() {
        let tasks = Tasks::new();
        tasks.shutdown(Duration::from_secs(1)).await;
        let r = tasks.finish("late", async {}).await;
        assert!(matches!(r, Err(TaskError::ShuttingDown("late"))));
    }
}
