//! The two-tier cache: tags, single flight, the stale-fill race, coherence
//! between processes, and reads through a Redis outage.
//!
//! Ordering comes from synchronisation points (the single flight's follower
//! count, the bus's applied-invalidation count, held loaders), never from
//! sleeping; how fast another instance drops its copy is measured by
//! `benches/cache.rs`, not asserted here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use trovato::cache::{Cache, CacheKey, CacheSettings, CacheTag, Loaded};
use trovato::embedded::redis::RedisListen;
use trovato::embedded::{Durability, RedisServer};

use crate::harness::content::PASSWORD;
use crate::harness::{Cluster, PATIENCE, TestApp, eventually, free_port, services::scratch_root};

fn key(k: &str) -> CacheKey {
    CacheKey::new(k).expect("key")
}

fn tag(t: &str) -> CacheTag {
    CacheTag::new(t).expect("tag")
}

fn loaded(value: &str, tags: &[&str]) -> Loaded {
    Loaded {
        bytes: Bytes::from(value.to_owned()),
        tags: tags.iter().map(|t| tag(t)).collect(),
    }
}

/// Reads `k`, loading `value` with `tags` on a miss.
async fn fill(cache: &Cache, k: &str, value: &str, tags: &[&str]) -> String {
    let v = value.to_owned();
    let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    let got = cache
        .get_or_load(&key(k), || async move {
            let t: Vec<&str> = tags.iter().map(String::as_str).collect();
            Ok::<_, std::convert::Infallible>(Some(loaded(&v, &t)))
        })
        .await
        .expect("infallible")
        .expect("value");
    String::from_utf8(got.bytes.to_vec()).expect("utf8")
}

/// A second cache on the same Redis namespace: another instance, in effect.
async fn other_instance(app: &TestApp) -> Cache {
    Cache::start(
        app.state.kv.clone(),
        CacheSettings::default(),
        Duration::from_secs(5),
        &app.state.tasks,
    )
    .await
    .expect("second cache")
}

#[tokio::test]
async fn tag_invalidation_removes_exactly_the_tagged_values_in_both_tiers() {
    let app = TestApp::spawn().await;
    let cache = &app.state.cache;
    fill(cache, "a", "A", &["x"]).await;
    fill(cache, "b", "B", &["y"]).await;
    fill(cache, "c", "C", &["x", "y"]).await;
    fill(cache, "d", "D", &[]).await;
    cache.invalidate(&[tag("x")]).await;
    for (k, present) in [("a", false), ("b", true), ("c", false), ("d", true)] {
        assert_eq!(cache.peek_l1(&key(k)).is_some(), present, "L1 {k}");
        assert_eq!(
            cache.peek_l2(&key(k)).await.expect("redis").is_some(),
            present,
            "L2 {k}"
        );
    }
    // A value filled after the invalidation is cached again.
    assert_eq!(fill(cache, "a", "A2", &["x"]).await, "A2");
    assert!(cache.peek_l2(&key("a")).await.expect("redis").is_some());
}

#[tokio::test]
async fn tag_bookkeeping_in_redis_is_bounded_and_expires() {
    let app = TestApp::spawn().await;
    let cache = &app.state.cache;
    for i in 0..50 {
        fill(cache, &format!("k{i}"), "v", &[&format!("t{i}"), "shared"]).await;
    }
    // Filling writes no per-tag structures at all: only entries and the counter.
    let kv = &app.state.kv;
    let pattern = stamp_key(kv, "*");
    let tags = scan_all(kv, &pattern).await;
    assert!(tags.is_empty(), "{tags:?}");
    cache.invalidate(&[tag("shared")]).await;
    let ttl: i64 = kv
        .query(redis::cmd("TTL").arg(stamp_key(kv, "shared")))
        .await
        .expect("TTL");
    assert!(ttl > 0, "tag stamps expire (ttl {ttl})");
    // The stamp index the mirrors reload from lists it, and expires too.
    let index = kv.slot_key("cache", ":tags");
    let listed: Option<f64> = kv
        .query(redis::cmd("ZSCORE").arg(&index).arg("shared"))
        .await
        .expect("ZSCORE");
    assert!(listed.is_some(), "the stamp index lists the tag");
    let ttl: i64 = kv.query(redis::cmd("TTL").arg(&index)).await.expect("TTL");
    assert!(ttl > 0, "the stamp index expires (ttl {ttl})");
    for i in 0..50 {
        assert!(
            cache
                .peek_l2(&key(&format!("k{i}")))
                .await
                .expect("redis")
                .is_none()
        );
    }
}

