//! Queues: one suite of semantics run against both backends (lease, ack,
//! nack with retries and the dead letter list, delays, release, concurrent
//! takers), the PostgreSQL push inside a caller's transaction, the runner
//! with kernel workers and with the `digest` example plugin, cron working a
//! declared queue, the CLI, and real `trovato queue work` processes killed
//! with SIGKILL while 10 000 jobs go through.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use trovato::queue::worker::{self, QueueInfo, RunLimits, Verdict, Worker};
use trovato::queue::{
    Failure, Nacked, NewJob, Queue, QueueBackend, QueueError, QueueStats, Queues,
};

use crate::harness::{PATIENCE, TestApp, eventually, run_trovato};

/// A kernel whose queues use `backend`.
async fn app_with(backend: QueueBackend, customise: impl FnOnce(&mut trovato::Config)) -> TestApp {
    TestApp::spawn_with(
        |c| {
            c.queue.backend = backend;
            customise(c);
        },
        axum::Router::new(),
    )
    .await
}

fn job(n: u32) -> NewJob {
    NewJob::new(&json!({ "n": n })).expect("job")
}

fn n_of(j: &trovato::queue::Job) -> u64 {
    let v: Value = serde_json::from_str(j.payload.get()).expect("payload");
    v["n"].as_u64().expect("n")
}

const LONG: Duration = Duration::from_secs(600);

async fn stats(q: &Queues, name: &str) -> QueueStats {
    q.stats(name).await.expect("stats")
}

async fn lifecycle(q: &Queues) {
    for n in 0..3 {
        q.push("suite.basic", job(n)).await.expect("push");
    }
    assert_eq!(q.len("suite.basic").await.expect("len"), 3);
    let first = q
        .pop("suite.basic", LONG)
        .await
        .expect("pop")
        .expect("an item");
    assert_eq!(n_of(&first), 0, "oldest first");
    assert_eq!(first.attempt, 1);
    assert_eq!(first.queue, "suite.basic");
    assert_eq!(first.last_error, None);
    let s = stats(q, "suite.basic").await;
    assert_eq!((s.ready, s.in_flight, s.delayed, s.dead), (2, 1, 0, 0));
    assert_eq!(
        q.len("suite.basic").await.expect("len"),
        3,
        "a leased item is not done"
    );
    assert!(q.ack(&first).await.expect("ack"));
    assert!(
        !q.ack(&first).await.expect("second ack"),
        "an item is acked once"
    );
    assert_eq!(q.len("suite.basic").await.expect("len"), 2);
    let second = q
        .pop("suite.basic", LONG)
        .await
        .expect("pop")
        .expect("item");
    let third = q
        .pop("suite.basic", LONG)
        .await
        .expect("pop")
        .expect("item");
    assert_eq!((n_of(&second), n_of(&third)), (1, 2));
    assert!(
        q.pop("suite.basic", LONG).await.expect("pop").is_none(),
        "all leased"
    );
    for j in [&second, &third] {
        assert!(q.ack(j).await.expect("ack"));
    }
    assert_eq!(q.len("suite.basic").await.expect("len"), 0);
    // Other queues are apart.
    q.push("suite.other", job(9)).await.expect("push");
    assert!(q.pop("suite.basic", LONG).await.expect("pop").is_none());
    let names = q.names().await.expect("names");
    assert!(names.contains(&"suite.other".to_owned()), "{names:?}");
}

async fn ack_then_pop(q: &Queues) {
    for n in 0..2 {
        q.push("suite.step", job(n)).await.expect("push");
    }
    let first = q.pop("suite.step", LONG).await.expect("pop").expect("item");
    let (acked, second) = q
        .ack_then_pop(&first, "suite.step", LONG)
        .await
        .expect("ack and pop");
    assert!(acked);
    let second = second.expect("the next item");
    assert_eq!((n_of(&first), n_of(&second)), (0, 1));
    // A stale ack does nothing; the take still happens (nothing left).
    let (acked, none) = q
        .ack_then_pop(&first, "suite.step", LONG)
        .await
        .expect("ack and pop");
    assert!(!acked);
    assert!(none.is_none());
    let (acked, none) = q
        .ack_then_pop(&second, "suite.step", LONG)
        .await
        .expect("ack and pop");
    assert!(acked && none.is_none());
    assert_eq!(q.len("suite.step").await.expect("len"), 0);
}

