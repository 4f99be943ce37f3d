//! Server-side sessions in Redis.
//!
//! The browser holds a random token in the `trovato_session` cookie; Redis
//! holds `<prefix>session:<sha256(token)>` with the user id and the
//! session's CSRF token. Every read slides the idle timeout (`GETEX ... EX`),
//! so a session ends after `session.idle_timeout_secs` without requests
//! ([`super::settings::SessionSettings`]).

use std::time::Duration;

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

fn redis_key(kv: &Kv, token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    kv.key(&format!("session:{}", crate::text::hex(&digest)))
}

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
    let _: () = kv
        .query(
            redis::cmd("SET")
                .arg(redis_key(kv, &token))
                .arg(value)
                .arg("EX")
                .arg(ttl_secs(idle)),
        )
        .await?;
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

/// Ends the session; idempotent.
pub async fn destroy(kv: &Kv, token: &str) -> Result<(), KvError> {
    let _: i64 = kv
        .query(redis::cmd("DEL").arg(redis_key(kv, token)))
        .await?;
    Ok(())
}

/// True when the session key exists (used by tests and diagnostics).
pub async fn exists(kv: &Kv, token: &str) -> Result<bool, KvError> {
    kv.query(redis::cmd("EXISTS").arg(redis_key(kv, token)))
        .await
}
