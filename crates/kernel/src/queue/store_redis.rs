//! The Redis queue backend: reliable fetch with scripts.
//!
//! Per queue, under the kernel's prefix (`<prefix>{queue}:<name>:...`):
//! `ready` (a sorted set of ids by the time they become available; delayed
//! items and retries wait there too), `lease` (ids by the end of their
//! lease), `dead` (ids by when they died), and hashes from id to payload,
//! attempts, lease token, last error and `enqueued_ms max_attempts`. Every
//! operation is one script, so a pop moves an id from `ready` to `lease`
//! atomically, and a worker killed mid-job leaves it in `lease`, from
//! where the next pop after the lease's end takes it back. Times are the
//! Redis server's clock (`TIME`), the same for every worker.
//!
//! A set `<prefix>{queue}:names` lists the queues that hold items.
//!
//! Every queue's keys and the names set share the hash tag `{queue}`: the
//! scripts update a queue and the names set in one step, and a Redis
//! Cluster runs a script only on keys of one slot. So on a cluster the
//! queues live on one node, as they would on a single server.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::Script;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{Failure, Job, Nacked, NewJob, Queue, QueueError, QueueStats, check_name, millis};
use crate::kv::Kv;

/// The script prelude: the server's time in milliseconds.
const NOW: &str =
    "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n";

// KEYS of every script: ready, lease, dead, payload, attempts, token,
// error, info, names.

const PUSH: &str = r"
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[5], ARGV[1], 0)
redis.call('HSET', KEYS[8], ARGV[1], now .. ' ' .. ARGV[4])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('SADD', KEYS[9], ARGV[5])
return 1";

const POP: &str = r"
local expired = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], now, id)
  expired = expired + 1
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
if #ids == 0 then return {expired} end
local id = ids[1]
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
local n = redis.call('HINCRBY', KEYS[5], id, 1)
redis.call('HSET', KEYS[6], id, ARGV[2])
return {expired, id, redis.call('HGET', KEYS[4], id) or '', n,
        redis.call('HGET', KEYS[7], id) or '', redis.call('HGET', KEYS[8], id) or ''}";

/// An ack of `ARGV[3]` (lease `ARGV[4]`) then a pop, on the same queue:
/// the reply is the pop's with the ack's result in front.
const ACK_POP: &str = r"
local acked = 0
if redis.call('HGET', KEYS[6], ARGV[3]) == ARGV[4] then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[1], ARGV[3])
  for i = 4, 8 do redis.call('HDEL', KEYS[i], ARGV[3]) end
  acked = 1
end
";

/// Ours while the token matches and the id is leased or (lease expired,
/// moved back, not yet taken again) ready.
const OURS: &str = r"
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return -1 end
";

const ACK: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 4, 8 do redis.call('HDEL', KEYS[i], ARGV[1]) end
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[9], ARGV[3])
end
return 1";

const NACK: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[7], ARGV[1], ARGV[3])
local attempts = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
local info = redis.call('HGET', KEYS[8], ARGV[1]) or ''
local max = tonumber(string.match(info, ' (%d+)$') or '1')
if ARGV[5] == '1' or attempts >= max then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
return 1";

const RELEASE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
local n = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
if n > 0 then redis.call('HSET', KEYS[5], ARGV[1], n - 1) end
redis.call('ZADD', KEYS[1], now, ARGV[1])
return 1";

const STATS: &str = r"
local ready = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local delayed = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local expired = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local leased = redis.call('ZCARD', KEYS[2]) - expired
local dead = redis.call('ZCARD', KEYS[3])
local oldest = now
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 2 and tonumber(first[2]) <= now then oldest = tonumber(first[2]) end
local lfirst = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #lfirst == 2 and tonumber(lfirst[2]) < oldest then oldest = tonumber(lfirst[2]) end
return {ready + expired, delayed, leased, dead, now - oldest}";

const RETRY_DEAD: &str = r"
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
for _, id in ipairs(ids) do
  redis.call('HSET', KEYS[5], id, 0)
  redis.call('ZADD', KEYS[1], now, id)
end
redis.call('DEL', KEYS[3])
return #ids";

const PURGE: &str = r"
local n = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
for i = 1, 8 do redis.call('DEL', KEYS[i]) end
redis.call('SREM', KEYS[9], ARGV[1])
return n";

