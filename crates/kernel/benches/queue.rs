//! Queue throughput: push + pop + ack of no-op jobs, 8 at a time, for each
//! backend, against the raw floor of that backend measured the same way in
//! the same run. Redis: LPUSH + RPOP through the same client (redis-rs, one
//! multiplexed connection). PostgreSQL: the bare SKIP LOCKED claim + delete
//! with the same client (sqlx), beside the pgbench floor `bench/40-queue.sh`
//! measures. Prints rows of `| measure | ours | limit | ratio |` and, for
//! the script, `floor:` lines.
//!
//! Needs BENCH_DATABASE_URL (a migrated kernel database) and
//! BENCH_REDIS_URL; BENCH_QUEUE_SECONDS sets each run's length (default 5);
//! BENCH_PGBENCH_TPS, when set, is the pgbench floor to compare with.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trovato::queue::{NewJob, Queue, QueueBackend, QueueSettings, Queues};

const CONCURRENCY: usize = 8;

/// Runs `CONCURRENCY` copies of `one` for `secs`, after a warm-up; jobs/s.
async fn throughput<F, Fut>(secs: f64, one: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let done = Arc::new(AtomicU64::new(0));
    let warm = Duration::from_secs_f64(secs.min(5.0) / 5.0);
    let stop_at = Instant::now() + warm + Duration::from_secs_f64(secs);
    let counting_from = Instant::now() + warm;
    let mut tasks = Vec::new();
    for task in 0..CONCURRENCY {
        let one = one.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let now = Instant::now();
                if now >= stop_at {
                    return;
                }
                one(task).await;
                if now >= counting_from {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("bench task");
    }
    done.load(Ordering::Relaxed) as f64 / secs
}

fn row(name: &str, ours: f64, limit: f64) {
    println!("| {name} | {ours:.0} | {limit:.0} | {:.2} |", ours / limit);
}

/// Each of the 8 tasks pushes a job, then acks the job it holds and takes
/// the next in one step, as a worker does.
async fn our_throughput(queues: Queues, secs: f64) -> f64 {
    let payload = serde_json::json!({"noop": true});
    let held: Arc<Vec<tokio::sync::Mutex<Option<trovato::queue::Job>>>> = Arc::new(
        (0..CONCURRENCY)
            .map(|_| tokio::sync::Mutex::new(None))
            .collect(),
    );
    throughput(secs, move |slot| {
        let queues = queues.clone();
        let job = NewJob::new(&payload).expect("job");
        let held = held.clone();
        async move {
            let mut holding = held[slot].lock().await;
            queues.push("bench.noop", job).await.expect("push");
            let lease = Duration::from_secs(60);
            // Eight workers share the queue: a take may find it momentarily
            // empty when another took the job just pushed.
            let next = match holding.take() {
                Some(done) => {
                    let (acked, next) = queues
                        .ack_then_pop(&done, "bench.noop", lease)
                        .await
                        .expect("ack and pop");
                    assert!(acked);
                    next
                }
                None => queues.pop("bench.noop", lease).await.expect("pop"),
            };
            *holding = next;
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let (Ok(db_url), Ok(redis_url)) = (
        std::env::var("BENCH_DATABASE_URL"),
        std::env::var("BENCH_REDIS_URL"),
    ) else {
        eprintln!("set BENCH_DATABASE_URL and BENCH_REDIS_URL (bench/run does)");
        std::process::exit(2);
    };
    let secs: f64 = std::env::var("BENCH_QUEUE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let _ = trovato::observe::metrics::install();
    let db = trovato::db::connect(&db_url, 16, Duration::from_secs(5))
        .await
        .expect("db");
    trovato::db::migrate(&db).await.expect("migrate");
    let prefix = format!("trovato-bench-queue:{}:", std::process::id());
    let kv = trovato::kv::Kv::connect(&redis_url, &prefix, Duration::from_secs(5))
        .await
        .expect("redis");

    // Redis: ours, then LPUSH + RPOP on the same kind of connection.
    let settings = QueueSettings {
        backend: QueueBackend::Redis,
        ..QueueSettings::default()
    };
    let ours = our_throughput(Queues::new(&settings, &db, &kv), secs).await;
    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis");
    let key = format!("{prefix}floor");
    let floor = throughput(secs, move |_| {
        let mut c = raw.clone();
        let key = key.clone();
        async move {
            let _: i64 = redis::cmd("LPUSH")
                .arg(&key)
                .arg(r#"{"noop":true}"#)
                .query_async(&mut c)
                .await
                .expect("lpush");
            let _: Option<String> = redis::cmd("RPOP")
                .arg(&key)
                .query_async(&mut c)
                .await
                .expect("rpop");
        }
    })
    .await;
    row(
        "queue jobs/s, Redis backend (push + pop + ack, 8 at a time) vs LPUSH + RPOP, same client (goal ≥ 0.3)",
        ours,
        floor,
    );
    let _ = kv.delete_prefixed("").await;

    // PostgreSQL: ours, then the bare claim + delete through sqlx.
    let settings = QueueSettings::default();
    let queues = Queues::new(&settings, &db, &kv);
    let _ = queues.purge("bench.noop").await;
    let ours_pg = our_throughput(queues.clone(), secs).await;
    let _ = queues.purge("bench.noop").await;
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_queue_floor;
         CREATE TABLE bench_queue_floor (id bigserial PRIMARY KEY, payload jsonb NOT NULL)",
    )
    .execute(&db)
    .await
    .expect("floor table");
    let pool = db.clone();
    let floor_pg = throughput(secs, move |_| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO bench_queue_floor (payload) VALUES ('{\"noop\":true}')")
                .execute(&pool)
                .await
                .expect("insert");
            sqlx::query(
                "DELETE FROM bench_queue_floor WHERE id = (
                     SELECT id FROM bench_queue_floor ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                 RETURNING payload",
            )
            .fetch_optional(&pool)
            .await
            .expect("claim");
        }
    })
    .await;
    row(
        "queue jobs/s, PostgreSQL backend (push + pop + ack, 8 at a time) vs INSERT + SKIP LOCKED claim-and-delete, same client",
        ours_pg,
        floor_pg,
    );
    if let Some(tps) = std::env::var("BENCH_PGBENCH_TPS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        row(
            "queue jobs/s, PostgreSQL backend vs the same through pgbench -c 8 (goal ≥ 0.5, and ≥ 1000 jobs/s)",
            ours_pg,
            tps,
        );
    }
    let _ = sqlx::query("DROP TABLE IF EXISTS bench_queue_floor")
        .execute(&db)
        .await;

    // The cron lock: Redis commands per pass of no steps (take, heartbeat,
    // release), counted by the kernel's own Redis handle, against the two a
    // lock needs at the least (take and release).
    let mut config = trovato::Config::default();
    config.db.url = Some(db_url.clone());
    config.redis.url = Some(redis_url.clone());
    config.redis.prefix = format!("{prefix}cron:");
    config.plugin.dir = std::env::temp_dir().join("trovato-bench-no-plugins");
    let state = trovato::Kernel::connect(config).await.expect("kernel");
    let passes = 50u32;
    // One pass first, so the scripts are loaded into Redis.
    trovato::cron::run_steps(&state, trovato::cron::Trigger::Cli, Vec::new())
        .await
        .expect("pass");
    let before = redis_commands(&state);
    for _ in 0..passes {
        trovato::cron::run_steps(&state, trovato::cron::Trigger::Cli, Vec::new())
            .await
            .expect("pass");
    }
    let per_pass = (redis_commands(&state) - before) / f64::from(passes);
    println!(
        "| cron lock: Redis round trips per pass (no steps; plus one per heartbeat, every lock_ttl_ms / 3) | {per_pass:.1} | 2 | {:.2} |",
        per_pass / 2.0
    );
    batch_overhead(&state).await;
    let _ = kv.delete_prefixed("").await;
}

/// Works `queues` with 8 slots until they are empty.
async fn drain(state: &trovato::AppState, queues: Vec<trovato::queue::worker::QueueInfo>) {
    let limits = trovato::queue::worker::RunLimits {
        concurrency: CONCURRENCY,
        until: None,
        until_empty: true,
        grace: Duration::from_secs(30),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    trovato::queue::worker::run(state, queues, limits, &cancel).await;
}

/// A batch of 100 000 no-op targets in chunks of 100 (start, chunks,
/// progress) against the same 1 000 jobs pushed and worked directly, both
/// with 8 workers; and the batch's Redis round trips per chunk.
async fn batch_overhead(state: &trovato::AppState) {
    use trovato::queue::worker::{QueueInfo, Verdict, Worker};
    const TARGETS: usize = 100_000;
    const CHUNKS: usize = TARGETS / 100;
    let mut best_batch = f64::MAX;
    let mut best_direct = f64::MAX;
    let mut per_chunk = 0.0;
    for _ in 0..3 {
        let before = redis_commands(state);
        let t = Instant::now();
        let s = trovato::batch::start(
            state,
            None,
            trovato::batch::NewBatch {
                operation: "noop".into(),
                params: serde_json::json!({ "count": TARGETS }),
            },
        )
        .await
        .expect("batch");
        drain(state, vec![trovato::batch::queue_info()]).await;
        let elapsed = t.elapsed().as_secs_f64();
        let done = trovato::batch::load(&state.db, s.id).await.expect("load");
        assert_eq!(done.processed, TARGETS as u64, "the batch finished");
        best_batch = best_batch.min(elapsed);
        per_chunk = (redis_commands(state) - before) / CHUNKS as f64;

        let direct = QueueInfo {
            name: "bench.direct".into(),
            worker: Worker::Kernel(Arc::new(|_, _| Box::pin(async { Verdict::Ack }))),
            cron_budget: Duration::ZERO,
            concurrency: CONCURRENCY,
        };
        let t = Instant::now();
        for n in 0..CHUNKS {
            state
                .queues
                .push(
                    "bench.direct",
                    NewJob::new(&serde_json::json!({"n": n})).expect("job"),
                )
                .await
                .expect("push");
        }
        drain(state, vec![direct]).await;
        best_direct = best_direct.min(t.elapsed().as_secs_f64());
    }
    println!(
        "| batch of {TARGETS} no-op targets in chunks of 100, PostgreSQL queue, 8 workers (s, lower is better; goal ≤ 1.2) vs the same {CHUNKS} jobs pushed and worked directly | {best_batch:.2} | {best_direct:.2} | {:.2} |",
        best_batch / best_direct
    );
    println!(
        "| batch progress: Redis round trips per chunk | {per_chunk:.2} | 1 | {per_chunk:.2} |"
    );
}

/// `trovato_redis_commands_total`, read from the metrics exposition.
fn redis_commands(state: &trovato::AppState) -> f64 {
    state
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("trovato_redis_commands_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
