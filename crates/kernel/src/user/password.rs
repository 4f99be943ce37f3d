//! Argon2id password hashing. Hashing is CPU-bound, so it runs on the
//! blocking pool, never on a tokio worker thread.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use super::UserError;

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 1024;

pub fn check_strength(password: &str) -> Result<(), UserError> {
    let len = password.chars().count();
    if len < MIN_LENGTH {
        return Err(UserError::WeakPassword(format!(
            "must be at least {MIN_LENGTH} characters"
        )));
    }
    if len > MAX_LENGTH {
        return Err(UserError::WeakPassword(format!(
            "must be at most {MAX_LENGTH} characters"
        )));
    }
    Ok(())
}

fn hash_sync(password: &str) -> Result<String, UserError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| UserError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Hashes `password` with Argon2id and a random salt (PHC string).
pub async fn hash(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || hash_sync(&password))
        .await
        .map_err(|e| UserError::Hash(e.to_string()))?
}

/// A hash of a random password, verified against when the user does not
/// exist, so that an unknown name costs as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        hash_sync(&base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            bytes,
        ))
        // Hashing fixed-size input with a fresh salt cannot fail; an empty
        // string never verifies, which is the decoy's purpose anyway.
        .unwrap_or_default()
    })
}

/// True when `password` matches `phc`. With `phc = None` (unknown user) the
/// same work is done against a decoy and the answer is false.
pub async fn verify(password: String, phc: Option<String>) -> Result<bool, UserError> {
    tokio::task::spawn_blocking(move || {
        let target = phc.as_deref().unwrap_or_else(|| decoy_hash());
        let parsed = match PasswordHash::new(target) {
            Ok(p) => p,
            Err(_) => return false,
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && phc.is_some()
    })
    .await
    .map_err(|e| UserError::Hash(e.to_string()))
}

/// A random password for `trovato user create` without `--password-stdin`.
pub fn generate() -> String {
    let mut bytes = [0u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let h = hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse".into(), Some(h.clone()))
                .await
                .expect("verify")
        );
        assert!(!verify("wrong horse".into(), Some(h)).await.expect("verify"));
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        assert!(!verify("anything".into(), None).await.expect("verify"));
    }

    #[test]
    fn short_password_is_weak() {
        assert!(check_strength("short").is_err());
        assert!(check_strength("long enough").is_ok());
    }
}
