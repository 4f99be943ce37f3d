//! Cron: the cluster lock (heartbeat, theft, a killed holder), isolated
//! steps, the kernel's steps, `POST /cron`'s keys and permissions, three
//! real servers triggering at once, the CLI, and the shipped systemd units.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use trovato::cron::{self, Pass, RunOutcome, Step, StepOutcome, Trigger};

use crate::files::Site;
use crate::harness::content::{error_body, expect_json};
use crate::harness::{Cluster, PATIENCE, TestApp, env_refs, eventually, run_trovato};

/// A plugin directory holding one plugin whose `tap_cron` spins until the
/// plugin deadline stops it; removed on drop.
struct SpinningCron {
    dir: PathBuf,
}

impl SpinningCron {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("trovato-cron-{}", uuid::Uuid::now_v7().simple()));
        let plugin = dir.join("spinner");
        std::fs::create_dir_all(&plugin).expect("mkdir");
        std::fs::write(
            plugin.join("spinner.wat"),
            r#"(module
  (memory (export "memory") 1)
  (func (export "trovato_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "tap_cron") (param i32 i32) (result i64)
    (loop $forever (br $forever))
    (i64.const 0)))"#,
        )
        .expect("write wat");
        std::fs::write(
            plugin.join("spinner.info.toml"),
            "name = \"spinner\"\nversion = \"1.0\"\ntaps = [\"tap_cron\"]\n",
        )
        .expect("write manifest");
        Self { dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 temp path")
    }
}

