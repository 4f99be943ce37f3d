//! The one-command start as root from a home directory: the embedded
//! PostgreSQL runs as the `postgres` user, which cannot reach a data
//! directory under a closed home (`/root/trovato/var`). Its cluster is then
//! kept under `/var/lib/trovato/<hash>`, recorded in the data directory, and
//! found again by later starts and commands; the user's directories keep
//! their modes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::FutureExt;
use sqlx::Connection;
use trovato::Config;
use trovato::Kernel;
use trovato::embedded::{Embedded, PostgresServer, postgres};

use crate::harness::{run_trovato, services};

/// Where the clusters of unreachable data directories are kept.
const RELOCATED_ROOT: &str = "/var/lib/trovato";

/// A checkout inside a `0700` root-owned home, as `/root/trovato` is.
struct ClosedHome {
    scratch: PathBuf,
    home: PathBuf,
    checkout: PathBuf,
}

impl ClosedHome {
    fn create() -> Self {
        let scratch = services::scratch_root()
            .join("embedded")
            .join(uuid::Uuid::now_v7().simple().to_string());
        let home = scratch.join("root");
        let checkout = home.join("trovato");
        std::fs::create_dir_all(&checkout).expect("create checkout");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::set_permissions(&checkout, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self {
            scratch,
            home,
            checkout,
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.checkout.join("var")
    }
}

/// Mode and owner of `p`.
fn mode_and_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).expect("stat");
    (m.mode() & 0o7777, m.uid(), m.gid())
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The embedded PostgreSQL as `serve` starts it for `data_dir`, with Redis
/// embedded too unless `redis_url` is given.
async fn start(data_dir: &Path, redis_url: Option<String>) -> (Embedded, Config) {
    let mut config = Config::default();
    config.server.data_dir = data_dir.to_owned();
    config.redis.url = redis_url;
    let embedded = Kernel::resolve_services(&mut config)
        .await
        .expect("embedded services start under a closed home");
    (embedded, config)
}

async fn connect(config: &Config) -> sqlx::PgConnection {
    let url = config.db.url.as_deref().expect("database url resolved");
    sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the embedded PostgreSQL")
}

async fn server_data_directory(conn: &mut sqlx::PgConnection) -> PathBuf {
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(conn)
        .await
        .expect("show data_directory");
    PathBuf::from(dir)
}

/// What a scenario leaves behind if it stops half-way: the servers it
/// started and the cluster directories it made.
#[derive(Default)]
struct Leftovers {
    running: Mutex<Option<Embedded>>,
    clusters: Mutex<Vec<PathBuf>>,
}

impl Leftovers {
    fn started(&self, embedded: Embedded) {
        *self.running.lock().expect("lock") = Some(embedded);
    }

    async fn stop(&self) {
        let running = self.running.lock().expect("lock").take();
        if let Some(e) = running {
            e.stop().await;
        }
    }

