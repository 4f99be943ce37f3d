//! L1: the in-process tier. A moka cache bounded in entries and TTL, plus
//! a tag → key index so a tag can be invalidated without scanning.
//!
//! Each insert gets a unique id; the index records it, and moka's eviction
//! listener queues `(key, id)` for removal from the index (applied under
//! the index lock on the next write). The id keeps a late notification for
//! an old entry from unindexing a newer one with the same key. The index is
//! therefore bounded by the entries L1 holds.
//!
//! Stale fills: a filler reads [`Local::epoch`] before it reads L2 or
//! loads, and [`Local::insert_if_current`] drops the insert if any
//! invalidation happened since, so an old value read before an
//! invalidation cannot land after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::notification::RemovalCause;

use super::{CacheKey, CacheTag, Cached};

type Removed = Arc<Mutex<Vec<(Arc<String>, u64, Cached)>>>;

pub(crate) struct Local {
    cache: moka::sync::Cache<String, (u64, Cached)>,
    index: Mutex<Index>,
    removed: Removed,
    next_id: AtomicU64,
    epoch: AtomicU64,
    /// Random id of this process, so the bus can skip its own messages.
    origin: String,
}

#[derive(Default)]
struct Index {
    by_tag: HashMap<CacheTag, HashMap<String, u64>>,
}

impl Local {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let removed: Removed = Arc::default();
        let sink = removed.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(
                move |key: Arc<String>, (id, entry): (u64, Cached), _: RemovalCause| {
                    // Only this small queue's lock is taken here: the listener
                    // may run inside a moka call made under the index lock.
                    if let Ok(mut q) = sink.lock() {
                        q.push((key, id, entry));
                    }
                },
            )
            .build();
        Self {
            cache,
            index: Mutex::default(),
            removed,
            next_id: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            origin: uuid::Uuid::now_v7().simple().to_string(),
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        self.cache.get(key.as_str()).map(|(_, e)| e)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index consistent enough
        // (at worst an extra key per tag); keep serving.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts unless an invalidation happened after `epoch` was read.
    pub fn insert_if_current(&self, epoch: u64, key: &CacheKey, entry: Cached) -> bool {
        let mut index = self.lock();
        if self.epoch.load(Ordering::Acquire) != epoch {
            metrics::counter!("trovato_cache_stale_fills_total").increment(1);
            return false;
        }
        self.drain(&mut index);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        for tag in &entry.tags {
            index
                .by_tag
                .entry(tag.clone())
                .or_default()
                .insert(key.as_str().to_owned(), id);
        }
        self.cache.insert(key.as_str().to_owned(), (id, entry));
        true
    }

    /// Drops every L1 entry carrying any of `tags`.
    pub fn invalidate(&self, tags: &[CacheTag]) {
        let mut index = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.drain(&mut index);
        if tags.iter().any(|t| t.as_str() == "_all") {
            index.by_tag.clear();
            self.cache.invalidate_all();
            return;
        }
        for tag in tags {
            if let Some(keys) = index.by_tag.remove(tag) {
                for key in keys.keys() {
                    self.cache.invalidate(key.as_str());
                }
            }
        }
    }

    /// Drops everything (the bus may have missed messages).
    pub fn clear(&self) {
        let mut index = self.lock();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        index.by_tag.clear();
        self.cache.invalidate_all();
    }

    /// Applies queued eviction notifications to the index.
    fn drain(&self, index: &mut Index) {
        let queued = match self.removed.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(_) => return,
        };
        for (key, id, entry) in queued {
            for tag in &entry.tags {
                if let Some(keys) = index.by_tag.get_mut(tag) {
                    if keys.get(key.as_str()) == Some(&id) {
                        keys.remove(key.as_str());
                    }
                    if keys.is_empty() {
                        index.by_tag.remove(tag);
                    }
                }
            }
        }
    }
}
