//! WebAssembly plugins: loading, isolation, bounds and tap dispatch.
//!
//! This subsystem owns the plugin directory (manifests and modules), the
//! compiled modules, dependency resolution, the enabled/disabled state (the
//! `plugin_status` table) and every tap invocation. The ABI plugins are
//! written against is documented in `docs/plugins.md`; [`runtime`] holds
//! the bounds each invocation runs under.
//!
//! A plugin that fails to load (bad manifest, bad module, unknown import,
//! missing or cyclic dependency) is recorded with its error and skipped:
//! it never stops the kernel from starting.

pub mod admin;
pub mod deps;
pub mod host;
pub mod manifest;
pub mod postgres;
pub mod routes;
pub mod runtime;
pub mod tap;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::config::ConfigError;
use crate::db::DbError;
use crate::error::AppError;
pub use manifest::{Manifest, PluginName};
pub use runtime::{Bounds, Compiled, Runtime};
pub use tap::Tap;

/// The `[plugin]` section: where plugins are loaded from, and the bounds
/// every tap invocation runs under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Plugins")]
pub struct PluginSettings {
    /// Where plugins are loaded from.
    #[arg(
        id = "plugin.dir",
        long = "plugin-dir",
        env = "TROVATO_PLUGIN_DIR",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
    /// Milliseconds a tap run for a request may take.
    #[arg(
        id = "plugin.request_deadline_ms",
        long = "plugin-request-deadline-ms",
        env = "TROVATO_PLUGIN_REQUEST_DEADLINE_MS",
        value_name = "MS"
    )]
    pub request_deadline_ms: u64,
    /// Seconds `tap_cron` and `tap_queue_worker` may take.
    #[arg(
        id = "plugin.background_deadline_secs",
        long = "plugin-background-deadline",
        env = "TROVATO_PLUGIN_BACKGROUND_DEADLINE",
        value_name = "SECS"
    )]
    pub background_deadline_secs: u64,
    /// Largest linear memory of one plugin instance, in bytes.
    #[arg(
        id = "plugin.memory_limit_bytes",
        long = "plugin-memory-limit",
        env = "TROVATO_PLUGIN_MEMORY_LIMIT",
        value_name = "BYTES"
    )]
    pub memory_limit_bytes: usize,
    /// Largest output of one tap invocation, in bytes.
    #[arg(
        id = "plugin.output_limit_bytes",
        long = "plugin-output-limit",
        env = "TROVATO_PLUGIN_OUTPUT_LIMIT",
        value_name = "BYTES"
    )]
    pub output_limit_bytes: usize,
    /// Plugin instances alive at once; more invocations wait for a free one.
    #[arg(
        id = "plugin.max_instances",
        long = "plugin-max-instances",
        env = "TROVATO_PLUGIN_MAX_INSTANCES",
        value_name = "N"
    )]
    pub max_instances: u32,
}

impl Default for PluginSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./plugins"),
            request_deadline_ms: 100,
            background_deadline_secs: 30,
            memory_limit_bytes: 64 * 1024 * 1024,
            output_limit_bytes: 4 * 1024 * 1024,
            max_instances: 256,
        }
    }
}