    fn cluster(&self, dir: PathBuf) {
        self.clusters.lock().expect("lock").push(dir);
    }
}

/// Runs `scenario`, then stops whatever it left running and removes what it
/// created (its scratch directory and its own cluster under
/// /var/lib/trovato), even when it panicked.
async fn run_and_clean_up(home: &ClosedHome, left: &Leftovers, scenario: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(scenario).catch_unwind().await;
    left.stop().await;
    // Only this test's own cluster directories, never the root itself.
    for cluster in left.clusters.lock().expect("lock").iter() {
        if cluster.parent() == Some(Path::new(RELOCATED_ROOT)) {
            let _ = std::fs::remove_dir_all(cluster);
        }
    }
    let _ = std::fs::remove_dir_all(&home.scratch);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_a_data_dir_under_a_closed_home_keeps_its_cluster_outside_and_finds_it_again() {
    if !is_root() {
        eprintln!("skipped: only root runs the embedded PostgreSQL as another user");
        return;
    }
    let home = ClosedHome::create();
    let data_dir = home.data_dir();
    let home_before = mode_and_owner(&home.home);
    let checkout_before = mode_and_owner(&home.checkout);
    let left = Leftovers::default();
    let scenario = async {
        // First start: what `serve` does, PostgreSQL and Redis embedded.
        let (embedded, config) = start(&data_dir, None).await;
        left.started(embedded);
        let mut conn = connect(&config).await;
        let served_from = server_data_directory(&mut conn).await;
        let expected = served_from.parent().expect("cluster home").to_owned();
        left.cluster(expected.clone());
        assert!(
            expected.starts_with(RELOCATED_ROOT),
            "cluster kept under {RELOCATED_ROOT}, not at {}",
            served_from.display()
        );
        sqlx::query("CREATE TABLE note (body text NOT NULL)")
            .execute(&mut conn)
            .await
            .expect("create table");
        sqlx::query("INSERT INTO note VALUES ('kept across restarts')")
            .execute(&mut conn)
            .await
            .expect("insert");
        conn.close().await.expect("close");
        let redis_url = config.redis.url.clone().expect("redis url resolved");
        let redis = redis::Client::open(redis_url.as_str()).expect("redis url");
        let mut r = redis
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the embedded Redis");
        let () = redis::cmd("SET")
            .arg("embedded-root-test")
            .arg("kept")
            .query_async(&mut r)
            .await
            .expect("redis set");
        drop(r);
        left.stop().await;
        assert!(
            sqlx::PgConnection::connect(config.db.url.as_deref().expect("url"))
                .await
                .is_err(),
            "stop leaves no PostgreSQL answering"
        );

        // The record in the data dir names the cluster; no cluster inside.
        let record = std::fs::read_to_string(data_dir.join("postgres").join("location"))
            .expect("location recorded in the data dir");
        assert_eq!(PathBuf::from(record.trim_end()), expected);
        assert!(!data_dir.join("postgres").join("data").exists());

        // A command finds the same cluster: `migrate` creates the kernel's
        // tables in it.
        let plugins = home.scratch.join("no-plugins");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        let out = run_trovato(
            &["migrate"],
            &[
                ("TROVATO_DATA_DIR", data_dir.to_str().expect("utf-8 path")),
                ("TROVATO_PLUGIN_DIR", plugins.to_str().expect("utf-8 path")),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "trovato migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Second start: the same cluster, with the table, the migrations
        // and Redis's key.
        let (embedded, config) = start(&data_dir, None).await;
        left.started(embedded);
        let mut conn = connect(&config).await;
        assert_eq!(
            server_data_directory(&mut conn).await,
            expected.join("data")
        );
        let body: String = sqlx::query_scalar("SELECT body FROM note")
            .fetch_one(&mut conn)
            .await
            .expect("the row written before the restart");
        assert_eq!(body, "kept across restarts");
        let migrated: Option<String> = sqlx::query_scalar("SELECT to_regclass('users')::text")
            .fetch_one(&mut conn)
            .await
            .expect("regclass");
        assert_eq!(
            migrated.as_deref(),
            Some("users"),
            "migrate used this cluster"
        );
        conn.close().await.expect("close");
        let redis = redis::Client::open(config.redis.url.as_deref().expect("url")).expect("url");
        let mut r = redis
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the embedded Redis again");
        let kept: Option<String> = redis::cmd("GET")
            .arg("embedded-root-test")
            .query_async(&mut r)
            .await
            .expect("redis get");
        assert_eq!(kept.as_deref(), Some("kept"));
        drop(r);
        left.stop().await;

        // The cluster is the postgres user's, outside the home; the home
        // and the checkout kept their modes and owners.
        let cluster_owner = std::fs::metadata(expected.join("data"))
            .expect("stat")
            .uid();
        let postgres_uid = nix::unistd::User::from_name("postgres")
            .expect("passwd")
            .expect("postgres user")
            .uid
            .as_raw();
        assert_eq!(cluster_owner, postgres_uid);
        assert_eq!(mode_and_owner(&home.home), home_before);
        assert_eq!(mode_and_owner(&home.checkout), checkout_before);
        assert_eq!(home_before.0, 0o700);
    };
    run_and_clean_up(&home, &left, scenario).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_root_a_moved_data_dir_finds_its_cluster_through_the_record() {
    if !is_root() {
        eprintln!("skipped: only root runs the embedded PostgreSQL as another user");
        return;
    }
    let home = ClosedHome::create();
    let left = Leftovers::default();
    let scenario = async {
        let redis_url = Some(services::services().await.redis_url.clone());
        let first = home.data_dir();
        let (embedded, config) = start(&first, redis_url.clone()).await;
        let cluster = postgres::relocated_home(&first).expect("relocated home");
        left.cluster(cluster.clone());
        left.started(embedded);
        let mut conn = connect(&config).await;
        sqlx::query("CREATE TABLE note AS SELECT 'before the move'::text AS body")
            .execute(&mut conn)
            .await
            .expect("create table");
        conn.close().await.expect("close");
        left.stop().await;

        let moved = home.home.join("moved");
        std::fs::rename(&home.checkout, &moved).expect("move the checkout");
        let second = moved.join("var");
        // A new path hashes elsewhere: only the record leads to the data.
        let elsewhere = postgres::relocated_home(&second).expect("relocated home");
        assert_ne!(elsewhere, cluster);
        let (embedded, config) = start(&second, redis_url).await;
        left.started(embedded);
        let mut conn = connect(&config).await;
        assert_eq!(server_data_directory(&mut conn).await, cluster.join("data"));
        let body: String = sqlx::query_scalar("SELECT body FROM note")
            .fetch_one(&mut conn)
            .await
            .expect("the row written before the move");
        assert_eq!(body, "before the move");
        conn.close().await.expect("close");
        left.stop().await;
        assert!(!elsewhere.exists(), "no second cluster was created");
    };
    run_and_clean_up(&home, &left, scenario).await;
}

#[tokio::test]
async fn a_recorded_cluster_that_is_gone_is_an_error_naming_it_and_the_record() {
    let scratch = services::scratch_root()
        .join("embedded")
        .join(uuid::Uuid::now_v7().simple().to_string());
    let record_dir = scratch.join("var").join("postgres");
    std::fs::create_dir_all(&record_dir).expect("create data dir");
    let gone = scratch.join("gone-cluster");
    std::fs::write(record_dir.join("location"), format!("{}\n", gone.display()))
        .expect("write record");
    let err = PostgresServer::ensure(
        &scratch.join("var"),
        postgres::PgListen::Unix,
        trovato::embedded::Durability::Scratch,
    )
    .await
    .expect_err("a missing recorded cluster is not replaced by an empty one");
    let msg = err.to_string();
    let created = gone.exists();
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(msg.contains(&gone.display().to_string()), "{msg}");
    assert!(msg.contains("location"), "{msg}");
    assert!(!created, "nothing was created at the recorded place");
}