/// The scripts, compiled once (their SHA1s are computed at start; Redis
/// loads each on first use and after a restart).
struct Scripts {
    push: Script,
    pop: Script,
    ack_pop: Script,
    ack: Script,
    nack: Script,
    release: Script,
    stats: Script,
    retry_dead: Script,
    purge: Script,
}

impl Scripts {
    fn new() -> Self {
        let timed = |body: &str| Script::new(&format!("{NOW}{body}"));
        let owned = |body: &str| Script::new(&format!("{NOW}{OURS}{body}"));
        Self {
            push: timed(PUSH),
            pop: timed(POP),
            // The pop's reply, with the ack's result prepended.
            ack_pop: timed(&format!(
                "{ACK_POP}{}",
                POP.replace("return {", "return {acked, ")
            )),
            ack: owned(ACK),
            nack: owned(NACK),
            release: owned(RELEASE),
            stats: timed(STATS),
            retry_dead: timed(RETRY_DEAD),
            purge: timed(PURGE),
        }
    }
}

/// The hash tag of every queue key (see the module docs).
const SLOT_GROUP: &str = "queue";

#[derive(Clone)]
pub struct RedisQueue {
    kv: Kv,
    max_attempts: u32,
    scripts: std::sync::Arc<Scripts>,
}

impl RedisQueue {
    pub fn new(kv: Kv, max_attempts: u32) -> Self {
        Self {
            kv,
            max_attempts,
            scripts: std::sync::Arc::new(Scripts::new()),
        }
    }

    fn names_key(&self) -> String {
        self.kv.slot_key(SLOT_GROUP, ":names")
    }

    /// The nine keys of `queue`, in the scripts' order.
    fn keys(&self, queue: &str) -> [String; 9] {
        let k = |part: &str| self.kv.slot_key(SLOT_GROUP, &format!(":{queue}:{part}"));
        [
            k("ready"),
            k("lease"),
            k("dead"),
            k("payload"),
            k("attempts"),
            k("token"),
            k("error"),
            k("info"),
            self.names_key(),
        ]
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        queue: &str,
        args: &[&str],
    ) -> Result<T, QueueError> {
        let mut inv = script.prepare_invoke();
        for key in self.keys(queue) {
            inv.key(key);
        }
        for arg in args {
            inv.arg(*arg);
        }
        Ok(self.kv.script(inv).await?)
    }
}

/// The pop script's reply: `{expired, id, payload, attempts, error, info}`,
/// or `{expired}` when nothing was available.
fn parse_pop(queue: &str, token: Uuid, reply: &[redis::Value]) -> Result<Option<Job>, QueueError> {
    let text = |i: usize| -> Option<String> {
        reply
            .get(i)
            .and_then(|v| redis::from_redis_value::<String>(v).ok())
    };
    let int = |i: usize| -> Option<i64> {
        reply
            .get(i)
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
    };
    let expired = int(0).unwrap_or(0);
    if expired > 0 {
        metrics::counter!("trovato_queue_lease_expired_total", "queue" => queue.to_owned())
            .increment(expired as u64);
    }
    let Some(id) = text(1) else { return Ok(None) };
    let payload = text(2).unwrap_or_default();
    let payload =
        RawValue::from_string(payload).map_err(|e| corrupt(&id, &format!("payload: {e}")))?;
    let attempt = int(3).unwrap_or(1);
    let last_error = text(4).filter(|e| !e.is_empty());
    let info = text(5).unwrap_or_default();
    let (enqueued_ms, max) = info
        .split_once(' ')
        .and_then(|(t, m)| Some((t.parse::<i64>().ok()?, m.parse::<u32>().ok()?)))
        .ok_or_else(|| corrupt(&id, "info"))?;
    let enqueued: DateTime<Utc> = Utc
        .timestamp_millis_opt(enqueued_ms)
        .single()
        .ok_or_else(|| corrupt(&id, "enqueued time"))?;
    Ok(Some(Job {
        id: id.parse().map_err(|_| corrupt(&id, "id"))?,
        queue: queue.to_owned(),
        payload,
        attempt: attempt.clamp(1, i64::from(u32::MAX)) as u32,
        max_attempts: max.max(1),
        last_error,
        enqueued,
        lease: token,
    }))
}