impl PluginSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.request_deadline_ms == 0 {
            return Err(ConfigError::invalid::<Self>(
                "plugin.request_deadline_ms",
                "must be at least 1 ms",
            ));
        }
        if self.background_deadline_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "plugin.background_deadline_secs",
                "must be at least 1 second",
            ));
        }
        // One wasm page is 64 KiB; wasm32 memories stop at 4 GiB.
        if !(64 * 1024..=4 * 1024 * 1024 * 1024).contains(&self.memory_limit_bytes) {
            return Err(ConfigError::invalid::<Self>(
                "plugin.memory_limit_bytes",
                "must be between 65536 (one wasm page) and 4294967296",
            ));
        }
        if self.output_limit_bytes == 0 {
            return Err(ConfigError::invalid::<Self>(
                "plugin.output_limit_bytes",
                "must be at least 1 byte",
            ));
        }
        if !(1..=10_000).contains(&self.max_instances) {
            return Err(ConfigError::invalid::<Self>(
                "plugin.max_instances",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}

/// Every way a plugin can fail. Each variant names the plugin, and the tap
/// where one was being invoked, so a log line or an API error is
/// self-explanatory. Cloneable: a load error is kept and returned to every
/// later invocation of that plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin `{plugin}` not found")]
    NotFound { plugin: String },
    #[error("plugin `{plugin}` is disabled")]
    Disabled { plugin: String },
    #[error("plugin `{plugin}` is on a dependency cycle: {cycle}")]
    CircularDependency { plugin: String, cycle: String },
    #[error(
        "plugin `{plugin}` depends on `{dependency}`, which is missing, disabled or failed to load"
    )]
    MissingDependency { plugin: String, dependency: String },
    #[error("plugin `{plugin}`: invalid manifest: {reason}")]
    InvalidManifest { plugin: String, reason: String },
    #[error("plugin `{plugin}`: invalid WebAssembly module: {reason}")]
    InvalidModule { plugin: String, reason: String },
    #[error("plugin `{plugin}` imports `{import}`, which the kernel does not provide")]
    UnknownImport { plugin: String, import: String },
    #[error("plugin `{plugin}` lacks export `{export}` with signature {signature}")]
    MissingExport {
        plugin: String,
        export: String,
        signature: &'static str,
    },
    #[error("plugin `{plugin}` does not export its linear memory as `memory`")]
    MissingMemory { plugin: String },
    #[error("plugin `{plugin}` does not implement `{tap}`")]
    TapNotImplemented { plugin: String, tap: String },
    #[error("plugin `{plugin}` trapped in `{tap}`: {reason}")]
    Trap {
        plugin: String,
        tap: String,
        reason: String,
    },
    #[error("plugin `{plugin}` overflowed its wasm stack in `{tap}`")]
    StackOverflow { plugin: String, tap: String },
    #[error("plugin `{plugin}` exceeded its {after_ms} ms deadline in `{tap}`")]
    Timeout {
        plugin: String,
        tap: String,
        after_ms: u64,
    },
    #[error("plugin `{plugin}` exceeded its {limit_bytes}-byte memory limit in `{tap}`")]
    OutOfMemory {
        plugin: String,
        tap: String,
        limit_bytes: usize,
    },
    #[error("plugin `{plugin}` returned {len} bytes from `{tap}`; the limit is {limit}")]
    OutputTooLarge {
        plugin: String,
        tap: String,
        len: usize,
        limit: usize,
    },
    #[error("plugin `{plugin}` returned bad output from `{tap}`: {reason}")]
    BadOutput {
        plugin: String,
        tap: String,
        reason: String,
    },
    #[error("plugin `{plugin}` returned output from `{tap}` that is not UTF-8")]
    InvalidUtf8 { plugin: String, tap: String },
    #[error("plugin `{plugin}`, `{tap}`: JSON (de)serialization failed: {reason}")]
    Serialization {
        plugin: String,
        tap: String,
        reason: String,
    },
    #[error("plugin `{plugin}`, `{tap}`: WASM execution failed: {reason}")]
    WasmExecution {
        plugin: String,
        tap: String,
        reason: String,
    },
}

impl crate::error::HttpError for PluginError {
    fn status_code(&self) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode as S;
        match self {
            PluginError::NotFound { .. } => (S::NOT_FOUND, "plugin_not_found"),
            PluginError::Disabled { .. } => (S::CONFLICT, "plugin_disabled"),
            PluginError::CircularDependency { .. }
            | PluginError::MissingDependency { .. }
            | PluginError::InvalidManifest { .. }
            | PluginError::InvalidModule { .. }
            | PluginError::UnknownImport { .. }
            | PluginError::MissingExport { .. }
            | PluginError::MissingMemory { .. }
            | PluginError::TapNotImplemented { .. }
            | PluginError::Trap { .. }
            | PluginError::StackOverflow { .. }
            | PluginError::Timeout { .. }
            | PluginError::OutOfMemory { .. }
            | PluginError::OutputTooLarge { .. }
            | PluginError::BadOutput { .. }
            | PluginError::InvalidUtf8 { .. }
            | PluginError::Serialization { .. }
            | PluginError::WasmExecution { .. } => (S::INTERNAL_SERVER_ERROR, "plugin_failed"),
        }
    }
}