async fn lease_expiry(q: &Queues) {
    q.push("suite.lease", job(1)).await.expect("push");
    let taken = q
        .pop("suite.lease", Duration::from_millis(300))
        .await
        .expect("pop")
        .expect("item");
    // The worker "dies": no ack. The item comes back when the lease ends.
    let mut again = None;
    let deadline = Instant::now() + PATIENCE;
    while again.is_none() {
        again = q.pop("suite.lease", LONG).await.expect("pop");
        assert!(Instant::now() < deadline, "the item never came back");
        if again.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let again = again.expect("item");
    assert_eq!(again.id, taken.id);
    assert_eq!(again.attempt, 2);
    assert_ne!(again.lease, taken.lease);
    // The first worker, late, cannot settle it any more.
    assert!(!q.ack(&taken).await.expect("late ack"));
    let late = Failure::Retry {
        delay: None,
        error: "late".into(),
    };
    assert_eq!(
        q.nack(&taken, &late, Duration::ZERO)
            .await
            .expect("late nack"),
        Nacked::LeaseLost
    );
    assert!(!q.release(&taken).await.expect("late release"));
    assert!(q.ack(&again).await.expect("ack"));
    assert_eq!(q.len("suite.lease").await.expect("len"), 0);
}

async fn retries_then_dead_letter(q: &Queues) {
    q.push("suite.poison", job(1).max_attempts(3))
        .await
        .expect("push");
    let fail = |attempt: u32| Failure::Retry {
        delay: None,
        error: format!("boom {attempt}"),
    };
    for attempt in 1..=3 {
        let j = q
            .pop("suite.poison", LONG)
            .await
            .expect("pop")
            .expect("item");
        assert_eq!(j.attempt, attempt);
        assert_eq!(j.max_attempts, 3);
        if attempt > 1 {
            assert_eq!(
                j.last_error.as_deref(),
                Some(format!("boom {}", attempt - 1).as_str())
            );
        }
        let nacked = q
            .nack(&j, &fail(attempt), Duration::ZERO)
            .await
            .expect("nack");
        if attempt < 3 {
            assert_eq!(nacked, Nacked::Retrying(Duration::ZERO));
        } else {
            assert_eq!(nacked, Nacked::Dead);
        }
    }
    assert!(
        q.pop("suite.poison", LONG).await.expect("pop").is_none(),
        "dead items are not delivered"
    );
    let s = stats(q, "suite.poison").await;
    assert_eq!((s.ready, s.in_flight, s.dead), (0, 0, 1));
    assert_eq!(q.len("suite.poison").await.expect("len"), 0);
    assert_eq!(q.retry_dead("suite.poison").await.expect("retry"), 1);
    let back = q
        .pop("suite.poison", LONG)
        .await
        .expect("pop")
        .expect("item");
    assert_eq!(back.attempt, 1, "fresh attempts");
    // A retry with a delay waits for it (a backoff too).
    let later = Failure::Retry {
        delay: Some(Duration::from_secs(3600)),
        error: "later".into(),
    };
    assert_eq!(
        q.nack(&back, &later, Duration::ZERO).await.expect("nack"),
        Nacked::Retrying(Duration::from_secs(3600))
    );
    let s = stats(q, "suite.poison").await;
    assert_eq!((s.ready, s.delayed, s.dead), (0, 1, 0));
    assert!(q.pop("suite.poison", LONG).await.expect("pop").is_none());

    // A failure for good skips the remaining attempts.
    q.push("suite.reject", job(2)).await.expect("push");
    let j = q
        .pop("suite.reject", LONG)
        .await
        .expect("pop")
        .expect("item");
    let reject = Failure::Fail {
        error: "never".into(),
    };
    assert_eq!(
        q.nack(&j, &reject, Duration::ZERO).await.expect("nack"),
        Nacked::Dead
    );
    assert_eq!(stats(q, "suite.reject").await.dead, 1);
}

async fn delays_and_release(q: &Queues) {
    q.push("suite.delay", job(1).delay(Duration::from_secs(3600)))
        .await
        .expect("push");
    assert!(q.pop("suite.delay", LONG).await.expect("pop").is_none());
    assert_eq!(stats(q, "suite.delay").await.delayed, 1);
    q.push("suite.soon", job(2).delay(Duration::from_millis(200)))
        .await
        .expect("push");
    let soon = eventually(PATIENCE, || async {
        stats(q, "suite.soon").await.ready == 1
    })
    .await;
    assert!(soon.is_some(), "a delayed item becomes available");
    let j = q.pop("suite.soon", LONG).await.expect("pop").expect("item");
    assert!(q.release(&j).await.expect("release"));
    let again = q.pop("suite.soon", LONG).await.expect("pop").expect("item");
    assert_eq!(again.id, j.id);
    assert_eq!(again.attempt, 1, "a released delivery is not an attempt");
    assert!(q.ack(&again).await.expect("ack"));
}

async fn concurrent_takers_never_share(q: &Queues) {
    for n in 0..400 {
        q.push("suite.many", job(n)).await.expect("push");
    }
    let mut takers = Vec::new();
    for _ in 0..8 {
        let q = q.clone();
        takers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = q.pop("suite.many", LONG).await.expect("pop") {
                assert!(q.ack(&j).await.expect("ack"));
                got.push(n_of(&j));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in takers {
        all.extend(t.await.expect("taker"));
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), 400, "every item once");
    assert_eq!(distinct.len(), 400);
    assert_eq!(q.len("suite.many").await.expect("len"), 0);
}

async fn purge_and_bad_names(q: &Queues) {
    for n in 0..5 {
        q.push("suite.purge", job(n)).await.expect("push");
    }
    let j = q
        .pop("suite.purge", LONG)
        .await
        .expect("pop")
        .expect("item");
    q.nack(&j, &Failure::Fail { error: "x".into() }, Duration::ZERO)
        .await
        .expect("nack");
    assert_eq!(q.purge("suite.purge").await.expect("purge"), 5);
    assert_eq!(
        stats(q, "suite.purge").await,
        QueueStats {
            queue: "suite.purge".into(),
            ..QueueStats::default()
        }
    );
    assert!(
        !q.names()
            .await
            .expect("names")
            .contains(&"suite.purge".to_owned())
    );
    for bad in ["", "Upper", "a b", "x*"] {
        assert!(matches!(
            q.push(bad, job(1)).await,
            Err(QueueError::BadName(_))
        ));
        assert!(matches!(
            q.pop(bad, LONG).await,
            Err(QueueError::BadName(_))
        ));
    }
}

async fn suite(backend: QueueBackend) {
    let app = app_with(backend, |_| {}).await;
    let q = &app.state.queues;
    assert_eq!(q.backend(), backend);
    lifecycle(q).await;
    ack_then_pop(q).await;
    lease_expiry(q).await;
    retries_then_dead_letter(q).await;
    delays_and_release(q).await;
    concurrent_takers_never_share(q).await;
    purge_and_bad_names(q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_backend_keeps_the_queue_semantics() {
    suite(QueueBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backend_keeps_the_queue_semantics() {
    suite(QueueBackend::Redis).await;
}

#[tokio::test]
async fn a_postgres_push_exists_if_and_only_if_its_transaction_commits() {
    let app = app_with(QueueBackend::Postgres, |_| {}).await;
    let db = &app.state.db;
    let mut tx = db.begin().await.expect("begin");
    trovato::queue::store_pg::push_in(&mut tx, "suite.tx", job(1), 5)
        .await
        .expect("push");
    tx.rollback().await.expect("rollback");
    assert_eq!(app.state.queues.len("suite.tx").await.expect("len"), 0);
    let mut tx = db.begin().await.expect("begin");
    trovato::queue::store_pg::push_in(&mut tx, "suite.tx", job(2), 5)
        .await
        .expect("push");
    // Invisible to workers until the commit.
    assert!(
        app.state
            .queues
            .pop("suite.tx", LONG)
            .await
            .expect("pop")
            .is_none()
    );
    tx.commit().await.expect("commit");
    let j = app
        .state
        .queues
        .pop("suite.tx", LONG)
        .await
        .expect("pop")
        .expect("item");
    assert_eq!(n_of(&j), 2);
}

/// A queue worked by a kernel closure.
fn kernel_queue(
    name: &str,
    concurrency: usize,
    f: impl Fn(trovato::queue::Job) -> futures::future::BoxFuture<'static, Verdict>
    + Send
    + Sync
    + 'static,
) -> QueueInfo {
    QueueInfo {
        name: name.into(),
        worker: Worker::Kernel(Arc::new(move |_, job| f(job))),
        cron_budget: Duration::ZERO,
        concurrency,
    }
}

fn drain(concurrency: usize) -> RunLimits {
    RunLimits {
        concurrency,
        until: None,
        until_empty: true,
        grace: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_acks_retries_with_backoff_and_dead_letters() {
    for backend in [QueueBackend::Postgres, QueueBackend::Redis] {
        let app = app_with(backend, |c| {
            c.queue.backoff_base_ms = 1;
            c.queue.backoff_max_secs = 1;
        })
        .await;
        let q = &app.state.queues;
        for n in 0..20 {
            q.push("run.mixed", job(n).max_attempts(2))
                .await
                .expect("push");
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let info = kernel_queue("run.mixed", 4, move |j| {
            let log = log.clone();
            Box::pin(async move {
                let n = n_of(&j);
                log.lock().expect("log").push((n, j.attempt));
                match n % 4 {
                    // Fails once, then works.
                    1 if j.attempt == 1 => Verdict::Failed(Failure::Retry {
                        delay: None,
                        error: "flaky".into(),
                    }),
                    // Always fails: dead after its 2 attempts.
                    2 => Verdict::Failed(Failure::Retry {
                        delay: None,
                        error: "poison".into(),
                    }),
                    3 => Verdict::Failed(Failure::Fail {
                        error: "rejected".into(),
                    }),
                    _ => Verdict::Ack,
                }
            })
        });
        let cancel = CancellationToken::new();
        let mut report = worker::WorkReport::default();
        // Retries wait out their backoff: run until nothing is left alive.
        let deadline = Instant::now() + PATIENCE;
        while q.len("run.mixed").await.expect("len") > 0 {
            let r = worker::run(&app.state, vec![info.clone()], drain(4), &cancel).await;
            report.acked += r.acked;
            report.retried += r.retried;
            report.dead += r.dead;
            assert!(
                Instant::now() < deadline,
                "{backend:?}: the queue never drained"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 0 mod 4 and 1 mod 4 end acked (10); 2 mod 4 dead after 2
        // attempts, 3 mod 4 dead at once (10).
        assert_eq!(report.acked, 10, "{backend:?} {report:?}");
        assert_eq!(report.dead, 10, "{backend:?} {report:?}");
        assert_eq!(
            report.retried, 10,
            "{backend:?}: 5 flaky + 5 poison first attempts"
        );
        let s = stats(q, "run.mixed").await;
        assert_eq!((s.ready, s.in_flight, s.delayed, s.dead), (0, 0, 0, 10));
        let seen = seen.lock().expect("log").clone();
        assert_eq!(
            seen.len(),
            30,
            "{backend:?}: 20 first attempts + 10 retries"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_runner_finishes_within_grace_or_gives_the_job_back() {
    let app = app_with(QueueBackend::Postgres, |_| {}).await;
    let q = &app.state.queues;
    q.push("run.slow", job(1)).await.expect("push");
    let (started_tx, started_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let info = kernel_queue("run.slow", 1, move |_| {
        let started = started_tx.clone();
        Box::pin(async move {
            let _ = started.send(());
            std::future::pending::<()>().await;
            Verdict::Ack
        })
    });
    let cancel = CancellationToken::new();
    let state = app.state.clone();
    let stop = cancel.clone();
    let runner = tokio::spawn(async move {
        let limits = RunLimits {
            grace: Duration::ZERO,
            until_empty: false,
            ..drain(1)
        };
        worker::run(&state, vec![info], limits, &stop).await
    });
    let mut started_rx = started_rx;
    started_rx.recv().await.expect("the job started");
    cancel.cancel();
    let report = tokio::time::timeout(PATIENCE, runner)
        .await
        .expect("the runner stops")
        .expect("join");
    assert_eq!(report.released, 1, "{report:?}");
    let s = stats(q, "run.slow").await;
    assert_eq!((s.ready, s.in_flight), (1, 0), "given back at once");
    let j = q.pop("run.slow", LONG).await.expect("pop").expect("item");
    assert_eq!(j.attempt, 1, "the interrupted delivery does not count");
}

/// A plugin directory with the `digest` example; removed on drop.
struct DigestPlugin {
    dir: PathBuf,
}

impl DigestPlugin {
    fn new() -> Self {
        let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/digest");
        assert!(
            from.join("digest.wasm").is_file(),
            "plugins/digest/digest.wasm is missing: run scripts/build-plugins before the tests"
        );
        let dir =
            std::env::temp_dir().join(format!("trovato-digest-{}", uuid::Uuid::now_v7().simple()));
        let to = dir.join("digest");
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in ["digest.info.toml", "digest.wasm"] {
            std::fs::copy(from.join(f), to.join(f)).expect("copy");
        }
        Self { dir }
    }

    fn path(&self) -> String {
        self.dir.to_str().expect("utf-8").to_owned()
    }
}

impl Drop for DigestPlugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const OUTBOX: &str = "digest.outbox";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_plugin_pushes_from_a_tap_and_cron_works_its_queue() {
    let plugin = DigestPlugin::new();
    let dir = plugin.path();
    let app = app_with(QueueBackend::Postgres, |c| c.plugin.dir = dir.into()).await;
    let declared = worker::declared(&app.state).await;
    let info = declared.get(OUTBOX).expect("digest declares its queue");
    assert_eq!(info.concurrency, 2);
    assert_eq!(info.cron_budget, Duration::from_secs(5));
    // tap_item_insert pushes through the host's queue_push.
    app.sign_in_as_admin().await;
    app.create_article_type().await;
    let item = app.create_item("Queued news", None).await;
    let queued = eventually(PATIENCE, || async {
        app.state.queues.len(OUTBOX).await.expect("len") == 1
    })
    .await;
    assert!(queued.is_some(), "the item's entry was queued");
    let j = app
        .state
        .queues
        .pop(OUTBOX, LONG)
        .await
        .expect("pop")
        .expect("entry");
    let payload: Value = serde_json::from_str(j.payload.get()).expect("json");
    assert_eq!(payload["item"], item["id"]);
    assert_eq!(payload["title"], "Queued news");
    assert!(app.state.queues.release(&j).await.expect("release"));

    // A cron pass works the queue in its own step.
    let pass = trovato::cron::run(&app.state, trovato::cron::Trigger::Cli)
        .await
        .expect("pass");
    let trovato::cron::Pass::Ran(run) = pass else {
        panic!("busy")
    };
    let step = run
        .steps
        .iter()
        .find(|s| s.name == "queue:digest.outbox")
        .expect("the queue's step");
    assert_eq!(step.outcome, trovato::cron::StepOutcome::Ok, "{step:?}");
    assert!(step.detail.starts_with("acked 1,"), "{step:?}");
    assert_eq!(app.state.queues.len(OUTBOX).await.expect("len"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_ends_in_the_dead_letter_list_and_the_cli_brings_it_back() {
    let plugin = DigestPlugin::new();
    let dir = plugin.path();
    let app = app_with(QueueBackend::Postgres, |c| {
        c.plugin.dir = dir.into();
        c.queue.max_attempts = 3;
    })
    .await;
    let q = &app.state.queues;
    let id = q
        .push(OUTBOX, NewJob::new(&json!({"poison": true})).expect("job"))
        .await
        .expect("push");
    let declared = worker::declared(&app.state).await;
    let info = declared.get(OUTBOX).expect("declared").clone();
    let cancel = CancellationToken::new();
    let r = worker::run(&app.state, vec![info], drain(1), &cancel).await;
    assert_eq!((r.retried, r.dead, r.acked), (2, 1, 0), "{r:?}");
    let (attempts, error): (i32, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM queue_item WHERE id = $1 AND dead_at IS NOT NULL",
    )
    .bind(id)
    .fetch_one(&app.state.db)
    .await
    .expect("the dead item");
    assert_eq!(attempts, 3);
    assert_eq!(error, "poison entry (attempt 3)");

    let env = cli_env(&app, &plugin.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_trovato(&["queue", "list"], &env, None);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{listed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = listed
        .lines()
        .find(|l| l.starts_with(OUTBOX))
        .unwrap_or_else(|| panic!("{listed}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[1..5],
        &["0", "0", "0", "1"],
        "ready delayed in-flight dead: {row}"
    );
    assert!(row.ends_with("plugin digest"), "{row}");

    let out = run_trovato(&["queue", "retry-dead", OUTBOX], &env, None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 dead items of digest.outbox are queued again"
    );
    let s = stats(q, OUTBOX).await;
    assert_eq!((s.ready, s.dead), (1, 0));

    // Purge asks first; anything but yes keeps the items.
    let out = run_trovato(&["queue", "purge", OUTBOX], &env, Some("n\n"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not purged"));
    assert_eq!(q.len(OUTBOX).await.expect("len"), 1);
    let out = run_trovato(&["queue", "purge", OUTBOX], &env, Some("y\n"));
    assert!(out.status.success());
    assert_eq!(q.len(OUTBOX).await.expect("len"), 0);
    q.push(OUTBOX, job(1)).await.expect("push");
    let out = run_trovato(&["queue", "purge", OUTBOX, "--yes"], &env, None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "purged 1 items of digest.outbox"
    );
    assert_eq!(q.len(OUTBOX).await.expect("len"), 0);
    let out = run_trovato(&["queue", "purge", "Bad Name", "--yes"], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid queue name"));
    let out = run_trovato(&["queue", "work", "--queue", "nope.queue"], &env, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queue named `nope.queue`"));
}

/// The environment a `trovato` command needs for `app`'s services and
/// the plugin directory `plugins`.
fn cli_env(app: &TestApp, plugins: &str) -> Vec<(String, String)> {
    let mut env = app.cli_env();
    env.retain(|(k, _)| k != "TROVATO_PLUGIN_DIR");
    env.push(("TROVATO_PLUGIN_DIR".into(), plugins.into()));
    env.push(("TROVATO_QUEUE_BACKEND".into(), "postgres".into()));
    env
}

fn spawn_worker(env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(crate::harness::trovato_bin());
    cmd.args(["queue", "work", "--queue", OUTBOX, "--concurrency", "4"])
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn trovato queue work")
}

/// 10 000 jobs, three `trovato queue work` processes, one of them killed
/// with SIGKILL every second or so and started again: every job is acked
/// exactly once; those whose worker died holding them are delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_survive_workers_killed_mid_flight() {
    const JOBS: i64 = 10_000;
    let plugin = DigestPlugin::new();
    let app = app_with(QueueBackend::Postgres, |_| {}).await;
    let db = &app.state.db;
    // Every ack deletes its row: record each deletion, with the attempts it took.
    sqlx::raw_sql(
        "CREATE TABLE acked_log (id uuid NOT NULL, attempts int NOT NULL);
         CREATE FUNCTION log_ack() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO acked_log VALUES (OLD.id, OLD.attempts); RETURN NULL; END $$;
         CREATE TRIGGER log_ack AFTER DELETE ON queue_item FOR EACH ROW EXECUTE FUNCTION log_ack();",
    )
    .execute(db)
    .await
    .expect("ack log");
    sqlx::query(
        "INSERT INTO queue_item (id, queue, payload, max_attempts)
         SELECT gen_random_uuid(), $1, jsonb_build_object('title', 'job ' || n), 100
         FROM generate_series(1, $2) AS n",
    )
    .bind(OUTBOX)
    .bind(JOBS)
    .execute(db)
    .await
    .expect("enqueue");
    let mut env = cli_env(&app, &plugin.path());
    // A short lease, so jobs held by a killed worker come back soon.
    env.push(("TROVATO_QUEUE_LEASE".into(), "1".into()));
    env.push(("TROVATO_PLUGIN_BACKGROUND_DEADLINE".into(), "1".into()));
    let mut workers: Vec<Child> = (0..3).map(|_| spawn_worker(&env)).collect();
    let acked = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM acked_log")
            .fetch_one(db)
            .await
            .expect("count");
        n
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut kills = 0u32;
    let mut victim = 0usize;
    while acked().await < JOBS {
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} acked",
            acked().await
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Kill one worker mid-flight (it holds up to 4 jobs) and restart it.
        workers[victim].kill().expect("kill -9");
        workers[victim].wait().expect("reap");
        kills += 1;
        workers[victim] = spawn_worker(&env);
        victim = (victim + 1) % workers.len();
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let (total, distinct, redelivered, most): (i64, i64, i64, Option<i32>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE attempts > 1), max(attempts)
         FROM acked_log",
    )
    .fetch_one(db)
    .await
    .expect("tally");
    println!(
        "queue kill test: {JOBS} jobs, {kills} workers killed, {redelivered} jobs delivered more than once (at most {} deliveries), none acked twice",
        most.unwrap_or(0)
    );
    assert_eq!(total, JOBS, "every job acked once");
    assert_eq!(distinct, JOBS, "no job acked twice");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_item")
        .fetch_one(db)
        .await
        .expect("left");
    assert_eq!(left, 0, "none lost, none dead");
    assert!(kills >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_exits_cleanly_holding_nothing() {
    let plugin = DigestPlugin::new();
    let app = app_with(QueueBackend::Postgres, |_| {}).await;
    let q = &app.state.queues;
    for n in 0..2000 {
        q.push(OUTBOX, job(n)).await.expect("push");
    }
    let env = cli_env(&app, &plugin.path());
    let mut worker = spawn_worker(&env);
    let working = eventually(PATIENCE, || async {
        q.len(OUTBOX).await.expect("len") < 2000
    })
    .await;
    assert!(working.is_some(), "the worker took jobs");
    let pid = nix::unistd::Pid::from_raw(worker.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = worker.wait().expect("wait");
    assert!(status.success(), "{status}");
    let s = stats(q, OUTBOX).await;
    assert_eq!(s.in_flight, 0, "nothing left leased: {s:?}");
    assert_eq!(s.dead, 0);
}

#[tokio::test]
async fn queue_lengths_are_exported_as_metrics() {
    for backend in [QueueBackend::Postgres, QueueBackend::Redis] {
        let app = app_with(backend, |_| {}).await;
        let q = &app.state.queues;
        for n in 0..2 {
            q.push("suite.metrics", job(n)).await.expect("push");
        }
        q.push("suite.metrics", job(3).delay(Duration::from_secs(3600)))
            .await
            .expect("push");
        let body = app.get("/metrics").await.text().await.expect("metrics");
        for line in [
            r#"trovato_queue_items{queue="suite.metrics",state="ready"} 2"#,
            r#"trovato_queue_items{queue="suite.metrics",state="delayed"} 1"#,
            r#"trovato_queue_items{queue="suite.metrics",state="dead"} 0"#,
        ] {
            assert!(body.contains(line), "{backend:?}: {line} missing");
        }
        assert!(body.contains("trovato_queue_pushed_total{queue=\"suite.metrics\"}"));
    }
}
