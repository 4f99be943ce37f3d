//! The embedded PostgreSQL: `initdb` once, then `pg_ctl start` on a unix
//! socket (or a chosen loopback port), reused while it runs.
//!
//! As root the server runs as the `postgres` system user. When that user
//! cannot reach the data directory (a checkout under `/root`), the cluster
//! is kept under [`RELOCATED_ROOT`] instead and its place recorded in
//! `<data-dir>/postgres/location`; the user's directories are left as
//! they are.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use sha2::Digest;
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

/// Where the clusters of data directories the server user cannot reach are
/// kept, one directory per data directory.
pub const RELOCATED_ROOT: &str = "/var/lib/trovato";

/// The file in `<data-dir>/postgres` naming a cluster kept elsewhere.
const LOCATION_FILE: &str = "location";

#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    /// The cluster's directory: `data`, `run` and the log are in it.
    home: PathBuf,
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

/// Where one data directory's cluster lives.
enum Home {
    /// `<data-dir>/postgres`.
    InPlace(PathBuf),
    /// A directory under [`RELOCATED_ROOT`]; `recorded` once the data
    /// directory names it.
    Relocated { path: PathBuf, recorded: bool },
}

impl Home {
    fn path(&self) -> &Path {
        match self {
            Home::InPlace(p) | Home::Relocated { path: p, .. } => p,
        }
    }
}

/// Finds the cluster of data directory `root` (`base` is `<root>/postgres`):
/// 1. the place recorded in `<base>/location`, which must still hold it (a
///    lost cluster is an error, never silently replaced by an empty one);
/// 2. `base` itself, when the server runs as ourselves or its user can
///    reach `base`;
/// 3. else [`relocated_home`], recorded once `initdb` has succeeded there.
///
/// A cluster already in `base` that the server user can no longer reach is
/// an error too: its data stays where it is.
fn locate(root: &Path, base: &Path, run_as: Option<(Uid, Gid)>) -> Result<Home, EmbeddedError> {
    let record = base.join(LOCATION_FILE);
    match std::fs::read(&record) {
        Ok(bytes) => {
            let path = parse_record(&bytes).ok_or_else(|| EmbeddedError::BadRecord {
                record: record.clone(),
            })?;
            // Not found is a lost cluster; other errors (a user that may not
            // look inside) are left to the steps that use the cluster.
            let version = path.join("data").join("PG_VERSION");
            if let Err(e) = std::fs::metadata(&version)
                && e.kind() == std::io::ErrorKind::NotFound
            {
                return Err(EmbeddedError::ClusterMissing {
                    record,
                    cluster: path,
                });
            }
            return Ok(Home::Relocated {
                path,
                recorded: true,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&record)(e)),
    }
    let Some(user) = run_as else {
        return Ok(Home::InPlace(base.to_owned()));
    };
    let Some(blocked_by) = closed_ancestor(base, user)? else {
        return Ok(Home::InPlace(base.to_owned()));
    };
    if base.join("data").exists() {
        return Err(EmbeddedError::Unreachable {
            dir: base.to_owned(),
            blocked_by,
        });
    }
    let path = relocated_home(root)?;
    tracing::info!(
        cluster = %path.display(),
        closed = %blocked_by.display(),
        "the postgres user cannot reach the data directory; keeping the embedded PostgreSQL cluster outside it"
    );
    Ok(Home::Relocated {
        path,
        recorded: false,
    })
}

/// Where the cluster of `data_dir` is kept when the server user cannot
/// reach `data_dir`: `RELOCATED_ROOT/<16 hex digits of the SHA-256 of its
/// canonical path>`. `data_dir` must exist.
pub fn relocated_home(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let canonical = std::fs::canonicalize(data_dir).map_err(io_err(data_dir))?;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    Ok(Path::new(RELOCATED_ROOT).join(crate::text::hex(&digest[..8])))
}

/// The record holds one absolute path and a newline.
fn parse_record(bytes: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let path = Path::new(std::ffi::OsStr::from_bytes(line));
    (path.is_absolute() && !line.contains(&b'\n')).then(|| path.to_owned())
}

/// Records `home` in `<base>/location` (written whole, then renamed into
/// place), and the data directory it belongs to in `<home>/data-dir` for
/// whoever looks at [`RELOCATED_ROOT`].
fn write_record(root: &Path, base: &Path, home: &Path) -> Result<(), EmbeddedError> {
    use std::os::unix::ffi::OsStrExt;
    let canonical = std::fs::canonicalize(root).map_err(io_err(root))?;
    let origin = home.join("data-dir");
    let mut line = canonical.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    std::fs::write(&origin, &line).map_err(io_err(&origin))?;
    let record = base.join(LOCATION_FILE);
    let partial = base.join(format!("{LOCATION_FILE}.partial"));
    let mut line = home.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    std::fs::write(&partial, &line).map_err(io_err(&partial))?;
    std::fs::rename(&partial, &record).map_err(io_err(&record))?;
    tracing::info!(record = %record.display(), cluster = %home.display(), "recorded where the embedded PostgreSQL cluster is kept");
    Ok(())
}

/// The first ancestor of `dir` that `user` may not pass through, judged by
/// its mode bits as the kernel does (owner, else group, else others).
fn closed_ancestor(dir: &Path, (uid, gid): (Uid, Gid)) -> Result<Option<PathBuf>, EmbeddedError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(io_err(ancestor))?;
        let search = if meta.uid() == uid.as_raw() {
            0o100
        } else if meta.gid() == gid.as_raw() {
            0o010
        } else {
            0o001
        };
        if meta.mode() & search == 0 {
            return Ok(Some(ancestor.to_owned()));
        }
    }
    Ok(None)
}

