//! Tap invocation through a fresh instance, next to the same JSON
//! transformation done natively in Rust in the same run (the limit): the
//! plugin crate's own function, linked into this bench.
//!
//! Run with `scripts/build-plugins && cargo bench -p trovato-kernel --bench
//! plugin_tap`. Prints a markdown table; it asserts nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use trovato::Config;
use trovato::plugin::{Bounds, PluginError, Plugins};

const PLUGIN: &str = "word_count";
const TAP: &str = "tap_item_update_index";

/// An item of about 4 KB, as the kernel would pass it.
fn payload() -> String {
    let sentence = "The quick brown fox jumps over the lazy dog near the river bank. ";
    let body = sentence.repeat(56);
    let item = json!({
        "id": "01936b2e-7f7a-7c3e-9a51-2b1f3c4d5e6f",
        "type": "article",
        "title": "Benchmarking WebAssembly taps against native Rust",
        "status": 1,
        "author": "01936b2e-0000-7000-8000-000000000001",
        "fields": {
            "field_body": {"value": body},
            "field_summary": {"value": "A short summary of the article for listings."},
            "field_tags": {"value": ["wasm", "rust", "cms"]},
            "field_image": {"file_id": "01936b2e-1111-7000-8000-000000000002", "alt": "A fox"}
        }
    });
    serde_json::to_string(&item).expect("serializable")
}

/// The plugin's tap natively: the same `word_count::update_index`, with
/// the (de)serialization the SDK does around it in WebAssembly.
fn native(input: &str) -> Result<Vec<u8>, serde_json::Error> {
    let item: Option<Map<String, Value>> = serde_json::from_str(input)?;
    let out = word_count::update_index(item);
    serde_json::to_vec(&out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Latencies of `total` calls of `op` with `concurrency` calls in flight,
/// and the number of failed calls.
async fn measure<F, Fut>(concurrency: usize, total: usize, op: F) -> (Vec<Duration>, usize)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let per_task = total / concurrency;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let mut errors = 0;
            for _ in 0..per_task {
                let start = Instant::now();
                let ok = op().await;
                lat.push(start.elapsed());
                if !ok {
                    errors += 1;
                }
                // As a request handler would between invocations: let the
                // other in-flight tasks run.
                tokio::task::yield_now().await;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((lat, e)) => {
                all.extend(lat);
                errors += e;
            }
            Err(_) => errors += per_task,
        }
    }
    all.sort();
    (all, errors)
}

/// Tokio worker threads: `TROVATO_BENCH_WORKERS`, else one per core.
fn workers() -> usize {
    std::env::var("TROVATO_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    if !root.join(PLUGIN).join(format!("{PLUGIN}.wasm")).is_file() {
        eprintln!("plugins/{PLUGIN}/{PLUGIN}.wasm is missing: run scripts/build-plugins first");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(root));
}