impl PluginError {
    /// A short stable name for metric labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::NotFound { .. } => "not_found",
            PluginError::Disabled { .. } => "disabled",
            PluginError::CircularDependency { .. } => "circular_dependency",
            PluginError::MissingDependency { .. } => "missing_dependency",
            PluginError::InvalidManifest { .. } => "invalid_manifest",
            PluginError::InvalidModule { .. } => "invalid_module",
            PluginError::UnknownImport { .. } => "unknown_import",
            PluginError::MissingExport { .. } => "missing_export",
            PluginError::MissingMemory { .. } => "missing_memory",
            PluginError::TapNotImplemented { .. } => "tap_not_implemented",
            PluginError::Trap { .. } => "trap",
            PluginError::StackOverflow { .. } => "stack_overflow",
            PluginError::Timeout { .. } => "timeout",
            PluginError::OutOfMemory { .. } => "out_of_memory",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::BadOutput { .. } => "bad_output",
            PluginError::InvalidUtf8 { .. } => "invalid_utf8",
            PluginError::Serialization { .. } => "serialization",
            PluginError::WasmExecution { .. } => "wasm_execution",
        }
    }
}

/// How often a running kernel re-reads which plugins are enabled.
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// One plugin's result from [`Plugins::invoke_all`].
#[derive(Debug)]
pub struct TapOutcome {
    pub plugin: String,
    pub result: Result<Option<Box<RawValue>>, PluginError>,
}

/// What `GET /api/plugins` and `trovato plugin list` show of a plugin.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub description: String,
    pub version: String,
    pub weight: i32,
    pub taps: Vec<String>,
    pub dependencies: Vec<String>,
    /// The administrator's choice (plugins are enabled until disabled).
    pub enabled: bool,
    /// `active` (taps are dispatched to it), `disabled`, `inactive` (a
    /// dependency is disabled) or `failed` (see `error`).
    pub status: &'static str,
    /// Why the plugin failed to load, or which dependency holds it back.
    pub error: Option<String>,
}

struct Entry {
    dir_name: String,
    manifest: Option<Manifest>,
    module: Result<Arc<Compiled>, PluginError>,
    enabled: AtomicBool,
    /// The duration histogram of each declared tap's successful
    /// invocations, resolved once: looking a labelled metric up by name
    /// costs more than recording into it.
    ok_durations: HashMap<String, metrics::Histogram>,
}

struct Registry {
    runtime: Option<Runtime>,
    /// In dispatch order: weight, then name.
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    /// Tap name to the entries declaring it, in dispatch order.
    by_tap: HashMap<String, Vec<usize>>,
    /// Dropped with the registry, which ends its status refresher.
    alive: tokio::sync::watch::Sender<()>,
}

/// The plugin registry: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Registry>,
}