fn corrupt(id: &str, reason: &str) -> QueueError {
    QueueError::Corrupt {
        id: id.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Queue for RedisQueue {
    async fn push(&self, queue: &str, job: NewJob) -> Result<Uuid, QueueError> {
        check_name(queue)?;
        let id = Uuid::now_v7();
        let max = job.max_attempts.unwrap_or(self.max_attempts);
        let _: i64 = self
            .invoke(
                &self.scripts.push,
                queue,
                &[
                    &id.to_string(),
                    job.payload.get(),
                    &millis(job.delay).to_string(),
                    &max.to_string(),
                    queue,
                ],
            )
            .await?;
        Ok(id)
    }

    async fn pop(&self, queue: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        check_name(queue)?;
        let token = Uuid::new_v4();
        let reply: Vec<redis::Value> = self
            .invoke(
                &self.scripts.pop,
                queue,
                &[&millis(lease).to_string(), &token.to_string()],
            )
            .await?;
        parse_pop(queue, token, &reply)
    }

    async fn ack_then_pop(
        &self,
        done: &Job,
        queue: &str,
        lease: Duration,
    ) -> Result<(bool, Option<Job>), QueueError> {
        check_name(queue)?;
        if done.queue != queue {
            let acked = self.ack(done).await?;
            return Ok((acked, self.pop(queue, lease).await?));
        }
        let token = Uuid::new_v4();
        let reply: Vec<redis::Value> = self
            .invoke(
                &self.scripts.ack_pop,
                queue,
                &[
                    &millis(lease).to_string(),
                    &token.to_string(),
                    &done.id.to_string(),
                    &done.lease.to_string(),
                ],
            )
            .await?;
        let acked = reply
            .first()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok())
            == Some(1);
        Ok((
            acked,
            parse_pop(queue, token, reply.get(1..).unwrap_or_default())?,
        ))
    }

    async fn len(&self, queue: &str) -> Result<u64, QueueError> {
        let s = self.stats(queue).await?;
        Ok(s.ready + s.delayed + s.in_flight)
    }

    async fn ack(&self, job: &Job) -> Result<bool, QueueError> {
        let n: i64 = self
            .invoke(
                &self.scripts.ack,
                &job.queue,
                &[
                    &job.id.to_string(),
                    &job.lease.to_string(),
                    job.queue.as_str(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn nack(
        &self,
        job: &Job,
        failure: &Failure,
        backoff: Duration,
    ) -> Result<Nacked, QueueError> {
        let (give_up, delay) = failure.plan(backoff);
        let n: i64 = self
            .invoke(
                &self.scripts.nack,
                &job.queue,
                &[
                    &job.id.to_string(),
                    &job.lease.to_string(),
                    failure.error(),
                    &millis(delay).to_string(),
                    if give_up { "1" } else { "0" },
                ],
            )
            .await?;
        Ok(match n {
            -1 => Nacked::LeaseLost,
            0 => Nacked::Dead,
            _ => Nacked::Retrying(delay),
        })
    }

    async fn release(&self, job: &Job) -> Result<bool, QueueError> {
        let n: i64 = self
            .invoke(
                &self.scripts.release,
                &job.queue,
                &[&job.id.to_string(), &job.lease.to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, QueueError> {
        check_name(queue)?;
        let (ready, delayed, in_flight, dead, oldest_ms): (u64, u64, i64, u64, i64) =
            self.invoke(&self.scripts.stats, queue, &[]).await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready,
            delayed,
            in_flight: in_flight.max(0) as u64,
            dead,
            oldest_ready_secs: oldest_ms.max(0) as f64 / 1000.0,
        })
    }

    async fn names(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> = self
            .kv
            .query(redis::cmd("SMEMBERS").arg(self.names_key()))
            .await?;
        names.sort();
        Ok(names)
    }

    async fn retry_dead(&self, queue: &str) -> Result<u64, QueueError> {
        check_name(queue)?;
        self.invoke(&self.scripts.retry_dead, queue, &[]).await
    }

    async fn purge(&self, queue: &str) -> Result<u64, QueueError> {
        check_name(queue)?;
        self.invoke(&self.scripts.purge, queue, &[queue]).await
    }
}