impl Drop for SpinningCron {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lock_key(app: &TestApp) -> String {
    app.state.kv.key(cron::lock::KEY)
}

async fn lock_value(app: &TestApp) -> Option<String> {
    app.state
        .kv
        .query(redis::cmd("GET").arg(lock_key(app)))
        .await
        .expect("redis")
}

fn ran(pass: Pass) -> cron::RunRecord {
    match pass {
        Pass::Ran(run) => run,
        Pass::Busy { holder } => panic!("expected a pass, the lock is held by {holder}"),
    }
}

async fn outcome_in_db(app: &TestApp, id: uuid::Uuid) -> String {
    sqlx::query_scalar("SELECT outcome FROM cron_run WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.db)
        .await
        .expect("run recorded")
}

#[tokio::test]
async fn the_heartbeat_holds_the_lock_past_its_lifetime_and_no_second_pass_starts() {
    let plugins = SpinningCron::new();
    let dir = plugins.path().to_owned();
    let app = TestApp::spawn_with(
        |c| {
            c.cron.lock_ttl_ms = 2000;
            c.plugin.dir = dir.into();
            c.plugin.background_deadline_secs = 6;
        },
        axum::Router::new(),
    )
    .await;
    let state = app.state.clone();
    let first = tokio::spawn(async move { cron::run(&state, Trigger::Cli).await });
    eventually(PATIENCE, || async { lock_value(&app).await.is_some() })
        .await
        .expect("the pass takes the lock");
    let token = lock_value(&app).await.expect("held");
    // Sample the lock and try a second pass until the first one ends,
    // counting the heartbeat's extensions: the key's remaining lifetime
    // going up again while it still holds the same token.
    let mut samples = 0u32;
    let mut extensions = 0u32;
    let mut last_pttl = i64::MAX;
    while !first.is_finished() {
        let second = cron::run_steps(&app.state, Trigger::Cli, Vec::new())
            .await
            .expect("second attempt");
        if first.is_finished() {
            break;
        }
        assert!(
            matches!(second, Pass::Busy { .. }),
            "a second pass started while the first ran"
        );
        let now = lock_value(&app).await;
        if first.is_finished() {
            break;
        }
        assert_eq!(
            now.as_deref(),
            Some(token.as_str()),
            "the lock changed hands"
        );
        let pttl: i64 = app
            .state
            .kv
            .query(redis::cmd("PTTL").arg(lock_key(&app)))
            .await
            .expect("pttl");
        if pttl > last_pttl {
            extensions += 1;
        }
        last_pttl = pttl;
        samples += 1;
        // The sampling interval, well under a third of the lifetime.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = ran(first.await.expect("join").expect("first pass"));
    assert!(samples > 0);
    // A 6 s tap under a 2 s lock: the same token held throughout only
    // because the heartbeat extended it, which the samples saw.
    assert!(
        extensions >= 2,
        "the lock was seen extended {extensions} times"
    );
    let spinner = run
        .steps
        .iter()
        .find(|s| s.name == "plugin:spinner")
        .expect("the plugin's step");
    assert_eq!(spinner.outcome, StepOutcome::Failed, "{spinner:?}");
    // The steps after the spinning plugin still ran.
    let cleanup = run
        .steps
        .iter()
        .find(|s| s.name == "files.cleanup")
        .expect("cleanup step");
    assert_eq!(cleanup.outcome, StepOutcome::Ok, "{cleanup:?}");
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert_eq!(lock_value(&app).await, None, "released at the end");
    assert_eq!(outcome_in_db(&app, run.id).await, "failed");
}

#[tokio::test]
async fn a_stolen_lock_cancels_the_pass_at_its_next_heartbeat() {
    let app = TestApp::spawn_with(|c| c.cron.lock_ttl_ms = 600, axum::Router::new()).await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (saw_tx, saw_rx) = tokio::sync::oneshot::channel::<()>();
    let steps = vec![
        Step::new(
            "waits",
            Duration::from_secs(600),
            move |_, token| async move {
                let _ = started_tx.send(());
                // Dropped when the pass is cancelled; the token fires first.
                token.cancelled().await;
                let _ = saw_tx.send(());
                Err("cancelled".to_owned())
            },
        ),
        Step::new("after", Duration::from_secs(600), |_, _| async {
            Ok(String::new())
        }),
    ];
    let state = app.state.clone();
    let pass = tokio::spawn(async move { cron::run_steps(&state, Trigger::Cli, steps).await });
    started_rx.await.expect("the step started");
    let _: () = app
        .state
        .kv
        .query(redis::cmd("SET").arg(lock_key(&app)).arg("thief:1 stolen"))
        .await
        .expect("steal");
    let run = ran(tokio::time::timeout(PATIENCE, pass)
        .await
        .expect("the pass ends after the theft")
        .expect("join")
        .expect("pass"));
    assert_eq!(run.outcome, RunOutcome::Cancelled);
    assert_eq!(
        run.steps[0].outcome,
        StepOutcome::Cancelled,
        "{:?}",
        run.steps
    );
    assert_eq!(
        run.steps[1].outcome,
        StepOutcome::Skipped,
        "{:?}",
        run.steps
    );
    // The thief's lock is left alone.
    assert_eq!(lock_value(&app).await.as_deref(), Some("thief:1 stolen"));
    assert_eq!(outcome_in_db(&app, run.id).await, "cancelled");
    // The step's token was cancelled (it would have seen it had it polled
    // first); either way it is not running any more.
    drop(saw_rx);
}

#[tokio::test]
async fn each_step_is_isolated_and_keeps_its_own_budget() {
    let app = TestApp::spawn().await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let steps = vec![
        Step::new("fails", Duration::from_secs(60), |_, _| async {
            Err("no good".to_owned())
        }),
        Step::new("panics", Duration::from_secs(60), |_, _| async {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: a bug in a step.
            #[allow(clippy::indexing_slicing)]
            let _ = v[usize::from(v.is_empty())];
            Ok(String::new())
        }),
        Step::new("overruns", Duration::from_millis(200), |_, _| async {
            std::future::pending::<()>().await;
            Ok(String::new())
        }),
        Step::new("works", Duration::from_secs(60), move |_, _| async move {
            let _ = done_tx.send(());
            Ok("did it".to_owned())
        }),
    ];
    let run = ran(cron::run_steps(&app.state, Trigger::Cli, steps)
        .await
        .expect("pass"));
    let outcomes: Vec<(&str, StepOutcome)> = run
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("fails", StepOutcome::Failed),
            ("panics", StepOutcome::Failed),
            ("overruns", StepOutcome::TimedOut),
            ("works", StepOutcome::Ok),
        ]
    );
    assert_eq!(run.steps[0].detail, "no good");
    assert_eq!(run.steps[1].detail, "panicked");
    assert_eq!(run.steps[3].detail, "did it");
    done_rx.await.expect("the last step ran");
    assert_eq!(run.outcome, RunOutcome::Failed);
    // Recorded with its steps, and what `recent` reads back.
    let recent = cron::recent(&app.state.db, 5).await.expect("recent");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, run.id);
    assert_eq!(recent[0].steps, run.steps);
    assert_eq!(recent[0].outcome, RunOutcome::Failed);
    assert!(recent[0].finished.is_some());
}

