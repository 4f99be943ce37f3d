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
        "listen = \"127.0.0.1:9999\"\ndatabse_url = \"postgres://x/y\"\n",
    )
    .expect("write");
    let o = run(&["--config", file.to_str().expect("utf8"), "migrate"], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("databse_url"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
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
