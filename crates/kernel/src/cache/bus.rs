//! The invalidation bus: one dedicated pub/sub connection per process,
//! subscribed to `<prefix>cache:bus`. Each message is `origin stamp tag
//! tag ...`: every message moves the tags' stamps in the mirror
//! ([`super::stamps`]), and messages from other instances also drop the
//! tagged L1 entries here.
//!
//! The task reconnects by itself (50 ms doubling to 1 s). Messages sent
//! while it was away are lost, so on every loss the mirror stops being
//! trusted, and on every reconnect L1 is cleared and the mirror reloaded
//! from Redis. It stops when the kernel's tasks are cancelled or the last
//! [`super::Cache`] clone is dropped.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};

use super::{CacheTag, Inner};
use crate::tasks::Tasks;

pub(crate) fn spawn(
    inner: Weak<Inner>,
    kv: crate::kv::Kv,
    channel: String,
    origin: &str,
    mut stop: watch::Receiver<()>,
    tasks: &Tasks,
) -> oneshot::Receiver<()> {
    let origin = origin.to_owned();
    let (ready_tx, ready_rx) = oneshot::channel();
    let replays = tasks.clone();
    tasks.spawn("cache bus", |token| async move {
        // Ends with the kernel, or when the last cache clone is dropped.
        let mut stopped = std::pin::pin!(async move {
            tokio::select! {
                _ = stop.changed() => {},
                () = token.cancelled() => {},
            }
        });
        let mut ready = Some(ready_tx);
        let mut delay = Duration::from_millis(50);
        let mut first = true;
        loop {
            let session = async {
                // On a cluster, each attempt tries the next node.
                let mut pubsub = kv.subscriber_client().await.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let subscribed = tokio::select! {
                () = &mut stopped => return,
                r = session => r,
            };
            match subscribed {
                Ok(pubsub) => {
                    delay = Duration::from_millis(50);
                    let Some(strong) = inner.upgrade() else {
                        return;
                    };
                    if !first {
                        strong.local.clear();
                        tracing::info!("cache bus reconnected; L1 cleared");
                    }
                    first = false;
                    strong.bus_up.store(true, Ordering::Relaxed);
                    // Subscribed before the reload starts, so every stamp
                    // is either in what it reads or in a message to come.
                    let generation = strong.l2.stamps().resubscribed();
                    let reload = super::Cache {
                        inner: strong.clone(),
                    };
                    replays.spawn("cache stamps reload", move |token| async move {
                        tokio::select! {
                            () = reload.reload_stamps(generation) => {},
                            () = token.cancelled() => {},
                        }
                    });
                    // Invalidations this process could not send while Redis
                    // was away go out now, not at its next cache call: other
                    // instances may read the stale L2 entries before then.
                    if !strong.pending.is_empty() {
                        let cache = super::Cache {
                            inner: strong.clone(),
                        };
                        replays.spawn(
                            "cache replay",
                            |_| async move { cache.replay_pending().await },
                        );
                    }
                    drop(strong);
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            () = &mut stopped => return,
                            m = messages.next() => m,
                        };
                        let Some(msg) = msg else { break };
                        let Some(strong) = inner.upgrade() else {
                            return;
                        };
                        if let Ok(payload) = msg.get_payload::<String>() {
                            apply(&strong, &origin, &payload);
                        }
                    }
                    if let Some(strong) = inner.upgrade() {
                        // Messages may be missed from now on: L1 copies are
                        // dropped at reconnect (and age out by TTL before).
                        // Cleared before the flag drops, so whoever sees
                        // `bus_connected()` false finds this clear done.
                        strong.l2.stamps().lost();
                        strong.local.clear();
                        strong.bus_up.store(false, Ordering::Release);
                    }
                    tracing::warn!("cache bus disconnected; reconnecting");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cache bus subscribe failed");
                }
            }
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(delay) => {},
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    });
    ready_rx
}

fn apply(inner: &Inner, origin: &str, payload: &str) {
    let mut parts = payload.split(' ').peekable();
    let from = parts.next();
    match parts.peek().and_then(|s| s.parse::<u64>().ok()) {
        Some(stamp) => {
            parts.next();
            inner.l2.stamps().apply(parts.clone(), stamp);
        }
        // A message without its stamp (from an older kernel during a
        // rolling upgrade): the mirror cannot follow it, so it is no
        // longer trusted until the bus reconnects.
        None => inner.l2.stamps().lost(),
    }
    if from == Some(origin) {
        return;
    }
    let tags: Vec<CacheTag> = parts
        .filter_map(|t| {
            if t == "_all" {
                Some(CacheTag::all())
            } else {
                CacheTag::new(t).ok()
            }
        })
        .collect();
    metrics::counter!("trovato_cache_invalidations_total", "origin" => "remote")
        .increment(tags.len() as u64);
    inner.local.invalidate(&tags);
    inner.remote_applied.send_modify(|n| *n += 1);
}
