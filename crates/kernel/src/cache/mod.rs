//! The two-tier cache (spec §14): L1 in-process (moka), L2 Redis, PostgreSQL
//! the source of truth. This module owns every cache key and tag the kernel
//! writes, their invalidation, and the coherence of L1 copies across
//! instances.
//!
//! - **Reads** go L1 → L2 → loader, filling the tiers on the way back.
//!   Concurrent misses for one key in one process share a single load
//!   ([`flight`]).
//! - **Tags** are versioned, not enumerated: invalidating a tag stamps it
//!   with the next value of one global counter, and every L2 entry records
//!   the stamps its tags had when it was written. Each process mirrors the
//!   current stamps in memory ([`stamps`]), so an L2 read is one `GET`
//!   compared locally, and an entry whose tag moved on is never served.
//!   Tag memory is one small key per recently invalidated tag, expiring
//!   after the L2 TTL; there are no tag → key sets to leak.
//! - **Stale fills** cannot survive: a filler remembers the counter before
//!   it loads, and the fill is refused when any of the entry's tags was
//!   stamped after that ([`redis`]). L1 uses the same idea with a local
//!   epoch ([`local`]).
//! - **Coherence**: the invalidation script publishes the tags and their
//!   stamp on a namespaced channel in the same round trip; every instance's
//!   subscriber ([`bus`]) moves its mirror and drops its L1 copies. After
//!   the subscriber loses Redis, reads ask Redis for the stamps until it
//!   has reconnected, cleared L1 (it may have missed messages) and
//!   reloaded the mirror.
//! - **Redis outage**: reads fall back to L1 and the loader (no errors),
//!   invalidations are applied to L1 at once and remembered (bounded) to be
//!   replayed on L2 when Redis answers again. L1 entries never outlive the
//!   L1 TTL.

mod bus;
mod flight;
mod local;
mod redis;
mod stamps;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::ConfigError;
use crate::error::HttpError;
use crate::kv::{Kv, KvError};
use crate::tasks::Tasks;

pub use self::redis::ReadOutcome;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A key or tag with characters outside `[A-Za-z0-9:_.-]`, or empty.
    #[error("invalid cache name `{0}`")]
    InvalidName(String),
    /// Redis could not be reached or refused a command.
    #[error(transparent)]
    Backend(#[from] KvError),
    /// An L2 entry that does not follow the entry layout.
    #[error("corrupt cache entry: {0}")]
    Corrupt(String),
}

impl HttpError for CacheError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            CacheError::Backend(_) => (S::SERVICE_UNAVAILABLE, "redis_unavailable"),
            CacheError::InvalidName(_) | CacheError::Corrupt(_) => {
                (S::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

fn valid_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= 512
        && raw.as_bytes()[0].is_ascii_alphanumeric()
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-'))
}

/// A cache key (without the namespace prefix). Stage-scoped keys start with
/// `st:{stage}:` (see [`CacheKey::staged`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn new(raw: impl Into<String>) -> Result<Self, CacheError> {
        let raw = raw.into();
        if valid_name(&raw) {
            Ok(Self(raw))
        } else {
            Err(CacheError::InvalidName(raw))
        }
    }

    /// The key as seen from `stage`: live keeps the bare key, any other
    /// stage gets `st:{stage}:`, so a preview never fills a live key.
    pub fn staged(stage: &str, key: &str) -> Result<Self, CacheError> {
        if stage == LIVE {
            Self::new(key)
        } else {
            Self::new(format!("st:{stage}:{key}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A cache tag, e.g. `item:{id}`, `item_list:article`, `stage:{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheTag(String);

impl CacheTag {
    pub fn new(raw: impl Into<String>) -> Result<Self, CacheError> {
        let raw = raw.into();
        if valid_name(&raw) {
            Ok(Self(raw))
        } else {
            Err(CacheError::InvalidName(raw))
        }
    }

    /// The tag every entry carries implicitly; invalidating it empties L2
    /// (used when too many invalidations were missed during an outage).
    /// Its leading `_` keeps it apart from every tag [`CacheTag::new`] builds.
    fn all() -> Self {
        Self("_all".into())
    }

    /// `{kind}:{id}`, e.g. `item:0190...`. `kind` is a constant of the
    /// tag charset and a UUID's hyphenated form is too, so this cannot fail.
    pub fn for_id(kind: &'static str, id: uuid::Uuid) -> Self {
        debug_assert!(valid_name(kind));
        Self(format!("{kind}:{id}"))
    }

    /// The tag of everything cached for a non-live stage.
    pub fn stage(stage: &str) -> Result<Self, CacheError> {
        Self::new(format!("stage:{stage}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The live stage's id: its keys carry no prefix.
pub const LIVE: &str = "live";

/// A cached value and the tags it was stored with.
#[derive(Debug)]
pub struct Entry {
    pub bytes: Bytes,
    pub tags: Vec<CacheTag>,
}

pub type Cached = Arc<Entry>;

/// What a loader returns for a key that exists.
pub struct Loaded {
    pub bytes: Bytes,
    pub tags: Vec<CacheTag>,
}

/// The `[cache]` section: sizes and lifetimes of the tiers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Cache")]
pub struct CacheSettings {
    /// Entries in the in-process cache tier.
    #[arg(
        id = "cache.l1_capacity",
        long = "cache-l1-capacity",
        env = "TROVATO_CACHE_L1_CAPACITY",
        value_name = "N"
    )]
    pub l1_capacity: u64,
    /// Seconds an in-process cache entry lives: the longest an instance serves a value it was not told about (e.g. while Redis is down).
    #[arg(
        id = "cache.l1_ttl_secs",
        long = "cache-l1-ttl",
        env = "TROVATO_CACHE_L1_TTL",
        value_name = "SECS"
    )]
    pub l1_ttl_secs: u64,
    /// Seconds a Redis cache entry lives.
    #[arg(
        id = "cache.l2_ttl_secs",
        long = "cache-l2-ttl",
        env = "TROVATO_CACHE_L2_TTL",
        value_name = "SECS"
    )]
    pub l2_ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            l1_capacity: 10_000,
            l1_ttl_secs: 60,
            l2_ttl_secs: 3600,
        }
    }
}

