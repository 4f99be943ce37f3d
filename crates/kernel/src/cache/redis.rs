//! L2: Redis. An entry is one string, `<prefix>cache:e:{key}`, laid out as
//! `tag=stamp tag=stamp ...\n<payload>`: the stamp each of its tags had
//! when it was written. Tags never contain a space, `=` or a newline
//! ([`CacheTag`]).
//!
//! - **Read**: one `GET`, then the recorded stamps are compared with the
//!   current ones in this process's mirror ([`super::stamps`]). Only when
//!   the mirror cannot judge (bus down, reload pending, a tag dropped for
//!   room) are the stamps read from Redis, in one `MGET`.
//! - **Fill**: a filler remembers the counter before it loads; the fill is
//!   refused when any of the entry's tags was stamped after that (the
//!   stale-fill race), else it is one `SET` recording the stamps it
//!   compared. The check and the write need not be atomic: a stamp that
//!   lands between them differs from the one recorded, so readers reject
//!   the entry.
//! - **Invalidate** (one script): takes the next counter value, stamps every
//!   tag with it (each stamp expiring after the L2 TTL plus a margin, so
//!   tag memory is bounded by recent invalidations), records the tags in
//!   the stamp index (a sorted set scored by expiry, which a reload of the
//!   mirror reads), and publishes `origin stamp tag ...` on the bus.
//!
//! Stamps come from one monotonic counter, so a tag key that expired and is
//! stamped again never repeats an old stamp. An entry stamped `0` (tag
//! never invalidated) cannot outlive a later stamp of that tag: the stamp
//! lives longer than any entry.
//!
//! Keys, all under the Kv prefix: entries `cache:e:*` anywhere; the
//! counter, the stamp index and the stamps `{cache}:*`, whose hash tag
//! puts them in one Redis Cluster slot, since the invalidation script
//! writes them together. `cache:bus` is the channel.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::stamps::{Stamps, Verdict};
use super::{CacheError, CacheKey, CacheTag, Cached, Entry};
use crate::kv::Kv;

static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expires = now + ttl * 1000
local message = {ARGV[3], s}
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], s, 'EX', ttl)
  redis.call('ZADD', KEYS[2], expires, ARGV[i + 1])
  message[#message + 1] = ARGV[i + 1]
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ttl * 1000)
redis.call('PUBLISH', ARGV[2], table.concat(message, ' '))
return s
",
    )
});

/// The live part of the stamp index: `{now_ms, counter, {tag, expires_ms, ...}}`.
static LIVE_STAMPS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {now, tonumber(redis.call('GET', KEYS[1]) or '0'), redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')}
",
    )
});

/// How many stamps a reload reads per `MGET`.
const RELOAD_BATCH: usize = 1000;

/// What an L2 read found.
pub enum ReadOutcome {
    Hit(Cached),
    /// No valid entry; `seq` is the counter value to fill against.
    Miss {
        seq: u64,
    },
}

pub(crate) struct L2 {
    kv: Kv,
    ttl_secs: u64,
    tag_ttl_secs: u64,
    seq_key: String,
    index_key: String,
    tag_prefix: String,
    channel: String,
    stamps: Stamps,
}

impl L2 {
    pub fn new(kv: Kv, ttl: Duration) -> Self {
        let ttl_secs = ttl.as_secs().max(1);
        // Outlives every entry written before the stamp.
        let tag_ttl_secs = ttl_secs + 60;
        Self {
            seq_key: kv.slot_key("cache", ":seq"),
            index_key: kv.slot_key("cache", ":tags"),
            tag_prefix: kv.slot_key("cache", ":t:"),
            channel: kv.key("cache:bus"),
            kv,
            ttl_secs,
            tag_ttl_secs,
            stamps: Stamps::new(Duration::from_secs(tag_ttl_secs)),
        }
    }

