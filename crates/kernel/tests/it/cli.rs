//! The `trovato` command: configuration errors are one line naming the
//! setting and a non-zero exit; `user create` and `migrate` work.

use std::process::Output;

use crate::harness::{run_trovato, services};

/// Runs the binary with a short start-up timeout, so unreachable services
/// fail fast.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec![("TROVATO_CONNECT_TIMEOUT", "2")];
    all.extend_from_slice(env);
    run_trovato(args, &all, None)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_is_available_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["user", "--help"],
        vec!["user", "create", "--help"],
        vec!["user", "token", "--help"],
    ] {
        let o = run(&args, &[]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn malformed_database_url_is_a_one_line_error_naming_the_setting() {
    let o = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "not a url"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn malformed_listen_address_names_the_setting() {
    let o = run(&["serve"], &[("TROVATO_LISTEN", "nowhere")]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn malformed_metrics_allow_names_the_setting() {
    let o = run(&["serve"], &[("TROVATO_METRICS_ALLOW", "10.0.0.0/99")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--metrics-allow"), "{}", stderr(&o));
}

#[test]
fn unknown_config_file_key_is_rejected_by_name() {
    let dir = std::env::temp_dir().join(format!("trovato-cfg-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("trovato.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:9999\"\n[db]\ndatabse_url = \"postgres://x/y\"\n",
    )
    .expect("write");
    let o = run(&["--config", file.to_str().expect("utf8"), "migrate"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("databse_url") && err.contains("line 4"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes `text` as a config file in a fresh directory.
fn config_file(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trovato-cfg-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("trovato.toml");
    std::fs::write(&file, text).expect("write");
    file
}

/// `trovato config`'s output, parsed.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let o = run(args, env);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    toml::from_str(&String::from_utf8_lossy(&o.stdout)).expect("trovato config prints TOML")
}

#[test]
fn a_setting_comes_from_the_flag_then_the_environment_then_the_file_then_the_default() {
    let file = config_file(
        "[cache]\nl1_capacity = 11\nl1_ttl_secs = 12\nl2_ttl_secs = 13\n\
         [login]\nname_limit = 14\n",
    );
    let path = file.to_str().expect("utf8");
    let c = effective(
        &["--config", path, "config", "--cache-l1-ttl", "22"],
        &[
            ("TROVATO_CACHE_L1_TTL", "32"),
            ("TROVATO_CACHE_L2_TTL", "33"),
        ],
    );
    let cache = c["cache"].as_table().expect("[cache]");
    assert_eq!(cache["l1_ttl_secs"].as_integer(), Some(22), "flag over env");
    assert_eq!(cache["l2_ttl_secs"].as_integer(), Some(33), "env over file");
    assert_eq!(
        cache["l1_capacity"].as_integer(),
        Some(11),
        "file over default"
    );
    assert_eq!(c["login"]["name_limit"].as_integer(), Some(14));
    assert_eq!(
        c["login"]["address_limit"].as_integer(),
        Some(50),
        "default"
    );
    // The file named by the environment works the same.
    let c = effective(&["config"], &[("TROVATO_CONFIG", path)]);
    assert_eq!(c["cache"]["l1_capacity"].as_integer(), Some(11));
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[test]
fn config_prints_the_service_urls_without_their_passwords() {
    let c = effective(
        &["config"],
        &[
            (
                "DATABASE_URL",
                "postgres://trovato:s3cret@db.example/trovato",
            ),
            ("REDIS_URL", "redis://:t0ken@cache.example:6379"),
        ],
    );
    let db = c["db"]["url"].as_str().expect("db.url");
    let redis = c["redis"]["url"].as_str().expect("redis.url");
    assert!(db.starts_with("postgres://trovato:***@db.example"), "{db}");
    assert!(
        !redis.contains("t0ken") && redis.contains("cache.example"),
        "{redis}"
    );
}

#[test]
fn a_bad_value_from_the_file_names_its_key_and_environment_variable() {
    let file = config_file("[cache]\nl2_ttl_secs = 0\n");
    let o = run(&["--config", file.to_str().expect("utf8"), "config"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cache.l2_ttl_secs (TROVATO_CACHE_L2_TTL)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[test]
fn unreachable_database_at_start_is_a_clear_error() {
    let o = run(
        &["migrate"],
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/trovato"),
            ("REDIS_URL", "redis://127.0.0.1:1"),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn user_create_with_password_on_stdin_then_login_works() {
    let s = services().await;
    let (name, db_url) = crate::harness::services::create_test_database().await;
    let prefix = crate::harness::test_prefix();
    let o = run_trovato(
        &[
            "user",
            "create",
            "quinn",
            "--email",
            "quinn@example.com",
            "--admin",
            "--password-stdin",
        ],
        &[
            ("DATABASE_URL", &db_url),
            ("REDIS_URL", &s.redis_url),
            ("TROVATO_REDIS_PREFIX", &prefix),
        ],
        Some("a long enough password\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("Password:"));

    let pool = sqlx::PgPool::connect(&db_url).await.expect("db");
    let (user, hash) = trovato::user::find_credentials(&pool, "QUINN")
        .await
        .expect("query")
        .expect("user");
    assert!(
        trovato::user::password::verify("a long enough password".into(), Some(hash))
            .await
            .expect("verify")
    );
    assert_eq!(
        trovato::user::roles_of(&pool, user.id)
            .await
            .expect("roles"),
        vec!["administrator"]
    );

    let token = run(
        &["user", "token", "quinn"],
        &[
            ("DATABASE_URL", &db_url),
            ("REDIS_URL", &s.redis_url),
            ("TROVATO_REDIS_PREFIX", &prefix),
        ],
    );
    assert!(token.status.success(), "{}", stderr(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    assert_eq!(
        trovato::user::token::authenticate(&pool, &token)
            .await
            .expect("auth"),
        Some(user.id)
    );
    pool.close().await;
    crate::harness::services::cleanup(name, prefix);
}

#[tokio::test]
async fn user_create_without_stdin_prints_a_generated_password_once() {
    let s = services().await;
    let (name, db_url) = crate::harness::services::create_test_database().await;
    let prefix = crate::harness::test_prefix();
    let env = [
        ("DATABASE_URL", db_url.as_str()),
        ("REDIS_URL", s.redis_url.as_str()),
        ("TROVATO_REDIS_PREFIX", prefix.as_str()),
    ];
    let o = run(
        &["user", "create", "rita", "--email", "rita@example.com"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .expect("generated password printed")
        .to_owned();
    let pool = sqlx::PgPool::connect(&db_url).await.expect("db");
    let (_, hash) = trovato::user::find_credentials(&pool, "rita")
        .await
        .expect("q")
        .expect("user");
    assert!(
        trovato::user::password::verify(password, Some(hash))
            .await
            .expect("verify")
    );

    let dup = run(
        &["user", "create", "RITA", "--email", "r2@example.com"],
        &env,
    );
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already exists"), "{}", stderr(&dup));
    pool.close().await;
    crate::harness::services::cleanup(name, prefix);
}

#[tokio::test]
async fn serve_stops_cleanly_on_sigterm() {
    let mut cluster = crate::harness::Cluster::spawn(1).await;
    let node = &mut cluster.nodes[0];
    let resp = reqwest::get(node.url("/healthz")).await.expect("healthz");
    assert_eq!(resp.status(), 200);
    let status = node.terminate();
    assert!(status.success(), "{status}");
    assert!(
        node.logs_contain("\"stopped\""),
        "logs: {:?}",
        node.logs.lock().map(|l| l.clone())
    );
}

/// The lines of `trovato ARGS --help`.
fn help_of(args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let o = run(&all, &[]);
    assert!(o.status.success(), "{all:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_commands_help_shows_its_own_arguments_and_points_to_the_settings() {
    let help = help_of(&["user", "create"]);
    assert!(
        help.lines().count() <= 30,
        "{} lines:\n{help}",
        help.lines().count()
    );
    for own in ["<NAME>", "--email", "--admin", "--password-stdin"] {
        assert!(help.contains(own), "{own} missing:\n{help}");
    }
    assert!(help.contains("trovato serve --help"), "{help}");
    for setting in ["--database-url", "--cache-l1-ttl", "TROVATO_LISTEN"] {
        assert!(!help.contains(setting), "{setting} listed:\n{help}");
    }
    // The commands' own arguments come before the pointer.
    let email = help.find("--email").expect("--email");
    let pointer = help.find("trovato serve --help").expect("pointer");
    assert!(email < pointer, "{help}");
    for args in [
        &["user"][..],
        &["migrate"],
        &["plugin", "list"],
        &["user", "delete"],
    ] {
        let help = help_of(args);
        assert!(!help.contains("--cache-l1-ttl"), "{args:?}:\n{help}");
        assert!(help.contains("trovato serve --help"), "{args:?}:\n{help}");
    }
    // Where the pointer leads, every setting is listed, with its variable.
    let serve = help_of(&["serve"]);
    for setting in [
        "--database-url",
        "DATABASE_URL",
        "--cache-l1-ttl",
        "--listen",
        "--plugin-dir",
    ] {
        assert!(serve.contains(setting), "serve lacks {setting}:\n{serve}");
    }
    let top = help_of(&[]);
    assert!(top.lines().count() <= 40, "{top}");
    assert!(top.contains("trovato serve --help"), "{top}");
}

#[test]
fn with_the_environment_set_an_errors_usage_line_names_no_setting() {
    let env = [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/trovato"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("TROVATO_LISTEN", "127.0.0.1:1"),
        ("TROVATO_CACHE_L1_TTL", "5"),
    ];
    for (args, own) in [
        (&["user", "create"][..], "--email"),
        (&["user", "create", "x", "--bogus"], "--email"),
        (&["serve", "--bogus"], "serve"),
    ] {
        let o = run(args, &env);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        let usage = err
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_else(|| panic!("{args:?}: no usage line in {err}"));
        assert!(usage.contains(own), "{args:?}: {usage}");
        for setting in [
            "--database-url",
            "--redis-url",
            "--listen",
            "--cache-l1-ttl",
        ] {
            assert!(!usage.contains(setting), "{args:?}: {usage}");
        }
    }
}

/// A kernel's environment for the CLI with `RUST_LOG=info`, so every
/// warning shows.
fn cli_env(app: &crate::harness::TestApp) -> Vec<(String, String)> {
    let mut env = app.cli_env();
    env.push(("RUST_LOG".into(), "info".into()));
    env
}

#[tokio::test]
async fn one_shot_commands_exit_without_a_cache_bus_warning_and_name_a_missing_plugin_directory() {
    let app = crate::harness::TestApp::spawn().await;
    let env = cli_env(&app);
    let env = crate::harness::env_refs(&env);
    for args in [
        &["migrate"][..],
        &["user", "create", "uma", "--email", "uma@example.com"],
        &["user", "list"],
        &["plugin", "list"],
        &["cron", "status"],
    ] {
        let o = run_trovato(args, &env, None);
        let err = stderr(&o);
        assert!(o.status.success(), "{args:?}: {err}");
        assert!(!err.contains("cache bus"), "{args:?}: {err}");
        assert!(
            err.contains("WARN") && err.contains("/nonexistent-plugins does not exist"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn users_are_listed_blocked_given_a_password_and_deleted_from_the_command_line() {
    let app = crate::harness::TestApp::spawn().await;
    let env = app.cli_env();
    let env = crate::harness::env_refs(&env);
    let vic = app
        .create_user("vic", "a long enough password", false)
        .await;
    let heir = app
        .create_user("wes", "a long enough password", false)
        .await;
    let cli = |args: &[&str], stdin: Option<&str>| {
        let o = run_trovato(args, &env, stdin);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr(&o),
        )
    };

    let (ok, out, err) = cli(&["user", "list", "--name", "V"], None);
    assert!(ok, "{err}");
    assert!(out.contains("vic") && !out.contains("wes"), "{out}");
    assert!(out.contains("page 1 of 1; 1 matching"), "{out}");

    let token = trovato::user::token::create(&app.state.db, vic.id, "ci")
        .await
        .expect("token");
    let (ok, out, err) = cli(&["user", "tokens", "vic"], None);
    assert!(ok && out.contains("ci"), "{out}{err}");
    let (ok, _, err) = cli(&["user", "block", "vic"], None);
    assert!(ok, "{err}");
    let status: i16 = sqlx::query_scalar("SELECT status FROM users WHERE id = $1")
        .bind(vic.id)
        .fetch_one(&app.state.db)
        .await
        .expect("status");
    assert_eq!(status, 0);
    assert_eq!(
        trovato::user::token::authenticate(&app.state.db, &token)
            .await
            .expect("auth"),
        None
    );
    let (ok, _, err) = cli(&["user", "unblock", "vic"], None);
    assert!(ok, "{err}");

    let (ok, out, err) = cli(&["user", "password", "vic"], None);
    assert!(ok, "{err}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("Password: "))
        .expect("the generated password, printed")
        .to_owned();
    let (_, hash) = trovato::user::find_credentials(&app.state.db, "vic")
        .await
        .expect("q")
        .expect("vic");
    assert!(
        trovato::user::password::verify(password, Some(hash))
            .await
            .expect("verify")
    );
    let (ok, out, err) = cli(
        &["user", "password", "vic", "--password-stdin"],
        Some("typed in once\n"),
    );
    assert!(ok && !out.contains("Password:"), "{out}{err}");
    let (_, hash) = trovato::user::find_credentials(&app.state.db, "vic")
        .await
        .expect("q")
        .expect("vic");
    assert!(
        trovato::user::password::verify("typed in once".into(), Some(hash))
            .await
            .expect("verify")
    );

    // Not confirmed: nothing happens.
    let (ok, _, err) = cli(&["user", "delete", "vic"], Some("n\n"));
    assert!(!ok && err.contains("not deleted"), "{err}");
    assert!(
        trovato::user::find_by_name(&app.state.db, "vic")
            .await
            .expect("q")
            .is_some()
    );
    let (ok, _, err) = cli(
        &["user", "delete", "vic", "--reassign-to", "nobody", "--yes"],
        None,
    );
    assert!(!ok && err.contains("no user named `nobody`"), "{err}");
    assert!(
        trovato::user::find_by_name(&app.state.db, "vic")
            .await
            .expect("q")
            .is_some()
    );

    let (ok, out, err) = cli(
        &["user", "delete", "vic", "--reassign-to", "wes", "--yes"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("went to wes"), "{out}");
    assert!(
        trovato::user::find_by_name(&app.state.db, "vic")
            .await
            .expect("q")
            .is_none()
    );
    assert!(
        trovato::user::find_by_id(&app.state.db, heir.id)
            .await
            .expect("q")
            .is_some()
    );
    let (ok, _, err) = cli(&["user", "show", "vic"], None);
    assert!(!ok && err.contains("no user named `vic`"), "{err}");
}

#[tokio::test]
async fn a_command_kernel_listens_for_no_cache_invalidations_and_a_server_does() {
    let app = crate::harness::TestApp::spawn().await;
    let config = (*app.state.config).clone();
    let channel = app.state.kv.key("cache:bus");
    let subscribers = || async {
        let counts: Vec<(String, i64)> = app
            .state
            .kv
            .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
            .await
            .expect("NUMSUB");
        counts.first().map_or(0, |(_, n)| *n)
    };
    // The test's own kernel (a server) is the one subscriber.
    assert_eq!(subscribers().await, 1);
    let command = trovato::Kernel::connect_as(config, trovato::kernel::Role::Command)
        .await
        .expect("kernel");
    assert_eq!(subscribers().await, 1, "the command subscribed");
    assert!(
        !command.tasks.running().contains(&"cache bus"),
        "{:?}",
        command.tasks.running()
    );
    // Its invalidations still reach the server's cache.
    let applied = app.state.cache.remote_invalidations();
    let before = *applied.borrow();
    command
        .cache
        .invalidate(&[trovato::cache::CacheTag::new("item_list:all").expect("tag")])
        .await;
    let reached = crate::harness::eventually(crate::harness::PATIENCE, || async {
        *applied.borrow() > before
    })
    .await;
    assert!(
        reached.is_some(),
        "the server never heard of the command's invalidation"
    );
    command
        .tasks
        .shutdown(std::time::Duration::from_secs(5))
        .await;
}
