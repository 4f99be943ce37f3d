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
