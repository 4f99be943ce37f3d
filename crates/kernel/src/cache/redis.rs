//! L2: Redis. Three Lua scripts, each one round trip:
//!
//! - `READ` returns the entry at `<prefix>cache:e:{key}` if every tag stamp
//!   it recorded still equals the tag's current stamp (deleting it
//!   otherwise), else the current value of the global counter, which the
//!   filler needs next.
//! - `FILL` writes the entry unless one of its tags was stamped after the
//!   counter value the filler read before loading (the stale-fill race),
//!   recording each tag's current stamp in the entry's header.
//! - `INVALIDATE` takes the next counter value, stamps every tag with it
//!   (each stamp expiring after the L2 TTL plus a margin, so tag memory is
//!   bounded by recent invalidations), and publishes the tags on the bus.
//!
//! Stamps come from one monotonic counter, so a tag key that expired and is
//! stamped again never repeats an old stamp. An entry stamped `0` (tag
//! never invalidated) cannot outlive a later stamp of that tag: the stamp
//! lives longer than any entry.
//!
//! Entry layout: `tag=stamp tag=stamp ...\n<payload>`. Tags never contain
//! a space, `=` or a newline ([`CacheTag`]).
//!
//! Keys: `cache:e:*` entries, `cache:t:*` tag stamps, `cache:seq` the
//! counter, `cache:bus` the channel, all under the Kv prefix. The scripts
//! touch keys derived from the entry's header, so in Redis Cluster the
//! entries and stamps would need one hash slot; this deployment targets a
//! single primary (with Sentinel for failover).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::{Script, Value};

use super::{CacheError, CacheKey, CacheTag, Cached, Entry};
use crate::kv::Kv;

static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v then
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
local nl = string.find(v, '\n', 1, true)
if not nl then
  redis.call('DEL', KEYS[1])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if nl > 1 then
  local names, stamps = {}, {}
  for t, s in string.gmatch(string.sub(v, 1, nl - 1), '([^ =]+)=(%d+)') do
    names[#names + 1] = ARGV[1] .. t
    stamps[#stamps + 1] = s
  end
  if #names > 0 then
    local cur = redis.call('MGET', unpack(names))
    for i = 1, #names do
      if (cur[i] or '0') ~= stamps[i] then
        redis.call('DEL', KEYS[1])
        return tonumber(redis.call('GET', KEYS[2]) or '0')
      end
    end
  end
end
return v
",
    )
});

static FILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = tonumber(ARGV[1])
local n = #KEYS - 1
local header = {}
if n > 0 then
  local tagkeys = {}
  for i = 1, n do tagkeys[i] = KEYS[i + 1] end
  local cur = redis.call('MGET', unpack(tagkeys))
  for i = 1, n do
    local s = cur[i] or '0'
    if tonumber(s) > seen then return 0 end
    header[i] = ARGV[i + 2] .. '=' .. s
  end
end
redis.call('SET', KEYS[1], table.concat(header, ' ') .. '\n' .. ARGV[n + 3], 'EX', ARGV[2])
return 1
",
    )
});

static INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local s = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], s, 'EX', ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return s
",
    )
});

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
    tag_prefix: String,
    channel: String,
}

impl L2 {
    pub fn new(kv: Kv, ttl: Duration) -> Self {
        let ttl_secs = ttl.as_secs().max(1);
        Self {
            seq_key: kv.key("cache:seq"),
            tag_prefix: kv.key("cache:t:"),
            channel: kv.key("cache:bus"),
            kv,
            ttl_secs,
            // Outlives every entry written before the stamp.
            tag_ttl_secs: ttl_secs + 60,
        }
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        self.kv.key(&format!("cache:e:{}", key.as_str()))
    }

    pub async fn read(&self, key: &CacheKey) -> Result<ReadOutcome, CacheError> {
        let mut inv = READ.prepare_invoke();
        inv.key(self.entry_key(key))
            .key(&self.seq_key)
            .arg(&self.tag_prefix);
        let v: Value = self.kv.script(inv).await?;
        match v {
            Value::BulkString(raw) => Ok(ReadOutcome::Hit(Arc::new(decode(raw)?))),
            Value::Int(seq) => Ok(ReadOutcome::Miss {
                seq: u64::try_from(seq).unwrap_or(0),
            }),
            other => Err(CacheError::Corrupt(format!("unexpected reply {other:?}"))),
        }
    }

    /// Writes `entry` unless a tag was invalidated after `seq`. `Ok(false)`:
    /// refused as possibly stale.
    pub async fn fill(&self, key: &CacheKey, seq: u64, entry: &Entry) -> Result<bool, CacheError> {
        let mut inv = FILL.prepare_invoke();
        inv.key(self.entry_key(key));
        let tags = with_all(&entry.tags);
        for tag in &tags {
            inv.key(format!("{}{}", self.tag_prefix, tag.as_str()));
        }
        inv.arg(seq).arg(self.ttl_secs);
        for tag in &tags {
            inv.arg(tag.as_str());
        }
        inv.arg(entry.bytes.as_ref());
        let written: i64 = self.kv.script(inv).await?;
        Ok(written == 1)
    }

    /// Stamps `tags` and publishes them (with `origin`) on the bus.
    pub async fn invalidate(&self, tags: &[CacheTag], origin: &str) -> Result<(), CacheError> {
        let mut inv = INVALIDATE.prepare_invoke();
        inv.key(&self.seq_key);
        let mut message = String::from(origin);
        for tag in tags {
            inv.key(format!("{}{}", self.tag_prefix, tag.as_str()));
            message.push(' ');
            message.push_str(tag.as_str());
        }
        inv.arg(self.tag_ttl_secs).arg(&self.channel).arg(message);
        let _: i64 = self.kv.script(inv).await?;
        Ok(())
    }
}

/// The entry's tags plus the implicit `_all`.
fn with_all(tags: &[CacheTag]) -> Vec<CacheTag> {
    let mut all = Vec::with_capacity(tags.len() + 1);
    all.push(CacheTag::all());
    all.extend(tags.iter().cloned());
    all
}

fn decode(raw: Vec<u8>) -> Result<Entry, CacheError> {
    let raw = Bytes::from(raw);
    let nl = raw
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| CacheError::Corrupt("no header".into()))?;
    let header = std::str::from_utf8(&raw[..nl])
        .map_err(|_| CacheError::Corrupt("header is not UTF-8".into()))?;
    let tags = header
        .split(' ')
        .filter_map(|pair| pair.split_once('=').map(|(t, _)| t))
        .filter(|t| *t != "_all")
        .map(CacheTag::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry {
        bytes: raw.slice(nl + 1..),
        tags,
    })
}