/// The no-op tap of the `fresh_memory` fixture, one fresh instance per call.
fn noop_tap(
    plugins: Plugins,
    input: Arc<String>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Clone + Send + Sync + 'static
{
    move || {
        let (plugins, input) = (plugins.clone(), input.clone());
        Box::pin(async move {
            plugins
                .invoke_json("fresh_memory", "tap_run", &input)
                .await
                .is_ok()
        })
    }
}

/// Calls one operation in a loop at concurrency 1, for a profiler:
/// `TROVATO_BENCH_PROFILE=wasm|native|noop`, `TROVATO_BENCH_CALLS` calls
/// (default 200 000). Prints the p50 and nothing else.
async fn profile_one<W, WF, N, NF>(only: &str, wasm: W, nat: N, bounds: &Bounds, input: Arc<String>)
where
    W: Fn() -> WF + Send + Sync + 'static,
    WF: Future<Output = bool> + Send,
    N: Fn() -> NF + Send + Sync + 'static,
    NF: Future<Output = bool> + Send,
{
    let calls = std::env::var("TROVATO_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (lat, errors) = match only {
        "wasm" => measure(1, calls, wasm).await,
        "native" => measure(1, calls, nat).await,
        "noop" => {
            let plugins = Plugins::load_blocking(&fixtures(), bounds.clone());
            measure(1, calls, noop_tap(plugins, input)).await
        }
        other => {
            eprintln!("TROVATO_BENCH_PROFILE is wasm, native or noop, not {other:?}");
            std::process::exit(2);
        }
    };
    println!(
        "{only}: p50 {} over {calls} calls, {errors} errors",
        us(percentile(&lat, 0.5))
    );
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins")
}

async fn run(root: PathBuf) {
    // Metrics are recorded as in the server; no log subscriber is installed,
    // so the per-invocation log line costs only its level check.
    let _metrics = trovato::observe::metrics::install();
    let config = Config::default();
    let bounds = Bounds {
        cache_dir: None,
        ..Bounds::new(&config.plugin, &config.server.data_dir)
    };
    let plugins = Plugins::load_blocking(&root, bounds.clone());
    let input = Arc::new(payload());
    let expected = native(&input).expect("native");
    let out = plugins
        .invoke_json(PLUGIN, TAP, &input)
        .await
        .expect("plugin works");
    let got: Value = serde_json::from_str(out.expect("output").get()).expect("json");
    assert_eq!(
        got,
        serde_json::from_slice::<Value>(&expected).expect("json")
    );

    let wasm = {
        let (plugins, input) = (plugins.clone(), input.clone());
        move || {
            let (plugins, input) = (plugins.clone(), input.clone());
            async move { plugins.invoke_json(PLUGIN, TAP, &input).await.is_ok() }
        }
    };
    let nat = {
        let input = input.clone();
        move || {
            let input = input.clone();
            async move { native(&input).is_ok() }
        }
    };

    if let Ok(only) = std::env::var("TROVATO_BENCH_PROFILE") {
        profile_one(&only, wasm, nat, &bounds, input.clone()).await;
        return;
    }

    // Warm-up: page in the code and the pool's slots.
    measure(1, 2_000, wasm.clone()).await;
    measure(100, 10_000, wasm.clone()).await;
    measure(1, 2_000, nat.clone()).await;
    measure(100, 10_000, nat.clone()).await;

    // The fixed cost of an invocation: a fresh instance of a tiny module
    // whose tap does nothing but return one byte of JSON.
    let noop_plugins = Plugins::load_blocking(&fixtures(), bounds.clone());
    let noop = noop_tap(noop_plugins.clone(), input.clone());
    measure(1, 2_000, noop.clone()).await;
    let (z1, _) = measure(1, 20_000, noop.clone()).await;

    // Deadline keeping: how long past its deadline a looping tap runs,
    // against a tokio timer of the same length in the same run (the
    // runtime's own granularity). The integration tests check only that a
    // loop is stopped and that it never holds a worker.
    let deadline = bounds.request_deadline;
    let looping = {
        let plugins = noop_plugins.clone();
        move || {
            let plugins = plugins.clone();
            async move {
                matches!(
                    plugins.invoke_json("infinite_loop", "tap_run", "{}").await,
                    Err(PluginError::Timeout { .. })
                )
            }
        }
    };
    let timer = move || async move {
        tokio::time::sleep(deadline).await;
        true
    };
    let overshoot = |lat: Vec<Duration>| -> Vec<Duration> {
        lat.into_iter()
            .map(|d| d.saturating_sub(deadline))
            .collect()
    };
    let many = 2 * workers();
    let (l1, lerr) = measure(1, 30, looping.clone()).await;
    let (t1, _) = measure(1, 30, timer).await;
    let (lm, lmerr) = measure(many, many * 5, looping.clone()).await;
    let (tm, _) = measure(many, many * 5, timer).await;
    let (l1, t1, lm, tm) = (overshoot(l1), overshoot(t1), overshoot(lm), overshoot(tm));

    let (w1, _) = measure(1, 20_000, wasm.clone()).await;
    let (n1, _) = measure(1, 20_000, nat.clone()).await;
    let (w100, _) = measure(100, 20_000, wasm.clone()).await;
    let (n100, _) = measure(100, 20_000, nat.clone()).await;

    let start = Instant::now();
    let (w2000, werr) = measure(2_000, 2_000, wasm.clone()).await;
    let w2000_wall = start.elapsed();
    let start = Instant::now();
    let (n2000, nerr) = measure(2_000, 2_000, nat.clone()).await;
    let n2000_wall = start.elapsed();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = workers();
    println!(
        "\nTap `{TAP}` of plugin `{PLUGIN}`, {} B JSON in, {} B out, fresh instance per call; \
         limit = same transformation in native Rust; {cores} cores, {workers} tokio workers, \
         pool of {} instances. \
         Latency = one invocation, start to end, while N tasks invoke in turn.\n",
        input.len(),
        expected.len(),
        bounds.max_instances
    );
    println!("| measure | ours | limit | ratio |");
    println!("|---|---|---|---|");
    let row = |name: &str, ours: Duration, limit: Duration| {
        println!(
            "| {name} | {} | {} | {:.1}x |",
            us(ours),
            us(limit),
            ours.as_secs_f64() / limit.as_secs_f64().max(1e-9)
        );
    };
    row(
        "p50, concurrency 1",
        percentile(&w1, 0.5),
        percentile(&n1, 0.5),
    );
    row(
        "p99, concurrency 1",
        percentile(&w1, 0.99),
        percentile(&n1, 0.99),
    );
    row(
        "p50, concurrency 100",
        percentile(&w100, 0.5),
        percentile(&n100, 0.5),
    );
    row(
        "p99, concurrency 100",
        percentile(&w100, 0.99),
        percentile(&n100, 0.99),
    );
    row(
        "p99, 2000 concurrent",
        percentile(&w2000, 0.99),
        percentile(&n2000, 0.99),
    );
    println!(
        "| wall time, 2000 concurrent | {:.1} ms | {:.1} ms | {:.1}x |",
        w2000_wall.as_secs_f64() * 1e3,
        n2000_wall.as_secs_f64() * 1e3,
        w2000_wall.as_secs_f64() / n2000_wall.as_secs_f64().max(1e-9)
    );
    println!("| errors, 2000 concurrent | {werr} | {nerr} | - |");
    println!(
        "| p50, concurrency 1, no-op tap (fixed cost per invocation) | {} | - | - |",
        us(percentile(&z1, 0.5))
    );
    let ms = deadline.as_millis();
    row(
        &format!(
            "deadline overshoot p99, concurrency 1 (looping tap, {ms} ms deadline; limit: tokio sleep of {ms} ms)"
        ),
        percentile(&l1, 0.99),
        percentile(&t1, 0.99),
    );
    row(
        &format!(
            "deadline overshoot p99, {many} looping at once on {} workers (limit: as many tokio sleeps)",
            workers
        ),
        percentile(&lm, 0.99),
        percentile(&tm, 0.99),
    );
    println!(
        "| looping taps not stopped by their deadline | {} | 0 | - |",
        lerr + lmerr
    );
}
