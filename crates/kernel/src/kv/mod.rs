//! Redis: one multiplexed, self-reconnecting connection shared by the whole
//! process, and the key namespace every kernel key lives under.
//!
//! Never open a connection per request: clone [`Kv`] (cheap) instead. Every
//! key the kernel writes goes through [`Kv::key`] or [`Kv::slot_key`], so it
//! starts with the configured prefix (`TROVATO_REDIS_PREFIX`, default
//! `trovato:`), and nothing ever flushes a whole Redis database.
//!
//! The server may be a Redis Cluster (`redis+cluster://host:port,...`):
//! then commands are routed by key, and keys a script or multi-key command
//! touches together share a hash tag ([`Kv::slot_key`]), since a cluster
//! runs such a command only when all its keys are in one slot. It may also
//! be a master watched by Redis Sentinels (`redis+sentinel://`, see
//! [`sentinel`]): then the kernel follows the master through a failover.

mod sentinel;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, RedisError, RedisFuture, Value};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_url, redact_url};
use crate::error::HttpError;

/// The `[redis]` section: which Redis, and the namespace of the kernel's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Redis")]
pub struct RedisSettings {
    /// Redis URL (`redis://`, `rediss://`, `redis+unix://`), a Redis Cluster by some of its nodes (`redis+cluster://host:port,host:port`), or a master watched by Redis Sentinels (`redis+sentinel://host:port,host:port/<master>[/<db>]`); unset starts an embedded Redis under the data dir.
    #[arg(
        id = "redis.url",
        long = "redis-url",
        env = "REDIS_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,
    /// Prefix of every Redis key the kernel writes.
    #[arg(
        id = "redis.prefix",
        long = "redis-prefix",
        env = "TROVATO_REDIS_PREFIX",
        value_name = "PREFIX"
    )]
    pub prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "trovato:".into(),
        }
    }
}

impl RedisSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            if let Some(parsed) = sentinel::parse(url) {
                return match parsed {
                    Ok(_) => self.validate_prefix(),
                    Err(message) => Err(ConfigError::invalid::<Self>("redis.url", message)),
                };
            }
            match cluster_nodes(url) {
                Some(Ok(_)) => {}
                Some(Err(message)) => {
                    return Err(ConfigError::invalid::<Self>("redis.url", message));
                }
                None => check_url::<Self>(
                    "redis.url",
                    url,
                    &[
                        "redis",
                        "rediss",
                        "redis+unix",
                        "unix",
                        "redis+cluster",
                        "rediss+cluster",
                        "redis+sentinel",
                    ],
                )?,
            }
        }
        self.validate_prefix()
    }

    fn validate_prefix(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[');
        if !prefix_ok {
            return Err(ConfigError::invalid::<Self>(
                "redis.prefix",
                "must be non-empty printable ASCII without spaces or glob characters",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("redis unreachable: {0}")]
    Unavailable(String),
    #[error("redis command timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
}

impl HttpError for KvError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            KvError::Unavailable(_) | KvError::Timeout(_) | KvError::Command(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            }
        }
    }
}

/// How long one command may take before it is abandoned.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The node URLs of a cluster URL (`redis+cluster://[user[:password]@]host:port,host:port`,
/// `rediss+cluster://` for TLS), each as a plain `redis://` (`rediss://`)
/// URL with the shared credentials; `None` when `url` names a single
/// server. A cluster has only database 0, so the URL has no path.
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let node_scheme = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    Some(parse_cluster_nodes(node_scheme, rest))
}

fn parse_cluster_nodes(scheme: &str, rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("a cluster URL has no path or query (a cluster has only database 0)".into());
    }
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes = host_urls(&format!("{scheme}://{userinfo}"), hosts)?;
    if nodes.is_empty() {
        return Err("names no node".into());
    }
    Ok(nodes)
}

