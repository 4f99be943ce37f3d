//! Single flight: concurrent misses for one key in one process share the
//! leader's load. A follower that sees the leader fail, find nothing or be
//! cancelled loads for itself.
//!
//! Every follower that joins is counted on a watch channel
//! ([`Flights::joined`]): a diagnostic, and the point tests synchronise on
//! to know a reader is waiting on another's load (no sleeping). Only
//! followers pay for it, and they are about to wait anyway.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::{CacheKey, Cached};

type Slot = Option<Option<Cached>>;

pub(crate) struct Flights {
    map: Mutex<HashMap<String, (u64, watch::Receiver<Slot>)>>,
    next: AtomicU64,
    /// Followers that joined a flight since start.
    joined: watch::Sender<u64>,
}

impl Default for Flights {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            next: AtomicU64::new(0),
            joined: watch::Sender::new(0),
        }
    }
}

pub(crate) enum Join<'a, W> {
    Leader(Guard<'a>),
    Follower(W),
}

pub(crate) struct Guard<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Slot>,
}

impl Flights {
    pub fn join(&self, key: &CacheKey) -> Join<'_, impl Future<Output = Option<Cached>> + use<>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = map.get(key.as_str()) {
            let mut rx = rx.clone();
            drop(map);
            self.joined.send_modify(|n| *n += 1);
            return Join::Follower(async move {
                match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.clone().flatten(),
                    Err(_) => None,
                }
            });
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        map.insert(key.as_str().to_owned(), (id, rx));
        Join::Leader(Guard {
            flights: self,
            key: key.as_str().to_owned(),
            id,
            tx,
        })
    }

    /// Changes each time a reader joins another reader's load.
    pub fn joined(&self) -> watch::Receiver<u64> {
        self.joined.subscribe()
    }
}

impl Guard<'_> {
    /// Hands the outcome to the followers (`None`: nothing found).
    pub fn complete(self, value: Option<Cached>) {
        self.tx.send_replace(Some(value));
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}