#[tokio::test]
async fn a_pass_left_running_by_a_dead_server_is_marked_abandoned_and_history_is_bounded() {
    let app = TestApp::spawn_with(|c| c.cron.runs_kept = 3, axum::Router::new()).await;
    let dead = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO cron_run (id, holder, trigger) VALUES ($1, 'gone:1', 'cli')")
        .bind(dead)
        .execute(&app.state.db)
        .await
        .expect("insert");
    for _ in 0..4 {
        ran(cron::run_steps(&app.state, Trigger::Http, Vec::new())
            .await
            .expect("pass"));
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM cron_run")
        .fetch_one(&app.state.db)
        .await
        .expect("count");
    assert_eq!(kept, 3);
    let recent = cron::recent(&app.state.db, 10).await.expect("recent");
    assert!(
        recent
            .iter()
            .all(|r| r.outcome == RunOutcome::Ok && r.trigger == Trigger::Http)
    );
    // Before it was pruned, the first pass marked the dead one.
    let app2 = TestApp::spawn().await;
    sqlx::query("INSERT INTO cron_run (id, holder, trigger) VALUES ($1, 'gone:1', 'cli')")
        .bind(dead)
        .execute(&app2.state.db)
        .await
        .expect("insert");
    ran(cron::run_steps(&app2.state, Trigger::Cli, Vec::new())
        .await
        .expect("pass"));
    assert_eq!(outcome_in_db(&app2, dead).await, "abandoned");
}

#[tokio::test]
async fn the_kernel_steps_clean_expired_uploads_and_stage_choices_of_ended_sessions() {
    let site = Site::new().await;
    let app = &site.app;
    let old = site
        .upload("public", "old.png", "image/png", crate::files::PNG)
        .await;
    let old_id: uuid::Uuid = old["id"].as_str().expect("id").parse().expect("uuid");
    sqlx::query("UPDATE file_managed SET changed = now() - interval '7 hours' WHERE id = $1")
        .bind(old_id)
        .execute(&app.state.db)
        .await
        .expect("age");
    let object = site.object_path(&old_id.to_string()).await;
    assert!(object.is_file());

    // Two sessions chose a stage; one of them has ended.
    let kv = &app.state.kv;
    let ended = "a".repeat(64);
    let alive = "b".repeat(64);
    for hash in [&ended, &alive] {
        let _: () = kv
            .query(
                redis::cmd("SET")
                    .arg(kv.slot_key("session:0000", &format!(":stage:{hash}")))
                    .arg("draft"),
            )
            .await
            .expect("set");
    }
    let _: () = kv
        .query(
            redis::cmd("SET")
                .arg(kv.slot_key("session:0000", &format!(":{alive}")))
                .arg("{}"),
        )
        .await
        .expect("set");

    let run = ran(cron::run(&app.state, Trigger::Cli).await.expect("pass"));
    assert_eq!(run.outcome, RunOutcome::Ok, "{:?}", run.steps);
    let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["files.cleanup", "sessions.stage_choices", "queue:batch"]
    );
    let gone: Option<i64> = sqlx::query_scalar("SELECT 1 FROM file_managed WHERE id = $1")
        .bind(old_id)
        .fetch_optional(&app.state.db)
        .await
        .expect("query");
    assert_eq!(gone, None, "the expired upload's row is gone");
    assert!(!object.exists(), "and its bytes");
    let exists = |hash: String| async move {
        let n: i64 = kv
            .query(redis::cmd("EXISTS").arg(kv.slot_key("session:0000", &format!(":stage:{hash}"))))
            .await
            .expect("exists");
        n == 1
    };
    assert!(
        !exists(ended.clone()).await,
        "the ended session's choice is forgotten"
    );
    assert!(
        exists(alive.clone()).await,
        "the live session's choice is kept"
    );
    assert!(
        run.steps[1].detail.contains("of 1 ended"),
        "{:?}",
        run.steps[1]
    );
}