/// Each host of the comma-separated `hosts` list as the URL `{base}{host}`
/// (`base` is the scheme and any credentials), refusing what is not a
/// host:port. Blank entries are skipped.
fn host_urls(base: &str, hosts: &str) -> Result<Vec<String>, String> {
    hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| {
            let node = format!("{base}{host}");
            match url::Url::parse(&node) {
                Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(node),
                _ => Err(format!("`{host}` is not a host:port")),
            }
        })
        .collect()
}

/// `url` for logs and errors: credentials hidden, a cluster URL's node
/// list kept.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if cluster_nodes(url).is_some() || sentinel::parse(url).is_some() => {
            let hosts = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            format!("{scheme}://{hosts}")
        }
        _ => redact_url(url),
    }
}

/// Either connection the kernel holds: a self-reconnecting one to a single
/// server, a cluster connection (which follows slot moves and reconnects
/// by itself), or a plain multiplexed one (a single server's
/// [`Dedicated`]).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Plain(MultiplexedConnection),
    Sentinel(sentinel::SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => Box::pin(c.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(c) => Box::pin(c.pipeline(cmd, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Sentinel(c) => c.db(),
        }
    }
}

/// What the handle was connected to.
enum Mode {
    Single(redis::Client),
    Cluster {
        /// The configured node URLs (seeds for new cluster connections).
        nodes: Vec<String>,
        /// A client per configured node, handed out in turn by
        /// [`Kv::subscriber_client`].
        node_clients: Vec<redis::Client>,
        next_subscriber: AtomicUsize,
    },
    /// The master the Sentinels name (the same shared connection).
    Sentinel(sentinel::SentinelConn),
}

/// The shared Redis handle: connection plus key prefix.
#[derive(Clone)]
pub struct Kv {
    conn: Conn,
    mode: Arc<Mode>,
    connect_timeout: Duration,
    prefix: Arc<str>,
}

/// A Redis connection of its own, for blocking commands (a queue worker's
/// `BLMOVE`, a pub/sub wait): a long block neither stalls the shared
/// multiplexed connection nor trips its [`COMMAND_TIMEOUT`]. Each call
/// states its own bound. On a cluster it routes each command by its key
/// like the shared one. Not reconnecting on a single server: a caller that
/// gets [`KvError::Unavailable`] opens a new one.
pub struct Dedicated {
    conn: Conn,
}

impl Dedicated {
    /// Runs `cmd`, abandoning it after `timeout` (give a blocking command
    /// a timeout longer than its own block time).
    pub async fn query<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<T, KvError> {
        classify(
            tokio::time::timeout(timeout, cmd.query_async(&mut self.conn)).await,
            timeout,
        )
    }
}

/// A cluster client for `nodes`. `response_timeout` bounds each command
/// inside the client; `None` leaves the bound to the caller (a blocking
/// command's own).
fn cluster_client(
    nodes: &[String],
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
) -> Result<ClusterClient, RedisError> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(connect_timeout)
        // Retry quickly, like the single server's reconnects: a command
        // is abandoned after COMMAND_TIMEOUT anyway.
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(t) = response_timeout {
        builder = builder.response_timeout(t);
    }
    builder.build()
}