#[tokio::test]
async fn every_cache_key_lives_under_the_namespace_prefix() {
    let app = TestApp::spawn().await;
    let cache = &app.state.cache;
    let marker = uuid::Uuid::now_v7().simple().to_string();
    fill(
        cache,
        &format!("st:draft:item:{marker}"),
        "v",
        &[&format!("item:{marker}")],
    )
    .await;
    cache.invalidate(&[tag(&format!("item:{marker}"))]).await;
    let kv = &app.state.kv;
    let ours = scan_all(kv, &format!("*{marker}*")).await;
    assert!(!ours.is_empty());
    assert!(ours.iter().all(|k| k.starts_with(kv.prefix())), "{ours:?}");
    assert!(
        ours.contains(&stamp_key(kv, &format!("item:{marker}"))),
        "{ours:?}"
    );
}

/// Every key matching `pattern`, on every node of a cluster.
async fn scan_all(kv: &trovato::kv::Kv, pattern: &str) -> Vec<String> {
    let mut scan = kv.scan(pattern).await.expect("SCAN");
    let mut found = Vec::new();
    while let Some(keys) = scan.next_batch().await.expect("SCAN") {
        found.extend(keys);
    }
    found
}

/// The Redis key of a tag's stamp (one hash slot per namespace).
fn stamp_key(kv: &trovato::kv::Kv, tag: &str) -> String {
    kv.slot_key("cache", &format!(":t:{tag}"))
}

/// Waits until `cache` judges L2 entries by its own mirror of the stamps.
async fn mirrored(cache: &Cache) {
    let ready = eventually(PATIENCE, || async { cache.stamps_mirrored() }).await;
    assert!(ready.is_some(), "the stamp mirror was never loaded");
}

#[tokio::test]
async fn a_mirrored_read_judges_entries_without_reading_stamps_from_redis() {
    let app = TestApp::spawn().await;
    let cache = &app.state.cache;
    mirrored(cache).await;
    fill(cache, "m:k", "old", &["m:t"]).await;
    cache.invalidate(&[tag("m:t")]).await;
    // Were the stamp read from Redis, the entry (which recorded no stamp
    // for the tag) would look current again once the stamp is gone.
    let kv = &app.state.kv;
    let _: i64 = kv
        .query(redis::cmd("DEL").arg(stamp_key(kv, "m:t")))
        .await
        .expect("DEL");
    assert!(cache.peek_l2(&key("m:k")).await.expect("redis").is_none());
    assert_eq!(fill(cache, "m:k", "new", &["m:t"]).await, "new");
    assert!(cache.peek_l2(&key("m:k")).await.expect("redis").is_some());
}

#[tokio::test]
async fn an_instance_started_after_an_invalidation_loads_its_stamp() {
    let app = TestApp::spawn().await;
    let a = &app.state.cache;
    fill(a, "late:k", "old", &["late:t"]).await;
    a.invalidate(&[tag("late:t")]).await;
    // B never received the message: only the reload tells it the entry,
    // still in Redis, recorded an older stamp.
    let b = other_instance(&app).await;
    mirrored(&b).await;
    assert!(b.peek_l2(&key("late:k")).await.expect("redis").is_none());
    assert_eq!(fill(&b, "late:k", "new", &["late:t"]).await, "new");
    assert_eq!(fill(a, "late:k", "unused", &["late:t"]).await, "new");
}

