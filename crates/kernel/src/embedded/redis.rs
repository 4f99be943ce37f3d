//! The embedded Redis: `redis-server` on a unix socket under
//! `<data-dir>/redis` (or a chosen loopback port), reused while it runs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{DirLock, Durability, EmbeddedError, absolute, io_err, socket_dir};

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisListen {
    Unix,
    Tcp(u16),
}

#[derive(Debug)]
pub struct RedisServer {
    bin: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    listen: RedisListen,
    durability: Durability,
    started: bool,
}

fn find_binary() -> Result<PathBuf, EmbeddedError> {
    find_binary_in(
        &std::env::var_os("PATH").unwrap_or_default(),
        &["/usr/bin", "/usr/sbin", "/usr/local/bin"],
    )
}

fn find_binary_in(path: &std::ffi::OsStr, fallback: &[&str]) -> Result<PathBuf, EmbeddedError> {
    std::env::split_paths(path)
        .chain(fallback.iter().map(PathBuf::from))
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or(EmbeddedError::MissingBinaries {
            what: "redis-server",
            searched: "PATH, /usr/bin, /usr/sbin".into(),
            package: "redis-server",
            env: "REDIS_URL",
        })
}

impl RedisServer {
    /// Starts Redis under `<root>/redis` unless one already answers there.
    pub async fn ensure(
        root: &Path,
        listen: RedisListen,
        durability: Durability,
    ) -> Result<Self, EmbeddedError> {
        let dir = absolute(&root.join("redis"))?;
        let _lock = DirLock::acquire(&dir).await?;
        let sock_dir = socket_dir(&dir, "redis");
        std::fs::create_dir_all(&sock_dir).map_err(io_err(&sock_dir))?;
        let mut server = Self {
            bin: find_binary()?,
            socket: sock_dir.join("redis.sock"),
            log: dir.join("redis.log"),
            dir,
            listen,
            durability,
            started: false,
        };
        if server.ping().await {
            tracing::info!(url = %server.url(), "reusing running embedded Redis");
        } else {
            server.start().await?;
            server.started = true;
        }
        Ok(server)
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        match self.listen {
            RedisListen::Unix => format!("redis+unix://{}", self.socket.display()),
            RedisListen::Tcp(p) => format!("redis://127.0.0.1:{p}"),
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(_))
        )
    }

    /// Starts the server (daemonised, with a pid file) and waits for PING.
    pub async fn start(&self) -> Result<(), EmbeddedError> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--daemonize")
            .arg("yes")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.dir.join("redis.pid"))
            .arg("--logfile")
            .arg(&self.log)
            .args(["--save", ""]);
        match self.listen {
            RedisListen::Unix => {
                cmd.args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(&self.socket);
            }
            RedisListen::Tcp(p) => {
                cmd.args(["--bind", "127.0.0.1", "--port", &p.to_string()]);
            }
        }
        let aof = if self.durability == Durability::Durable {
            "yes"
        } else {
            "no"
        };
        cmd.args(["--appendonly", aof])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let out = cmd.output().await.map_err(|e| EmbeddedError::Command {
            command: "redis-server".into(),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                command: "redis-server".into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        for _ in 0..100 {
            if self.ping().await {
                tracing::info!(url = %self.url(), "started embedded Redis");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EmbeddedError::NotReady {
            service: "Redis",
            seconds: 10,
            log: self.log.clone(),
        })
    }

    /// Stops the server at once, whoever started it. For fault tests.
    pub async fn kill(&self) -> Result<(), EmbeddedError> {
        let pidfile = self.dir.join("redis.pid");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .map_err(io_err(&pidfile))?
            .trim()
            .parse()
            .map_err(|e| EmbeddedError::Command {
                command: "read redis.pid".into(),
                detail: format!("{e}"),
            })?;
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
            EmbeddedError::Command {
                command: format!("kill {pid}"),
                detail: e.to_string(),
            }
        })?;
        // Wait until it no longer answers (and the pid is gone).
        for _ in 0..100 {
            if nix::sys::signal::kill(pid, None).is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EmbeddedError::Command {
            command: format!("kill {pid}"),
            detail: "still running after 5 s".into(),
        })
    }

    /// Stops the server if this process started it.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        if !self.started {
            return Ok(());
        }
        self.kill().await?;
        tracing::info!(dir = %self.dir.display(), "stopped embedded Redis");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_the_debian_package() {
        let err = find_binary_in(std::ffi::OsStr::new("/nonexistent"), &[]).expect_err("none");
        let msg = err.to_string();
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
        assert!(msg.contains("REDIS_URL"), "{msg}");
    }
}