impl Kv {
    /// Connects (failing within `timeout` if Redis does not answer) and
    /// returns a handle that reconnects by itself after Redis restarts.
    /// `url` names a single server, or a Redis Cluster by some of its
    /// nodes (`redis+cluster://host:port,host:port`, see [`cluster_nodes`]).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, KvError> {
        let shown = redact(url);
        let unavailable = |e: &dyn std::fmt::Display| KvError::Unavailable(format!("{shown}: {e}"));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(COMMAND_TIMEOUT)
            // Reconnect quickly: 50 ms, 100 ms, ... capped at 500 ms.
            .set_exponent_base(2)
            .set_factor(50)
            .set_max_delay(500)
            .set_number_of_retries(3);
        if let Some(parsed) = sentinel::parse(url) {
            let parsed = parsed.map_err(|e| unavailable(&e))?;
            let conn = tokio::time::timeout(
                timeout,
                sentinel::SentinelConn::connect(&parsed, config, timeout),
            )
            .await
            .map_err(|_| unavailable(&"timed out"))?
            .map_err(|e| unavailable(&e))?;
            return Ok(Self {
                conn: Conn::Sentinel(conn.clone()),
                mode: Arc::new(Mode::Sentinel(conn)),
                connect_timeout: timeout,
                prefix: prefix.into(),
            });
        }
        let (conn, mode) = match cluster_nodes(url) {
            None => {
                let client = redis::Client::open(url).map_err(|e| unavailable(&e))?;
                let conn = tokio::time::timeout(
                    timeout,
                    ConnectionManager::new_with_config(client.clone(), config),
                )
                .await
                .map_err(|_| unavailable(&"timed out"))?
                .map_err(|e| unavailable(&e))?;
                (Conn::Single(conn), Mode::Single(client))
            }
            Some(nodes) => {
                let nodes = nodes.map_err(|e| unavailable(&e))?;
                let node_clients = nodes
                    .iter()
                    .map(|n| redis::Client::open(n.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| unavailable(&e))?;
                let client = cluster_client(&nodes, timeout, Some(COMMAND_TIMEOUT))
                    .map_err(|e| unavailable(&e))?;
                let conn = tokio::time::timeout(timeout, client.get_async_connection())
                    .await
                    .map_err(|_| unavailable(&"timed out"))?
                    .map_err(|e| unavailable(&e))?;
                let mode = Mode::Cluster {
                    nodes,
                    node_clients,
                    next_subscriber: AtomicUsize::new(0),
                };
                (Conn::Cluster(conn), mode)
            }
        };
        Ok(Self {
            conn,
            mode: Arc::new(mode),
            connect_timeout: timeout,
            prefix: prefix.into(),
        })
    }

    /// Opens a [`Dedicated`] connection to the same server (or cluster).
    pub async fn dedicated(&self) -> Result<Dedicated, KvError> {
        let unavailable = |e: RedisError| KvError::Unavailable(e.to_string());
        let config =
            redis::AsyncConnectionConfig::new().set_connection_timeout(self.connect_timeout);
        let conn = match &*self.mode {
            Mode::Single(client) => {
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                Conn::Plain(conn)
            }
            Mode::Sentinel(s) => {
                // Asked afresh: a caller opens a new one after a failure.
                let client = s.find_master().await.map_err(unavailable)?;
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?;
                Conn::Plain(conn)
            }
            Mode::Cluster { nodes, .. } => {
                let client =
                    cluster_client(nodes, self.connect_timeout, None).map_err(unavailable)?;
                let conn =
                    tokio::time::timeout(self.connect_timeout, client.get_async_connection())
                        .await
                        .map_err(|_| KvError::Unavailable("cluster connect timed out".into()))?
                        .map_err(unavailable)?;
                Conn::Cluster(conn)
            }
        };
        Ok(Dedicated { conn })
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(&*self.mode, Mode::Cluster { .. })
    }

    /// A client to one server on which a plain `SUBSCRIBE` receives every
    /// `PUBLISH` (a cluster forwards each to all its nodes): the server
    /// itself, on a cluster the configured nodes in turn, so a subscriber
    /// that lost its node reconnects to the next one, and under Sentinel
    /// the master the Sentinels name now.
    pub async fn subscriber_client(&self) -> redis::Client {
        match &*self.mode {
            Mode::Single(client) => client.clone(),
            Mode::Sentinel(s) => match s.find_master().await {
                Ok(client) => client,
                // The Sentinels are away: the master as last found.
                Err(_) => s.client(),
            },
            Mode::Cluster {
                node_clients,
                next_subscriber,
                ..
            } => {
                let i = next_subscriber.fetch_add(1, Ordering::Relaxed);
                // `connect` refuses a cluster URL without nodes, so the
                // list is never empty.
                node_clients[i % node_clients.len()].clone()
            }
        }
    }

