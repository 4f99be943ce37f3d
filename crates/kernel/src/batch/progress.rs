//! Live batch progress in Redis: one hash per batch (`<prefix>batch:<id>`)
//! holding the status as the last committed chunk left it. Each write is
//! one script that never moves the count of settled targets backwards nor
//! leaves a final state, so chunks committing in one order and reporting
//! in another cannot make the bar jump back. The hash expires a day after
//! the batch ends (a week while it runs); PostgreSQL has the truth, and a
//! status read that finds no hash rebuilds it from there.

use redis::Script;
use uuid::Uuid;

use super::BatchStatus;
use crate::state::AppState;

/// Seconds a finished batch's progress stays in Redis.
pub const KEPT_AFTER_END_SECS: u64 = 86_400;
/// Seconds a running batch's progress lives without an update.
const KEPT_WHILE_RUNNING_SECS: u64 = 7 * 86_400;

const PUBLISH: &str = r"
local settled = tonumber(redis.call('HGET', KEYS[1], 'settled') or '-1')
local final = redis.call('HGET', KEYS[1], 'final') == '1'
if final and ARGV[3] ~= '1' then return 0 end
if tonumber(ARGV[1]) < settled and ARGV[3] ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'settled', ARGV[1], 'final', ARGV[3], 'status', ARGV[2], 'owner', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1";

fn key(state: &AppState, id: Uuid) -> String {
    state.kv.key(&format!("batch:{id}"))
}

/// Writes `status` as the batch's live progress (unless Redis already has a
/// later one). Redis being down only slows status reads down.
pub async fn publish(state: &AppState, status: &BatchStatus) {
    let Ok(json) = serde_json::to_string(status) else {
        return;
    };
    let final_state = status.state.is_final();
    let ttl = if final_state {
        KEPT_AFTER_END_SECS
    } else {
        KEPT_WHILE_RUNNING_SECS
    };
    let script = Script::new(PUBLISH);
    let mut inv = script.prepare_invoke();
    inv.key(key(state, status.id))
        .arg(status.processed + status.failed)
        .arg(json)
        .arg(if final_state { "1" } else { "0" })
        .arg(status.owner.map(|o| o.to_string()).unwrap_or_default())
        .arg(ttl);
    if let Err(e) = state.kv.script::<i64>(inv).await {
        tracing::warn!(batch = %status.id, error = %e, "batch progress not written to Redis");
    }
}

/// The live progress, if Redis has it.
pub async fn read(state: &AppState, id: Uuid) -> Option<BatchStatus> {
    let (status, owner): (Option<String>, Option<String>) = state
        .kv
        .query(
            redis::cmd("HMGET")
                .arg(key(state, id))
                .arg("status")
                .arg("owner"),
        )
        .await
        .ok()?;
    let mut s: BatchStatus = serde_json::from_str(&status?).ok()?;
    s.owner = owner.and_then(|o| o.parse().ok());
    Some(s)
}
