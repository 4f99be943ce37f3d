//! The Prometheus recorder and the catalogue of every metric the kernel
//! exports. A subsystem that adds a metric describes it in [`describe`], so
//! `/metrics` always carries HELP and TYPE lines (`promtool check metrics`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 100 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle. Later
/// calls (several in-process test servers) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                // Only fails for an empty bucket list, which the constant is not.
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is already installed (an embedding
                // program); export through a private one instead.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            let upkeep = handle.clone();
            // Histograms are drained into their buckets by upkeep; without
            // it their samples would grow without bound between scrapes.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok();
            handle
        })
        .clone()
}

/// HELP text and units for every metric; the hook later subsystems extend.
pub fn describe() {
    describe_histogram!(
        "trovato_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration by method, route template and status class."
    );
    describe_counter!(
        "trovato_http_panics_total",
        "Handler panics turned into 500 responses."
    );
    describe_histogram!(
        "trovato_db_query_duration_seconds",
        Unit::Seconds,
        "PostgreSQL query duration by query name and outcome."
    );
    describe_gauge!(
        "trovato_redis_commands_in_flight",
        "Redis commands in flight on the shared multiplexed connection."
    );
    describe_gauge!(
        "trovato_db_pool_connections",
        "PostgreSQL pool connections by state (idle, in_use)."
    );
    describe_gauge!(
        "trovato_db_pool_max_connections",
        "Configured maximum size of the PostgreSQL pool."
    );
    describe_counter!("trovato_cache_hits_total", "Cache hits by tier (l1, l2).");
    describe_counter!(
        "trovato_file_uploads_total",
        "Uploads stored (refused ones are counted by the HTTP metrics' status)."
    );
    describe_counter!(
        "trovato_files_purged_total",
        "Released files whose object and row were deleted."
    );
    describe_counter!(
        "trovato_cache_misses_total",
        "Cache misses by tier (l1, l2)."
    );
    describe_counter!(
        "trovato_cache_invalidations_total",
        "Cache tags invalidated, by origin (local write, remote instance)."
    );
    describe_histogram!(
        "trovato_cache_load_duration_seconds",
        Unit::Seconds,
        "Time spent loading a value from the source of truth on a cache miss."
    );
    describe_counter!(
        "trovato_cache_stale_fills_total",
        "Cache fills refused because a tag was invalidated while the value loaded."
    );
    describe_counter!(
        "trovato_cache_errors_total",
        "Cache backend (Redis) failures by operation; the cache degrades to L1 and the database."
    );
    describe_histogram!(
        "trovato_plugin_tap_duration_seconds",
        Unit::Seconds,
        "WASM tap invocation duration by plugin, tap and outcome."
    );
    describe_gauge!(
        "trovato_plugin_instances_active",
        "Live WASM plugin instances."
    );
    describe_counter!(
        "trovato_plugin_failures_total",
        "WASM tap failures by plugin, tap and error kind."
    );
    describe_counter!(
        "trovato_redis_commands_total",
        "Commands (and scripts) sent on the shared Redis connection."
    );
    describe_counter!(
        "trovato_cron_runs_total",
        "Cron passes by outcome (ok, failed, cancelled, busy: another server held the lock)."
    );
    describe_histogram!(
        "trovato_cron_step_duration_seconds",
        Unit::Seconds,
        "Cron step duration by step and outcome."
    );
    describe_counter!(
        "trovato_cron_lock_extensions_total",
        "Heartbeat extensions of the cron lock."
    );
    describe_counter!(
        "trovato_cron_lock_lost_total",
        "Cron passes cancelled because their lock was lost."
    );
    describe_counter!("trovato_queue_pushed_total", "Jobs pushed, by queue.");
    describe_counter!("trovato_queue_acked_total", "Jobs acked, by queue.");
    describe_counter!(
        "trovato_queue_retried_total",
        "Jobs that failed and were scheduled for a retry, by queue."
    );
    describe_counter!(
        "trovato_queue_dead_total",
        "Jobs moved to the dead letter list, by queue."
    );
    describe_counter!(
        "trovato_queue_lease_expired_total",
        "Jobs taken again after their worker's lease ran out, by queue."
    );
    describe_histogram!(
        "trovato_queue_job_duration_seconds",
        Unit::Seconds,
        "Job duration by queue and outcome (acked, retried, dead, lease_lost, error)."
    );
    describe_gauge!(
        "trovato_queue_items",
        "Items per queue by state (ready, delayed, in_flight, dead), read at each scrape."
    );
    describe_gauge!(
        "trovato_queue_oldest_ready_seconds",
        Unit::Seconds,
        "How long the longest-waiting available item of each queue has waited."
    );
}

/// Samples gauges that are read rather than pushed (pool state), then
/// renders the text exposition.
pub fn render(handle: &PrometheusHandle, db: &sqlx::PgPool, max_connections: u32) -> String {
    let size = f64::from(db.size());
    // num_idle is a usize bounded by the pool size (a u32).
    let idle = db.num_idle() as f64;
    metrics::gauge!("trovato_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("trovato_db_pool_connections", "state" => "in_use").set((size - idle).max(0.0));
    metrics::gauge!("trovato_db_pool_max_connections").set(f64::from(max_connections));
    handle.render()
}
