//! Live batch progress in Redis: one hash per batch (`<prefix>batch:<id>`).
//!
//! A chunk that commits reports itself with one script ([`report`]): the
//! hash's `c<seq>` field marks it counted, and only a chunk not yet marked
//! adds its processed and failed counts, so a report repeated after a
//! redelivery, or one racing a rebuild, counts once. PostgreSQL has the
//! truth; [`sync`] writes it (the batch's fields and every settled chunk,
//! merged the same way) when a batch starts or ends and when a status read
//! finds the hash gone (a Redis restart). Counts never move backwards and a
//! final state is never left.
//!
//! The hash expires a day after the batch ends (a week without news while
//! it runs). One key per script: the scripts run unchanged on Redis
//! Cluster.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use redis::Script;
use uuid::Uuid;

use super::{BatchState, BatchStatus, ERRORS_KEPT, TargetFailure};
use crate::state::AppState;

/// Seconds a finished batch's progress stays in Redis.
pub const KEPT_AFTER_END_SECS: u64 = 86_400;
/// Seconds a running batch's progress lives without an update.
const KEPT_WHILE_RUNNING_SECS: u64 = 7 * 86_400;

/// ARGV: seq, processed, failed, message, errors (JSON array, or empty),
/// started, ttl, errors kept. Returns {settled, total (-1: unknown)}.
static REPORT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
if redis.call('HSETNX', k, 'c' .. ARGV[1], 1) == 1 then
  redis.call('HINCRBY', k, 'processed', ARGV[2])
  redis.call('HINCRBY', k, 'failed', ARGV[3])
  if redis.call('HGET', k, 'final') ~= '1' then
    redis.call('HSET', k, 'state', 'running', 'message', ARGV[4])
    redis.call('HSETNX', k, 'started', ARGV[6])
    if ARGV[5] ~= '' then
      local errs = cjson.decode(redis.call('HGET', k, 'errors') or '[]')
      for _, e in ipairs(cjson.decode(ARGV[5])) do table.insert(errs, e) end
      while #errs > tonumber(ARGV[8]) do table.remove(errs, 1) end
      redis.call('HSET', k, 'errors', cjson.encode(errs))
    end
    redis.call('EXPIRE', k, ARGV[7])
  end
end
local counts = redis.call('HMGET', k, 'processed', 'failed', 'total')
return {tonumber(counts[1] or '0') + tonumber(counts[2] or '0'), tonumber(counts[3] or '-1')}",
    )
});

/// ARGV: operation, total, created, owner, state, started, finished,
/// message, errors (JSON), final ('1'/'0'), ttl, then (seq, processed,
/// failed) per settled chunk. A final state already there stays.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local k = KEYS[1]
for i = 12, #ARGV, 3 do
  if redis.call('HSETNX', k, 'c' .. ARGV[i], 1) == 1 then
    redis.call('HINCRBY', k, 'processed', ARGV[i + 1])
    redis.call('HINCRBY', k, 'failed', ARGV[i + 2])
  end
end
redis.call('HSET', k, 'operation', ARGV[1], 'total', ARGV[2], 'created', ARGV[3], 'owner', ARGV[4])
redis.call('HSETNX', k, 'processed', 0)
redis.call('HSETNX', k, 'failed', 0)
local was_final = redis.call('HGET', k, 'final') == '1'
if ARGV[10] == '1' or not was_final then
  local state = ARGV[5]
  if ARGV[10] ~= '1' and state == 'queued' and redis.call('HGET', k, 'state') == 'running' then
    state = 'running'
  end
  redis.call('HSET', k, 'state', state, 'final', ARGV[10])
  if ARGV[6] ~= '' then redis.call('HSET', k, 'started', ARGV[6]) end
  if ARGV[7] ~= '' then redis.call('HSET', k, 'finished', ARGV[7]) end
  if ARGV[10] == '1' or redis.call('HEXISTS', k, 'message') == 0 then
    redis.call('HSET', k, 'message', ARGV[8], 'errors', ARGV[9])
  end
  redis.call('EXPIRE', k, ARGV[11])
end
return 1",
    )
});

