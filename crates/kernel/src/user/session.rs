//! Server-side sessions in Redis.
//!
//! The browser holds a token `<bucket>.<random>` in the `trovato_session`
//! cookie; Redis holds `<prefix>{session:<bucket>}:<sha256(token)>` with the
//! user id and the session's CSRF token. Every read slides the idle timeout
//! (`GETEX ... EX`), so a session ends after `session.idle_timeout_secs`
//! without requests ([`super::settings::SessionSettings`]).
//!
//! Each user's sessions are indexed in the set
//! `<prefix>{session:<bucket>}:user:<id>` (of the digests), so [`end_all`]
//! can end them at once when the user is blocked or deleted. The set has no
//! expiry of its own: a logout takes its session out, and each login drops
//! the members whose session has expired, so it holds about as many members
//! as the user has live sessions.
//!
//! The bucket (four hex digits of a hash of the user id) is the hash tag
//! of all of a user's session keys and its index, so on a Redis Cluster
//! the scripts that touch them together run in one slot; carried in the
//! token, it lets a request find its session from the cookie alone, while
//! the users still spread over the cluster's slots.

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

/// The slot bucket of `user_id`'s sessions: four hex digits.
fn bucket_of_user(user_id: Uuid) -> String {
    crate::text::hex(&Sha256::digest(user_id.as_bytes())[..2])
}

/// The bucket a session token carries, if it has a well-formed one (the
/// cookie is client input: anything else finds no session).
fn bucket_of_token(token: &str) -> Option<&str> {
    let (bucket, _) = token.split_once('.')?;
    (bucket.len() == 4
        && bucket
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then_some(bucket)
}

fn group(bucket: &str) -> String {
    format!("session:{bucket}")
}

fn redis_key(kv: &Kv, token: &str) -> Option<String> {
    companion_key(kv, token, "")
}

/// A key in the slot of `token`'s session for data that lives and dies
/// with it, named `name` (the session itself when empty):
/// `<prefix>{session:<bucket>}:<name>:<digest>`. `None` for a token no
/// session can have.
pub fn companion_key(kv: &Kv, token: &str, name: &str) -> Option<String> {
    let bucket = bucket_of_token(token)?;
    let name = if name.is_empty() {
        String::new()
    } else {
        format!(":{name}")
    };
    Some(kv.slot_key(&group(bucket), &format!("{name}:{}", digest(token))))
}

/// The SCAN pattern (under the prefix) of every companion key named
/// `name`.
pub fn companion_pattern(name: &str) -> String {
    format!("{{session:*}}:{name}:*")
}

/// The session key that the companion key `key` (named `name`) belongs
/// to: same slot, same digest.
pub fn session_of_companion(kv: &Kv, key: &str, name: &str) -> Option<String> {
    let rest = key.strip_prefix(kv.prefix())?;
    let (tag, digest) = rest.split_once(&format!("}}:{name}:"))?;
    Some(format!("{}{tag}}}:{digest}", kv.prefix()))
}

/// The set of the digests of `user_id`'s sessions.
fn index_key(kv: &Kv, user_id: Uuid) -> String {
    kv.slot_key(
        &group(&bucket_of_user(user_id)),
        &format!(":user:{user_id}"),
    )
}

/// Stores a session (KEYS[1] = its key, KEYS[2] = its user's index,
/// KEYS[3..] = the keys of the index's members as read just before;
/// ARGV = value, idle seconds, its digest, the members' digests) and
/// indexes it, dropping the given members whose session has ended. A
/// member added meanwhile is left for the next login to check.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[i + 1])
  end
end
redis.call('SADD', KEYS[2], ARGV[3])
return 0
",
    )
});

/// Ends the given sessions of an index (KEYS[1] = the index, KEYS[2..] =
/// the sessions' keys; ARGV = their digests) and takes them out of it;
/// returns how many were live.
static END_SOME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i - 1])
end
return n
",
    )
});

/// The key of the session whose digest is `digest`, in `user_id`'s slot.
fn key_of_digest(kv: &Kv, user_id: Uuid, digest: &str) -> String {
    kv.slot_key(&group(&bucket_of_user(user_id)), &format!(":{digest}"))
}

fn ttl_secs(idle: Duration) -> u64 {
    idle.as_secs().max(1)
}

/// Starts a session for `user_id`; returns the cookie token and the session.
pub async fn create(kv: &Kv, user_id: Uuid, idle: Duration) -> Result<(String, Session), KvError> {
    let token = format!("{}.{}", bucket_of_user(user_id), random_token());
    let session = Session {
        user_id,
        csrf_token: random_token(),
        created: chrono::Utc::now().timestamp(),
    };
    // Serialising a struct of plain fields cannot fail.
    let value = serde_json::to_string(&session).unwrap_or_default();
    let index = index_key(kv, user_id);
    // The script may only touch the keys it is given, so the members to
    // check are read first.
    let members: Vec<String> = kv.query(redis::cmd("SMEMBERS").arg(&index)).await?;
    let key = key_of_digest(kv, user_id, &digest(&token));
    let mut inv = CREATE.prepare_invoke();
    inv.key(key).key(&index);
    for d in &members {
        inv.key(key_of_digest(kv, user_id, d));
    }
    inv.arg(value).arg(ttl_secs(idle)).arg(digest(&token));
    for d in &members {
        inv.arg(d);
    }
    let _: i64 = kv.script(inv).await?;
    Ok((token, session))
}

/// Loads the session and slides its idle timeout; `None` if it expired,
/// was destroyed, or never existed.
pub async fn load(kv: &Kv, token: &str, idle: Duration) -> Result<Option<Session>, KvError> {
    let Some(key) = redis_key(kv, token) else {
        return Ok(None);
    };
    let raw: Option<String> = kv
        .query(redis::cmd("GETEX").arg(key).arg("EX").arg(ttl_secs(idle)))
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Ends the session and takes it out of its user's index; idempotent.
pub async fn destroy(kv: &Kv, token: &str) -> Result<(), KvError> {
    let Some(key) = redis_key(kv, token) else {
        return Ok(());
    };
    let raw: Option<String> = kv.query(redis::cmd("GETDEL").arg(key)).await?;
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
    let index = index_key(kv, user_id);
    let mut ended = 0;
    // The script ends the members read just before; a login racing this
    // adds one the next round reads, until the index is empty. Bounded,
    // so a stream of logins cannot keep it going.
    for _ in 0..END_ALL_ROUNDS {
        let members: Vec<String> = kv.query(redis::cmd("SMEMBERS").arg(&index)).await?;
        if members.is_empty() {
            break;
        }
        let mut inv = END_SOME.prepare_invoke();
        inv.key(&index);
        for d in &members {
            inv.key(key_of_digest(kv, user_id, d)).arg(d);
        }
        let n: u64 = kv.script(inv).await?;
        ended += n;
    }
    Ok(ended)
}

/// How many times [`end_all`] rereads an index that logins keep filling.
const END_ALL_ROUNDS: usize = 16;

/// True when the session key exists (used by tests and diagnostics).
pub async fn exists(kv: &Kv, token: &str) -> Result<bool, KvError> {
    let Some(key) = redis_key(kv, token) else {
        return Ok(false);
    };
    kv.query(redis::cmd("EXISTS").arg(key)).await
}
