//! The shared Redis connection and dedicated connections for blocking
//! commands.

use std::time::Duration;

use crate::harness::{services, test_prefix};
use trovato::kv::{Kv, KvError};

async fn kv() -> Kv {
    Kv::connect(
        &services().await.redis_url,
        &test_prefix(),
        Duration::from_secs(5),
    )
    .await
    .expect("kv connects")
}

/// Whether a client named `name` is blocked in a command right now (on
/// any node of a cluster: `CLIENT LIST` answers for one server).
async fn is_blocked(kv: &Kv, name: &str) -> bool {
    let mut lists: Vec<String> = Vec::new();
    match trovato::kv::cluster_nodes(&services().await.redis_url) {
        Some(nodes) => {
            for node in nodes.expect("cluster URL") {
                let client = redis::Client::open(node).expect("node URL");
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("node connection");
                let list: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut conn)
                    .await
                    .expect("CLIENT LIST");
                lists.push(list);
            }
        }
        None => lists.push(
            kv.query(redis::cmd("CLIENT").arg("LIST"))
                .await
                .expect("CLIENT LIST"),
        ),
    }
    lists
        .iter()
        .flat_map(|l| l.lines())
        .any(|l| l.contains(&format!(" name={name} ")) && l.contains("flags=b"))
}

#[tokio::test]
async fn a_blocking_pop_on_a_dedicated_connection_does_not_stall_the_shared_one() {
    let kv = kv().await;
    let key = kv.key("queue:dedicated");
    let name = format!("blocker-{}", uuid::Uuid::now_v7().simple());
    let mut blocker = kv.dedicated().await.expect("dedicated connection");
    let _: () = blocker
        .query(
            redis::cmd("CLIENT").arg("SETNAME").arg(&name),
            Duration::from_secs(5),
        )
        .await
        .expect("SETNAME");
    let pop = tokio::spawn({
        let key = key.clone();
        async move {
            blocker
                .query::<Option<(String, String)>>(
                    redis::cmd("BLPOP").arg(&key).arg(60),
                    Duration::from_secs(90),
                )
                .await
        }
    });
    // Wait until Redis reports the client blocked, then use the shared
    // connection while it stays blocked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !is_blocked(&kv, &name).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "BLPOP never blocked"
        );
        tokio::task::yield_now().await;
    }
    let pong: String = kv.query(&redis::cmd("PING")).await.expect("shared PING");
    assert_eq!(pong, "PONG");
    assert!(is_blocked(&kv, &name).await, "still blocked after the PING");
    let _: i64 = kv
        .query(redis::cmd("RPUSH").arg(&key).arg("job-1"))
        .await
        .expect("RPUSH");
    let popped = pop.await.expect("task").expect("BLPOP");
    assert_eq!(popped, Some((key, "job-1".to_string())));
}

#[tokio::test]
async fn a_block_longer_than_the_shared_command_timeout_ends_by_the_servers_timeout() {
    let kv = kv().await;
    let mut conn = kv.dedicated().await.expect("dedicated connection");
    // The shared connection abandons commands after 2 s; this one blocks
    // for 3 s and gets Redis's own "nothing arrived" answer.
    let popped: Option<(String, String)> = conn
        .query(
            redis::cmd("BLPOP").arg(kv.key("queue:empty")).arg(3),
            Duration::from_secs(60),
        )
        .await
        .expect("BLPOP ends with nil, not a timeout");
    assert_eq!(popped, None);
}

#[tokio::test]
async fn a_dedicated_command_past_its_own_bound_is_a_timeout() {
    let kv = kv().await;
    let mut conn = kv.dedicated().await.expect("dedicated connection");
    let r = conn
        .query::<Option<(String, String)>>(
            redis::cmd("BLPOP").arg(kv.key("queue:never")).arg(0),
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(r, Err(KvError::Timeout(_))), "{r:?}");
}

#[tokio::test]
async fn delete_prefixed_removes_keys_of_every_slot_and_only_under_its_prefix() {
    let kv = kv().await;
    // Keys spread over the slots (of every node, on a cluster).
    let keys: Vec<String> = (0..64).map(|i| kv.key(&format!("spread:{i}"))).collect();
    for key in &keys {
        let _: () = kv
            .query(redis::cmd("SET").arg(key).arg(1))
            .await
            .expect("SET");
    }
    let kept = kv.key("kept");
    let _: () = kv
        .query(redis::cmd("SET").arg(&kept).arg(1))
        .await
        .expect("SET");
    let mut seen = Vec::new();
    let mut scan = kv.scan("spread:*").await.expect("scan");
    while let Some(batch) = scan.next_batch().await.expect("scan") {
        seen.extend(batch);
    }
    seen.sort();
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(seen, expected, "the scan sees every key once");

    let deleted = kv.delete_prefixed("spread:").await.expect("delete");
    assert_eq!(deleted, 64);
    let left: i64 = kv
        .query(redis::cmd("EXISTS").arg(&keys))
        .await
        .expect("EXISTS");
    assert_eq!(left, 0);
    let kept_n: i64 = kv
        .query(redis::cmd("EXISTS").arg(&kept))
        .await
        .expect("EXISTS");
    assert_eq!(kept_n, 1, "a key outside the sub-prefix stays");
    kv.delete_prefixed("").await.expect("cleanup");
}

#[tokio::test]
async fn keys_of_one_slot_group_can_be_changed_by_one_script() {
    let kv = kv().await;
    let a = kv.slot_key("group:1", ":a");
    let b = kv.slot_key("group:1", ":b");
    assert!(a.starts_with(kv.prefix()) && b.starts_with(kv.prefix()));
    let script = redis::Script::new(
        "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1",
    );
    let mut inv = script.prepare_invoke();
    inv.key(&a).key(&b).arg("x");
    let n: i64 = kv.script(inv).await.expect("one-slot script");
    assert_eq!(n, 1);
    let v: Vec<Option<String>> = kv
        .query(redis::cmd("MGET").arg(&a).arg(&b))
        .await
        .expect("MGET");
    assert_eq!(v, vec![Some("x".to_owned()), Some("x".to_owned())]);
    kv.delete_prefixed("").await.expect("cleanup");
}
