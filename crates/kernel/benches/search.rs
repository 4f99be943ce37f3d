//! Search at scale: 1 000 000 live items of `bench_doc` (a title of 3
//! words, a summary of 12 and a body of 40, each word drawn from a Zipf
//! distribution over the system word list), the summary indexed at B and
//! the body at C. In one run:
//!
//! - p50 / p99 of 1-, 2- and 3-word queries (each query new to the cache)
//!   through `GET /api/search` of the running kernel, against the same SQL
//!   ([`trovato::search::pg::SEARCH_SQL`]) run directly with the same
//!   client library;
//! - ranked top-20 with the GIN index (`ts_rank_cd`) against a RUM index
//!   (`<=>`), when the `rum` extension is installed;
//! - the tantivy engine against the PostgreSQL engine on the same queries,
//!   both called through the `SearchBackend` trait in this process, and
//!   tantivy's indexing throughput;
//! - an item save through the write path with 5 indexed text fields
//!   against the same save with none indexed;
//! - PostgreSQL reindex throughput (items/s).
//!
//! Needs BENCH_DATABASE_URL (a migrated kernel database), BENCH_REDIS_URL
//! and BENCH_KERNEL (the kernel serving that database). Items already in
//! the database are kept (only the missing ones are made);
//! BENCH_SEARCH_ITEMS sets how many (default 1 000 000),
//! BENCH_SEARCH_QUERIES the queries per length (default 200),
//! BENCH_SEARCH_ONLY some of the parts (`queries,rum,engines,save`). Prints rows of `| measure | ours | limit | ratio |`.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use trovato::search::{RawQuery, SearchRequest};
use uuid::Uuid;

/// The word list the text is drawn from (Debian `wamerican`).
const WORDS: &str = "/usr/share/dict/words";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), so every run asks the
/// same queries.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A rank in `1..=n` with probability proportional to 1/rank (Zipf,
    /// s = 1): the exponential of a uniform draw over `[0, ln n)`.
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * (n as f64).ln()).exp() as usize).clamp(1, n)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(name: &str, ours: f64, limit: f64, unit: &str) {
    let ratio = if limit > 0.0 { ours / limit } else { f64::NAN };
    println!("| {name} | {ours:.2} {unit} | {limit:.2} {unit} | {ratio:.2} |");
}

/// The p50 and p99 rows of `ours` against `limit`; `measure` names the
/// percentile where it says `{p}`.
fn percentile_rows(measure: &str, ours: &[Duration], limit: &[Duration]) {
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        row(
            &measure.replace("{p}", name),
            ms(percentile(ours, p)),
            ms(percentile(limit, p)),
            "ms",
        );
    }
}

