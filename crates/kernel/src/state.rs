//! The state every handler shares. Cloning it (which axum does for every
//! request) is one reference count.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::cache::Cache;
use crate::file::Files;
use crate::kv::Kv;
use crate::observe::health::Probes;
use crate::page::templates::Templates;
use crate::plugin::Plugins;
use crate::queue::Queues;
use crate::queue::info::QueueInfo;
use crate::search::Search;
use crate::settings::Config;
use crate::tasks::Tasks;
use crate::user::permissions::PermissionCache;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub kv: Kv,
    pub templates: Arc<Templates>,
    pub metrics: PrometheusHandle,
    pub permissions: Arc<PermissionCache>,
    pub plugins: Plugins,
    pub cache: Cache,
    /// File storage (both schemes) and the upload rules.
    pub files: Files,
    /// The job queues (the configured backend).
    pub queues: Queues,
    /// The kernel's own queues with their workers (batch chunks, the
    /// search feed where this process writes the index).
    pub kernel_queues: Arc<[QueueInfo<AppState>]>,
    /// Every background task and post-commit effect runs here.
    pub tasks: Tasks,
    /// The search engine.
    pub search: Search,
    /// What `/health` checks.
    pub probes: Probes,
}