    pub fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        self.kv.key(&format!("cache:e:{}", key.as_str()))
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}{tag}", self.tag_prefix)
    }

    pub async fn read(&self, key: &CacheKey) -> Result<ReadOutcome, CacheError> {
        let raw: Option<Vec<u8>> = self
            .kv
            .query(redis::cmd("GET").arg(self.entry_key(key)))
            .await?;
        // An entry without a header is treated as absent; the next fill
        // overwrites it.
        let Some((raw, nl)) = raw.and_then(|r| header_end(&r).map(|nl| (r, nl))) else {
            return Ok(ReadOutcome::Miss {
                seq: self.seq().await?,
            });
        };
        let header = std::str::from_utf8(&raw[..nl])
            .map_err(|_| CacheError::Corrupt("header is not UTF-8".into()))?;
        let (verdict, seq) = match self.stamps.check(recorded(header)) {
            Verdict::Unknown => self.check_in_redis(header).await?,
            v => (v, None),
        };
        if verdict == Verdict::Fresh {
            let tags = tags_of(header)?;
            return Ok(ReadOutcome::Hit(Arc::new(Entry {
                bytes: Bytes::from(raw).slice(nl + 1..),
                tags,
            })));
        }
        let seq = match seq {
            Some(s) => s,
            None => self.seq().await?,
        };
        Ok(ReadOutcome::Miss { seq })
    }

    /// The counter value, from the mirror when it is ready.
    async fn seq(&self) -> Result<u64, CacheError> {
        if let Some(seq) = self.stamps.seq() {
            return Ok(seq);
        }
        let seq: Option<u64> = self.kv.query(redis::cmd("GET").arg(&self.seq_key)).await?;
        Ok(seq.unwrap_or(0))
    }

    /// Judges a header by the stamps in Redis, read with the counter in one
    /// `MGET` (all in the stamps' slot).
    async fn check_in_redis(&self, header: &str) -> Result<(Verdict, Option<u64>), CacheError> {
        let pairs: Vec<(&str, u64)> = recorded(header).collect();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&self.seq_key);
        for (tag, _) in &pairs {
            cmd.arg(self.tag_key(tag));
        }
        let current: Vec<Option<u64>> = self.kv.query(&cmd).await?;
        let seq = current.first().copied().flatten().unwrap_or(0);
        let fresh = pairs
            .iter()
            .zip(current.iter().skip(1))
            .all(|((_, recorded), now)| now.unwrap_or(0) == *recorded);
        let verdict = if fresh {
            Verdict::Fresh
        } else {
            Verdict::Stale
        };
        Ok((verdict, Some(seq)))
    }

    /// Writes `entry` unless a tag was invalidated after `seq`. `Ok(false)`:
    /// refused as possibly stale.
    pub async fn fill(&self, key: &CacheKey, seq: u64, entry: &Entry) -> Result<bool, CacheError> {
        let tags = with_all(&entry.tags);
        let stamps = match self.stamps.current(&tags) {
            Some(s) => s,
            None => {
                let mut cmd = redis::cmd("MGET");
                for tag in &tags {
                    cmd.arg(self.tag_key(tag.as_str()));
                }
                let current: Vec<Option<u64>> = self.kv.query(&cmd).await?;
                current.into_iter().map(|s| s.unwrap_or(0)).collect()
            }
        };
        if stamps.iter().any(|s| *s > seq) {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(entry.bytes.len() + 32 * tags.len());
        for (i, (tag, stamp)) in tags.iter().zip(&stamps).enumerate() {
            if i > 0 {
                value.push(b' ');
            }
            value.extend_from_slice(tag.as_str().as_bytes());
            value.push(b'=');
            value.extend_from_slice(stamp.to_string().as_bytes());
        }
        value.push(b'\n');
        value.extend_from_slice(&entry.bytes);
        let _: () = self
            .kv
            .query(
                redis::cmd("SET")
                    .arg(self.entry_key(key))
                    .arg(value)
                    .arg("EX")
                    .arg(self.ttl_secs),
            )
            .await?;
        Ok(true)
    }

    /// Stamps `tags` and publishes them (with `origin`) on the bus; this
    /// process's mirror takes the stamp at once.
    pub async fn invalidate(&self, tags: &[CacheTag], origin: &str) -> Result<(), CacheError> {
        let mut inv = INVALIDATE.prepare_invoke();
        inv.key(&self.seq_key).key(&self.index_key);
        for tag in tags {
            inv.key(self.tag_key(tag.as_str()));
        }
        inv.arg(self.tag_ttl_secs).arg(&self.channel).arg(origin);
        for tag in tags {
            inv.arg(tag.as_str());
        }
        let seq: u64 = self.kv.script(inv).await?;
        self.stamps.apply(tags.iter().map(CacheTag::as_str), seq);
        Ok(())
    }

    /// Reads every live stamp and the counter into the mirror, which is
    /// ready afterwards unless the bus moved past `generation`. `Ok(false)`:
    /// Redis had lost its data and the mirror was emptied; reload again.
    pub async fn reload_stamps(&self, generation: u64) -> Result<bool, CacheError> {
        let mut inv = LIVE_STAMPS.prepare_invoke();
        inv.key(&self.seq_key).key(&self.index_key);
        let (now_ms, seq, index): (u64, u64, Vec<(String, f64)>) = self.kv.script(inv).await?;
        let mut live = Vec::with_capacity(index.len());
        for batch in index.chunks(RELOAD_BATCH) {
            let mut cmd = redis::cmd("MGET");
            for (tag, _) in batch {
                cmd.arg(self.tag_key(tag));
            }
            let stamps: Vec<Option<u64>> = self.kv.query(&cmd).await?;
            for ((tag, expires_ms), stamp) in batch.iter().zip(stamps) {
                // A stamp that expired since the index was read is gone.
                if let Some(stamp) = stamp {
                    let left = Duration::from_millis((*expires_ms as u64).saturating_sub(now_ms));
                    live.push((tag.clone(), stamp, left));
                }
            }
        }
        Ok(self.stamps.reloaded(generation, seq, live))
    }
}

/// Where an entry's header ends (its first newline).
fn header_end(raw: &[u8]) -> Option<usize> {
    raw.iter().position(|b| *b == b'\n')
}

/// The `(tag, stamp)` pairs of a header; a malformed stamp reads as one
/// that never matches.
fn recorded(header: &str) -> impl Iterator<Item = (&str, u64)> {
    header
        .split(' ')
        .filter_map(|pair| pair.split_once('='))
        .map(|(t, s)| (t, s.parse().unwrap_or(u64::MAX)))
}

/// The entry's tags plus the implicit `_all`.
fn with_all(tags: &[CacheTag]) -> Vec<CacheTag> {
    let mut all = Vec::with_capacity(tags.len() + 1);
    all.push(CacheTag::all());
    all.extend(tags.iter().cloned());
    all
}

/// The tags a header names, without the implicit `_all`.
fn tags_of(header: &str) -> Result<Vec<CacheTag>, CacheError> {
    recorded(header)
        .map(|(t, _)| t)
        .filter(|t| *t != "_all")
        .map(CacheTag::new)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_the_pairs_written() {
        let pairs: Vec<_> = recorded("_all=0 item:1=42 x=junk").collect();
        assert_eq!(pairs, [("_all", 0), ("item:1", 42), ("x", u64::MAX)]);
        let raw = b"_all=3 item:1=4\npayload";
        assert_eq!(header_end(raw), Some(15));
        assert_eq!(
            tags_of("_all=3 item:1=4").unwrap(),
            [CacheTag::new("item:1").unwrap()]
        );
    }
}
