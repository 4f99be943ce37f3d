//! The plugin runtime: the Rust example plugin end to end, dispatch order,
//! dependencies, enable/disable, every fault fixture, isolation, and the
//! kernel serving on while a plugin misbehaves.
//!
//! The Rust example plugins are built by `scripts/build-plugins`; the fault
//! fixtures are `.wat` files under `tests/plugins/`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trovato::Config;
use trovato::plugin::{PluginError, postgres};

use crate::harness::{Cluster, PATIENCE, TestApp, client, eventually, run_trovato, services};

/// A throw-away plugin directory assembled from examples, fixtures and
/// generated modules; removed on drop.
struct PluginDir {
    path: PathBuf,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins")
}

impl PluginDir {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("trovato-plugins-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&path).expect("create plugin dir");
        Self { path }
    }

    fn copy_dir(&self, from: &Path, name: &str) {
        let to = self.path.join(name);
        std::fs::create_dir_all(&to).expect("mkdir");
        for ext in ["info.toml", "wasm", "wat"] {
            let f = from.join(format!("{name}.{ext}"));
            if f.is_file() {
                std::fs::copy(&f, to.join(format!("{name}.{ext}"))).expect("copy");
            }
        }
    }

    /// A fault fixture from `tests/plugins`.
    fn fixture(self, name: &str) -> Self {
        self.copy_dir(&fixtures().join(name), name);
        self
    }

    /// A Rust example plugin from `plugins/`, which must have been built.
    fn example(self, name: &str) -> Self {
        let dir = examples().join(name);
        assert!(
            dir.join(format!("{name}.wasm")).is_file(),
            "plugins/{name}/{name}.wasm is missing: run scripts/build-plugins before the tests"
        );
        self.copy_dir(&dir, name);
        self
    }

    /// A generated plugin implementing `tap_order` that returns its own
    /// name as a JSON string. `extra` is appended to the manifest.
    fn named(self, name: &str, extra: &str) -> Self {
        let out = format!("\\\"{name}\\\"");
        let len = name.len() + 2;
        let packed = (16u64 << 32) | len as u64;
        let wat = format!(
            r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{out}")
  (func (export "trovato_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "tap_order") (param i32 i32) (result i64) (i64.const {packed})))"#
        );
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{name}.wat")), wat).expect("write wat");
        std::fs::write(
            dir.join(format!("{name}.info.toml")),
            format!("name = \"{name}\"\nversion = \"1.0\"\ntaps = [\"tap_order\"]\n{extra}\n"),
        )
        .expect("write manifest");
        self
    }

    /// A generated plugin whose `tap_run` logs one line through the host's
    /// `log` (so a test knows it is running guest code), then loops until
    /// its deadline.
    fn announcing_loop(self, name: &str) -> Self {
        let wat = r#"(module
  (import "trovato" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "looping")
  (func (export "trovato_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "tap_run") (param i32 i32) (result i64)
    (call $log (i32.const 2) (i32.const 16) (i32.const 7))
    (loop $forever (br $forever))
    (i64.const 0)))"#;
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("{name}.wat")), wat).expect("write wat");
        std::fs::write(
            dir.join(format!("{name}.info.toml")),
            format!("name = \"{name}\"\nversion = \"1.0\"\ntaps = [\"tap_run\"]\n"),
        )
        .expect("write manifest");
        self
    }

