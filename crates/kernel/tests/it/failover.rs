//! Redis failover: the kernel's Redis handle follows the master through a
//! failover Sentinel runs and through the master's process being killed,
//! and keeps working on a Redis Cluster whose primary is killed. Each test
//! starts its own servers (redis-server on free loopback ports, data under
//! a temporary directory), apart from the shared test Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::AsyncCommands;
use trovato::kv::Kv;

use crate::harness::{PATIENCE, eventually, free_port};

const MASTER_NAME: &str = "trovato";

/// One redis-server process, killed when dropped.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &std::path::Path, name: &str, args: &[String], sentinel: bool) -> Self {
        let port = free_port();
        let conf = dir.join(format!("{name}.conf"));
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n",
            dir.display()
        );
        for a in args {
            text.push_str(a);
            text.push('\n');
        }
        std::fs::write(&conf, text.replace("{port}", &port.to_string())).expect("config");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf);
        if sentinel {
            cmd.arg("--sentinel");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        Self {
            port,
            child: Some(child),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A master, its replica and one Sentinel watching them (quorum 1).
struct Set {
    _dir: TempDir,
    master: Server,
    replica: Server,
    sentinel: Server,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn raw(url: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

async fn role(url: &str) -> Option<String> {
    let mut c = raw(url).await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
    redis::from_redis_value(role.first()?).ok()
}

/// Whether the server at `url` is a master, or a replica that has synced
/// with its master (one that never synced may not take over).
async fn replication_ready(url: &str) -> bool {
    let info = text_reply(url, &["INFO", "replication"]).await;
    info.contains("role:master") || info.contains("master_link_status:up")
}

/// The text the server at `url` answers `command` with; empty if it does
/// not answer.
async fn text_reply(url: &str, command: &[&str]) -> String {
    let Some(mut c) = raw(url).await else {
        return String::new();
    };
    let Some((name, args)) = command.split_first() else {
        return String::new();
    };
    redis::cmd(name)
        .arg(args)
        .query_async(&mut c)
        .await
        .unwrap_or_default()
}

/// The port the Sentinel names as master now.
async fn sentinel_master(sentinel: &Server) -> Option<u16> {
    let mut c = raw(&sentinel.url()).await?;
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut c)
        .await
        .ok()?;
    addr.map(|(_, port)| port)
}

/// Whether the Sentinel sees `replicas` replicas of the master.
async fn sentinel_sees_replicas(sentinel: &Server, replicas: usize) -> bool {
    let Some(mut c) = raw(&sentinel.url()).await else {
        return false;
    };
    let found: Result<Vec<redis::Value>, _> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(MASTER_NAME)
        .query_async(&mut c)
        .await;
    found.is_ok_and(|r| r.len() >= replicas)
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trovato-{kind}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn start_set() -> Set {
    let dir = temp_dir("sentinel");
    let master = Server::start(&dir, "master", &[], false);
    let replica = Server::start(
        &dir,
        "replica",
        &[format!("replicaof 127.0.0.1 {}", master.port)],
        false,
    );
    let sentinel = Server::start(
        &dir,
        "sentinel",
        &[
            format!("sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1", master.port),
            format!("sentinel down-after-milliseconds {MASTER_NAME} 1000"),
            format!("sentinel failover-timeout {MASTER_NAME} 10000"),
        ],
        true,
    );
    let set = Set {
        _dir: TempDir(dir),
        master,
        replica,
        sentinel,
    };
    let replica_url = set.replica.url();
    let synced = eventually(PATIENCE, || replication_ready(&replica_url)).await;
    assert!(synced.is_some(), "the replica never synced");
    let seen = eventually(PATIENCE, || sentinel_sees_replicas(&set.sentinel, 1)).await;
    assert!(seen.is_some(), "the Sentinel never found the replica");
    set
}

async fn kv_for(set: &Set) -> Kv {
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{MASTER_NAME}",
        set.sentinel.port
    );
    Kv::connect(&url, "trovato-sentinel-test:", Duration::from_secs(5))
        .await
        .expect("connects through the Sentinel")
}

async fn set_key(kv: &Kv, key: &str, value: &str) -> bool {
    kv.query::<()>(redis::cmd("SET").arg(kv.key(key)).arg(value))
        .await
        .is_ok()
}

/// What the server at `url` holds under the kernel key `key`.
async fn stored(url: &str, kv: &Kv, key: &str) -> Option<String> {
    let mut c = raw(url).await?;
    c.get(kv.key(key)).await.ok()?
}

#[tokio::test]
async fn writes_go_to_the_new_master_after_a_sentinel_failover() {
    let set = start_set().await;
    let kv = kv_for(&set).await;
    assert!(
        set_key(&kv, "before", "1").await,
        "a write before the failover"
    );
    assert_eq!(
        stored(&set.master.url(), &kv, "before").await.as_deref(),
        Some("1"),
        "the write went to the master"
    );

    // Refused (NOGOODSLAVE) until the Sentinel has fresh word of the
    // replica.
    let sentinel_url = set.sentinel.url();
    let started = eventually(PATIENCE, || async {
        let Some(mut c) = raw(&sentinel_url).await else {
            return false;
        };
        redis::cmd("SENTINEL")
            .arg("failover")
            .arg(MASTER_NAME)
            .query_async::<()>(&mut c)
            .await
            .is_ok()
    })
    .await;
    assert!(started.is_some(), "the Sentinel never started a failover");
    let replica_port = set.replica.port;
    let promoted = eventually(PATIENCE, || async {
        sentinel_master(&set.sentinel).await == Some(replica_port)
            && role(&set.replica.url()).await.as_deref() == Some("master")
            && role(&set.master.url()).await.as_deref() == Some("slave")
    })
    .await;
    assert!(promoted.is_some(), "the failover never completed");

    // The old master now refuses writes (or Sentinel closed the handle's
    // connection to it while reconfiguring it); either failure makes the
    // handle ask the Sentinel, and the write goes to the new master.
    let wrote = eventually(PATIENCE, || set_key(&kv, "after", "2")).await;
    assert!(wrote.is_some(), "no write succeeded after the failover");
    assert_eq!(
        stored(&set.replica.url(), &kv, "after").await.as_deref(),
        Some("2"),
        "the write went to the new master"
    );
    let subscriber = kv.subscriber_client().await;
    assert_eq!(
        subscriber.get_connection_info().addr.to_string(),
        format!("127.0.0.1:{replica_port}"),
        "subscribers go to the new master"
    );
}

#[tokio::test]
async fn the_handle_follows_the_master_when_its_process_is_killed() {
    let mut set = start_set().await;
    let kv = kv_for(&set).await;
    assert!(set_key(&kv, "before", "1").await);
    let replica_url = set.replica.url();
    let replicated = eventually(PATIENCE, || async {
        stored(&replica_url, &kv, "before").await.as_deref() == Some("1")
    })
    .await;
    assert!(replicated.is_some(), "the write never reached the replica");
    set.master.kill();
    let replica_port = set.replica.port;
    let promoted = eventually(PATIENCE, || async {
        sentinel_master(&set.sentinel).await == Some(replica_port)
            && role(&set.replica.url()).await.as_deref() == Some("master")
    })
    .await;
    assert!(
        promoted.is_some(),
        "the Sentinel never promoted the replica"
    );
    // Commands may fail while the handle finds the new master; each
    // failure makes it ask the Sentinel.
    let wrote = eventually(PATIENCE, || set_key(&kv, "after", "2")).await;
    assert!(wrote.is_some(), "no write succeeded after the kill");
    assert_eq!(
        stored(&set.replica.url(), &kv, "after").await.as_deref(),
        Some("2"),
        "the write went to the promoted replica"
    );
    assert_eq!(
        stored(&set.replica.url(), &kv, "before").await.as_deref(),
        Some("1"),
        "what was written before the kill is still there"
    );
}

/// `CLUSTER NODES` of the node at `url`: (port, is a primary, slot ranges)
/// of each node that is not failed.
async fn cluster_nodes(url: &str) -> Option<Vec<(u16, bool, Vec<(u16, u16)>)>> {
    let mut c = raw(url).await?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut c)
        .await
        .ok()?;
    let mut nodes = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if flags.contains("fail") {
            continue;
        }
        let port = addr
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())?;
        let slots = fields
            .iter()
            .skip(8)
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => r.parse().ok().map(|n| (n, n)),
            })
            .collect();
        nodes.push((port, flags.contains("master"), slots));
    }
    Some(nodes)
}