/// Latencies of `one` over `queries`, sorted.
async fn latencies<F, Fut>(queries: &[String], mut one: F) -> Vec<Duration>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        one(q.clone()).await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn words(db: &PgPool) -> Vec<String> {
    let text = std::fs::read_to_string(WORDS)
        .unwrap_or_else(|e| panic!("{WORDS}: {e} (apt-get install wamerican)"));
    let mut words: Vec<String> = text
        .lines()
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
        .map(str::to_owned)
        .collect();
    // A fixed shuffle, so rank 1 is not "aaa".
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in (1..words.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        words.swap(i, j);
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_words (rank INT PRIMARY KEY, w TEXT NOT NULL)")
        .execute(db)
        .await
        .expect("bench_words");
    sqlx::query("TRUNCATE bench_words")
        .execute(db)
        .await
        .expect("truncate");
    let ranks: Vec<i32> = (1..=words.len() as i32).collect();
    sqlx::query("INSERT INTO bench_words SELECT * FROM unnest($1::int[], $2::text[])")
        .bind(&ranks)
        .bind(&words)
        .execute(db)
        .await
        .expect("words");
    words
}

fn text_field(name: &str) -> serde_json::Value {
    json!({"name": name, "label": name, "kind": "text", "max_length": 4000})
}

async fn ensure_type(
    state: &trovato::AppState,
    name: &str,
    fields: &[&str],
    indexed: &[(&str, &str)],
) {
    if trovato::item::store::find_type(&state.db, name)
        .await
        .expect("type")
        .is_none()
    {
        let t: trovato::item::ItemType = serde_json::from_value(json!({
            "type": name, "label": name, "description": "", "has_title": true,
            "title_label": "Title", "plugin": "kernel",
            "fields": fields.iter().map(|f| text_field(f)).collect::<Vec<_>>(),
        }))
        .expect("type definition");
        trovato::item::create_type(&state.db, &t)
            .await
            .expect("create type");
    }
    let change: trovato::search::config::ConfigUpdate = serde_json::from_value(json!({
        "fields": indexed.iter().map(|(f, w)| json!({"field": f, "weight": w})).collect::<Vec<_>>(),
    }))
    .expect("config");
    trovato::search::config::update(state, None, name, change)
        .await
        .expect("configure");
}

/// Makes `n` items of `bench_doc`, 10 000 per statement, two statements
/// at a time (the trigger indexes each row as it is written).
async fn generate(db: &PgPool, n: usize, words: &[String]) {
    use futures::StreamExt;
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM item WHERE type = 'bench_doc'")
        .fetch_one(db)
        .await
        .expect("count");
    let have = have as usize;
    if have >= n {
        return;
    }
    const STEP: usize = 10_000;
    let started = Instant::now();
    let chunks: Vec<(usize, usize)> = (have..n)
        .step_by(STEP)
        .map(|from| (from, (n - from).min(STEP)))
        .collect();
    let done = std::sync::atomic::AtomicUsize::new(have);
    futures::stream::iter(chunks)
        .map(|(from, len)| {
            let done = &done;
            async move {
                let mut rng = Rng(0xA5A5_0000 + from as u64);
                let mut text = |k: usize| {
                    (0..k)
                        .map(|_| words[rng.zipf(words.len()) - 1].as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let mut titles = Vec::with_capacity(len);
                let mut fields = Vec::with_capacity(len);
                for _ in 0..len {
                    titles.push(text(3));
                    fields.push(json!({
                        "field_summary": {"value": text(12)},
                        "field_body": {"value": text(40)},
                    }));
                }
                sqlx::query(
                    "INSERT INTO item (id, type, title, fields)
                     SELECT gen_random_uuid(), 'bench_doc', t, f
                     FROM unnest($1::text[], $2::jsonb[]) AS x(t, f)",
                )
                .bind(&titles)
                .bind(&fields)
                .execute(db)
                .await
                .expect("generate items");
                let total = done.fetch_add(len, std::sync::atomic::Ordering::Relaxed) + len;
                if total % 100_000 < STEP {
                    eprintln!(
                        "search bench: {total} items ({:.0} s)",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        })
        .buffer_unordered(2)
        .collect::<Vec<()>>()
        .await;
    sqlx::query("ANALYZE item")
        .execute(db)
        .await
        .expect("analyze");
}

fn queries(words: &[String], len: usize, count: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| words[rng.zipf(words.len()) - 1].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn request(q: &str, per_page: u32) -> SearchRequest {
    let raw = RawQuery {
        q: Some(q.to_owned()),
        per_page: Some(per_page),
        ..RawQuery::default()
    };
    SearchRequest::parse(&raw, &trovato::search::SearchSettings::default()).expect("request")
}

#[tokio::main]
async fn main() {
    let db_url = std::env::var("BENCH_DATABASE_URL").expect("BENCH_DATABASE_URL");
    let redis_url = std::env::var("BENCH_REDIS_URL").expect("BENCH_REDIS_URL");
    let kernel = std::env::var("BENCH_KERNEL").expect("BENCH_KERNEL");
    let n = env_or("BENCH_SEARCH_ITEMS", 1_000_000);
    let per_length = env_or("BENCH_SEARCH_QUERIES", 200);

    let mut config = trovato::Config::default();
    config.db.url = Some(db_url.clone());
    config.redis.url = Some(redis_url.clone());
    config.redis.prefix = "trovato-bench-search:".into();
    config.plugin.dir = std::env::temp_dir().join("trovato-bench-no-plugins");
    let state = trovato::Kernel::connect(config.clone())
        .await
        .expect("kernel");
    let db = state.db.clone();
    let words = words(&db).await;
    ensure_type(
        &state,
        "bench_doc",
        &["field_summary", "field_body"],
        &[("field_summary", "B"), ("field_body", "C")],
    )
    .await;
    generate(&db, n, &words).await;

    // BENCH_SEARCH_ONLY=queries,rum,engines,save runs those parts alone.
    let only = std::env::var("BENCH_SEARCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);

    if want("queries") {
        // 1. The endpoint against its SQL, on queries new to the cache.
        let http = reqwest::Client::new();
        let api_get = |q| {
            let http = http.clone();
            let url = format!("{kernel}/api/search");
            async move {
                let r = http
                    .get(url)
                    .query(&[("q", q)])
                    .send()
                    .await
                    .expect("GET /api/search");
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.expect("body");
            }
        };
        for len in 1..=3 {
            let qs = queries(&words, len, per_length, 0xC0FFEE + len as u64);
            let raw_sql = |q: String| {
                let db = db.clone();
                async move {
                    sqlx::query(trovato::search::pg::SEARCH_SQL)
                        .bind(q)
                        .bind(None::<String>)
                        .bind(10i64)
                        .bind(0i64)
                        .bind(i64::from(
                            trovato::search::SearchSettings::default().max_ranked,
                        ))
                        .fetch_one(&db)
                        .await
                        .expect("search SQL");
                }
            };
            // Warm the buffers for these queries, then measure each side.
            latencies(&qs, raw_sql).await;
            let sql = latencies(&qs, raw_sql).await;
            let api = latencies(&qs, &api_get).await;
            let cached = latencies(&qs, &api_get).await;
            percentile_rows(
                &format!(
                    "search: {len}-word query, {{p}}, /api/search (uncached) vs its SQL direct"
                ),
                &api,
                &sql,
            );
            row(
                &format!("search: {len}-word query, p50, /api/search cached vs its SQL direct"),
                ms(percentile(&cached, 0.5)),
                ms(percentile(&sql, 0.5)),
                "ms",
            );
        }
    }

    if want("rum") {
        // 2. Ranked top-20: GIN (ts_rank_cd) against RUM (<=>).
        let top20 = queries(&words, 2, per_length, 0xBEEF);
        let gin = latencies(&top20, |q| {
            let db = db.clone();
            async move {
                sqlx::query(
                    "SELECT id FROM item, search_query($1, NULL) AS q
                 WHERE stage_id = 'live' AND status = 1 AND search_vector @@ q
                 ORDER BY ts_rank_cd(search_vector, q) DESC LIMIT 20",
                )
                .bind(q)
                .fetch_all(&db)
                .await
                .expect("GIN top 20");
            }
        })
        .await;
        let rum = sqlx::query("CREATE EXTENSION IF NOT EXISTS rum")
            .execute(&db)
            .await;
        match rum {
            Err(e) => println!("| search: ranked top-20, RUM | not measured: {e} | | |"),
            Ok(_) => {
                let t = Instant::now();
                sqlx::query(
                    "CREATE INDEX IF NOT EXISTS bench_item_search_rum ON item
                 USING rum (search_vector rum_tsvector_ops)
                 WHERE stage_id = 'live' AND status = 1",
                )
                .execute(&db)
                .await
                .expect("RUM index");
                eprintln!(
                    "search bench: RUM index built in {:.0} s",
                    t.elapsed().as_secs_f64()
                );
                let rum_sql = "SELECT id FROM item, search_query($1, NULL) AS q
                 WHERE stage_id = 'live' AND status = 1 AND search_vector @@ q
                 ORDER BY search_vector <=> q LIMIT 20";
                let rum_query = |q| {
                    let db = db.clone();
                    async move {
                        sqlx::query(rum_sql)
                            .bind(q)
                            .fetch_all(&db)
                            .await
                            .expect("RUM");
                    }
                };
                latencies(&top20, &rum_query).await;
                let rum = latencies(&top20, &rum_query).await;
                percentile_rows(
                    "search: ranked top-20 of 2-word queries, {p}, RUM (<=>) vs GIN (ts_rank_cd)",
                    &rum,
                    &gin,
                );
                // The kernel's queries keep to GIN.
                sqlx::query("DROP INDEX IF EXISTS bench_item_search_rum")
                    .execute(&db)
                    .await
                    .expect("drop RUM");
            }
        }
    }

    if want("engines") {
        // 3. PostgreSQL reindex throughput, 500 items per statement as the
        // batch chunks do.
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM item WHERE type = 'bench_doc' ORDER BY id")
                .fetch_all(&db)
                .await
                .expect("ids");
        let sample = &ids[..ids.len().min(100_000)];
        let t = Instant::now();
        for chunk in sample.chunks(500) {
            let mut tx = db.begin().await.expect("tx");
            trovato::search::pg::recompute(&mut tx, chunk)
                .await
                .expect("recompute");
            tx.commit().await.expect("commit");
        }
        let pg_rate = sample.len() as f64 / t.elapsed().as_secs_f64();

        // 4. Tantivy: index everything through the trait, then the same
        // queries as the PostgreSQL engine, both in this process.
        let mut tconfig = config.clone();
        tconfig.search.backend = trovato::search::SearchBackendKind::Tantivy;
        tconfig.server.data_dir =
            std::env::temp_dir().join(format!("trovato-bench-tantivy-{}", Uuid::now_v7().simple()));
        tconfig.redis.prefix = "trovato-bench-search-t:".into();
        let tstate = trovato::Kernel::connect(tconfig.clone())
            .await
            .expect("tantivy kernel");
        let t = Instant::now();
        for chunk in ids.chunks(5_000) {
            let mut tx = tstate.db.begin().await.expect("tx");
            tstate
                .search
                .backend()
                .reindex(&mut tx, chunk)
                .await
                .expect("tantivy reindex");
            tx.commit().await.expect("commit");
        }
        let tantivy_rate = ids.len() as f64 / t.elapsed().as_secs_f64();
        row(
            "search: reindex, items/s, tantivy vs PostgreSQL (500 per statement)",
            tantivy_rate,
            pg_rate,
            "items/s",
        );
        for len in 1..=3 {
            let qs = queries(&words, len, per_length, 0xFACE + len as u64);
            let reqs: Vec<SearchRequest> = qs.iter().map(|q| request(q, 10)).collect();
            let run = |st: trovato::AppState| {
                let reqs = reqs.clone();
                async move {
                    let mut out = Vec::with_capacity(reqs.len());
                    for r in &reqs {
                        let t = Instant::now();
                        st.search.backend().search(r).await.expect("search");
                        out.push((t.elapsed(), r.query.clone()));
                    }
                    out.sort();
                    out
                }
            };
            run(state.clone()).await;
            run(tstate.clone()).await;
            let pg = run(state.clone()).await;
            let tv = run(tstate.clone()).await;
            // The slowest queries, for a look at their plans.
            for (took, q) in pg.iter().rev().take(3) {
                eprintln!("search bench: PostgreSQL engine, {len}-word, {took:?}: {q}");
            }
            let pg: Vec<Duration> = pg.into_iter().map(|(d, _)| d).collect();
            let tv: Vec<Duration> = tv.into_iter().map(|(d, _)| d).collect();
            percentile_rows(
                &format!("search: {len}-word query, {{p}}, tantivy engine vs PostgreSQL engine"),
                &tv,
                &pg,
            );
        }
        let _ = std::fs::remove_dir_all(&tconfig.server.data_dir);
        let _ = tstate.kv.delete_prefixed("").await;
    }

    if want("save") {
        // 5. A save with 5 indexed fields against one with none.
        let five = ["field_a", "field_b", "field_c", "field_d", "field_e"];
        ensure_type(&state, "bench_plain", &five, &[]).await;
        ensure_type(
            &state,
            "bench_indexed",
            &five,
            &[
                ("field_a", "B"),
                ("field_b", "B"),
                ("field_c", "C"),
                ("field_d", "C"),
                ("field_e", "D"),
            ],
        )
        .await;
        let mut rng = Rng(0x5EED);
        let mut text = |k: usize| {
            (0..k)
                .map(|_| words[rng.zipf(words.len()) - 1].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        // Enough saves that the GIN pending list is merged into the index
        // several times (about every 3 000 indexed saves at the default 4 MB
        // `gin_pending_list_limit`), so the mean carries that cost as a site
        // pays it, not as luck places a merge inside or outside the window.
        let saves = 8_000;
        let mut plain = Duration::ZERO;
        let mut indexed = Duration::ZERO;
        for i in 0..saves * 2 {
            let item_type = if i % 2 == 0 {
                "bench_plain"
            } else {
                "bench_indexed"
            };
            let mut fields = serde_json::Map::new();
            for f in five {
                fields.insert(f.to_owned(), json!({"value": text(40)}));
            }
            let new: trovato::item::NewItem = serde_json::from_value(json!({
                "type": item_type, "title": text(3), "fields": fields,
            }))
            .expect("new item");
            let t = Instant::now();
            trovato::item::create(&state, &trovato::stage::StageId::live(), None, new)
                .await
                .expect("save");
            let took = t.elapsed();
            if i % 2 == 0 {
                plain += took;
            } else {
                indexed += took;
            }
        }
        row(
            "search: item save (create, 5 text fields of 40 words), mean, 5 fields indexed vs none",
            ms(indexed) / saves as f64,
            ms(plain) / saves as f64,
            "ms",
        );
    }
    let _ = state.kv.delete_prefixed("").await;
}