impl PostgresServer {
    /// Initialises the cluster of data directory `root` if needed and starts
    /// the server unless it is already running there. The cluster lives in
    /// `<root>/postgres`, or under [`RELOCATED_ROOT`] when the server user
    /// cannot reach that (see [`locate`]).
    pub async fn ensure(
        root: &Path,
        listen: PgListen,
        durability: Durability,
    ) -> Result<Self, EmbeddedError> {
        let base = absolute(&root.join("postgres"))?;
        let _lock = DirLock::acquire(&base).await?;
        let run_as = run_as()?;
        let home = locate(root, &base, run_as)?;
        let server = Self {
            bin: find_bin_dir()?,
            data: home.path().join("data"),
            socket_dir: socket_dir(&home.path().join("run"), "pg"),
            log: home.path().join("postgres.log"),
            home: home.path().to_owned(),
            listen,
            durability,
            run_as,
            started: false,
        };
        match &home {
            Home::InPlace(_) => {
                for dir in [&server.socket_dir, &base] {
                    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                    server.give_to_server_user(dir)?;
                    server.check_reachable(dir)?;
                }
            }
            Home::Relocated { path, .. } => server.prepare_relocated(path)?,
        }
        if !server.data.join("PG_VERSION").is_file() {
            server.initdb().await?;
        }
        if let Home::Relocated {
            path,
            recorded: false,
        } = &home
        {
            write_record(root, &base, path)?;
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

    /// The directory holding the cluster (`data`), its socket directory
    /// (`run`, unless too long for a socket path) and its log.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Creates a relocated home: [`RELOCATED_ROOT`] (root's, 0755) unless it
    /// exists, then the cluster's own directory, the server user's (0700).
    fn prepare_relocated(&self, home: &Path) -> Result<(), EmbeddedError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let parent = Path::new(RELOCATED_ROOT);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err(parent))?;
        for dir in [home, &self.socket_dir] {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            self.give_to_server_user(dir)?;
        }
        std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(home))?;
        self.check_reachable(&self.socket_dir)?;
        self.check_reachable(home)?;
        // A data directory left by an initdb that did not finish (the
        // record is written only after one succeeds) would make the next
        // initdb refuse to run.
        if self.data.exists() && !self.data.join("PG_VERSION").is_file() {
            tracing::warn!(data = %self.data.display(), "removing an unfinished embedded PostgreSQL cluster");
            std::fs::remove_dir_all(&self.data).map_err(io_err(&self.data))?;
        }
        Ok(())
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
        let Some(user) = self.run_as else {
            return Ok(());
        };
        match closed_ancestor(dir, user)? {
            None => Ok(()),
            Some(blocked_by) => Err(EmbeddedError::Unreachable {
                dir: dir.to_owned(),
                blocked_by,
            }),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        // Our working directory may be closed to the server user (a
        // checkout under /root); the cluster's home never is.
        cmd.current_dir(&self.home);
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

    #[test]
    fn a_record_is_one_absolute_path() {
        assert_eq!(
            parse_record(b"/var/lib/trovato/0123\n"),
            Some(PathBuf::from("/var/lib/trovato/0123"))
        );
        assert_eq!(
            parse_record(b"/no/newline"),
            Some(PathBuf::from("/no/newline"))
        );
        assert_eq!(parse_record(b"relative/path\n"), None);
        assert_eq!(parse_record(b""), None);
        assert_eq!(parse_record(b"/a\n/b\n"), None);
    }

    #[test]
    fn a_closed_ancestor_is_judged_by_owner_then_group_then_others() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!(
            "trovato-reach-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        let leaf = root.join("closed").join("open").join("leaf");
        std::fs::create_dir_all(&leaf).expect("create");
        let chmod = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        chmod(&root, 0o755);
        chmod(&root.join("closed").join("open"), 0o755);
        let me = (Uid::effective(), Gid::effective());
        // Someone else: neither owner nor (unless root's group) in the group.
        let other = (
            Uid::from_raw(me.0.as_raw() + 4242),
            Gid::from_raw(me.1.as_raw() + 4242),
        );

        chmod(&root.join("closed"), 0o700);
        assert_eq!(
            closed_ancestor(&leaf, me).expect("stat"),
            None,
            "the owner passes"
        );
        assert_eq!(
            closed_ancestor(&leaf, other).expect("stat"),
            Some(root.join("closed"))
        );
        // Others' bit alone lets anyone through.
        chmod(&root.join("closed"), 0o701);
        assert_eq!(closed_ancestor(&leaf, other).expect("stat"), None);
        // Group bits apply to the group only.
        chmod(&root.join("closed"), 0o710);
        let group_member = (other.0, me.1);
        assert_eq!(closed_ancestor(&leaf, group_member).expect("stat"), None);
        assert_eq!(
            closed_ancestor(&leaf, other).expect("stat"),
            Some(root.join("closed"))
        );
        // An owner without its own bit is stopped even if others may pass.
        chmod(&root.join("closed"), 0o071);
        assert_eq!(
            closed_ancestor(&leaf, me).expect("stat"),
            Some(root.join("closed"))
        );
        chmod(&root.join("closed"), 0o755);
        let _ = std::fs::remove_dir_all(&root);
    }
}