#[tokio::test]
async fn another_instance_rejects_the_old_l2_entry_once_the_invalidation_reaches_it() {
    let app = TestApp::spawn().await;
    let a = app.state.cache.clone();
    let b = other_instance(&app).await;
    mirrored(&b).await;
    fill(&a, "l2:k", "old", &["l2:t"]).await;
    assert!(b.peek_l2(&key("l2:k")).await.expect("redis").is_some());
    let mut applied = b.remote_invalidations();
    let before = *applied.borrow_and_update();
    a.invalidate(&[tag("l2:t")]).await;
    tokio::time::timeout(PATIENCE, applied.wait_for(|n| *n > before))
        .await
        .expect("A's invalidation never reached B's bus")
        .expect("cache alive");
    assert!(b.peek_l2(&key("l2:k")).await.expect("redis").is_none());
}

/// Waits until `n` readers in all have joined another reader's load.
async fn followers_reach(joined: &mut tokio::sync::watch::Receiver<u64>, n: u64) {
    tokio::time::timeout(PATIENCE, joined.wait_for(|j| *j >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} readers never joined the load in flight"))
        .expect("cache alive");
}

#[tokio::test]
async fn concurrent_misses_for_one_key_load_once() {
    let app = TestApp::spawn().await;
    let loads = Arc::new(AtomicUsize::new(0));
    let joined = app.state.cache.flight_followers();
    let before = *joined.borrow();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let cache = app.state.cache.clone();
        let loads = loads.clone();
        let mut joined = joined.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load(&key("hot"), || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // The load lasts until the 15 other readers wait on it.
                    // Were they loading for themselves instead, the wait
                    // would end at the deadline and `loads` would count 16.
                    let _ = tokio::time::timeout(PATIENCE, joined.wait_for(|j| *j >= before + 15))
                        .await;
                    Ok::<_, std::convert::Infallible>(Some(loaded("value", &["t"])))
                })
                .await
                .expect("infallible")
                .map(|e| e.bytes.clone())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").as_deref(), Some(&b"value"[..]));
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

/// A read of `k` whose loader reads "old" and then waits: it returns once
/// the first channel fires (the value was read) and finishes once the
/// returned sender fires. Forces a fill to straddle whatever the test does
/// in between.
async fn held_fill(
    cache: &Cache,
    k: &'static str,
) -> (
    tokio::task::JoinHandle<Option<trovato::cache::Cached>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let cache = cache.clone();
    let task = tokio::spawn(async move {
        cache
            .get_or_load(&key(k), || async move {
                let old = loaded("old", &[k]);
                let _ = read_tx.send(());
                let _ = go_rx.await;
                Ok::<_, std::convert::Infallible>(Some(old))
            })
            .await
            .expect("infallible")
    });
    read_rx.await.expect("loader started");
    (task, go_tx)
}

#[tokio::test]
async fn a_fill_racing_an_invalidation_leaves_no_stale_entry() {
    let app = TestApp::spawn().await;
    let cache = app.state.cache.clone();
    // The loader reads the old value, then waits until the test has
    // invalidated its tag (the write committed meanwhile), then returns.
    let (filler, go_tx) = held_fill(&cache, "item:race").await;
    cache.invalidate(&[tag("item:race")]).await;
    go_tx.send(()).expect("release loader");
    let served = filler.await.expect("join").expect("value");
    assert_eq!(
        &served.bytes[..],
        b"old",
        "the racing reader itself gets what it read"
    );

    assert!(
        cache.peek_l1(&key("item:race")).is_none(),
        "no stale L1 entry"
    );
    assert!(
        cache
            .peek_l2(&key("item:race"))
            .await
            .expect("redis")
            .is_none(),
        "no stale L2 entry"
    );
    let other = other_instance(&app).await;
    assert_eq!(
        fill(&other, "item:race", "new", &["item:race"]).await,
        "new"
    );
    assert_eq!(
        fill(&cache, "item:race", "unused", &["item:race"]).await,
        "new"
    );
}

#[tokio::test]
async fn a_reader_waiting_on_a_load_that_went_stale_loads_for_itself() {
    let app = TestApp::spawn().await;
    let cache = app.state.cache.clone();
    let (leader, go_tx) = held_fill(&cache, "item:sf").await;
    let mut joined = cache.flight_followers();
    let before = *joined.borrow();
    let follower = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load(&key("item:sf"), || async move {
                    Ok::<_, std::convert::Infallible>(Some(loaded("new", &["item:sf"])))
                })
                .await
                .expect("infallible")
        })
    };
    // Once the follower waits on the leader's load, write.
    followers_reach(&mut joined, before + 1).await;
    cache.invalidate(&[tag("item:sf")]).await;
    go_tx.send(()).expect("release leader");
    assert_eq!(
        &leader.await.expect("join").expect("value").bytes[..],
        b"old"
    );
    assert_eq!(
        &follower.await.expect("join").expect("value").bytes[..],
        b"new"
    );
    assert_eq!(fill(&cache, "item:sf", "unused", &["item:sf"]).await, "new");
}