    /// The namespace prefix, e.g. `trovato:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full Redis key for a kernel key: `<prefix><key>`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A key of the slot group `group`: `<prefix>{<group>}<rest>`. Redis
    /// Cluster places a key by its first `{...}`, so every key of one group
    /// lands in one hash slot and a script may touch them together (a
    /// single server ignores the braces). Still under the prefix: a brace
    /// in the prefix only moves where the tag starts, and the tag is the
    /// same for every key of the group either way.
    pub fn slot_key(&self, group: &str, rest: &str) -> String {
        format!("{}{{{group}}}{rest}", self.prefix)
    }

    /// Runs one command, counting it as in flight while it runs.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        self.tracked(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a Lua script. On a cluster every key it touches must be in
    /// KEYS and in one slot ([`Kv::slot_key`]).
    pub async fn script<T: FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        self.tracked(async move { inv.invoke_async(&mut conn).await })
            .await
    }

    async fn tracked<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, KvError> {
        metrics::counter!("trovato_redis_commands_total").increment(1);
        let gauge = metrics::gauge!("trovato_redis_commands_in_flight");
        gauge.increment(1.0);
        let result = tokio::time::timeout(COMMAND_TIMEOUT, fut).await;
        gauge.decrement(1.0);
        classify(result, COMMAND_TIMEOUT)
    }

    /// Runs `cmd` on one cluster node (`None`: wherever the connection
    /// routes it).
    async fn query_on<T: FromRedisValue>(
        &self,
        node: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> Result<T, KvError> {
        match (&self.conn, node) {
            (Conn::Cluster(conn), Some((host, port))) => {
                let mut conn = conn.clone();
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let v = self
                    .tracked(async move { conn.route_command(cmd, routing).await })
                    .await?;
                Ok(redis::from_redis_value(&v)?)
            }
            _ => self.query(cmd).await,
        }
    }

    /// The cluster's primaries as `(host, port)`, from `CLUSTER SLOTS`
    /// (the table the cluster connection routes by).
    async fn primaries(&self) -> Result<Vec<(String, u16)>, KvError> {
        let slots: Vec<Vec<Value>> = self.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let mut primaries: Vec<(String, u16)> = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, ...], replicas...]
            let Some(Value::Array(node)) = range.get(2) else {
                continue;
            };
            let (Some(host), Some(port)) = (node.first(), node.get(1)) else {
                continue;
            };
            let host: String = redis::from_redis_value(host)?;
            let port: u16 = redis::from_redis_value(port)?;
            if !primaries.iter().any(|(h, p)| *h == host && *p == port) {
                primaries.push((host, port));
            }
        }
        Ok(primaries)
    }

    /// Iterates over the keys matching `<prefix><pattern>` (a SCAN glob),
    /// on every primary of a cluster. Like SCAN, a key written meanwhile
    /// may or may not be seen, and a slot that moves mid-scan may be
    /// missed.
    pub async fn scan(&self, pattern: &str) -> Result<Scan<'_>, KvError> {
        let nodes = if self.is_cluster() {
            self.primaries().await?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        Ok(Scan {
            kv: self,
            pattern: format!("{}{pattern}", self.prefix),
            nodes,
            cursor: 0,
        })
    }

    /// Deletes every key under `<prefix><sub_prefix>`, by SCAN confined to
    /// that pattern (on every primary of a cluster); never touches keys
    /// outside the namespace.
    pub async fn delete_prefixed(&self, sub_prefix: &str) -> Result<u64, KvError> {
        let mut scan = self.scan(&format!("{sub_prefix}*")).await?;
        let mut deleted = 0u64;
        while let Some(keys) = scan.next_batch().await? {
            if !keys.is_empty() {
                // A cluster connection splits a multi-key UNLINK by slot.
                let n: u64 = self.query(redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += n;
            }
        }
        Ok(deleted)
    }
}

