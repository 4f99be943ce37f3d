//! What a declared queue is: its name, who works it, and how much of cron
//! it gets. Generic over the state a kernel worker receives, so the kernel's
//! shared state can hold its own queues' workers ([`super::worker`] names
//! them for it).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Failure, Job};

/// A worker's verdict on one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ack,
    Failed(Failure),
}

/// A kernel job handler, given the kernel's state `S`.
pub type KernelWorker<S> = Arc<dyn Fn(S, Job) -> BoxFuture<'static, Verdict> + Send + Sync>;

/// Who works a queue.
#[derive(Clone)]
pub enum Worker<S> {
    /// The plugin that declared it, through `tap_queue_worker`.
    Plugin(String),
    Kernel(KernelWorker<S>),
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Worker::Plugin(p) => write!(f, "plugin {p}"),
            Worker::Kernel(_) => f.write_str("kernel"),
        }
    }
}

/// A declared queue.
#[derive(Clone)]
pub struct QueueInfo<S> {
    pub name: String,
    pub worker: Worker<S>,
    /// How long cron works this queue per pass (zero: cron leaves it to
    /// `trovato queue work`).
    pub cron_budget: Duration,
    /// Jobs of this queue worked at once.
    pub concurrency: usize,
}