async fn cluster_ok(url: &str) -> bool {
    text_reply(url, &["CLUSTER", "INFO"])
        .await
        .contains("cluster_state:ok")
}

#[tokio::test]
async fn a_cluster_keeps_serving_every_slot_after_a_primary_is_killed() {
    let dir = temp_dir("cluster");
    let mut nodes: Vec<Server> = (0..6)
        .map(|i| {
            Server::start(
                &dir,
                &format!("node{i}"),
                &[
                    "cluster-enabled yes".into(),
                    "cluster-config-file nodes-{port}.conf".into(),
                    "cluster-node-timeout 1000".into(),
                    "repl-diskless-sync-delay 0".into(),
                ],
                false,
            )
        })
        .collect();
    let _dir = TempDir(dir);
    for n in &nodes {
        let url = n.url();
        let up = eventually(PATIENCE, || async { raw(&url).await.is_some() }).await;
        assert!(up.is_some(), "a cluster node never started");
    }
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for n in &nodes {
        create.arg(format!("127.0.0.1:{}", n.port));
    }
    let created = create
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli runs");
    assert!(created.success(), "redis-cli --cluster create failed");
    for n in &nodes {
        let url = n.url();
        let ok = eventually(PATIENCE, || cluster_ok(&url)).await;
        assert!(ok.is_some(), "the cluster never became ok");
        let synced = eventually(PATIENCE, || replication_ready(&url)).await;
        assert!(synced.is_some(), "a replica never synced");
    }

    let url = format!(
        "redis+cluster://{}",
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let kv = Kv::connect(&url, "trovato-cluster-kill:", Duration::from_secs(5))
        .await
        .expect("connects to the cluster");
    // Keys in many slots, so every primary holds some.
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        assert!(set_key(&kv, k, "before").await, "write {k}");
    }

    // Kill the primary that holds the slot of the first key.
    let first = nodes[0].url();
    let mut c = raw(&first).await.expect("node");
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(kv.key(&keys[0]))
        .query_async(&mut c)
        .await
        .expect("keyslot");
    let before = cluster_nodes(&first).await.expect("cluster nodes");
    let (victim, _, _) = before
        .iter()
        .find(|(_, primary, slots)| {
            *primary && slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .expect("a primary holds the slot")
        .clone();
    let index = nodes
        .iter()
        .position(|n| n.port == victim)
        .expect("one of ours");
    nodes[index].kill();
    let survivor = nodes
        .iter()
        .find(|n| n.port != victim)
        .expect("a survivor")
        .url();

    // A replica takes the slot over.
    let promoted = eventually(PATIENCE, || async {
        let Some(now) = cluster_nodes(&survivor).await else {
            return false;
        };
        cluster_ok(&survivor).await
            && now.iter().any(|(port, primary, slots)| {
                *port != victim && *primary && slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
    })
    .await;
    assert!(
        promoted.is_some(),
        "no replica took over the killed primary's slots"
    );

    // Every key can be written again, the killed primary's included, and
    // reads back what was written.
    for k in &keys {
        let wrote = eventually(PATIENCE, || set_key(&kv, k, "after")).await;
        assert!(wrote.is_some(), "{k} cannot be written after the kill");
    }
    for k in &keys {
        let got: Option<String> = kv
            .query(redis::cmd("GET").arg(kv.key(k)))
            .await
            .expect("read after the kill");
        assert_eq!(got.as_deref(), Some("after"), "{k}");
    }
}
