//! Server-side sessions in Redis.
//!
//! The browser holds a random token in the `trovato_session` cookie; Redis
//! holds `<prefix>session:<sha256(token)>` with the user id and the
//! session's CSRF token. Every read slides the idle timeout (`GETEX ... EX`),
//! so a session ends after `session.idle_timeout_secs` without requests
//! ([`super::settings::SessionSettings`]).
//!
//! Each user's sessions are indexed in the set `<prefix>user-sessions:<id>`
//! (of the digests), so [`end_all`] can end them at once when the user is
//! blocked or deleted. The set has no expiry of its own: a logout takes
//! its session out, and each login drops the members whose session has
//! expired, so it holds about as many members as the user has live
//! sessions.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::kv::{Kv, KvError};

pub const COOKIE: &str = "trovato_session";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    pub csrf_token: String,
    pub created: i64,
}

/// A random URL-safe token of 32 bytes.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn digest(token: &str) -> String {
    crate::text::hex(&Sha256::digest(token.as_bytes()))
}

fn redis_key(kv: &Kv, token: &str) -> String {
    kv.key(&format!("session:{}", digest(token)))
}

/// The set of the digests of `user_id`'s sessions.
fn index_key(kv: &Kv, user_id: Uuid) -> String {
    kv.key(&format!("user-sessions:{user_id}"))
}

/// Stores a session (KEYS[1] = its key, KEYS[2] = its user's index;
/// ARGV = value, idle seconds, the session key prefix, its digest) and
/// indexes it, dropping the index's members whose session has ended.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for _, d in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[3] .. d) == 0 then
    redis.call('SREM', KEYS[2], d)
  end
end
redis.call('SADD', KEYS[2], ARGV[4])
return 0
",
    )
});

/// Ends every session in an index (KEYS[1]; ARGV[1] = the session key
/// prefix) and the index itself; returns how many sessions were live.
static END_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, d in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. d)
end
redis.call('DEL', KEYS[1])
return n
",
    )
});

fn ttl_secs(idle: Duration) -> u64 {
    idle.as_secs().max(1)
}

/// Starts a session for `user_id`; returns the cookie token and the session.
pub async fn create(kv: &Kv, user_id: Uuid, idle: Duration) -> Result<(String, Session), KvError> {
    let token = random_token();
    let session = Session {
        user_id,
        csrf_token: random_token(),
        created: chrono::Utc::now().timestamp(),
    };
    // Serialising a struct of plain fields cannot fail.
    let value = serde_json::to_string(&session).unwrap_or_default();
    let mut inv = CREATE.prepare_invoke();
    inv.key(redis_key(kv, &token))
        .key(index_key(kv, user_id))
        .arg(value)
        .arg(ttl_secs(idle))
        .arg(kv.key("session:"))
        .arg(digest(&token));
    let _: i64 = kv.script(inv).await?;
    Ok((token, session))
}

/// Loads the session and slides its idle timeout; `None` if it expired,
/// was destroyed, or never existed.
pub async fn load(kv: &Kv, token: &str, idle: Duration) -> Result<Option<Session>, KvError> {
    let raw: Option<String> = kv
        .query(
            redis::cmd("GETEX")
                .arg(redis_key(kv, token))
                .arg("EX")
                .arg(ttl_secs(idle)),
        )
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Ends the session and takes it out of its user's index; idempotent.
pub async fn destroy(kv: &Kv, token: &str) -> Result<(), KvError> {
    let raw: Option<String> = kv
        .query(redis::cmd("GETDEL").arg(redis_key(kv, token)))
        .await?;
    if let Some(session) = raw.and_then(|r| serde_json::from_str::<Session>(&r).ok()) {
        let _: i64 = kv
            .query(
                redis::cmd("SREM")
                    .arg(index_key(kv, session.user_id))
                    .arg(digest(token)),
            )
            .await?;
    }
    Ok(())
}

/// How many sessions `user_id`'s index holds (live ones, and ended ones
/// the next login drops).
pub async fn indexed(kv: &Kv, user_id: Uuid) -> Result<u64, KvError> {
    kv.query(redis::cmd("SCARD").arg(index_key(kv, user_id)))
        .await
}

/// Ends every session of `user_id` at once (blocking, deleting, a new
/// password); returns how many were live. Idempotent.
pub async fn end_all(kv: &Kv, user_id: Uuid) -> Result<u64, KvError> {
    let mut inv = END_ALL.prepare_invoke();
    inv.key(index_key(kv, user_id)).arg(kv.key("session:"));
    kv.script(inv).await
}

/// True when the session key exists (used by tests and diagnostics).
pub async fn exists(kv: &Kv, token: &str) -> Result<bool, KvError> {
    kv.query(redis::cmd("EXISTS").arg(redis_key(kv, token)))
        .await
}