    fn path(&self) -> String {
        self.path.to_str().expect("utf-8 temp path").to_owned()
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

async fn spawn(dir: &PluginDir, customise: impl FnOnce(&mut Config)) -> TestApp {
    let path = dir.path.clone();
    TestApp::spawn_with(
        move |c| {
            // One data directory (the compile cache) for every test, so
            // the in-process kernels share one engine and its reservation.
            c.server.data_dir = std::env::temp_dir().join("trovato-plugin-tests-data");
            c.plugin.dir = path;
            customise(c);
        },
        axum::Router::new(),
    )
    .await
}

fn names(outcomes: &[trovato::plugin::TapOutcome]) -> Vec<String> {
    outcomes.iter().map(|o| o.plugin.clone()).collect()
}

fn item() -> Value {
    json!({
        "id": "01936b2e-7f7a-7c3e-9a51-2b1f3c4d5e6f",
        "type": "article",
        "title": "Plugins in a sandbox",
        "fields": {
            "field_body": {"value": "four words of body"},
            "field_count": {"value": 7}
        }
    })
}

#[tokio::test]
async fn the_rust_example_plugin_returns_the_item_with_its_word_count() {
    let dir = PluginDir::new().example("word_count").example("cron_log");
    let app = spawn(&dir, |_| {}).await;
    let out = app
        .state
        .plugins
        .invoke("word_count", "tap_item_update_index", &item())
        .await
        .expect("tap runs")
        .expect("tap has output");
    let out: Value = serde_json::from_str(out.get()).expect("json");
    assert_eq!(out["word_count"], 8, "{out}");
    assert_eq!(out["stamped_by"], "word_count");
    assert_eq!(out["title"], "Plugins in a sandbox", "input fields survive");
    assert_eq!(out["fields"]["field_count"]["value"], 7);

    let all = app
        .state
        .plugins
        .invoke_all("tap_item_update_index", &item())
        .await;
    assert_eq!(names(&all), vec!["word_count"]);
    let cron = app
        .state
        .plugins
        .invoke_all("tap_cron", &json!({"timestamp": 1}))
        .await;
    assert_eq!(names(&cron), vec!["cron_log"]);
    assert!(
        matches!(cron[0].result, Ok(None)),
        "tap_cron has no output: {:?}",
        cron[0].result
    );
}

#[tokio::test]
async fn taps_run_in_weight_order_with_ties_broken_by_name() {
    let dir = PluginDir::new()
        .named("heavy", "weight = 10")
        .named("zeta", "weight = -5")
        .named("alpha", "weight = -5")
        .named("plain", "");
    let app = spawn(&dir, |_| {}).await;
    let outcomes = app.state.plugins.invoke_all("tap_order", &json!({})).await;
    assert_eq!(names(&outcomes), vec!["alpha", "zeta", "plain", "heavy"]);
    for o in &outcomes {
        let out = o.result.as_ref().expect("ok").as_ref().expect("output");
        assert_eq!(out.get(), format!("\"{}\"", o.plugin));
    }
}

#[tokio::test]
async fn a_dependency_cycle_or_missing_dependency_disables_only_the_plugins_involved() {
    let dir = PluginDir::new()
        .named("base", "")
        .named("needs_base", "dependencies = [\"base\"]\nweight = 1")
        .named("cyc_a", "dependencies = [\"cyc_b\"]")
        .named("cyc_b", "dependencies = [\"cyc_a\"]")
        .named("needs_cycle", "dependencies = [\"cyc_a\"]")
        .named("orphan", "dependencies = [\"ghost\"]");
    // The kernel starts and serves.
    let app = spawn(&dir, |_| {}).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    let outcomes = app.state.plugins.invoke_all("tap_order", &json!({})).await;
    assert_eq!(names(&outcomes), vec!["base", "needs_base"]);

    let list = app.state.plugins.list();
    let status = |n: &str| {
        let p = list.iter().find(|p| p.name == n).expect("listed");
        (p.status, p.error.clone().unwrap_or_default())
    };
    assert_eq!(status("base").0, "active");
    let (s, e) = status("cyc_a");
    assert_eq!(s, "failed");
    assert!(e.contains("cyc_a -> cyc_b -> cyc_a"), "{e}");
    assert!(status("cyc_b").1.contains("cycle"));
    let (s, e) = status("orphan");
    assert_eq!(s, "failed");
    assert!(e.contains("ghost"), "{e}");
    assert_eq!(status("needs_cycle").0, "failed");

    let err = app
        .state
        .plugins
        .invoke("cyc_a", "tap_order", &json!({}))
        .await
        .expect_err("cycle");
    assert!(
        matches!(&err, PluginError::CircularDependency { plugin, .. } if plugin == "cyc_a"),
        "{err:?}"
    );
    let err = app
        .state
        .plugins
        .invoke("orphan", "tap_order", &json!({}))
        .await
        .expect_err("missing");
    assert!(
        matches!(&err, PluginError::MissingDependency { dependency, .. } if dependency == "ghost"),
        "{err:?}"
    );

    // Disabling a dependency holds its dependents back too.
    app.state
        .plugins
        .set_enabled(&app.state.db, "base", false)
        .await
        .expect("disable");
    assert!(
        app.state
            .plugins
            .invoke_all("tap_order", &json!({}))
            .await
            .is_empty()
    );
    let list = app.state.plugins.list();
    let needs = list
        .iter()
        .find(|p| p.name == "needs_base")
        .expect("listed");
    assert_eq!(needs.status, "inactive");
    assert!(needs.enabled);
}

#[tokio::test]
async fn disabling_a_plugin_is_stored_and_stops_dispatch_until_enabled_again() {
    let dir = PluginDir::new().named("first", "").named("second", "");
    let app = spawn(&dir, |_| {}).await;
    let plugins = &app.state.plugins;
    let db = &app.state.db;
    assert_eq!(postgres::stored_state(db, "first").await.expect("q"), None);

    plugins
        .set_enabled(db, "first", false)
        .await
        .expect("disable");
    assert_eq!(
        postgres::stored_state(db, "first").await.expect("q"),
        Some(false)
    );
    let outcomes = plugins.invoke_all("tap_order", &json!({})).await;
    assert_eq!(names(&outcomes), vec!["second"]);
    let err = plugins
        .invoke("first", "tap_order", &json!({}))
        .await
        .expect_err("disabled");
    assert!(matches!(err, PluginError::Disabled { .. }), "{err:?}");

    // A kernel started later reads the stored choice.
    let later =
        trovato::plugin::Plugins::load(&app.state.config.plugin, &app.state.config.server.data_dir)
            .await;
    later.sync_enabled(db).await.expect("sync");
    assert_eq!(
        names(&later.invoke_all("tap_order", &json!({})).await),
        vec!["second"]
    );

    plugins
        .set_enabled(db, "first", true)
        .await
        .expect("enable");
    assert_eq!(
        postgres::stored_state(db, "first").await.expect("q"),
        Some(true)
    );
    assert_eq!(
        names(&plugins.invoke_all("tap_order", &json!({})).await),
        vec!["first", "second"]
    );

    let err = plugins
        .set_enabled(db, "nonexistent", false)
        .await
        .expect_err("unknown plugin");
    assert!(err.to_string().contains("not found"), "{err}");
    assert_eq!(
        postgres::stored_state(db, "nonexistent").await.expect("q"),
        None
    );
}

#[tokio::test]
async fn a_status_change_made_by_another_process_reaches_a_running_kernel() {
    let dir = PluginDir::new().named("first", "").named("second", "");
    let app = spawn(&dir, |_| {}).await;
    // What `trovato plugin disable first` run elsewhere writes.
    postgres::set_enabled(&app.state.db, "first", false)
        .await
        .expect("write");
    let plugins = app.state.plugins.clone();
    let took = eventually(PATIENCE, || {
        let plugins = plugins.clone();
        async move { names(&plugins.invoke_all("tap_order", &json!({})).await) == vec!["second"] }
    })
    .await;
    assert!(
        took.is_some(),
        "the running kernel still dispatches to `first`"
    );
}

/// Another kernel's plugin registry on `app`'s database, re-reading the
/// status every `period`, with both test plugins enabled.
async fn other_registry(app: &TestApp, period: Duration) -> trovato::plugin::Plugins {
    let other =
        trovato::plugin::Plugins::load(&app.state.config.plugin, &app.state.config.server.data_dir)
            .await;
    other.sync_enabled(&app.state.db).await.expect("sync");
    other.spawn_status_refresh(
        app.state.db.clone(),
        app.state.config.db.url.clone().expect("database url"),
        period,
        &app.state.tasks,
    );
    assert_eq!(
        names(&other.invoke_all("tap_order", &json!({})).await),
        vec!["first", "second"]
    );
    other
}

#[tokio::test]
async fn a_status_change_nobody_announced_reaches_a_running_kernel_at_its_next_reread() {
    let dir = PluginDir::new().named("first", "").named("second", "");
    let app = spawn(&dir, |_| {}).await;
    // A kernel that re-reads often, so waiting for its period is cheap;
    // the kernel under test re-reads every hour, so it cannot be the one
    // that changes.
    let other = other_registry(&app, Duration::from_millis(100)).await;
    // Written without the notification (as when the listener was down and
    // missed it): only the periodic re-read can bring it.
    sqlx::query(
        "INSERT INTO plugin_status (name, enabled) VALUES ('first', false)
         ON CONFLICT (name) DO UPDATE SET enabled = false",
    )
    .execute(&app.state.db)
    .await
    .expect("write");
    let reached = eventually(PATIENCE, || {
        let other = other.clone();
        async move { names(&other.invoke_all("tap_order", &json!({})).await) == vec!["second"] }
    })
    .await;
    assert!(reached.is_some(), "the periodic re-read never applied it");
}

#[tokio::test]
async fn a_status_change_is_announced_to_running_kernels_without_waiting_for_the_poll() {
    let dir = PluginDir::new().named("first", "").named("second", "");
    let app = spawn(&dir, |_| {}).await;
    // Another kernel on the same database whose periodic re-read comes only
    // after an hour: the change can reach it only as a notification.
    let other = other_registry(&app, Duration::from_secs(3600)).await;

    app.state
        .plugins
        .set_enabled(&app.state.db, "first", false)
        .await
        .expect("disable");
    let reached = |want: Vec<&'static str>| {
        let other = other.clone();
        eventually(PATIENCE, move || {
            let (other, want) = (other.clone(), want.clone());
            async move { names(&other.invoke_all("tap_order", &json!({})).await) == want }
        })
    };
    assert!(
        reached(vec!["second"]).await.is_some(),
        "the disable never reached the other kernel"
    );

    // And the way back, written as `trovato plugin enable first` would.
    postgres::set_enabled(&app.state.db, "first", true)
        .await
        .expect("enable");
    assert!(
        reached(vec!["first", "second"]).await.is_some(),
        "the enable never reached the other kernel"
    );
}

/// Whether an error is the variant a fixture must produce.
type Expect = fn(&PluginError) -> bool;

/// Each fault fixture and the variant it must produce.
fn fault_cases() -> Vec<(&'static str, Expect)> {
    vec![
        (
            "trap",
            |e| matches!(e, PluginError::Trap { reason, .. } if reason.contains("unreachable")),
        ),
        ("infinite_loop", |e| {
            matches!(e, PluginError::Timeout { .. })
        }),
        (
            "looping_alloc",
            |e| matches!(e, PluginError::Trap { reason, .. } if reason.contains("trovato_alloc used over")),
        ),
        (
            "looping_start",
            |e| matches!(e, PluginError::Trap { reason, .. } if reason.contains("the start function used over")),
        ),
        ("grow_bomb", |e| {
            matches!(e, PluginError::OutOfMemory { .. })
        }),
        ("deep_recursion", |e| {
            matches!(e, PluginError::StackOverflow { .. })
        }),
        ("bad_utf8", |e| matches!(e, PluginError::InvalidUtf8 { .. })),
        ("not_json", |e| {
            matches!(e, PluginError::Serialization { .. })
        }),
        ("bad_pointer", |e| {
            matches!(e, PluginError::BadOutput { .. })
        }),
        ("no_memory", |e| {
            matches!(e, PluginError::MissingMemory { .. })
        }),
        (
            "no_alloc",
            |e| matches!(e, PluginError::MissingExport { export, .. } if export == "trovato_alloc"),
        ),
        (
            "unknown_import",
            |e| matches!(e, PluginError::UnknownImport { import, .. } if import == "env::now"),
        ),
        ("huge_output", |e| {
            matches!(e, PluginError::OutputTooLarge { len: 5_242_880, .. })
        }),
    ]
}

#[tokio::test]
async fn every_fault_fixture_yields_its_error_is_counted_and_the_kernel_keeps_serving() {
    let mut dir = PluginDir::new();
    for (name, _) in fault_cases() {
        dir = dir.fixture(name);
    }
    let dir = dir.fixture("fresh_memory");
    let app = spawn(&dir, |_| {}).await;
    for (name, expected) in fault_cases() {
        let err = app
            .state
            .plugins
            .invoke(name, "tap_run", &json!({"n": 1}))
            .await
            .expect_err(name);
        assert!(expected(&err), "{name}: unexpected {err:?}");
        assert!(
            err.to_string().contains(name),
            "{name}: the error names the plugin: {err}"
        );
        // A healthy plugin still works right after each failure.
        let ok = app
            .state
            .plugins
            .invoke("fresh_memory", "tap_run", &json!({}))
            .await
            .expect("healthy plugin")
            .expect("output");
        assert_eq!(ok.get(), "1");
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    }
    // Every failing fixture is skipped by dispatch-all, not fatal to it.
    let listed = app.state.plugins.list();
    for name in ["no_memory", "no_alloc", "unknown_import"] {
        let p = listed.iter().find(|p| p.name == name).expect("listed");
        assert_eq!(p.status, "failed", "{name}");
    }
    let all = app.state.plugins.invoke_all("tap_run", &json!({})).await;
    let ok: Vec<_> = all.iter().filter(|o| o.result.is_ok()).collect();
    assert_eq!(ok.len(), 1, "only fresh_memory succeeds: {all:?}");
    assert_eq!(
        all.len(),
        11,
        "the 10 run-time faults and fresh_memory ran: {all:?}"
    );

    let text = app.get("/metrics").await.text().await.expect("metrics");
    for (name, kind) in [
        ("trap", "trap"),
        ("infinite_loop", "timeout"),
        ("looping_alloc", "trap"),
        ("looping_start", "trap"),
        ("grow_bomb", "out_of_memory"),
        ("deep_recursion", "stack_overflow"),
        ("bad_utf8", "invalid_utf8"),
        ("not_json", "serialization"),
        ("bad_pointer", "bad_output"),
        ("huge_output", "output_too_large"),
        ("no_memory", "missing_memory"),
        ("no_alloc", "missing_export"),
        ("unknown_import", "unknown_import"),
    ] {
        let counted = text.lines().any(|l| {
            l.starts_with("trovato_plugin_failures_total{")
                && l.contains(&format!("plugin=\"{name}\""))
                && l.contains(&format!("kind=\"{kind}\""))
        });
        assert!(counted, "{name}/{kind} not counted:\n{text}");
    }
    assert!(
        text.contains("trovato_plugin_tap_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("trovato_plugin_instances_active"), "{text}");
}

/// Counts the log lines plugins write through the host's `log`.
struct GuestLines(tokio::sync::watch::Sender<usize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for GuestLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "trovato::plugin::guest" {
            self.0.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_answered_while_looping_plugins_hold_more_invocations_than_workers() {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::layer::SubscriberExt;

    let dir = PluginDir::new().announcing_loop("spinner");
    // A deadline far beyond the requests: the loops are still running when
    // they are made, whatever the machine's load. Not longer: were the
    // loops to hold the workers, nothing (not even the test's timeouts)
    // would run until they end, and the test fails only then. Deadlines
    // themselves are checked by the fault fixtures; how closely they are
    // kept is measured by `benches/plugin_tap.rs`.
    let app = spawn(&dir, |c| c.plugin.request_deadline_ms = 60_000).await;
    let (tx, mut running) = tokio::sync::watch::channel(0usize);
    let seen: tracing::Dispatch = tracing_subscriber::registry().with(GuestLines(tx)).into();
    // More looping invocations than worker threads: without yielding they
    // would hold every worker, and neither the other loops nor the server
    // would run.
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let plugins = app.state.plugins.clone();
            tokio::spawn(
                async move { plugins.invoke("spinner", "tap_run", &json!({})).await }
                    .with_subscriber(seen.clone()),
            )
        })
        .collect();
    tokio::time::timeout(PATIENCE, running.wait_for(|n| *n >= 4))
        .await
        .expect("four loops never ran at once on two workers")
        .expect("watch alive");
    for _ in 0..5 {
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    }
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "the loops ended before the requests were answered"
    );
    for l in loops {
        l.abort();
        assert!(l.await.expect_err("aborted").is_cancelled());
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_invocations_never_see_each_others_memory() {
    let dir = PluginDir::new().fixture("fresh_memory");
    let app = spawn(&dir, |_| {}).await;
    let plugins = &app.state.plugins;
    for _ in 0..3 {
        let out = plugins
            .invoke("fresh_memory", "tap_run", &json!({}))
            .await
            .expect("ok")
            .expect("output");
        assert_eq!(out.get(), "1");
    }
    let concurrent: Vec<_> = (0..32)
        .map(|_| {
            let p = plugins.clone();
            tokio::spawn(async move { p.invoke("fresh_memory", "tap_run", &json!({})).await })
        })
        .collect();
    for c in concurrent {
        let out = c.await.expect("join").expect("ok").expect("output");
        assert_eq!(out.get(), "1");
    }
}

#[tokio::test]
async fn the_memory_and_output_caps_are_configurable() {
    let dir = PluginDir::new().example("word_count");
    // 100 bytes of output at most; the example returns more.
    let app = spawn(&dir, |c| c.plugin.output_limit_bytes = 100).await;
    let err = app
        .state
        .plugins
        .invoke("word_count", "tap_item_update_index", &item())
        .await
        .expect_err("too large");
    assert!(
        matches!(err, PluginError::OutputTooLarge { limit: 100, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_module_whose_initial_memory_exceeds_the_cap_fails_to_load() {
    // huge_output starts with 81 pages (5.1 MiB).
    let dir = PluginDir::new().fixture("huge_output").fixture("trap");
    let app = spawn(&dir, |c| c.plugin.memory_limit_bytes = 4 * 1024 * 1024).await;
    let err = app
        .state
        .plugins
        .invoke("huge_output", "tap_run", &json!({}))
        .await
        .expect_err("over the cap");
    assert!(
        matches!(&err, PluginError::InvalidModule { reason, .. } if reason.contains("limit")),
        "{err:?}"
    );
    // The other plugin is unaffected.
    let err = app
        .state
        .plugins
        .invoke("trap", "tap_run", &json!({}))
        .await
        .expect_err("traps");
    assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
}

#[tokio::test]
async fn plugin_list_requires_an_administrator() {
    let dir = PluginDir::new().example("word_count").fixture("trap");
    let app = spawn(&dir, |_| {}).await;

    let anon = app.get("/api/plugins").await;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anon.json().await.expect("json");
    assert_eq!(body["error"], "unauthenticated");

    app.create_user("pat", "a long enough password", false)
        .await;
    let pat = client();
    let resp = pat
        .post(app.url("/user/login"))
        .json(&json!({"name": "pat", "password": "a long enough password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = pat.get(app.url("/api/plugins")).send().await.expect("get");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "forbidden");

    app.create_user("root", "a long enough password", true)
        .await;
    assert_eq!(
        app.login("root", "a long enough password").await.status(),
        StatusCode::OK
    );
    let resp = app.get("/api/plugins").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("json");
    let plugins = body["plugins"].as_array().expect("plugins");
    let wc = plugins
        .iter()
        .find(|p| p["name"] == "word_count")
        .expect("word_count listed");
    assert_eq!(wc["status"], "active");
    assert_eq!(wc["enabled"], true);
    assert_eq!(wc["version"], "0.1.0");
    assert_eq!(wc["taps"], json!(["tap_item_update_index"]));

    let doc: Value = app
        .get("/api/openapi.json")
        .await
        .json()
        .await
        .expect("json");
    assert!(doc["paths"]["/api/plugins"]["get"].is_object(), "{doc}");
}

impl PluginDir {
    /// Runs the CLI on this plugin directory (see [`run_cli`]).
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_cli(args, &[("TROVATO_PLUGIN_DIR", &self.path())], stdin)
    }
}

/// Runs the CLI with JSON logs at info, and the compile cache inside the
/// plugin directory given in `env`.
fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let data_dir = env
        .iter()
        .find(|(k, _)| *k == "TROVATO_PLUGIN_DIR")
        .map(|(_, v)| format!("{v}/.data"));
    let mut all = vec![("TROVATO_LOG_FORMAT", "json"), ("RUST_LOG", "info")];
    all.extend_from_slice(env);
    if let Some(d) = &data_dir {
        all.push(("TROVATO_DATA_DIR", d));
    }
    run_trovato(args, &all, stdin)
}

#[test]
fn plugin_invoke_runs_a_tap_without_a_database() {
    let dir = PluginDir::new().example("word_count");
    let o = dir.cli(
        &[
            "plugin",
            "invoke",
            "word_count",
            "tap_item_update_index",
            "--input",
            "-",
        ],
        Some(&item().to_string()),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let out: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert_eq!(out["word_count"], 8);
    let line = stderr
        .lines()
        .find(|l| l.contains("Tap invocation complete"))
        .expect("invocation logged");
    let line: Value = serde_json::from_str(line).expect("json log");
    assert_eq!(line["fields"]["plugin"], "word_count");
    assert_eq!(line["fields"]["tap"], "tap_item_update_index");
    assert_eq!(line["fields"]["outcome"], "ok");
    assert!(line["fields"]["duration_us"].is_number(), "{line}");
    assert!(
        line["fields"]["payload_bytes"].as_u64().unwrap_or(0) > 100,
        "{line}"
    );

    let o = dir.cli(
        &[
            "plugin",
            "invoke",
            "word_count",
            "tap_item_update_index",
            "--input",
            "[1, 2]",
        ],
        None,
    );
    assert!(!o.status.success(), "a non-object input traps");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("cannot deserialize the tap input") && stderr.contains("trapped"),
        "the plugin's own error is logged before the trap: {stderr}"
    );
    let o = dir.cli(
        &["plugin", "invoke", "word_count", "tap_x", "--input", "nope"],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not JSON"));
    let o = dir.cli(&["plugin", "invoke", "nothing_here", "tap_x"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
}

#[test]
fn plugin_invoke_reports_each_fault_on_stderr_and_in_the_log() {
    let mut dir = PluginDir::new();
    for (name, _) in fault_cases() {
        dir = dir.fixture(name);
    }
    for (name, kind) in [
        ("trap", "trap"),
        ("infinite_loop", "timeout"),
        ("grow_bomb", "out_of_memory"),
        ("deep_recursion", "stack_overflow"),
        ("bad_utf8", "invalid_utf8"),
        ("not_json", "serialization"),
        ("bad_pointer", "bad_output"),
        ("huge_output", "output_too_large"),
    ] {
        let o = dir.cli(&["plugin", "invoke", name, "tap_run"], None);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name}");
        assert!(o.stdout.is_empty(), "{name}: nothing on stdout");
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("trovato: plugin `") && last.contains(name),
            "{name}: {stderr}"
        );
        assert!(
            stderr.lines().any(|l| l.contains("Tap invocation complete")
                && l.contains(&format!("\"outcome\":\"{kind}\""))),
            "{name}: {stderr}"
        );
    }
    for name in ["no_memory", "no_alloc", "unknown_import"] {
        let o = dir.cli(&["plugin", "invoke", name, "tap_run"], None);
        assert!(!o.status.success(), "{name}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(name));
    }
}

#[test]
fn a_plugin_log_line_reaches_the_kernel_log_with_the_plugin_name() {
    let dir = PluginDir::new().example("cron_log");
    let o = dir.cli(
        &[
            "plugin",
            "invoke",
            "cron_log",
            "tap_cron",
            "--input",
            "{\"timestamp\": 42}",
        ],
        None,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "null",
        "no output"
    );
    let line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "cron_log: cron ran at 42")
        .unwrap_or_else(|| panic!("guest log line missing: {stderr}"));
    assert_eq!(line["fields"]["plugin"], "cron_log");
    assert_eq!(line["fields"]["tap"], "tap_cron");
    assert_eq!(line["level"], "INFO");
}

#[test]
fn wasi_output_reaches_the_log_and_no_file_can_be_opened() {
    let dir = PluginDir::new().fixture("wasi_hello");
    let o = dir.cli(&["plugin", "invoke", "wasi_hello", "tap_run"], None);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // path_open on an fd that is not a preopened directory: EBADF (8).
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "\"08\"");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("hello from wasi") && l.contains("wasi_hello")),
        "{stderr}"
    );
}

#[tokio::test]
async fn plugin_list_enable_and_disable_commands_manage_the_stored_state() {
    let s = services().await;
    let dir = PluginDir::new()
        .example("cron_log")
        .fixture("trap")
        .fixture("no_alloc");
    let (name, db_url) = crate::harness::services::create_test_database().await;
    let prefix = crate::harness::test_prefix();
    let plugin_dir = dir.path();
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("REDIS_URL", s.redis_url.as_str()),
        ("TROVATO_REDIS_PREFIX", prefix.as_str()),
        ("TROVATO_PLUGIN_DIR", plugin_dir.as_str()),
    ];
    let o = run_cli(&["plugin", "disable", "cron_log"], &env, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pool = sqlx::PgPool::connect(&db_url).await.expect("db");
    assert_eq!(
        postgres::stored_state(&pool, "cron_log").await.expect("q"),
        Some(false)
    );

    let o = run_cli(&["plugin", "list"], &env, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let row = |n: &str| {
        out.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} listed: {out}"))
            .to_owned()
    };
    assert!(
        row("cron_log").contains("no") && row("cron_log").contains("disabled"),
        "{out}"
    );
    assert!(row("cron_log").contains("tap_cron"), "{out}");
    assert!(row("trap").contains("active"), "{out}");
    assert!(row("no_alloc").contains("failed"), "{out}");
    assert!(out.contains("lacks export `trovato_alloc`"), "{out}");

    let o = run_cli(&["plugin", "enable", "cron_log"], &env, None);
    assert!(o.status.success());
    assert_eq!(
        postgres::stored_state(&pool, "cron_log").await.expect("q"),
        Some(true)
    );
    let o = run_cli(&["plugin", "enable", "ghost"], &env, None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("`ghost` not found"));
    pool.close().await;
    crate::harness::services::cleanup(name, prefix);
}

#[tokio::test]
async fn a_server_with_broken_plugins_starts_and_logs_why() {
    let dir = PluginDir::new()
        .fixture("unknown_import")
        .fixture("no_memory")
        .named("cyc_a", "dependencies = [\"cyc_b\"]")
        .named("cyc_b", "dependencies = [\"cyc_a\"]");
    let plugin_dir = dir.path();
    let data_dir = format!("{plugin_dir}/.data");
    let cluster = Cluster::spawn_with_env(
        1,
        &[
            ("TROVATO_PLUGIN_DIR", plugin_dir.as_str()),
            ("TROVATO_DATA_DIR", data_dir.as_str()),
        ],
    )
    .await;
    let node = &cluster.nodes[0];
    let resp = reqwest::get(node.url("/healthz")).await.expect("healthz");
    assert_eq!(resp.status(), StatusCode::OK);
    for needle in [
        "plugin failed to load",
        "env::now",
        "cyc_a -> cyc_b -> cyc_a",
        "missing_memory",
    ] {
        assert!(
            node.logs_contain(needle),
            "{needle}: {:?}",
            node.logs.lock().map(|l| l.clone())
        );
    }
}

#[test]
fn every_plugin_command_has_help() {
    for args in [
        vec!["plugin", "--help"],
        vec!["plugin", "list", "--help"],
        vec!["plugin", "enable", "--help"],
        vec!["plugin", "disable", "--help"],
        vec!["plugin", "invoke", "--help"],
    ] {
        let o = run_cli(&args, &[], None);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// Invocations of `tap` by `plugin` that succeeded, per `/metrics`.
fn ok_invocations(metrics: &str, plugin: &str, tap: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("trovato_plugin_tap_duration_seconds_count{"))
        .filter(|l| {
            l.contains(&format!("plugin=\"{plugin}\""))
                && l.contains(&format!("tap=\"{tap}\""))
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn item_create_update_and_delete_invoke_the_item_taps() {
    let dir = PluginDir::new().fixture("item_audit");
    let app = spawn(&dir, |_| {}).await;
    app.sign_in_as_admin().await;
    app.create_article_type().await;
    let count = |tap: &'static str| {
        let app = &app;
        async move {
            let text = app.get("/metrics").await.text().await.expect("metrics");
            ok_invocations(&text, "item_audit", tap)
        }
    };
    let before = (
        count("tap_item_insert").await,
        count("tap_item_update").await,
        count("tap_item_delete").await,
    );

    let item = app.create_item("Audited", None).await;
    let id = item["id"].as_str().expect("id").to_owned();
    assert_eq!(count("tap_item_insert").await, before.0 + 1);

    app.rename_item(&id, "Audited again", None).await;
    assert_eq!(count("tap_item_update").await, before.1 + 1);

    let deleted = app
        .json_request(reqwest::Method::DELETE, &format!("/api/items/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(count("tap_item_delete").await, before.2 + 1);
    assert_eq!(
        count("tap_item_insert").await,
        before.0 + 1,
        "no extra insert taps"
    );
}
