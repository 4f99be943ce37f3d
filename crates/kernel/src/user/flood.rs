//! Failed-login flood control, counted in Redis so every kernel process
//! shares it. Too many failed logins from one client address, or for one
//! account name from one address, refuse further attempts from there until
//! the window that counted them ends; the password is then not even
//! checked, so a blocked guesser costs no Argon2 work. A successful login
//! clears its name's count for that address (the address's own count
//! stays, as it counts guesses at every name).
//!
//! The client address is the peer's, unless the peer is a trusted proxy
//! (`trusted_proxies`); then it is the right-most `X-Forwarded-For` entry
//! that is not itself a trusted proxy, so a client cannot pick its address
//! by sending the header itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::Duration;

use axum::http::HeaderMap;
use ipnet::IpNet;
use redis::Script;
use sha2::{Digest, Sha256};

use super::UserError;
use crate::kv::Kv;

/// How many failures each window tolerates; a limit of 0 switches that
/// count off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_address: u32,
    pub address_window: Duration,
    pub per_name: u32,
    pub name_window: Duration,
}

/// Milliseconds until both counts allow another attempt; 0 when they do.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i])
  if limit > 0 and tonumber(redis.call('GET', key) or '0') >= limit then
    wait = math.max(wait, redis.call('PTTL', key), 1)
  end
end
return wait
",
    )
});

/// Counts one failure in each key; a key's window starts with its first
/// failure.
static FAIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'PX', ARGV[i], 'NX')
  redis.call('INCR', key)
end
return 0
",
    )
});

/// Where a login attempt comes from, as flood control counts it.
#[derive(Debug, Clone)]
pub struct Attempt {
    address_key: String,
    name_key: String,
}

impl Attempt {
    /// The attempt to log in as `name` from `client`.
    pub fn new(kv: &Kv, client: IpAddr, name: &str) -> Self {
        // Names match case-insensitively at login, so they count so too;
        // hashed, so any name makes a short key.
        let name = Sha256::digest(name.to_lowercase().as_bytes());
        let name: String = name[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            address_key: kv.key(&format!("flood:login:addr:{client}")),
            name_key: kv.key(&format!("flood:login:name:{client}:{name}")),
        }
    }

    /// `Err(TooManyLoginAttempts)` while either count is at its limit.
    pub async fn check(&self, kv: &Kv, limits: &Limits) -> Result<(), UserError> {
        if limits.per_address == 0 && limits.per_name == 0 {
            return Ok(());
        }
        let mut inv = CHECK.prepare_invoke();
        inv.key(&self.address_key)
            .key(&self.name_key)
            .arg(limits.per_address)
            .arg(limits.per_name);
        let wait_ms: u64 = kv.script(inv).await?;
        if wait_ms == 0 {
            Ok(())
        } else {
            Err(UserError::TooManyLoginAttempts {
                retry_after: Duration::from_millis(wait_ms),
            })
        }
    }

    /// Counts a failed attempt.
    pub async fn failed(&self, kv: &Kv, limits: &Limits) -> Result<(), UserError> {
        if limits.per_address == 0 && limits.per_name == 0 {
            return Ok(());
        }
        let mut inv = FAIL.prepare_invoke();
        inv.key(&self.address_key)
            .key(&self.name_key)
            .arg(window_ms(limits.address_window))
            .arg(window_ms(limits.name_window));
        let _: i64 = kv.script(inv).await?;
        Ok(())
    }

    /// Clears the name's count after a successful login.
    pub async fn succeeded(&self, kv: &Kv) -> Result<(), UserError> {
        let _: i64 = kv.query(redis::cmd("DEL").arg(&self.name_key)).await?;
        Ok(())
    }
}

fn window_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the
/// right-most `X-Forwarded-For` address that is not one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for entry in forwarded.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            // Something this side of it wrote garbage: trust nothing
            // further left.
            return peer;
        };
        if !is_trusted(&ip) {
            return ip;
        }
    }
    peer
}

/// An `X-Forwarded-For` entry: an address, possibly with a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let local = ip("127.0.0.1");
        // Straight from a client: the header is the client's own claim.
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &trusted),
            ip("203.0.113.9")
        );
        // Through the local proxy: the address it appended.
        assert_eq!(
            client_address(local, &headers(&["198.51.100.1, 203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
        // Proxies that are trusted are skipped; headers are combined.
        assert_eq!(
            client_address(
                local,
                &headers(&["198.51.100.1", "203.0.113.9, 127.0.0.2"]),
                &trusted
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(local, &headers(&["[2001:db8::1]:4711"]), &trusted),
            ip("2001:db8::1")
        );
        // Nothing usable: the proxy itself.
        assert_eq!(client_address(local, &headers(&[]), &trusted), local);
        assert_eq!(
            client_address(local, &headers(&["203.0.113.9, junk"]), &trusted),
            local
        );
        // With no trusted proxies the header never counts.
        assert_eq!(
            client_address(local, &headers(&["203.0.113.9"]), &[]),
            local
        );
    }
}