fn key(state: &AppState, id: Uuid) -> String {
    state.kv.key(&format!("batch:{id}"))
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// A settled chunk as [`report`] and [`sync`] count it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettledChunk {
    pub seq: i32,
    pub processed: i32,
    pub failed: i32,
}

/// Where the batch stands after a chunk's report: targets settled, and the
/// total (`None` when Redis had lost the batch's fields).
#[derive(Debug, Clone, Copy)]
pub struct Reported {
    pub settled: u64,
    pub total: Option<u64>,
}

/// Counts a committed chunk in the live progress (once, however often it
/// is reported).
pub async fn report(
    state: &AppState,
    batch: Uuid,
    chunk: &SettledChunk,
    message: &str,
    errors: &[TargetFailure],
    started: Option<DateTime<Utc>>,
) -> Result<Reported, crate::kv::KvError> {
    let errors = if errors.is_empty() {
        String::new()
    } else {
        serde_json::to_string(errors).unwrap_or_default()
    };
    let mut inv = REPORT.prepare_invoke();
    inv.key(key(state, batch))
        .arg(chunk.seq)
        .arg(chunk.processed)
        .arg(chunk.failed)
        .arg(message)
        .arg(errors)
        .arg(time(started.or_else(|| Some(Utc::now()))))
        .arg(KEPT_WHILE_RUNNING_SECS)
        .arg(ERRORS_KEPT);
    let (settled, total): (i64, i64) = state.kv.script(inv).await?;
    Ok(Reported {
        settled: settled.max(0) as u64,
        total: u64::try_from(total).ok(),
    })
}

/// Writes PostgreSQL's `status` and its settled `chunks` into the live
/// progress. Redis being down only slows status reads down.
pub async fn sync(state: &AppState, status: &BatchStatus, chunks: &[SettledChunk]) {
    let final_state = status.state.is_final();
    let ttl = if final_state {
        KEPT_AFTER_END_SECS
    } else {
        KEPT_WHILE_RUNNING_SECS
    };
    let mut inv = SYNC.prepare_invoke();
    inv.key(key(state, status.id))
        .arg(&status.operation)
        .arg(status.total)
        .arg(status.created.to_rfc3339())
        .arg(status.owner.map(|o| o.to_string()).unwrap_or_default())
        .arg(status.state.as_str())
        .arg(time(status.started))
        .arg(time(status.finished))
        .arg(&status.message)
        .arg(serde_json::to_string(&status.errors).unwrap_or_else(|_| "[]".into()))
        .arg(if final_state { "1" } else { "0" })
        .arg(ttl);
    for c in chunks {
        inv.arg(c.seq).arg(c.processed).arg(c.failed);
    }
    if let Err(e) = state.kv.script::<i64>(inv).await {
        tracing::warn!(batch = %status.id, error = %e, "batch progress not written to Redis");
    }
}

const FIELDS: [&str; 11] = [
    "operation",
    "total",
    "created",
    "owner",
    "state",
    "started",
    "finished",
    "message",
    "errors",
    "processed",
    "failed",
];

/// The live progress, if Redis has the whole of it.
pub async fn read(state: &AppState, id: Uuid) -> Option<BatchStatus> {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key(state, id));
    for f in FIELDS {
        cmd.arg(f);
    }
    let v: Vec<Option<String>> = state.kv.query(&cmd).await.ok()?;
    let [
        operation,
        total,
        created,
        owner,
        batch_state,
        started,
        finished,
        message,
        errors,
        processed,
        failed,
    ]: [Option<String>; 11] = v.try_into().ok()?;
    let when = |t: Option<String>| -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&t?)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let count = |n: Option<String>| n.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    Some(BatchStatus {
        id,
        operation: operation?,
        state: BatchState::parse(&batch_state?),
        total: total?.parse().ok()?,
        processed: count(processed),
        failed: count(failed),
        percent: 0.0,
        message: message.unwrap_or_default(),
        created: when(created)?,
        started: when(started),
        finished: when(finished),
        eta_secs: None,
        errors: errors
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        owner: owner.and_then(|o| o.parse().ok()),
    })
}