impl Plugins {
    /// A registry with no plugins.
    pub fn empty() -> Self {
        Self {
            inner: Arc::new(Registry {
                runtime: None,
                entries: Vec::new(),
                index: HashMap::new(),
                by_tap: HashMap::new(),
                alive: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// Loads every plugin under `settings.dir`, compiling off the async
    /// workers (the compile cache lives under `data_dir`). Never fails: a
    /// broken plugin is recorded and skipped.
    pub async fn load(settings: &PluginSettings, data_dir: &Path) -> Self {
        let dir = settings.dir.clone();
        let bounds = Bounds::new(settings, data_dir);
        match tokio::task::spawn_blocking(move || Self::load_blocking(&dir, bounds)).await {
            Ok(plugins) => plugins,
            Err(e) => {
                tracing::error!(error = %e, "plugin loading panicked; running without plugins");
                Self::empty()
            }
        }
    }

    /// [`Plugins::load`] on the calling thread.
    pub fn load_blocking(plugin_dir: &Path, bounds: Bounds) -> Self {
        let found = manifest::discover(plugin_dir);
        if found.is_empty() {
            return Self::empty();
        }
        let runtime = match Runtime::new(bounds) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the WebAssembly runtime; plugins are off");
                None
            }
        };
        let mut entries: Vec<Entry> = found
            .into_iter()
            .map(|f| {
                let module = match (&f.manifest, &runtime) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(m), Some(rt)) => compile_found(rt, m, f.module_path.as_deref()),
                    (Ok(m), None) => Err(PluginError::WasmExecution {
                        plugin: m.name.to_string(),
                        tap: String::new(),
                        reason: "the WebAssembly runtime could not start".into(),
                    }),
                };
                let manifest = f.manifest.ok();
                let ok_durations = manifest
                    .iter()
                    .flat_map(|m| &m.taps)
                    .map(|tap| (tap.clone(), duration_histogram(&f.dir_name, tap, "ok")))
                    .collect();
                Entry {
                    dir_name: f.dir_name,
                    manifest,
                    module: module.map(Arc::new),
                    enabled: AtomicBool::new(true),
                    ok_durations,
                }
            })
            .collect();

        let with_manifest: Vec<&Entry> = entries.iter().filter(|e| e.manifest.is_some()).collect();
        let nodes: Vec<deps::Node<'_>> = with_manifest
            .iter()
            .filter_map(|e| {
                e.manifest.as_ref().map(|m| deps::Node {
                    name: &m.name,
                    dependencies: &m.dependencies,
                    usable: e.module.is_ok(),
                })
            })
            .collect();
        let resolution = deps::resolve(&nodes);
        for e in &mut entries {
            let failed = e
                .manifest
                .as_ref()
                .and_then(|m| resolution.failed.get(&m.name));
            if let Some(err) = failed {
                e.module = Err(err.clone());
            }
        }
        entries.sort_by(|a, b| {
            let wa = a.manifest.as_ref().map_or(0, |m| m.weight);
            let wb = b.manifest.as_ref().map_or(0, |m| m.weight);
            wa.cmp(&wb).then_with(|| a.dir_name.cmp(&b.dir_name))
        });
        let mut index = HashMap::new();
        let mut by_tap: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            index.insert(e.dir_name.clone(), i);
            if let Some(m) = &e.manifest {
                for tap in &m.taps {
                    by_tap.entry(tap.clone()).or_default().push(i);
                }
            }
            match &e.module {
                Ok(_) => tracing::info!(plugin = %e.dir_name, "plugin loaded"),
                Err(err) => {
                    metrics::counter!(
                        "trovato_plugin_failures_total",
                        "plugin" => e.dir_name.clone(),
                        "tap" => "load",
                        "kind" => err.kind()
                    )
                    .increment(1);
                    tracing::error!(plugin = %e.dir_name, kind = err.kind(), error = %err, "plugin failed to load");
                }
            }
        }
        Self {
            inner: Arc::new(Registry {
                runtime,
                entries,
                index,
                by_tap,
                alive: tokio::sync::watch::Sender::new(()),
            }),
        }
    }

    /// Applies the enabled/disabled state stored in the database.
    pub async fn sync_enabled(&self, db: &PgPool) -> Result<(), DbError> {
        if self.inner.entries.is_empty() {
            return Ok(());
        }
        let states = postgres::enabled_states(db).await?;
        for e in &self.inner.entries {
            let enabled = states.get(&e.dir_name).copied().unwrap_or(true);
            e.enabled.store(enabled, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Keeps the enabled/disabled state in step with the database until
    /// this registry is dropped, so `trovato plugin enable|disable` (or
    /// another kernel process) reaches a running server: at once through
    /// PostgreSQL notifications on [`postgres::STATUS_CHANNEL`], and by
    /// re-reading it every `every` whatever happens to the listening
    /// connection. The listener has its own connection to `database_url`,
    /// outside the pool.
    pub fn spawn_status_refresh(
        &self,
        db: PgPool,
        database_url: String,
        every: std::time::Duration,
        tasks: &crate::tasks::Tasks,
    ) {
        if self.inner.entries.is_empty() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let mut alive = self.inner.alive.subscribe();
        tasks.spawn("plugin status listener", |token| async move {
            // Ends with the kernel, or when the registry is dropped.
            let mut stopped = std::pin::pin!(async move {
                tokio::select! {
                    _ = alive.changed() => {},
                    () = token.cancelled() => {},
                }
            });
            // Re-reads the state; false once the registry is gone.
            let refresh = async |weak: &std::sync::Weak<Registry>| {
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                if let Err(e) = (Plugins { inner }).sync_enabled(&db).await {
                    tracing::debug!(error = %e, "cannot refresh the plugin status");
                }
                true
            };
            let mut listener: Option<PgListener> = None;
            loop {
                if listener.is_none() {
                    listener = tokio::select! {
                        l = listen(&database_url) => l,
                        () = tokio::time::sleep(every) => None,
                        () = &mut stopped => break,
                    };
                    // Changes made before it listened were not announced
                    // to it.
                    if listener.is_some() && !refresh(&weak).await {
                        break;
                    }
                }
                // Wake on a notification, a lost listener, the period, or
                // the registry going away.
                tokio::select! {
                    received = recv(&mut listener) => {
                        if let Err(e) = received {
                            tracing::debug!(error = %e, "plugin status listener lost");
                            listener = None;
                        }
                    }
                    () = tokio::time::sleep(every) => {}
                    () = &mut stopped => break,
                }
                if !refresh(&weak).await {
                    break;
                }
            }
        });
    }

    /// Enables or disables `plugin`: the database row first, then this
    /// registry. Other kernel processes apply it when PostgreSQL notifies
    /// them, or at the latest within [`STATUS_REFRESH`].
    pub async fn set_enabled(
        &self,
        db: &PgPool,
        plugin: &str,
        enabled: bool,
    ) -> Result<(), AppError> {
        let entry = self.entry(plugin)?;
        postgres::set_enabled(db, plugin, enabled).await?;
        entry.enabled.store(enabled, Ordering::Relaxed);
        tracing::info!(plugin, enabled, "plugin status changed");
        Ok(())
    }

    fn entry(&self, plugin: &str) -> Result<&Entry, PluginError> {
        self.inner
            .index
            .get(plugin)
            .map(|&i| &self.inner.entries[i])
            .ok_or_else(|| PluginError::NotFound {
                plugin: plugin.to_owned(),
            })
    }

    /// `Ok` when taps are dispatched to `entry`: loaded, enabled, and every
    /// dependency likewise (dependencies form no cycle once loaded).
    fn check_active(&self, entry: &Entry) -> Result<(), PluginError> {
        if let Err(e) = &entry.module {
            return Err(e.clone());
        }
        if !entry.enabled.load(Ordering::Relaxed) {
            return Err(PluginError::Disabled {
                plugin: entry.dir_name.clone(),
            });
        }
        for dep in entry.manifest.iter().flat_map(|m| &m.dependencies) {
            let held_back = match self.entry(dep.as_str()) {
                Ok(d) => self.check_active(d).is_err(),
                Err(_) => true,
            };
            if held_back {
                return Err(PluginError::MissingDependency {
                    plugin: entry.dir_name.clone(),
                    dependency: dep.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Every plugin found, in dispatch order, with its status.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.inner
            .entries
            .iter()
            .map(|e| {
                let enabled = e.enabled.load(Ordering::Relaxed);
                let (status, error) = match self.check_active(e) {
                    Ok(()) => ("active", None),
                    Err(PluginError::Disabled { .. }) => ("disabled", None),
                    Err(err @ PluginError::MissingDependency { .. }) if e.module.is_ok() => {
                        ("inactive", Some(err.to_string()))
                    }
                    Err(err) => ("failed", Some(err.to_string())),
                };
                let m = e.manifest.as_ref();
                PluginInfo {
                    name: e.dir_name.clone(),
                    description: m.map(|m| m.description.clone()).unwrap_or_default(),
                    version: m.map(|m| m.version.clone()).unwrap_or_default(),
                    weight: m.map_or(0, |m| m.weight),
                    taps: m.map(|m| m.taps.clone()).unwrap_or_default(),
                    dependencies: m
                        .map(|m| m.dependencies.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    enabled,
                    status,
                    error,
                }
            })
            .collect()
    }

    /// The permissions the plugins' manifests declare, `(plugin, name,
    /// description)` in dispatch order; a disabled or failed plugin's too
    /// (a role may hold them while the plugin is off).
    pub fn permissions(&self) -> Vec<(String, String, String)> {
        self.inner
            .entries
            .iter()
            .filter_map(|e| Some((&e.dir_name, e.manifest.as_ref()?)))
            .flat_map(|(plugin, m)| {
                m.permissions
                    .iter()
                    .map(|(name, description)| (plugin.clone(), name.clone(), description.clone()))
            })
            .collect()
    }

    /// The active plugins implementing `tap`, in dispatch order.
    pub fn implementors(&self, tap: impl AsRef<str>) -> Vec<&str> {
        let tap = tap.as_ref();
        self.inner
            .by_tap
            .get(tap)
            .into_iter()
            .flatten()
            .map(|&i| &self.inner.entries[i])
            .filter(|e| self.check_active(e).is_ok())
            .map(|e| e.dir_name.as_str())
            .collect()
    }

    /// What every active plugin declares through `tap` (a JSON array of
    /// `T`; no output: nothing), in dispatch order. A plugin whose tap
    /// fails or whose output is not such an array is logged and skipped.
    pub async fn declarations<T: serde::de::DeserializeOwned>(
        &self,
        tap: Tap,
    ) -> Vec<(String, Vec<T>)> {
        let mut all = Vec::new();
        for outcome in self.invoke_all(tap, &()).await {
            let parsed = outcome
                .result
                .map_err(|e| e.to_string())
                .and_then(|out| match out {
                    None => Ok(Vec::new()),
                    Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
                });
            match parsed {
                Ok(d) => all.push((outcome.plugin, d)),
                Err(e) => {
                    tracing::warn!(plugin = %outcome.plugin, %tap, error = %e, "plugin declarations ignored")
                }
            }
        }
        all
    }

    /// Sends the plugins' `queue_push` calls to `sink`.
    pub fn set_queue_sink(&self, sink: Arc<dyn host::QueueSink>) {
        if let Some(rt) = &self.inner.runtime {
            rt.set_queue_sink(sink);
        }
    }

    /// Invokes `tap` of one plugin with `input` serialized as JSON.
    pub async fn invoke<T: Serialize + ?Sized>(
        &self,
        plugin: &str,
        tap: &str,
        input: &T,
    ) -> Result<Option<Box<RawValue>>, PluginError> {
        let input = serde_json::to_string(input).map_err(|e| PluginError::Serialization {
            plugin: plugin.to_owned(),
            tap: tap.to_owned(),
            reason: format!("input: {e}"),
        })?;
        self.invoke_json(plugin, tap, &input).await
    }

    /// Invokes `tap` of one plugin with `input`, which must be JSON (being
    /// a `str`, it is UTF-8, as ABI v1 promises guests).
    pub async fn invoke_json(
        &self,
        plugin: &str,
        tap: &str,
        input: &str,
    ) -> Result<Option<Box<RawValue>>, PluginError> {
        let ready = self.entry(plugin).and_then(|e| {
            self.check_active(e)?;
            if !e
                .manifest
                .as_ref()
                .is_some_and(|m| m.taps.iter().any(|t| t == tap))
            {
                return Err(PluginError::TapNotImplemented {
                    plugin: plugin.to_owned(),
                    tap: tap.to_owned(),
                });
            }
            Ok(e)
        });
        match ready {
            Ok(e) => self.run(e, tap, input).await,
            Err(err) => {
                record(
                    plugin,
                    tap,
                    input.len(),
                    Instant::now(),
                    &Err(err.clone()),
                    None,
                );
                Err(err)
            }
        }
    }

    /// Invokes `tap` of every active plugin implementing it, in weight
    /// order (ties by name), one after another. A failing plugin is
    /// reported in its outcome and never stops the others.
    pub async fn invoke_all<T: Serialize + ?Sized>(
        &self,
        tap: impl AsRef<str>,
        input: &T,
    ) -> Vec<TapOutcome> {
        let tap = tap.as_ref();
        match serde_json::to_string(input) {
            Ok(json) => self.invoke_all_json(tap, &json).await,
            Err(e) => self
                .implementors(tap)
                .into_iter()
                .map(|p| TapOutcome {
                    plugin: p.to_owned(),
                    result: Err(PluginError::Serialization {
                        plugin: p.to_owned(),
                        tap: tap.to_owned(),
                        reason: format!("input: {e}"),
                    }),
                })
                .collect(),
        }
    }

    /// [`Plugins::invoke_all`] with input already serialized.
    pub async fn invoke_all_json(&self, tap: &str, input: &str) -> Vec<TapOutcome> {
        let Some(indices) = self.inner.by_tap.get(tap) else {
            return Vec::new();
        };
        let mut outcomes = Vec::with_capacity(indices.len());
        for &i in indices {
            let e = &self.inner.entries[i];
            if self.check_active(e).is_err() {
                continue;
            }
            outcomes.push(TapOutcome {
                plugin: e.dir_name.clone(),
                result: self.run(e, tap, input).await,
            });
        }
        outcomes
    }

    async fn run(
        &self,
        e: &Entry,
        tap: &str,
        input: &str,
    ) -> Result<Option<Box<RawValue>>, PluginError> {
        let start = Instant::now();
        let result = match (&e.module, &self.inner.runtime) {
            (Ok(module), Some(rt)) => rt.invoke(module, &e.dir_name, tap, input).await,
            (Err(err), _) => Err(err.clone()),
            (Ok(_), None) => Err(PluginError::WasmExecution {
                plugin: e.dir_name.clone(),
                tap: tap.to_owned(),
                reason: "the WebAssembly runtime is not running".into(),
            }),
        };
        record(
            &e.dir_name,
            tap,
            input.len(),
            start,
            &result,
            e.ok_durations.get(tap),
        );
        result
    }
}

/// A connection listening on [`postgres::STATUS_CHANNEL`]; `None` (and a
/// debug line) when it cannot be had, in which case the periodic re-read
/// carries on alone and listening is tried again after it.
async fn listen(database_url: &str) -> Option<PgListener> {
    let mut listener = match PgListener::connect(database_url).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "cannot listen for plugin status changes");
            return None;
        }
    };
    match listener.listen(postgres::STATUS_CHANNEL).await {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::debug!(error = %e, "cannot listen for plugin status changes");
            None
        }
    }
}

/// The next notification, or never when there is no listener.
async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(l) => l.recv().await.map(drop),
        None => std::future::pending().await,
    }
}

/// Compiles the module of a plugin whose manifest is valid.
fn compile_found(
    rt: &Runtime,
    m: &Manifest,
    module_path: Option<&Path>,
) -> Result<Compiled, PluginError> {
    let plugin = m.name.to_string();
    let path = module_path.ok_or_else(|| PluginError::InvalidModule {
        plugin: plugin.clone(),
        // Plugins written in Rust ship as source; say how to build them.
        reason: format!(
            "neither {plugin}.wasm nor {plugin}.wat exists (a plugin built from source needs \
             its .wasm, e.g. scripts/build-plugins for the examples)"
        ),
    })?;
    let bytes = std::fs::read(path).map_err(|e| PluginError::InvalidModule {
        plugin: plugin.clone(),
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    rt.compile(&plugin, &bytes, &m.taps)
}

/// Loads the one plugin `name` from `plugin_dir` (enabled or not, without
/// dependencies or a database) and invokes `tap` on `input` under
/// `bounds`: what `trovato plugin invoke` does.
pub async fn invoke_from_dir(
    plugin_dir: &Path,
    name: &str,
    tap: &str,
    input: &str,
    bounds: Bounds,
) -> Result<Option<Box<RawValue>>, PluginError> {
    PluginName::parse(name).map_err(|_| PluginError::NotFound {
        plugin: name.to_owned(),
    })?;
    manifest::check_tap_name(tap).map_err(|_| PluginError::TapNotImplemented {
        plugin: name.to_owned(),
        tap: tap.to_owned(),
    })?;
    let dir = plugin_dir.join(name);
    if !dir.join(format!("{name}.info.toml")).is_file() {
        return Err(PluginError::NotFound {
            plugin: name.to_owned(),
        });
    }
    let (plugin_dir, name_owned, tap_owned) = (dir, name.to_owned(), tap.to_owned());
    let compiled = tokio::task::spawn_blocking(move || {
        let found = manifest::read_one(&plugin_dir, &name_owned);
        let mut m = found.manifest?;
        if !m.taps.contains(&tap_owned) {
            m.taps.push(tap_owned);
        }
        let rt = Runtime::new(bounds).map_err(|reason| PluginError::WasmExecution {
            plugin: name_owned.clone(),
            tap: String::new(),
            reason,
        })?;
        let compiled = compile_found(&rt, &m, found.module_path.as_deref())?;
        Ok::<_, PluginError>((rt, compiled))
    })
    .await
    .map_err(|e| PluginError::WasmExecution {
        plugin: name.to_owned(),
        tap: tap.to_owned(),
        reason: format!("loading panicked: {e}"),
    })?;
    let (rt, compiled) = compiled?;
    let start = Instant::now();
    let result = rt.invoke(&compiled, name, tap, input).await;
    record(name, tap, input.len(), start, &result, None);
    result
}

/// The duration histogram of `plugin`'s `tap` for `outcome`.
fn duration_histogram(plugin: &str, tap: &str, outcome: &'static str) -> metrics::Histogram {
    metrics::histogram!(
        "trovato_plugin_tap_duration_seconds",
        "plugin" => plugin.to_owned(),
        "tap" => tap.to_owned(),
        "outcome" => outcome
    )
}

/// The per-invocation log line and metrics (spec §15). `ok_duration` is
/// the histogram for a success, when the caller holds it.
fn record(
    plugin: &str,
    tap: &str,
    payload_bytes: usize,
    start: Instant,
    result: &Result<Option<Box<RawValue>>, PluginError>,
    ok_duration: Option<&metrics::Histogram>,
) {
    let elapsed = start.elapsed();
    let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    match (result, ok_duration) {
        (Ok(_), Some(h)) => h.record(elapsed.as_secs_f64()),
        _ => duration_histogram(plugin, tap, outcome).record(elapsed.as_secs_f64()),
    }
    match result {
        Ok(_) => tracing::info!(
            plugin,
            tap,
            duration_us,
            payload_bytes,
            outcome,
            "Tap invocation complete"
        ),
        Err(e) => {
            metrics::counter!(
                "trovato_plugin_failures_total",
                "plugin" => plugin.to_owned(),
                "tap" => tap.to_owned(),
                "kind" => outcome
            )
            .increment(1);
            tracing::warn!(
                plugin,
                tap,
                duration_us,
                payload_bytes,
                outcome,
                error = %e,
                "Tap invocation complete"
            );
        }
    }
}