impl CacheSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (id, secs) in [
            ("cache.l1_ttl_secs", self.l1_ttl_secs),
            ("cache.l2_ttl_secs", self.l2_ttl_secs),
        ] {
            if secs == 0 {
                return Err(ConfigError::invalid::<Self>(
                    id,
                    "must be at least 1 second",
                ));
            }
        }
        Ok(())
    }
}

/// The cache facade; clone it freely (one shared inner per process).
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    local: local::Local,
    l2: redis::L2,
    flights: flight::Flights,
    /// Invalidations that could not reach Redis, replayed before L2 is
    /// trusted again.
    pending: pending::Pending,
    /// Set by the bus while its subscription is up.
    bus_up: AtomicBool,
    /// Counts invalidations received from other instances and applied.
    remote_applied: watch::Sender<u64>,
    /// Dropped with the last clone: tells the bus task to stop.
    _stop: watch::Sender<()>,
}

/// A tiny bounded set of tags whose invalidation did not reach Redis.
mod pending {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::CacheTag;

    /// More missed tags than this and the whole L2 is invalidated instead.
    const LIMIT: usize = 10_000;

    #[derive(Default)]
    pub struct Pending(Mutex<BTreeSet<CacheTag>>);

    impl Pending {
        pub fn add(&self, tags: &[CacheTag]) {
            let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
            set.extend(tags.iter().cloned());
            if set.len() > LIMIT {
                set.clear();
                set.insert(CacheTag::all());
            }
        }

        pub fn is_empty(&self) -> bool {
            self.0.lock().map(|s| s.is_empty()).unwrap_or(false)
        }

        pub fn take(&self) -> Vec<CacheTag> {
            let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *set).into_iter().collect()
        }
    }
}

impl Cache {
    /// Builds the cache on the shared [`Kv`] connection and starts the
    /// invalidation subscriber on a connection of its own (on a cluster,
    /// to one node: every node receives every `PUBLISH`), waiting up to
    /// `timeout` for the first subscription.
    pub async fn start(
        kv: Kv,
        settings: CacheSettings,
        timeout: Duration,
        tasks: &Tasks,
    ) -> Result<Self, CacheError> {
        let channel = kv.key("cache:bus");
        let subscriber = kv.clone();
        let (cache, stop_rx) = Self::build(kv, settings);
        let ready = bus::spawn(
            Arc::downgrade(&cache.inner),
            subscriber,
            channel,
            cache.inner.local.origin(),
            stop_rx,
            tasks,
        );
        // Not fatal: the bus keeps retrying, and until it is up L1 copies
        // are bounded by their TTL.
        if tokio::time::timeout(timeout, ready).await.is_err() {
            tracing::warn!("cache invalidation bus not subscribed yet; retrying in background");
        }
        Ok(cache)
    }

