//! The user subsystem's settings sections, `[session]` and `[login]`.
//! They import nothing of the subsystem, so the configuration that holds
//! them depends on no user code.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The `[session]` section: how long a session lives and how its cookie is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Sessions")]
pub struct SessionSettings {
    /// Seconds without requests after which a session ends.
    #[arg(
        id = "session.idle_timeout_secs",
        long = "session-idle-timeout",
        env = "TROVATO_SESSION_IDLE_TIMEOUT",
        value_name = "SECS"
    )]
    pub idle_timeout_secs: u64,
    /// When the session cookie is marked Secure: `auto` (when `X-Forwarded-Proto: https`), `always` or `never`.
    #[arg(
        id = "session.cookie_secure",
        long = "cookie-secure",
        env = "TROVATO_COOKIE_SECURE",
        value_enum
    )]
    pub cookie_secure: CookieSecure,
}

/// When the session cookie carries the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    /// Secure when the request arrived over TLS (`X-Forwarded-Proto: https`
    /// from the reverse proxy).
    Auto,
    Always,
    Never,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 2 * 3600,
            cookie_secure: CookieSecure::Auto,
        }
    }
}

impl SessionSettings {
    /// How long a session lives without requests.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "session.idle_timeout_secs",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}

/// The `[login]` section: how many failed logins are tolerated, and whose
/// `X-Forwarded-For` names the client they are counted for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Login flood control")]
pub struct LoginSettings {
    /// Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` names the client (default: loopback).
    #[arg(
        id = "login.trusted_proxies",
        long = "trusted-proxies",
        env = "TROVATO_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Failed logins from one client address per window before its logins get 429; `0` turns it off.
    #[arg(
        id = "login.address_limit",
        long = "login-address-limit",
        env = "TROVATO_LOGIN_ADDRESS_LIMIT",
        value_name = "N"
    )]
    pub address_limit: u32,
    /// Seconds an address's failed logins count.
    #[arg(
        id = "login.address_window_secs",
        long = "login-address-window",
        env = "TROVATO_LOGIN_ADDRESS_WINDOW",
        value_name = "SECS"
    )]
    pub address_window_secs: u64,
    /// Failed logins for one name from one address per window before they get 429; `0` turns it off.
    #[arg(
        id = "login.name_limit",
        long = "login-name-limit",
        env = "TROVATO_LOGIN_NAME_LIMIT",
        value_name = "N"
    )]
    pub name_limit: u32,
    /// Seconds a name's failed logins count (a successful login clears them).
    #[arg(
        id = "login.name_window_secs",
        long = "login-name-window",
        env = "TROVATO_LOGIN_NAME_WINDOW",
        value_name = "SECS"
    )]
    pub name_window_secs: u64,
}

/// The longest a failed login may count.
pub const MAX_LOGIN_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            // Loopback: a reverse proxy on the same host (see `deploy/nginx`).
            trusted_proxies: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
            address_limit: 50,
            address_window_secs: 3600,
            name_limit: 5,
            name_window_secs: 6 * 3600,
        }
    }
}

impl LoginSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (id, secs) in [
            ("login.address_window_secs", self.address_window_secs),
            ("login.name_window_secs", self.name_window_secs),
        ] {
            if secs == 0 || secs > MAX_LOGIN_WINDOW.as_secs() {
                return Err(ConfigError::invalid::<Self>(
                    id,
                    format!(
                        "must be 1 to {} seconds (30 days)",
                        MAX_LOGIN_WINDOW.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }
}