#[tokio::test]
async fn another_instance_drops_its_l1_copy_when_the_invalidation_reaches_it() {
    let app = TestApp::spawn().await;
    let a = app.state.cache.clone();
    let b = other_instance(&app).await;
    // Both hold the value; B drops it on A's invalidation via the bus.
    fill(&a, "k", "v1", &["t"]).await;
    fill(&b, "k", "unused", &["t"]).await;
    fill(&b, "other", "kept", &["u"]).await;
    assert!(b.peek_l1(&key("k")).is_some());
    let mut applied = b.remote_invalidations();
    let before = *applied.borrow_and_update();
    a.invalidate(&[tag("t")]).await;
    tokio::time::timeout(PATIENCE, applied.wait_for(|n| *n > before))
        .await
        .expect("A's invalidation never reached B's bus")
        .expect("cache alive");
    assert!(
        b.peek_l1(&key("k")).is_none(),
        "B applied the invalidation but kept its L1 copy"
    );
    assert!(
        b.peek_l1(&key("other")).is_some(),
        "B dropped a value of another tag"
    );
    assert_eq!(fill(&b, "k", "v2", &["t"]).await, "v2");
}

#[tokio::test]
async fn stage_scoped_values_use_the_stage_prefix_and_never_fill_live_keys() {
    let app = TestApp::spawn_with_articles().await;
    assert_eq!(
        app.create_stage("draft").await.status(),
        StatusCode::CREATED
    );
    let item = app.create_item("Live", None).await;
    let id = item["id"].as_str().expect("id");
    assert_eq!(
        app.item_title(id, Some("draft")).await.as_deref(),
        Some("Live")
    );
    let cache = &app.state.cache;
    assert!(
        cache
            .peek_l2(&key(&format!("st:draft:item:{id}")))
            .await
            .expect("redis")
            .is_some()
    );
    assert!(
        cache
            .peek_l2(&key(&format!("item:{id}")))
            .await
            .expect("redis")
            .is_none()
    );
}