async fn post_cron(app: &TestApp, key: Option<&str>) -> reqwest::Response {
    let mut req = crate::harness::client().post(app.url("/cron"));
    if let Some(key) = key {
        req = req.header("X-Cron-Key", key);
    }
    req.send().await.expect("POST /cron")
}

async fn runs(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM cron_run")
        .fetch_one(&app.state.db)
        .await
        .expect("count")
}

const KEY: &str = "a-scheduler-key-of-enough-length";

#[tokio::test]
async fn post_cron_needs_the_key_or_an_administrator() {
    let without = TestApp::spawn().await;
    let r = post_cron(&without, None).await;
    error_body(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let r = post_cron(&without, Some(KEY)).await;
    error_body(r, StatusCode::FORBIDDEN, "cron_key_disabled").await;
    assert_eq!(runs(&without).await, 0);

    let app = TestApp::spawn_with(|c| c.cron.key = Some(KEY.into()), axum::Router::new()).await;
    for wrong in [
        "",
        "a-scheduler-key-of-enough-lengtH",
        "a-scheduler-key-of-enough-length-",
    ] {
        let r = post_cron(&app, Some(wrong)).await;
        error_body(r, StatusCode::FORBIDDEN, "invalid_cron_key").await;
    }
    assert_eq!(runs(&app).await, 0, "no refused request ran cron");

    // A signed-in account without `administer site`.
    app.create_user("editor", "editor-password-1", false).await;
    app.login("editor", "editor-password-1").await;
    let r = app
        .client
        .post(app.url("/cron"))
        .header("X-CSRF-Token", app.csrf_token())
        .send()
        .await
        .expect("POST");
    error_body(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(runs(&app).await, 0);

    let body = expect_json(post_cron(&app, Some(KEY)).await, StatusCode::OK).await;
    assert_eq!(body["status"], "ran");
    assert_eq!(body["run"]["trigger"], "http");
    assert_eq!(body["run"]["outcome"], "ok");
    assert_eq!(runs(&app).await, 1);

    // While another server holds the lock: a busy success naming it.
    let _: () = app
        .state
        .kv
        .query(redis::cmd("SET").arg(lock_key(&app)).arg("web-7:99 nonce"))
        .await
        .expect("hold");
    let body = expect_json(post_cron(&app, Some(KEY)).await, StatusCode::OK).await;
    assert_eq!(body["status"], "busy");
    assert_eq!(body["holder"], "web-7:99");
    assert_eq!(runs(&app).await, 1);

    // An administrator's session (with its CSRF token) may run it too.
    let admin = TestApp::spawn().await;
    admin.sign_in_as_admin().await;
    let r = admin
        .client
        .post(admin.url("/cron"))
        .header("X-CSRF-Token", admin.csrf_token())
        .send()
        .await
        .expect("POST");
    let body = expect_json(r, StatusCode::OK).await;
    assert_eq!(body["status"], "ran");
    assert_eq!(runs(&admin).await, 1);
}

#[tokio::test]
async fn a_short_cron_key_is_refused_at_start() {
    let out = run_trovato(
        &["config"],
        &[
            ("TROVATO_CRON_KEY", "short"),
            ("TROVATO_CRON_LOCK_TTL_MS", "1000"),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cron.key (TROVATO_CRON_KEY)"), "{err}");
    assert!(!err.contains("short"), "the key is never echoed: {err}");
    let out = run_trovato(&["config"], &[("TROVATO_CRON_KEY", KEY)], None);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains(KEY), "the key is redacted: {shown}");
}

/// Three servers, each asked for a pass every 200 ms for 30 s, with a
/// plugin that makes every pass last a second: the recorded intervals
/// never overlap.
#[tokio::test]
async fn three_servers_triggered_together_never_overlap() {
    let plugins = SpinningCron::new();
    let cluster = Cluster::spawn_with_env(
        3,
        &[
            ("TROVATO_CRON_KEY", KEY),
            ("TROVATO_PLUGIN_DIR", plugins.path()),
            ("TROVATO_PLUGIN_BACKGROUND_DEADLINE", "1"),
            ("TROVATO_CRON_LOCK_TTL_MS", "2000"),
        ],
    )
    .await;
    let client = crate::harness::client();
    let until = Instant::now() + Duration::from_secs(30);
    let mut triggers = Vec::new();
    for node in &cluster.nodes {
        let url = node.url("/cron");
        let client = client.clone();
        triggers.push(tokio::spawn(async move {
            // A request every 200 ms, whether or not the last one answered,
            // as a scheduler would send them.
            let mut sent = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while Instant::now() < until {
                tick.tick().await;
                let request = client
                    .post(&url)
                    .header("X-Cron-Key", KEY)
                    .timeout(Duration::from_secs(120))
                    .send();
                sent.push(tokio::spawn(async move {
                    let r = request.await.expect("POST /cron");
                    assert_eq!(r.status(), StatusCode::OK);
                    let body: Value = r.json().await.expect("json");
                    body["status"].as_str().map(str::to_owned)
                }));
            }
            let (mut ran, mut busy) = (0u32, 0u32);
            for answer in sent {
                match answer.await.expect("request task").as_deref() {
                    Some("ran") => ran += 1,
                    Some("busy") => busy += 1,
                    other => panic!("unexpected status {other:?}"),
                }
            }
            (ran, busy)
        }));
    }
    let (mut ran, mut busy) = (0, 0);
    for t in triggers {
        let (r, b) = t.await.expect("trigger task");
        ran += r;
        busy += b;
    }
    let pool = sqlx::PgPool::connect(&cluster.db_url).await.expect("db");
    let intervals: Vec<(
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
        String,
    )> = sqlx::query_as("SELECT started, finished, holder FROM cron_run ORDER BY started")
        .fetch_all(&pool)
        .await
        .expect("runs");
    assert_eq!(
        intervals.len() as u32,
        ran,
        "every pass that ran is recorded"
    );
    assert!(ran >= 5, "passes ran: {ran}");
    assert!(busy > 0, "the servers contended: {busy} busy answers");
    let holders: std::collections::BTreeSet<&str> =
        intervals.iter().map(|(_, _, h)| h.as_str()).collect();
    assert!(
        holders.len() > 1,
        "more than one server ran passes: {holders:?}"
    );
    for pair in intervals.windows(2) {
        let (_, Some(prev_end), prev) = &pair[0] else {
            panic!("an unfinished pass: {pair:?}");
        };
        let (next_start, _, next) = &pair[1];
        assert!(
            next_start >= prev_end,
            "{next} started at {next_start} before {prev} finished at {prev_end}"
        );
    }
}

#[tokio::test]
async fn the_cli_runs_a_pass_says_who_holds_the_lock_and_shows_the_history() {
    let app = TestApp::spawn().await;
    let owned = app.cli_env();
    let env = env_refs(&owned);
    let out = run_trovato(&["cron"], &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("cron ran on "), "{stdout}");
    assert!(
        stdout.contains(": ok (files.cleanup ok; sessions.stage_choices ok; queue:batch ok)"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1);

    let _: () = app
        .state
        .kv
        .query(redis::cmd("SET").arg(lock_key(&app)).arg("web-2:7 nonce"))
        .await
        .expect("hold");
    let out = run_trovato(&["cron"], &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "busy is not a failure");
    assert_eq!(
        stdout.trim(),
        "cron skipped: another server holds the lock (web-2:7)"
    );

    let out = run_trovato(&["cron", "status", "--last", "5"], &env, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the one pass: {stdout}");
    assert!(
        lines[1].contains(" ok ") && lines[1].contains("files.cleanup=ok"),
        "{stdout}"
    );

    // Without Redis it cannot run: non-zero, and says why.
    let mut broken = env.clone();
    broken[1] = ("REDIS_URL", "redis://127.0.0.1:1");
    let out = run_trovato(&["cron", "--connect-timeout", "2"], &broken, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis"));
}

#[tokio::test]
async fn a_killed_holder_leaves_a_lock_that_lapses_within_its_lifetime() {
    let plugins = SpinningCron::new();
    let app = TestApp::spawn().await;
    let mut env = app.cli_env();
    env.retain(|(k, _)| k != "TROVATO_PLUGIN_DIR");
    env.push(("TROVATO_PLUGIN_DIR".into(), plugins.path().into()));
    env.push(("TROVATO_PLUGIN_BACKGROUND_DEADLINE".into(), "600".into()));
    env.push(("TROVATO_CRON_LOCK_TTL_MS".into(), "2000".into()));
    let mut cmd = Command::new(crate::harness::trovato_bin());
    cmd.arg("cron")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn trovato cron");
    // The pass holds the lock and has recorded itself (the row comes just
    // after the lock): it is in the spinning tap.
    eventually(PATIENCE, || async {
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM cron_run WHERE outcome = 'running'")
                .fetch_one(&app.state.db)
                .await
                .unwrap_or(0);
        lock_value(&app).await.is_some() && recorded == 1
    })
    .await
    .expect("the pass takes the lock and records itself");
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let pttl: i64 = app
        .state
        .kv
        .query(redis::cmd("PTTL").arg(lock_key(&app)))
        .await
        .expect("pttl");
    assert!(
        (-2..=2000).contains(&pttl),
        "the orphaned lock lapses within one lifetime (PTTL {pttl})"
    );
    let deadline = Instant::now() + PATIENCE;
    let next = loop {
        if let Pass::Ran(run) = cron::run_steps(&app.state, Trigger::Cli, Vec::new())
            .await
            .expect("pass")
        {
            break run;
        }
        assert!(Instant::now() < deadline, "the orphaned lock never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead: String = sqlx::query_scalar("SELECT outcome FROM cron_run WHERE id <> $1")
        .bind(next.id)
        .fetch_one(&app.state.db)
        .await
        .expect("the killed pass's row");
    assert_eq!(dead, "abandoned");
}

/// The shipped units, with the binary and environment file pointed at
/// this checkout's, pass `systemd-analyze verify` without a word.
#[test]
fn the_systemd_cron_units_verify_clean() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let dir = std::env::temp_dir().join(format!("trovato-units-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let env_file = dir.join("trovato.env");
    std::fs::write(&env_file, "").expect("env file");
    for unit in [
        "trovato-cron.service",
        "trovato-cron.timer",
        "trovato.service",
    ] {
        let text = std::fs::read_to_string(deploy.join(unit)).expect("unit");
        let text = text
            .replace("/usr/local/bin/trovato", crate::harness::trovato_bin())
            .replace(
                "/etc/trovato/trovato.env",
                env_file.to_str().expect("utf-8"),
            );
        std::fs::write(dir.join(unit), text).expect("write unit");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("./trovato-cron.timer")
        .arg("./trovato-cron.service")
        .arg("./trovato.service")
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze (Debian package systemd) runs");
    let _ = std::fs::remove_dir_all(&dir);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "systemd-analyze complained: {said}");
    let timer = std::fs::read_to_string(deploy.join("trovato-cron.timer")).expect("timer");
    assert!(timer.contains("Unit=trovato-cron.service"));
}
