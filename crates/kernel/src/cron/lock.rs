//! The cluster-wide cron lock in Redis.
//!
//! `SET <prefix>cron:lock <token> NX PX <ttl>` takes it, with a fresh
//! token per run (`<holder> <uuid>`, so a busy server can say who holds
//! it). While the run lasts, [`heartbeat`] extends the lifetime every
//! third of it, and only while the key still holds this run's token (one
//! script: compare, then `PEXPIRE`). Release is compare-and-delete. If an
//! extension finds the key gone or holding another token, the run's token
//! is cancelled at once; the heartbeat returns when the run ends,
//! whichever way it ends.

use std::time::Duration;

use redis::Script;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kv::{Kv, KvError};

/// Extends the key's lifetime if it still holds our token.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the key if it still holds our token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The lock's key under the kernel's prefix.
pub const KEY: &str = "cron:lock";

/// This process, as other servers see it holding the lock: `host:pid`.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

/// A held lock. Dropping it does not release it (release needs Redis);
/// an unreleased lock lapses after its lifetime.
pub struct CronLock {
    kv: Kv,
    key: String,
    token: String,
    ttl: Duration,
}

/// What an attempt to take the lock found.
pub enum Acquired {
    Held(CronLock),
    /// Another run holds it; `holder` is its `host:pid` (empty if the key
    /// lapsed between the two commands).
    Busy {
        holder: String,
    },
}

impl CronLock {
    /// Tries once to take the lock for `ttl`.
    pub async fn acquire(kv: &Kv, ttl: Duration) -> Result<Acquired, KvError> {
        let key = kv.key(KEY);
        let token = format!("{} {}", holder_name(), uuid::Uuid::new_v4().simple());
        let taken: Option<String> = kv
            .query(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        if taken.is_some() {
            return Ok(Acquired::Held(CronLock {
                kv: kv.clone(),
                key,
                token,
                ttl,
            }));
        }
        let current: Option<String> = kv.query(redis::cmd("GET").arg(&key)).await?;
        Ok(Acquired::Busy {
            holder: current.as_deref().map(holder_of).unwrap_or_default().into(),
        })
    }

    /// The `host:pid` part of the token.
    pub fn holder(&self) -> &str {
        holder_of(&self.token)
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Extends the lifetime; `false` when the key no longer holds our token.
    pub async fn extend(&self) -> Result<bool, KvError> {
        let script = Script::new(EXTEND);
        let mut inv = script.prepare_invoke();
        inv.key(&self.key).arg(&self.token).arg(ttl_ms(self.ttl));
        let n: i64 = self.kv.script(inv).await?;
        Ok(n == 1)
    }

    /// Deletes the key if it still holds our token; `false` if it did not
    /// (it lapsed or was taken).
    pub async fn release(self) -> Result<bool, KvError> {
        let script = Script::new(RELEASE);
        let mut inv = script.prepare_invoke();
        inv.key(&self.key).arg(&self.token);
        let n: i64 = self.kv.script(inv).await?;
        Ok(n == 1)
    }
}

fn holder_of(token: &str) -> &str {
    token.rsplit_once(' ').map_or(token, |(holder, _)| holder)
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a heartbeat cancelled its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockLost {
    /// The key was gone or held another run's token.
    Taken,
    /// Redis could not be asked for a whole lifetime, so the lock may
    /// have lapsed.
    Unreachable(String),
}

/// Keeps `lock` alive until `run` is cancelled: every third of the
/// lifetime it extends the lock. If the lock is lost (taken, or Redis
/// unreachable for longer than the lifetime), it cancels `run` and says
/// why. It sleeps between attempts and returns as soon as `run` is
/// cancelled, so it never outlives or outpaces its run.
pub async fn heartbeat(lock: &CronLock, run: &CancellationToken) -> Option<LockLost> {
    let every = lock.ttl / 3;
    let mut last_extended = Instant::now();
    loop {
        tokio::select! {
            () = run.cancelled() => return None,
            () = tokio::time::sleep(every) => {}
        }
        let lost = match lock.extend().await {
            Ok(true) => {
                last_extended = Instant::now();
                metrics::counter!("trovato_cron_lock_extensions_total").increment(1);
                continue;
            }
            Ok(false) => LockLost::Taken,
            Err(e) if last_extended.elapsed() >= lock.ttl => LockLost::Unreachable(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "cron lock not extended; retrying");
                continue;
            }
        };
        tracing::warn!(reason = ?lost, "cron lock lost; cancelling the run");
        metrics::counter!("trovato_cron_lock_lost_total").increment(1);
        run.cancel();
        return Some(lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_the_token_without_its_nonce() {
        assert_eq!(holder_of("web-1:42 0123abcd"), "web-1:42");
        assert_eq!(holder_of("odd"), "odd");
        let me = holder_name();
        assert!(me.ends_with(&format!(":{}", std::process::id())), "{me}");
    }
}
