//! Failed-login flood control, counted in Redis so every kernel process
//! shares it. Too many failed logins from one client address, or for one
//! account name from one address, refuse further attempts from there until
//! the window that counted them ends; the password is then not even
//! checked, so a blocked guesser costs no Argon2 work. Each attempt is
//! counted before its password is checked, so parallel guesses cannot all
//! pass one check; a successful one is uncounted from its address and
//! clears its name's count.
//!
//! The client address is the peer's, unless the peer is a trusted proxy
//! (`login.trusted_proxies`); then it is the right-most `X-Forwarded-For` entry
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
use super::settings::LoginSettings;
use crate::kv::Kv;

/// The limits the `[login]` section sets; defined here, next to their
/// only reader, so the section itself imports nothing of this subsystem.
impl LoginSettings {
    /// The failed-login limits.
    pub fn limits(&self) -> Limits {
        Limits {
            per_address: self.address_limit,
            address_window: Duration::from_secs(self.address_window_secs),
            per_name: self.name_limit,
            name_window: Duration::from_secs(self.name_window_secs),
        }
    }
}

/// How many failures each window tolerates; a limit of 0 switches that
/// count off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_address: u32,
    pub address_window: Duration,
    pub per_name: u32,
    pub name_window: Duration,
}

/// Refuses an attempt while either count is at its limit (returning the
/// milliseconds until it allows one), else counts it in both windows
/// (a window starts with its first count) and returns 0. Counting before
/// the password is checked means parallel guesses cannot all slip through
/// one check.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i])
  if limit > 0 and tonumber(redis.call('GET', key) or '0') >= limit then
    wait = math.max(wait, redis.call('PTTL', key), 1)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'PX', ARGV[i + 2], 'NX')
  redis.call('INCR', key)
end
return 0
",
    )
});

/// A successful attempt was no failure: takes it off the address's count
/// (deleting a count that reaches 0) and clears the name's.
static SUCCEEDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[2])
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 and redis.call('DECR', KEYS[1]) <= 0 then
  redis.call('DEL', KEYS[1])
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
        let name = crate::text::hex(&Sha256::digest(name.to_lowercase().as_bytes())[..16]);
        // Both counts of an address share its hash tag: the scripts touch
        // them together, which a Redis Cluster allows within one slot.
        let group = format!("flood:login:{}", bucket(client));
        Self {
            address_key: kv.slot_key(&group, ":addr"),
            name_key: kv.slot_key(&group, &format!(":name:{name}")),
        }
    }

    fn off(limits: &Limits) -> bool {
        limits.per_address == 0 && limits.per_name == 0
    }

    /// Counts the attempt, or refuses it with `TooManyLoginAttempts` while
    /// either count is at its limit. Call before checking the password;
    /// then [`Attempt::succeeded`] if it was right.
    pub async fn begin(&self, kv: &Kv, limits: &Limits) -> Result<(), UserError> {
        if Self::off(limits) {
            return Ok(());
        }
        let mut inv = BEGIN.prepare_invoke();
        inv.key(&self.address_key)
            .key(&self.name_key)
            .arg(limits.per_address)
            .arg(limits.per_name)
            .arg(window_ms(limits.address_window))
            .arg(window_ms(limits.name_window));
        let wait_ms: u64 = kv.script(inv).await?;
        if wait_ms == 0 {
            Ok(())
        } else {
            Err(UserError::TooManyLoginAttempts {
                retry_after: Duration::from_millis(wait_ms),
            })
        }
    }

    /// Uncounts a successful attempt from the address and clears the
    /// name's count.
    pub async fn succeeded(&self, kv: &Kv, limits: &Limits) -> Result<(), UserError> {
        if Self::off(limits) {
            return Ok(());
        }
        let mut inv = SUCCEEDED.prepare_invoke();
        inv.key(&self.address_key).key(&self.name_key);
        let _: i64 = kv.script(inv).await?;
        Ok(())
    }
}

/// What an address counts as: an IPv4 address itself, an IPv6 address's
/// /64 (one host usually holds a whole /64, so counting single IPv6
/// addresses would let it rotate through them).
fn bucket(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

fn window_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, the
/// right-most `X-Forwarded-For` address that is not one. IPv4-mapped IPv6
/// addresses count as the IPv4 address they carry.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Split the raw bytes: a client's own non-ASCII entry must not hide the
    // entries the proxies appended after it on the same line.
    let forwarded: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect();
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
fn parse_forwarded(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn an_ipv6_client_counts_as_its_64() {
        let a = bucket("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = bucket("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        let other = bucket("2001:db8:1:3::1".parse().expect("ip"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(bucket("::ffff:192.0.2.1".parse().expect("ip")), "192.0.2.1");
        assert_eq!(bucket("192.0.2.1".parse().expect("ip")), "192.0.2.1");
    }

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
        // A mapped IPv4 peer is the IPv4 address (a kernel listening on
        // [::] sees nginx so); a client's non-ASCII entry hides nothing.
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers(&["203.0.113.9"]), &trusted),
            ip("203.0.113.9")
        );
        let mut raw = HeaderMap::new();
        raw.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xc3\xb1, 203.0.113.9").expect("header"),
        );
        assert_eq!(client_address(local, &raw, &trusted), ip("203.0.113.9"));
        // With no trusted proxies the header never counts.
        assert_eq!(
            client_address(local, &headers(&["203.0.113.9"]), &[]),
            local
        );
    }
}
