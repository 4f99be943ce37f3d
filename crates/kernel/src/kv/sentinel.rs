//! Redis Sentinel: the master of a monitored set, found by asking its
//! Sentinels, and found again when it stops answering as master.
//!
//! The URL names the Sentinels and the set:
//! `redis+sentinel://[user[:password]@]host:port[,host:port...]/<master>[/<db>]`.
//! The credentials and database are the master's; the Sentinels are asked
//! without credentials.
//!
//! Commands go over one self-reconnecting connection to the current master.
//! When a command fails as a failover makes commands fail (the old master
//! refuses writes with `READONLY`, refuses connections, or drops them), the
//! Sentinels are asked for the master again; if it moved, the connection
//! is replaced. A command the old master refused (`READONLY`, connection
//! refused) is sent once more to the new one; one whose connection dropped
//! mid-flight is not, since it may have run.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisConnectionInfo, RedisError, RedisResult, Value};

/// The parts of a Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `redis://host:port` of each Sentinel.
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the master under.
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The parts of `url` if it is a Sentinel URL (`redis+sentinel://`), with
/// what is wrong with it if it is malformed; `None` for any other URL.
pub fn parse(url: &str) -> Option<Result<SentinelUrl, String>> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    Some(parse_rest(rest))
}

fn parse_rest(rest: &str) -> Result<SentinelUrl, String> {
    if rest.contains(['?', '#']) {
        return Err("a Sentinel URL has no query".into());
    }
    let (authority, path) = rest
        .split_once('/')
        .ok_or("names no master (redis+sentinel://host:port,.../<master>[/<db>])")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (Some(user), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            let decode =
                |s: &str| percent_decode(s).ok_or_else(|| format!("`{s}` is not percent-encoded"));
            let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
            let pass = (!pass.is_empty()).then(|| decode(pass)).transpose()?;
            (user, pass)
        }
    };
    // The authority holds no `/`, so each entry is a bare host:port.
    let sentinels = super::host_urls("redis://", hosts)?;
    if sentinels.is_empty() {
        return Err("names no Sentinel".into());
    }
    let (master, db) = match path.split_once('/') {
        Some((master, "")) => (master, 0),
        Some((master, db)) => (
            master,
            db.parse::<i64>()
                .ok()
                .filter(|d| *d >= 0)
                .ok_or_else(|| format!("`{db}` is not a database number"))?,
        ),
        None => (path, 0),
    };
    if master.is_empty() {
        return Err("names no master (redis+sentinel://host:port,.../<master>[/<db>])".into());
    }
    Ok(SentinelUrl {
        sentinels,
        master: master.to_owned(),
        db,
        username,
        password,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The connection to the current master, shared by every clone.
#[derive(Clone)]
pub(super) struct SentinelConn {
    shared: Arc<Shared>,
}

struct Shared {
    /// Asks the Sentinels; one question at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Master>,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
}

#[derive(Clone)]
struct Master {
    client: redis::Client,
    conn: ConnectionManager,
}

/// What a failed command says about the master.
enum Failover {
    /// Nothing: an ordinary error.
    No,
    /// The master may have moved; the command did not run.
    Refused,
    /// The master may have moved; the command may have run.
    Dropped,
}

fn failover_sign(e: &RedisError) -> Failover {
    if e.kind() == ErrorKind::ReadOnly || e.is_connection_refusal() {
        Failover::Refused
    } else if e.is_io_error() || e.is_connection_dropped() {
        Failover::Dropped
    } else {
        Failover::No
    }
}

impl SentinelConn {
    /// Asks the Sentinels for the master and connects to it.
    pub(super) async fn connect(
        url: &SentinelUrl,
        config: ConnectionManagerConfig,
        connect_timeout: Duration,
    ) -> RedisResult<Self> {
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(RedisConnectionInfo {
                db: url.db,
                username: url.username.clone(),
                password: url.password.clone(),
                ..RedisConnectionInfo::default()
            }),
        };
        let mut sentinels = SentinelClient::build(
            url.sentinels.clone(),
            url.master.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        let client = sentinels.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: RwLock::new(Master { client, conn }),
                config,
                connect_timeout,
            }),
        })
    }

    fn current(&self) -> Master {
        self.shared
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The master as last found (for a subscriber, or a connection of its
    /// own).
    pub(super) fn client(&self) -> redis::Client {
        self.current().client
    }

    /// Asks the Sentinels for the master now, and moves the shared
    /// connection to it if it is not the one in use.
    pub(super) async fn find_master(&self) -> RedisResult<redis::Client> {
        let mut sentinels = self.shared.sentinels.lock().await;
        let client = self
            .within("no Sentinel answered in time", sentinels.async_get_client())
            .await?;
        let moved =
            self.current().client.get_connection_info().addr != client.get_connection_info().addr;
        if moved {
            let conn = self
                .within(
                    "the new master did not answer",
                    ConnectionManager::new_with_config(client.clone(), self.shared.config.clone()),
                )
                .await?;
            tracing::warn!(
                master = %client.get_connection_info().addr,
                "Redis master moved (Sentinel failover); now using it"
            );
            *self
                .shared
                .current
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Master {
                client: client.clone(),
                conn,
            };
        }
        Ok(client)
    }

    /// `step`, given the connect timeout; `late` says what did not answer.
    async fn within<T>(
        &self,
        late: &'static str,
        step: impl Future<Output = RedisResult<T>>,
    ) -> RedisResult<T> {
        tokio::time::timeout(self.shared.connect_timeout, step)
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, late))
            })?
    }

    /// Sends `cmd`, following the master if it moved.
    pub(super) async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let Master { client, mut conn } = self.current();
        let err = match conn.req_packed_command(cmd).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        self.after_failure(err, &client, async || {
            self.current().conn.req_packed_command(cmd).await
        })
        .await
    }

    /// Sends a pipeline, following the master if it moved.
    pub(super) async fn pipeline(
        &self,
        cmd: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let Master { client, mut conn } = self.current();
        let err = match conn.req_packed_commands(cmd, offset, count).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        self.after_failure(err, &client, async || {
            self.current()
                .conn
                .req_packed_commands(cmd, offset, count)
                .await
        })
        .await
    }

    /// After `err` from the master `used`: asks the Sentinels for the
    /// master, unless another command already moved the connection away
    /// from `used` (commands failing together during a failover ask once).
    async fn after_failure<T>(
        &self,
        err: RedisError,
        used: &redis::Client,
        again: impl AsyncFnOnce() -> RedisResult<T>,
    ) -> RedisResult<T> {
        let sign = failover_sign(&err);
        if matches!(sign, Failover::No) {
            return Err(err);
        }
        let moved_already =
            self.current().client.get_connection_info().addr != used.get_connection_info().addr;
        if !moved_already && let Err(e) = self.find_master().await {
            tracing::debug!(error = %e, "cannot ask the Redis Sentinels for the master");
            return Err(err);
        }
        match sign {
            Failover::Refused => again().await,
            _ => Err(err),
        }
    }

    pub(super) fn db(&self) -> i64 {
        self.current().client.get_connection_info().redis.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_its_sentinels_master_database_and_credentials() {
        let u = parse("redis+sentinel://app:p%40ss@10.0.0.1:26379,10.0.0.2:26379/cache/2")
            .expect("a Sentinel URL")
            .expect("valid");
        assert_eq!(
            u,
            SentinelUrl {
                sentinels: vec![
                    "redis://10.0.0.1:26379".into(),
                    "redis://10.0.0.2:26379".into()
                ],
                master: "cache".into(),
                db: 2,
                username: Some("app".into()),
                password: Some("p@ss".into()),
            }
        );
        let plain = parse("redis+sentinel://127.0.0.1:26379/mymaster")
            .expect("a Sentinel URL")
            .expect("valid");
        assert_eq!(plain.db, 0);
        assert_eq!(plain.password, None);
        assert!(parse("redis://127.0.0.1:6379").is_none());
    }

    #[test]
    fn a_sentinel_url_without_sentinels_master_or_with_a_bad_database_is_refused() {
        for bad in [
            "redis+sentinel://",
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel:///mymaster",
            "redis+sentinel://127.0.0.1:26379/mymaster/x",
            "redis+sentinel://127.0.0.1:26379/mymaster/-1",
            "redis+sentinel://127.0.0.1:26379/mymaster?x=1",
            "redis+sentinel://127.0.0.1:notaport/mymaster",
        ] {
            assert!(matches!(parse(bad), Some(Err(_))), "{bad} was accepted");
        }
    }
}
