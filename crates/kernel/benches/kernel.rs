//! Kernel foundation round trips against the raw client round trip, in the
//! same run: the shared Redis handle (`Kv`) against a plain redis-rs
//! multiplexed connection, and a timed pool query against a plain sqlx
//! connection. Prints rows of `| measure | ours | limit | ratio |`.
//!
//! Needs BENCH_DATABASE_URL and BENCH_REDIS_URL (bench/run sets them).

use std::time::{Duration, Instant};

use sqlx::Connection;

const N: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

async fn sample<F, Fut>(n: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await; // warm-up
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    v.sort();
    v
}

fn row(name: &str, ours: &[Duration], limit: &[Duration]) {
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        let (o, l) = (percentile(ours, p), percentile(limit, p));
        println!("| {name} {label} (µs) | {o:.1} | {l:.1} | {:.2} |", o / l);
    }
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
    let _ = trovato::observe::metrics::install();

    let kv = trovato::kv::Kv::connect(&redis_url, "trovato-bench:", Duration::from_secs(5))
        .await
        .expect("redis");
    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis");
    let ours = sample(N, || async {
        let _: String = kv.query(&redis::cmd("PING")).await.expect("ping");
    })
    .await;
    let limit = sample(N, || {
        let mut c = raw.clone();
        async move {
            let _: String = redis::cmd("PING").query_async(&mut c).await.expect("ping");
        }
    })
    .await;
    row("Redis PING through Kv vs raw redis-rs", &ours, &limit);

    let pool = trovato::db::connect(&db_url, 4, Duration::from_secs(5))
        .await
        .expect("db");
    let mut conn = sqlx::PgConnection::connect(&db_url).await.expect("raw db");
    let ours = sample(N / 4, || async {
        trovato::db::timed("bench.select1", sqlx::query("SELECT 1").execute(&pool))
            .await
            .expect("select");
    })
    .await;
    // A plain connection cannot be lent to a closure's future; time it
    // with an explicit loop.
    let mut limit = Vec::with_capacity(N / 4);
    for i in 0..(N / 4 + N / 40) {
        let t = Instant::now();
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .expect("select");
        if i >= N / 40 {
            limit.push(t.elapsed());
        }
    }
    limit.sort();
    row(
        "SELECT 1 through the timed pool vs one raw connection",
        &ours,
        &limit,
    );
}
