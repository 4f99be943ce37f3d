//! The state every handler shares. Cloning is cheap (handles and `Arc`s).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::cache::Cache;
use crate::config::Config;
use crate::kv::Kv;
use crate::page::Templates;
use crate::plugin::Plugins;
use crate::user::access::PermissionCache;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub kv: Kv,
    pub templates: Arc<Templates>,
    pub metrics: PrometheusHandle,
    pub permissions: Arc<PermissionCache>,
    pub plugins: Plugins,
    pub cache: Cache,
}