    /// The cache of a short-lived command: its invalidations reach every
    /// instance as usual, but it subscribes to none, so no task or
    /// connection of its own outlives the command's work. Its L1 copies
    /// may miss other instances' invalidations for at most the L1 TTL, as
    /// during a Redis outage.
    pub fn without_bus(kv: Kv, settings: CacheSettings) -> Self {
        Self::build(kv, settings).0
    }

    /// The cache and the receiver its bus stops on (when the last clone
    /// is dropped).
    fn build(kv: Kv, settings: CacheSettings) -> (Self, watch::Receiver<()>) {
        let (stop_tx, stop_rx) = watch::channel(());
        let cache = Cache {
            inner: Arc::new(Inner {
                local: local::Local::new(
                    settings.l1_capacity,
                    Duration::from_secs(settings.l1_ttl_secs),
                ),
                l2: redis::L2::new(kv, Duration::from_secs(settings.l2_ttl_secs)),
                flights: flight::Flights::default(),
                pending: Default::default(),
                bus_up: AtomicBool::new(false),
                remote_applied: watch::Sender::new(0),
                _stop: stop_tx,
            }),
        };
        (cache, stop_rx)
    }

    /// Reads `key` through L1 and L2, calling `load` on a miss (once per
    /// process for concurrent misses). `Ok(None)`: the loader found nothing
    /// (not cached). Loader errors are returned; cache backend errors never
    /// are (the value is then loaded and served without L2).
    pub async fn get_or_load<E, F, Fut>(&self, key: &CacheKey, load: F) -> Result<Option<Cached>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Loaded>, E>>,
    {
        if let Some(hit) = self.inner.local.get(key) {
            metrics::counter!("trovato_cache_hits_total", "tier" => "l1").increment(1);
            return Ok(Some(hit));
        }
        metrics::counter!("trovato_cache_misses_total", "tier" => "l1").increment(1);
        match self.inner.flights.join(key) {
            flight::Join::Leader(guard) => {
                let (value, fresh) = self.fill(key, load).await?;
                // A value refused as possibly stale is not handed on:
                // followers may have arrived after the invalidation.
                guard.complete(if fresh { value.clone() } else { None });
                Ok(value)
            }
            flight::Join::Follower(wait) => match wait.await {
                Some(v) => Ok(Some(v)),
                // The leader failed, found nothing, read a value that was
                // invalidated meanwhile, or was cancelled: load for
                // ourselves rather than take its outcome as ours.
                None => Ok(self.fill(key, load).await?.0),
            },
        }
    }

