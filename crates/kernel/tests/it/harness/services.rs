//! Where the tests' PostgreSQL and Redis come from: `TEST_DATABASE_URL` /
//! `TEST_REDIS_URL` when set, else the same embedded launcher `serve` uses
//! (data under the temp directory, left running for the next test run).
//! `TEST_REDIS_URL` may name a Redis Cluster (`redis+cluster://...`, as
//! `scripts/redis-cluster start` prints): every test then runs on it.
//!
//! Each test gets its own database, cloned from a migrated template, and its
//! own Redis key prefix; both are removed when the test's app is dropped.

use std::path::PathBuf;

use sqlx::Connection;
use tokio::sync::OnceCell;
use trovato::embedded::postgres::PgListen;
use trovato::embedded::redis::RedisListen;
use trovato::embedded::{Durability, PostgresServer, RedisServer};

pub struct Services {
    /// URL of a maintenance database (used to create and drop test DBs).
    pub admin_url: String,
    pub redis_url: String,
    /// Name of the migrated template database.
    pub template: String,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

/// Where test fixtures keep server data: under the system temp directory,
/// which the `postgres` user can reach even when the checkout is under a
/// private home directory (the embedded PostgreSQL runs as `postgres` when
/// the tests run as root).
pub fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("trovato-tests-{}", nix::unistd::Uid::effective()))
}

pub async fn services() -> &'static Services {
    SERVICES
        .get_or_init(|| async {
            let dir = scratch_root().join("services");
            let admin_url = match std::env::var("TEST_DATABASE_URL") {
                Ok(u) if !u.is_empty() => u,
                _ => {
                    let pg = PostgresServer::ensure(&dir, PgListen::Unix, Durability::Scratch)
                        .await
                        .expect("embedded PostgreSQL for tests");
                    pg.url("postgres")
                }
            };
            let redis_url = match std::env::var("TEST_REDIS_URL") {
                Ok(u) if !u.is_empty() => u,
                _ => RedisServer::ensure(&dir, RedisListen::Unix, Durability::Scratch)
                    .await
                    .expect("embedded Redis for tests")
                    .url(),
            };
            let template = ensure_template(&admin_url).await;
            Services {
                admin_url,
                redis_url,
                template,
            }
        })
        .await
}

/// The URL of database `name` on the same server as `admin_url`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A migrated template named after the migrations' checksums, created once
/// (under an advisory lock, as several test binaries may race).
async fn ensure_template(admin_url: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for m in trovato::db::MIGRATOR.iter() {
        h.update(m.version.to_le_bytes());
        h.update(&*m.checksum);
    }
    let digest = h.finalize();
    let name = format!(
        "trovato_tpl_{}",
        digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect admin db");
    sqlx::query("SELECT pg_advisory_lock(727274)")
        .execute(&mut conn)
        .await
        .expect("lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop stale template");
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .expect("create template");
        {
            let pool = sqlx::PgPool::connect(&database_url(admin_url, &building))
                .await
                .expect("connect template");
            trovato::db::migrate(&pool).await.expect("migrate template");
            pool.close().await;
        }
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .await
            .expect("rename template");
    }
    sqlx::query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut conn)
        .await
        .expect("unlock");
    name
}

/// A fresh database cloned from the template.
pub async fn create_test_database() -> (String, String) {
    let s = services().await;
    let name = format!("trovato_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&s.admin_url)
        .await
        .expect("connect admin db");
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {}", s.template))
        .execute(&mut conn)
        .await
        .expect("clone template database");
    let url = database_url(&s.admin_url, &name);
    (name, url)
}

/// Drops a test database and deletes a test Redis namespace. Runs on its own
/// thread and runtime, so it can be called from `Drop`.
pub fn cleanup(db_name: String, redis_prefix: String) {
    let Some(s) = SERVICES.get() else { return };
    let admin_url = s.admin_url.clone();
    let redis_url = s.redis_url.clone();
    let worker = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
            if let Ok(kv) = trovato::kv::Kv::connect(
                &redis_url,
                &redis_prefix,
                std::time::Duration::from_secs(2),
            )
            .await
            {
                let _ = kv.delete_prefixed("").await;
            }
        });
    });
    let _ = worker.join();
}
