//! The embedded PostgreSQL: `initdb` once, then `pg_ctl start` on a unix
//! socket (or a chosen loopback port), reused while it runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use super::{DirLock, Durability, EmbeddedError, absolute, io_err, socket_dir};

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgListen {
    /// Unix socket only (no TCP at all).
    Unix,
    /// 127.0.0.1:port as well (test fixtures that stop and restart it).
    Tcp(u16),
}

/// The socket "port": only names the socket file when there is no TCP.
const SOCKET_PORT: u16 = 5432;

#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    listen: PgListen,
    durability: Durability,
    run_as: Option<(Uid, Gid)>,
    /// True when this process started the server (and so stops it).
    started: bool,
}

/// Finds a directory holding `initdb`, `pg_ctl` and `postgres`: the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `PATH`.
fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    find_bin_dir_in(
        Path::new("/usr/lib/postgresql"),
        &std::env::var_os("PATH").unwrap_or_default(),
    )
}

fn find_bin_dir_in(versions_root: &Path, path: &std::ffi::OsStr) -> Result<PathBuf, EmbeddedError> {
    let complete = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    if let Some((_, d)) = versions.into_iter().find(|(_, d)| complete(d)) {
        return Ok(d);
    }
    std::env::split_paths(path)
        .find(|d| complete(d))
        .ok_or(EmbeddedError::MissingBinaries {
            what: "PostgreSQL server binaries (initdb, pg_ctl, postgres)",
            searched: "/usr/lib/postgresql/*/bin and PATH".into(),
            package: "postgresql",
            env: "DATABASE_URL",
        })
}

/// PostgreSQL refuses to run as root: when we are root, run it as the
/// `postgres` system user.
fn run_as() -> Result<Option<(Uid, Gid)>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        _ => Err(EmbeddedError::NoPostgresUser),
    }
}

impl PostgresServer {
    /// Initialises `<root>/postgres` if needed and starts the server unless
    /// it is already running there.
    pub async fn ensure(
        root: &Path,
        listen: PgListen,
        durability: Durability,
    ) -> Result<Self, EmbeddedError> {
        let base = absolute(&root.join("postgres"))?;
        let _lock = DirLock::acquire(&base).await?;
        let server = Self {
            bin: find_bin_dir()?,
            data: base.join("data"),
            socket_dir: socket_dir(&base.join("run"), "pg"),
            log: base.join("postgres.log"),
            listen,
            durability,
            run_as: run_as()?,
            started: false,
        };
        for dir in [&server.socket_dir, &base] {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            server.give_to_server_user(dir)?;
            server.check_reachable(dir)?;
        }
        if !server.data.join("PG_VERSION").is_file() {
            server.initdb().await?;
        }
        let mut server = server;
        if server.is_running().await? {
            tracing::info!(data = %server.data.display(), "reusing running embedded PostgreSQL");
        } else {
            server.start().await?;
            server.started = true;
        }
        Ok(server)
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), EmbeddedError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(io_err(path))?;
        }
        Ok(())
    }

    /// When the server runs as another user, every ancestor of `dir` must
    /// let that user through, or initdb fails with an obscure message.
    fn check_reachable(&self, dir: &Path) -> Result<(), EmbeddedError> {
        use std::os::unix::fs::MetadataExt;
        let Some((uid, _)) = self.run_as else {
            return Ok(());
        };
        for ancestor in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(ancestor).map_err(io_err(ancestor))?;
            if meta.uid() != uid.as_raw() && meta.mode() & 0o001 == 0 {
                return Err(EmbeddedError::Unreachable {
                    dir: dir.to_owned(),
                    blocked_by: ancestor.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd.stdin(Stdio::null()).kill_on_drop(false);
        cmd
    }

    async fn run(
        &self,
        mut cmd: Command,
        name: &str,
    ) -> Result<std::process::Output, EmbeddedError> {
        let out = cmd.output().await.map_err(|e| EmbeddedError::Command {
            command: name.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(out)
    }

    async fn initdb(&self) -> Result<(), EmbeddedError> {
        tracing::info!(data = %self.data.display(), "initialising embedded PostgreSQL");
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]);
        if self.durability == Durability::Scratch {
            cmd.arg("--no-sync");
        }
        let out = self.run(cmd, "initdb").await?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                command: "initdb".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    async fn is_running(&self) -> Result<bool, EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data);
        Ok(self.run(cmd, "pg_ctl status").await?.status.success())
    }

    fn port(&self) -> u16 {
        match self.listen {
            PgListen::Unix => SOCKET_PORT,
            PgListen::Tcp(p) => p,
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), EmbeddedError> {
        let listen_addresses = match self.listen {
            PgListen::Unix => "''",
            PgListen::Tcp(_) => "127.0.0.1",
        };
        let mut opts = format!(
            "-c listen_addresses={listen_addresses} -p {} -k {} -c max_connections=300",
            self.port(),
            self.socket_dir.display()
        );
        if self.durability == Durability::Scratch {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-l"])
            .arg(&self.log)
            .arg("-o")
            .arg(opts)
            .stdout(Stdio::null());
        let out = self.run(cmd, "pg_ctl start").await?;
        if !out.status.success() {
            return Err(EmbeddedError::NotReady {
                service: "PostgreSQL",
                seconds: 60,
                log: self.log.clone(),
            });
        }
        tracing::info!(data = %self.data.display(), socket = %self.socket_dir.display(), "started embedded PostgreSQL");
        Ok(())
    }

    /// Stops the server at once (`immediate`), whoever started it. For
    /// fault-injection tests.
    pub async fn kill(&self) -> Result<(), EmbeddedError> {
        self.pg_ctl_stop("immediate").await
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<(), EmbeddedError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", mode])
            .stdout(Stdio::null());
        let out = self.run(cmd, "pg_ctl stop").await?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                command: "pg_ctl stop".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Stops the server if this process started it (fast shutdown: open
    /// transactions roll back, data is safe).
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        if !self.started {
            return Ok(());
        }
        self.pg_ctl_stop("fast").await?;
        tracing::info!(data = %self.data.display(), "stopped embedded PostgreSQL");
        Ok(())
    }

    /// A connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        match self.listen {
            PgListen::Tcp(p) => format!("postgres://postgres@127.0.0.1:{p}/{database}"),
            PgListen::Unix => format!(
                "postgres://postgres@localhost/{database}?host={}&port={}",
                self.socket_dir.display(),
                SOCKET_PORT
            ),
        }
    }

    /// Creates `name` unless it exists. `name` is a kernel constant or a
    /// generated identifier, never user input.
    pub async fn create_database(&self, name: &str) -> Result<(), EmbeddedError> {
        let err = |e: sqlx::Error| EmbeddedError::Command {
            command: format!("CREATE DATABASE {name}"),
            detail: e.to_string(),
        };
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.url("postgres"))
            .await
            .map_err(err)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .map_err(err)?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))
                .execute(&mut conn)
                .await
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_debian_package() {
        let empty = std::env::temp_dir().join(format!("trovato-nopg-{}", std::process::id()));
        let err = find_bin_dir_in(&empty, std::ffi::OsStr::new("/nonexistent"))
            .expect_err("nothing to find");
        let msg = err.to_string();
        assert!(msg.contains("apt-get install postgresql"), "{msg}");
        assert!(msg.contains("DATABASE_URL"), "{msg}");
    }
}