    /// L2, else the loader; fills the tiers. The flag says whether the
    /// value was current when filled (not refused as possibly stale).
    async fn fill<E, F, Fut>(&self, key: &CacheKey, load: F) -> Result<(Option<Cached>, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Loaded>, E>>,
    {
        let inner = &self.inner;
        let epoch = inner.local.epoch();
        let mut seq = None;
        if self.l2_usable().await {
            match inner.l2.read(key).await {
                Ok(ReadOutcome::Hit(entry)) => {
                    metrics::counter!("trovato_cache_hits_total", "tier" => "l2").increment(1);
                    let fresh = inner.local.insert_if_current(epoch, key, entry.clone());
                    return Ok((Some(entry), fresh));
                }
                Ok(ReadOutcome::Miss { seq: s }) => seq = Some(s),
                Err(e) => backend_error("read", &e),
            }
        }
        metrics::counter!("trovato_cache_misses_total", "tier" => "l2").increment(1);
        let start = Instant::now();
        let loaded = load().await;
        metrics::histogram!("trovato_cache_load_duration_seconds")
            .record(start.elapsed().as_secs_f64());
        let Some(loaded) = loaded? else {
            return Ok((None, true));
        };
        let mut tags = loaded.tags;
        tags.sort();
        tags.dedup();
        let entry = Arc::new(Entry {
            bytes: loaded.bytes,
            tags,
        });
        let mut keep_local = true;
        if let Some(seq) = seq {
            match inner.l2.fill(key, seq, &entry).await {
                Ok(true) => {}
                Ok(false) => {
                    // A tag moved on while we loaded: the value may be
                    // stale. Serve it to this reader only.
                    metrics::counter!("trovato_cache_stale_fills_total").increment(1);
                    keep_local = false;
                }
                Err(e) => backend_error("fill", &e),
            }
        }
        let fresh = keep_local && inner.local.insert_if_current(epoch, key, entry.clone());
        Ok((Some(entry), fresh))
    }

    /// Invalidates every value carrying any of `tags`, in every tier and on
    /// every instance. Call it after the write's transaction committed.
    /// Never fails: when Redis is unreachable, L1 is invalidated at once and
    /// the L2 part is replayed when Redis returns.
    pub async fn invalidate(&self, tags: &[CacheTag]) {
        if tags.is_empty() {
            return;
        }
        metrics::counter!("trovato_cache_invalidations_total", "origin" => "local")
            .increment(tags.len() as u64);
        // Before: so L1 is right even if Redis cannot be reached.
        self.inner.local.invalidate(tags);
        self.replay_pending().await;
        match self
            .inner
            .l2
            .invalidate(tags, self.inner.local.origin())
            .await
        {
            // After: a reader of this process may have taken the still-valid
            // L2 entry between the first local invalidation and the stamp,
            // and put it in L1; this drops it (and, by moving the epoch,
            // refuses any such insert still in flight). The bus skips this
            // process's own messages, so it would not.
            Ok(()) => self.inner.local.invalidate(tags),
            Err(e) => {
                backend_error("invalidate", &e);
                self.inner.pending.add(tags);
            }
        }
    }

    /// True when L2 may be read: no invalidation is waiting to be replayed
    /// (replaying it first if Redis is back).
    async fn l2_usable(&self) -> bool {
        if self.inner.pending.is_empty() {
            return true;
        }
        self.replay_pending().await;
        self.inner.pending.is_empty()
    }

    async fn replay_pending(&self) {
        if self.inner.pending.is_empty() {
            return;
        }
        let tags = self.inner.pending.take();
        match self
            .inner
            .l2
            .invalidate(&tags, self.inner.local.origin())
            .await
        {
            Ok(()) => tracing::info!(tags = tags.len(), "replayed missed cache invalidations"),
            Err(_) => self.inner.pending.add(&tags),
        }
    }

    /// Loads the mirror of tag stamps for bus generation `generation`,
    /// retrying (50 ms doubling to 1 s) until it succeeds or the bus moves
    /// on; until then L2 reads ask Redis for the stamps.
    async fn reload_stamps(&self, generation: u64) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.inner.l2.reload_stamps(generation).await {
                Ok(true) => return,
                // Emptied after Redis lost its data: read it afresh.
                Ok(false) => continue,
                Err(e) => backend_error("reload", &e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            if !self.inner.l2.stamps().is_current(generation) {
                return;
            }
        }
    }

    /// Whether L2 reads are judged by this process's mirror of the tag
    /// stamps (one `GET`), rather than by stamps read from Redis.
    pub fn stamps_mirrored(&self) -> bool {
        self.inner.l2.stamps().seq().is_some()
    }

    /// The L1 copy of `key`, if any (no L2, no load). For tests and
    /// diagnostics.
    pub fn peek_l1(&self, key: &CacheKey) -> Option<Cached> {
        self.inner.local.get(key)
    }

    /// The valid L2 entry of `key`, if any (no L1, no load).
    pub async fn peek_l2(&self, key: &CacheKey) -> Result<Option<Cached>, CacheError> {
        match self.inner.l2.read(key).await? {
            ReadOutcome::Hit(e) => Ok(Some(e)),
            ReadOutcome::Miss { .. } => Ok(None),
        }
    }

    /// Whether the invalidation subscriber is currently subscribed.
    pub fn bus_connected(&self) -> bool {
        self.inner.bus_up.load(Ordering::Acquire)
    }

    /// Changes each time an invalidation from another instance has been
    /// applied to L1 (for diagnostics and the invalidation benchmark).
    pub fn remote_invalidations(&self) -> watch::Receiver<u64> {
        self.inner.remote_applied.subscribe()
    }

    /// Changes each time a reader of this process joins another reader's
    /// load of the same key instead of loading itself (single flight): a
    /// synchronisation point for tests, which must not sleep to let a
    /// reader arrive.
    #[doc(hidden)]
    pub fn flight_followers(&self) -> watch::Receiver<u64> {
        self.inner.flights.joined()
    }

    /// Low-level L2 access for benchmarks: one validated read.
    pub async fn read_l2(&self, key: &CacheKey) -> Result<ReadOutcome, CacheError> {
        self.inner.l2.read(key).await
    }
}

fn backend_error(op: &'static str, e: &CacheError) {
    metrics::counter!("trovato_cache_errors_total", "op" => op).increment(1);
    tracing::warn!(error = %e, op, "cache backend unavailable; continuing without L2");
}
