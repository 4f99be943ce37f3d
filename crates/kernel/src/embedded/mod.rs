//! The embedded default: private PostgreSQL and Redis processes started from
//! the binaries installed on the machine, with their data under
//! `<data-dir>/postgres` and `<data-dir>/redis`, listening on unix sockets
//! (never on the system services' ports). As root, a PostgreSQL cluster the
//! `postgres` user could not reach there is kept under `/var/lib/trovato`
//! and recorded in the data directory (see [`postgres`]).
//!
//! Used by `trovato serve` when no `DATABASE_URL` / `REDIS_URL` is given, and
//! by the test harness when no `TEST_DATABASE_URL` / `TEST_REDIS_URL` is.
//! Production passes real URLs and never reaches this module.

pub mod postgres;
pub mod redis;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use self::postgres::PostgresServer;
pub use self::redis::RedisServer;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "{what} not found (searched {searched}); install the Debian package `{package}` \
         (apt-get install {package}) or set {env}"
    )]
    MissingBinaries {
        what: &'static str,
        searched: String,
        package: &'static str,
        env: &'static str,
    },
    #[error(
        "running as root: the embedded PostgreSQL must run as the `postgres` system user, \
         which does not exist; install the Debian package `postgresql` or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "the embedded PostgreSQL runs as the `postgres` user, which cannot reach {dir} \
         ({blocked_by} is closed to it); choose another --data-dir (TROVATO_DATA_DIR) or set DATABASE_URL"
    )]
    Unreachable { dir: PathBuf, blocked_by: PathBuf },
    #[error(
        "{record} records the embedded PostgreSQL cluster at {cluster}, which is gone; \
         restore it there, or remove {record} to start an empty one"
    )]
    ClusterMissing { record: PathBuf, cluster: PathBuf },
    #[error(
        "{record} should hold the absolute path of the embedded PostgreSQL cluster; \
         correct it, or remove it to start an empty one"
    )]
    BadRecord { record: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{service} did not become ready within {seconds} s (see {log})")]
    NotReady {
        service: &'static str,
        seconds: u64,
        log: PathBuf,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How the embedded servers should trade durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `trovato serve`: fsync on, Redis append-only file on.
    Durable,
    /// Test fixtures: fsync off, no Redis persistence.
    Scratch,
}

/// A unix socket path must fit in `sun_path` (108 bytes); a deep data
/// directory falls back to a short path under /tmp derived from it.
pub(crate) fn socket_dir(preferred: &Path, tag: &str) -> PathBuf {
    const LIMIT: usize = 90;
    if preferred.as_os_str().len() <= LIMIT {
        return preferred.to_owned();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(preferred.as_os_str().as_encoded_bytes());
    let short = crate::text::hex(&digest[..6]);
    PathBuf::from(format!("/tmp/trovato-{tag}-{short}"))
}

/// Holds an exclusive lock on `<dir>/.lock` while servers are set up, so
/// several processes sharing one data directory (parallel test binaries,
/// two `serve`s) do not initialise it twice.
pub(crate) struct DirLock(File);

impl DirLock {
    pub(crate) async fn acquire(dir: &Path) -> Result<Self, EmbeddedError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| EmbeddedError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(io_err(&path))?;
        Ok(Self(file))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Both embedded servers, as started (or found running) for one data
/// directory. [`Embedded::stop`] stops only what this process started.
pub struct Embedded {
    pub postgres: Option<PostgresServer>,
    pub redis: Option<RedisServer>,
}

impl Embedded {
    pub async fn stop(self) {
        if let Some(pg) = self.postgres
            && let Err(e) = pg.stop().await
        {
            tracing::warn!(error = %e, "stopping embedded PostgreSQL failed");
        }
        if let Some(r) = self.redis
            && let Err(e) = r.stop().await
        {
            tracing::warn!(error = %e, "stopping embedded Redis failed");
        }
    }
}

/// Absolute form of `p` (relative to the working directory), without
/// requiring it to exist.
pub(crate) fn absolute(p: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(p).map_err(io_err(p))
}