#[tokio::test]
async fn cache_metrics_are_exported() {
    let app = TestApp::spawn().await;
    fill(&app.state.cache, "m", "v", &["t"]).await;
    fill(&app.state.cache, "m", "v", &["t"]).await;
    app.state.cache.invalidate(&[tag("t")]).await;
    let text = app.get("/metrics").await.text().await.expect("metrics");
    for name in [
        "trovato_cache_hits_total{tier=\"l1\"}",
        "trovato_cache_misses_total{tier=\"l2\"}",
        "trovato_cache_invalidations_total",
        "trovato_cache_load_duration_seconds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_through_one_process_is_served_by_the_other_long_before_its_l1_expires() {
    // An hour of L1 lifetime: within the test's patience only the
    // invalidation bus can make B drop its copy. How fast it does is
    // `benches/cache.rs`'s cross-process figure.
    let cluster = Cluster::spawn_with_env(2, &[("TROVATO_CACHE_L1_TTL", "3600")]).await;
    let pool = cluster.with_admin().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let client = crate::harness::client();
    let csrf = crate::harness::content::sign_in_at(&client, &a.url("")).await;
    let r = client
        .post(a.url("/api/item-types"))
        .header("x-csrf-token", &csrf)
        .json(
            &json!({"type": "article", "label": "Article", "description": "",
                      "has_title": true, "title_label": "Title", "plugin": "kernel", "fields": []}),
        )
        .send()
        .await
        .expect("type");
    assert_eq!(r.status(), StatusCode::CREATED);
    let item: Value = client
        .post(a.url("/api/items"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"type": "article", "title": "Old"}))
        .send()
        .await
        .expect("item")
        .json()
        .await
        .expect("json");
    let id = item["id"].as_str().expect("id");
    let anon = crate::harness::client();
    let title_on_b = || async {
        let v: Value = anon
            .get(b.url(&format!("/api/items/{id}")))
            .send()
            .await
            .expect("GET on B")
            .json()
            .await
            .expect("json");
        v["title"].as_str().unwrap_or_default().to_owned()
    };
    // B fills its L1 (and reads it back from L1).
    assert_eq!(title_on_b().await, "Old");
    assert_eq!(title_on_b().await, "Old");

    for round in 0..5 {
        let title = format!("New {round}");
        let r = client
            .put(a.url(&format!("/api/items/{id}")))
            .header("x-csrf-token", &csrf)
            .json(&json!({"title": title}))
            .send()
            .await
            .expect("PUT on A");
        assert_eq!(r.status(), StatusCode::OK);
        let seen = eventually(PATIENCE, || async { title_on_b().await == title }).await;
        assert!(
            seen.is_some(),
            "B still serves `{}` after the update on A",
            title_on_b().await
        );
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_reads_keep_working_while_redis_is_down_and_the_cache_resumes() {
    let port = free_port();
    let dir = scratch_root()
        .join("cache-faults")
        .join(uuid::Uuid::now_v7().simple().to_string());
    let redis = RedisServer::ensure(&dir, RedisListen::Tcp(port), Durability::Scratch)
        .await
        .expect("private redis");
    let url = redis.url();
    // L1 keeps its default lifetime (60 s), longer than the test's patience.
    let app = TestApp::spawn_with(move |c| c.redis.url = Some(url), axum::Router::new()).await;
    // Scripts authenticate with a bearer token, which lives in PostgreSQL.
    let admin = app.create_user("admin", PASSWORD, true).await;
    let token = trovato::user::token::create(&app.state.db, admin.id, "test")
        .await
        .expect("token");
    let bearer = format!("Bearer {token}");
    let r = app
        .client
        .post(app.url("/api/item-types"))
        .header("authorization", &bearer)
        .json(
            &json!({"type": "article", "label": "Article", "description": "",
                      "has_title": true, "title_label": "Title", "plugin": "kernel", "fields": []}),
        )
        .send()
        .await
        .expect("type");
    assert_eq!(r.status(), StatusCode::CREATED);
    let item: Value = app
        .client
        .post(app.url("/api/items"))
        .header("authorization", &bearer)
        .json(&json!({"type": "article", "title": "Before"}))
        .send()
        .await
        .expect("item")
        .json()
        .await
        .expect("json");
    let id = item["id"].as_str().expect("id").to_owned();
    let anon = crate::harness::client();
    let read = |path: String| {
        let anon = anon.clone();
        let url = app.url(&path);
        async move { anon.get(url).send().await.expect("GET") }
    };
    assert_eq!(
        read(format!("/api/items/{id}")).await.status(),
        StatusCode::OK
    );

    redis.kill().await.expect("stop redis");
    // The bus clears L1 when it loses Redis; from then on nothing but a
    // local write or the TTL removes an L1 copy.
    bus_lost(&app.state.cache).await;
    for path in [
        format!("/api/items/{id}"),
        format!("/item/{id}"),
        "/api/items".into(),
    ] {
        let r = read(path.clone()).await;
        assert_eq!(r.status(), StatusCode::OK, "{path} while Redis is down");
    }
    // A write while Redis is down still invalidates this instance's L1.
    let r = app
        .client
        .put(app.url(&format!("/api/items/{id}")))
        .header("authorization", &bearer)
        .json(&json!({"title": "During"}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = read(format!("/api/items/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["title"], "During");

    redis.start().await.expect("restart redis");
    let k = key(&format!("item:{id}"));
    let resumed = eventually(PATIENCE, || async {
        let ok = read(format!("/api/items/{id}")).await.status() == StatusCode::OK;
        ok && matches!(app.state.cache.peek_l2(&k).await, Ok(Some(_)))
    })
    .await;
    assert!(resumed.is_some(), "L2 fills again after Redis returns");
    let v: Value = read(format!("/api/items/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["title"], "During");
    assert!(
        eventually(PATIENCE, || async { app.state.cache.bus_connected() })
            .await
            .is_some()
    );
    redis.kill().await.expect("stop redis");
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits until `cache`'s bus noticed Redis is gone (and cleared L1).
async fn bus_lost(cache: &Cache) {
    let lost = eventually(PATIENCE, || async { !cache.bus_connected() }).await;
    assert!(lost.is_some(), "the cache bus never noticed Redis stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_an_l1_copy_lives_no_longer_than_the_l1_ttl() {
    let port = free_port();
    let dir = scratch_root()
        .join("cache-faults")
        .join(uuid::Uuid::now_v7().simple().to_string());
    let redis = RedisServer::ensure(&dir, RedisListen::Tcp(port), Durability::Scratch)
        .await
        .expect("private redis");
    let url = redis.url();
    let app = TestApp::spawn_with(
        move |c| {
            c.redis.url = Some(url);
            // Far below the default (60 s), which outlasts the test's
            // patience (30 s): were the setting ignored, the wait fails.
            c.cache.l1_ttl_secs = 1;
        },
        axum::Router::new(),
    )
    .await;
    let cache = &app.state.cache;
    redis.kill().await.expect("stop redis");
    bus_lost(cache).await;
    // Filled while no invalidation can arrive: another instance's write
    // would go unheard, so only the TTL ends this copy.
    assert_eq!(fill(cache, "ttl:k", "old", &["ttl:t"]).await, "old");
    let renewed = eventually(PATIENCE, || async {
        fill(cache, "ttl:k", "new", &["ttl:t"]).await == "new"
    })
    .await;
    assert!(renewed.is_some(), "L1 served its copy past the L1 TTL");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_missed_during_an_outage_are_sent_when_redis_returns() {
    let port = free_port();
    let dir = scratch_root()
        .join("cache-faults")
        .join(uuid::Uuid::now_v7().simple().to_string());
    // Durable: the stale entry must survive the restart, as it does on a
    // production Redis.
    let redis = RedisServer::ensure(&dir, RedisListen::Tcp(port), Durability::Durable)
        .await
        .expect("private redis");
    let url = redis.url();
    let app = TestApp::spawn_with(move |c| c.redis.url = Some(url), axum::Router::new()).await;
    let other = other_instance(&app).await;
    assert_eq!(fill(&other, "replay:k", "old", &["replay:t"]).await, "old");
    assert!(matches!(other.peek_l2(&key("replay:k")).await, Ok(Some(_))));

    redis.kill().await.expect("stop redis");
    // This instance's write cannot reach Redis; it is kept for replay.
    app.state.cache.invalidate(&[tag("replay:t")]).await;
    redis.start().await.expect("restart redis");

    // No further cache call on this instance: the reconnect alone must
    // send the missed invalidation, so the other instance's L2 entry dies.
    let gone = eventually(PATIENCE, || async {
        matches!(other.peek_l2(&key("replay:k")).await, Ok(None))
    })
    .await;
    assert!(gone.is_some(), "the missed invalidation was not replayed");
    assert_eq!(fill(&other, "replay:k", "new", &["replay:t"]).await, "new");
    redis.kill().await.expect("stop redis");
    let _ = std::fs::remove_dir_all(dir);
}