/// A SCAN over the namespace ([`Kv::scan`]), node after node on a cluster.
pub struct Scan<'a> {
    kv: &'a Kv,
    pattern: String,
    /// The nodes still to scan, the current one last (`None`: the single
    /// server).
    nodes: Vec<Option<(String, u16)>>,
    cursor: u64,
}

impl Scan<'_> {
    /// The next batch of keys (possibly empty), or `None` once every node
    /// has been scanned through.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<String>>, KvError> {
        let Some(node) = self.nodes.last() else {
            return Ok(None);
        };
        let (next, keys): (u64, Vec<String>) = self
            .kv
            .query_on(
                node.as_ref(),
                redis::cmd("SCAN")
                    .arg(self.cursor)
                    .arg("MATCH")
                    .arg(&self.pattern)
                    .arg("COUNT")
                    .arg(500),
            )
            .await?;
        self.cursor = next;
        if next == 0 {
            self.nodes.pop();
        }
        Ok(Some(keys))
    }
}

/// Maps a bounded command's result onto [`KvError`].
fn classify<T>(
    result: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, KvError> {
    match result {
        Err(_) => Err(KvError::Timeout(timeout)),
        Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            Err(KvError::Unavailable(e.to_string()))
        }
        Ok(Err(e)) => Err(KvError::Command(e)),
        Ok(Ok(v)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_nodes_with_the_shared_credentials() {
        let nodes = cluster_nodes("redis+cluster://:pw@127.0.0.1:7101,127.0.0.1:7102/")
            .expect("a cluster URL")
            .expect("valid");
        assert_eq!(
            nodes,
            vec!["redis://:pw@127.0.0.1:7101", "redis://:pw@127.0.0.1:7102"]
        );
        let tls = cluster_nodes("rediss+cluster://[::1]:7101")
            .expect("a cluster URL")
            .expect("valid");
        assert_eq!(tls, vec!["rediss://[::1]:7101"]);
        assert!(cluster_nodes("redis://127.0.0.1:6379").is_none());
    }

    #[test]
    fn a_cluster_url_without_nodes_or_with_a_database_is_refused() {
        for bad in [
            "redis+cluster://",
            "redis+cluster://,",
            "redis+cluster://127.0.0.1:7101/1",
            "redis+cluster://127.0.0.1:7101?x=1",
            "redis+cluster://127.0.0.1:notaport",
        ] {
            assert!(
                matches!(cluster_nodes(bad), Some(Err(_))),
                "{bad} was accepted"
            );
            let settings = RedisSettings {
                url: Some(bad.into()),
                ..RedisSettings::default()
            };
            assert!(settings.validate().is_err(), "{bad} validated");
        }
        let ok = RedisSettings {
            url: Some("redis+cluster://127.0.0.1:7101,127.0.0.1:7102".into()),
            ..RedisSettings::default()
        };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn a_sentinel_url_validates_and_is_redacted_like_a_cluster_url() {
        let settings = |url: &str| RedisSettings {
            url: Some(url.into()),
            ..RedisSettings::default()
        };
        assert!(
            settings("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/cache/1")
                .validate()
                .is_ok()
        );
        for bad in [
            "redis+sentinel://10.0.0.1:26379",
            "redis+sentinel://10.0.0.1:26379/cache/x",
        ] {
            assert!(settings(bad).validate().is_err(), "{bad} validated");
        }
        assert_eq!(
            redact("redis+sentinel://app:secret@10.0.0.1:26379,10.0.0.2:26379/cache"),
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/cache"
        );
    }

    #[test]
    fn a_redacted_cluster_url_keeps_its_nodes_and_hides_the_password() {
        let shown = redact("redis+cluster://user:secret@10.0.0.1:6379,10.0.0.2:6379");
        assert_eq!(shown, "redis+cluster://10.0.0.1:6379,10.0.0.2:6379");
    }
}
