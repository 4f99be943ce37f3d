//! Start-up: resolve the services (configured URLs, else the embedded
//! ones), connect, migrate, and assemble the shared state.

use std::sync::Arc;

use crate::cache::{Cache, CacheError};
use crate::config::ConfigError;
use crate::db::{self, DbError};
use crate::embedded::postgres::PgListen;
use crate::embedded::redis::RedisListen;
use crate::embedded::{Durability, Embedded, EmbeddedError, PostgresServer, RedisServer};
use crate::kv::{Kv, KvError};
use crate::observe::health::Probes;
use crate::page::templates::{PageError, Templates};
use crate::plugin::Plugins;
use crate::settings::Config;
use crate::state::AppState;
use crate::tasks::Tasks;
use crate::user::permissions::{PermissionCache, Registry};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("db.url (DATABASE_URL): {0}")]
    Db(#[from] DbError),
    #[error("redis.url (REDIS_URL): {0}")]
    Kv(#[from] KvError),
    #[error(transparent)]
    Page(#[from] PageError),
    #[error("redis.url (REDIS_URL): cache: {0}")]
    Cache(#[from] CacheError),
    #[error("files: {0}")]
    Files(#[from] crate::file::StorageError),
    #[error("search: {0}")]
    Search(#[from] crate::search::SearchError),
}

/// What a kernel process is for, which decides the listeners it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server or a long-running worker: it listens for other instances'
    /// cache invalidations and plugin state changes.
    Server,
    /// A one-shot command (`migrate`, `user ...`, `plugin ...`): its
    /// writes reach the other instances, but it listens to none of them,
    /// so it exits without tearing listeners down.
    Command,
}

/// The database the embedded PostgreSQL serves the kernel from.
pub const EMBEDDED_DATABASE: &str = "trovato";

/// A booted kernel: the shared state and whatever embedded servers it
/// started (stopped again by [`Kernel::shutdown`]).
pub struct Kernel {
    pub state: AppState,
    pub embedded: Embedded,
}

impl Kernel {
    /// Fills in missing service URLs by starting the embedded servers.
    pub async fn resolve_services(config: &mut Config) -> Result<Embedded, BootError> {
        let mut embedded = Embedded {
            postgres: None,
            redis: None,
        };
        let data_dir = &config.server.data_dir;
        if config.db.url.is_none() {
            let pg = PostgresServer::ensure(data_dir, PgListen::Unix, Durability::Durable).await?;
            pg.create_database(EMBEDDED_DATABASE).await?;
            config.db.url = Some(pg.url(EMBEDDED_DATABASE));
            embedded.postgres = Some(pg);
        }
        if config.redis.url.is_none() {
            let r = RedisServer::ensure(data_dir, RedisListen::Unix, Durability::Durable).await?;
            config.redis.url = Some(r.url());
            embedded.redis = Some(r);
        }
        Ok(embedded)
    }

    /// Validates `config`, starts embedded services where no URL is given,
    /// connects, migrates, and builds the state.
    pub async fn boot(config: Config) -> Result<Self, BootError> {
        Self::boot_as(config, Role::Server).await
    }

    /// [`Kernel::boot`] for `role`.
    pub async fn boot_as(mut config: Config, role: Role) -> Result<Self, BootError> {
        config.validate()?;
        let embedded = Self::resolve_services(&mut config).await?;
        match Self::connect_as(config, role).await {
            Ok(state) => Ok(Self { state, embedded }),
            Err(e) => {
                embedded.stop().await;
                Err(e)
            }
        }
    }

    /// Connects to the configured services and migrates (no embedded
    /// servers are started here).
    pub async fn connect(config: Config) -> Result<AppState, BootError> {
        Self::connect_as(config, Role::Server).await
    }

    /// [`Kernel::connect`] for `role`.
    pub async fn connect_as(config: Config, role: Role) -> Result<AppState, BootError> {
        let (Some(db_url), Some(redis_url)) = (&config.db.url, &config.redis.url) else {
            return Err(ConfigError::Invalid {
                setting: "db.url / redis.url".into(),
                message: "must be resolved before connecting".into(),
            }
            .into());
        };
        install_extensions();
        let metrics = crate::observe::metrics::install();
        let timeout = config.server.connect_timeout();
        let db = db::connect(db_url, config.db.max_connections, timeout).await?;
        db::migrate(&db).await?;
        let kv = Kv::connect(redis_url, &config.redis.prefix, timeout).await?;
        let templates = Arc::new(Templates::new(&config.site.name)?);
        // A broken plugin is recorded in the registry, never a boot error.
        let plugins = Plugins::load(&config.plugin, &config.server.data_dir).await;
        plugins.sync_enabled(&db).await?;
        let tasks = Tasks::new();
        let cache = match role {
            Role::Server => {
                plugins.spawn_status_refresh(
                    db.clone(),
                    db_url.clone(),
                    crate::plugin::STATUS_REFRESH,
                    &tasks,
                );
                Cache::start(kv.clone(), config.cache, timeout, &tasks).await?
            }
            Role::Command => Cache::without_bus(kv.clone(), config.cache),
        };
        let files = crate::file::Files::open(&config.files, &config.server.data_dir).await?;
        let search = crate::search::Search::open(&config.search, &config.server.data_dir, &db)?;
        let mut kernel_queues = vec![crate::batch::queue_info()];
        kernel_queues.extend(crate::search::feed::queues(&search));
        let queues = crate::queue::Queues::new(&config.queue, &db, &kv);
        plugins.set_queue_sink(Arc::new(crate::queue::PluginPushes::new(queues.clone())));
        let mut probes = Probes::kernel(&db, &kv);
        files.add_probe(&mut probes);
        search.add_probe(&mut probes);
        let state = AppState::new(crate::state::Shared {
            config: Arc::new(config),
            db,
            kv,
            templates,
            metrics,
            permissions: Arc::new(PermissionCache::new(Registry::new(plugins.permissions()))),
            plugins,
            probes,
            cache,
            files,
            queues,
            kernel_queues: kernel_queues.into(),
            search,
            tasks,
        });
        // A plugin's declarations that cannot be applied are logged, never
        // a boot error.
        crate::search::config::apply_plugins(&state).await;
        Ok(state)
    }

    /// Cancels the background tasks and waits for them up to the shutdown
    /// grace period, closes the pool, then stops the embedded servers this
    /// process started.
    pub async fn shutdown(self) {
        let Kernel { state, embedded } = self;
        state
            .tasks
            .shutdown(state.config.server.shutdown_grace())
            .await;
        state.db.close().await;
        drop(state);
        embedded.stop().await;
    }
}

/// The subsystems that follow item writes, in the order their hooks run
/// (see [`crate::item::write::WriteHook`]). A subsystem that follows item
/// writes adds its hook here and nowhere else.
static WRITE_HOOKS: &[&dyn crate::item::write::WriteHook] = &[
    &crate::file::usage::FileUsage,
    &crate::search::hook::SearchIndex,
];

/// Batch operations of subsystems above the batch runner.
fn subsystem_operations() -> Vec<Arc<dyn crate::batch::Operation>> {
    vec![Arc::new(crate::search::config::Reindex)]
}

/// Hands the lower subsystems what follows them: write hooks to the item
/// write path, operations to the batch runner. The kernel is the one place
/// that names both sides, so neither imports the other.
fn install_extensions() {
    crate::item::write::install_hooks(WRITE_HOOKS);
    crate::batch::ops::install_subsystem_ops(subsystem_operations);
}
