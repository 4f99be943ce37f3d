//! Kernel configuration: defaults, then an optional TOML file, then the
//! environment and command-line flags (the last two are merged by clap).
//!
//! Everything is validated once, at start-up, and every error names the
//! setting it concerns, so a typo fails fast instead of at the first request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A configuration error; each message names the offending setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// When the session cookie carries the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CookieSecure {
    /// Secure when the request arrived over TLS (`X-Forwarded-Proto: https`
    /// from the reverse proxy).
    Auto,
    Always,
    Never,
}

/// The settings a TOML file may hold. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub plugin_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub metrics_allow: Option<Vec<IpNet>>,
    pub session_idle_timeout_secs: Option<u64>,
    pub cookie_secure: Option<CookieSecure>,
    pub max_body_bytes: Option<usize>,
    pub db_max_connections: Option<u32>,
    pub connect_timeout_secs: Option<u64>,
    pub plugin_request_deadline_ms: Option<u64>,
    pub plugin_background_deadline_secs: Option<u64>,
    pub plugin_memory_limit_bytes: Option<usize>,
    pub plugin_output_limit_bytes: Option<usize>,
    pub plugin_max_instances: Option<u32>,
    pub cache_l1_capacity: Option<u64>,
    pub cache_l1_ttl_secs: Option<u64>,
    pub cache_l2_ttl_secs: Option<u64>,
    pub trusted_proxies: Option<Vec<IpNet>>,
    pub login_address_limit: Option<u32>,
    pub login_address_window_secs: Option<u64>,
    pub login_name_limit: Option<u32>,
    pub login_name_window_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // toml's message spans several lines (it quotes the source);
            // keep the one-line summary.
            message: e.message().to_owned(),
        })
    }
}

/// The validated configuration the kernel runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// `None`: start the embedded PostgreSQL under `data_dir`.
    pub database_url: Option<String>,
    /// `None`: start the embedded Redis under `data_dir`.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub data_dir: PathBuf,
    pub plugin_dir: PathBuf,
    pub log_format: LogFormat,
    pub metrics_allow: Vec<IpNet>,
    pub session_idle_timeout: Duration,
    pub cookie_secure: CookieSecure,
    pub max_body_bytes: usize,
    pub db_max_connections: u32,
    pub connect_timeout: Duration,
    /// Deadline of a tap invoked while serving a request.
    pub plugin_request_deadline: Duration,
    /// Deadline of `tap_cron` and `tap_queue_worker`.
    pub plugin_background_deadline: Duration,
    /// Largest linear memory one plugin instance may grow to.
    pub plugin_memory_limit_bytes: usize,
    /// Largest output a tap may return.
    pub plugin_output_limit_bytes: usize,
    /// Plugin instances alive at once (the pooling allocator's slots);
    /// further invocations wait for a free slot.
    pub plugin_max_instances: u32,
    /// Entries held by the in-process cache tier.
    pub cache_l1_capacity: u64,
    /// Lifetime of an in-process cache entry: the longest an instance can
    /// serve a value it was not told about (e.g. while Redis is down).
    pub cache_l1_ttl: Duration,
    /// Lifetime of a Redis cache entry.
    pub cache_l2_ttl: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Failed logins tolerated from one client address per
    /// `login_address_window` (0: no limit).
    pub login_address_limit: u32,
    pub login_address_window: Duration,
    /// Failed logins tolerated for one name from one address per
    /// `login_name_window` (0: no limit).
    pub login_name_limit: u32,
    pub login_name_window: Duration,
    /// How long shutdown waits for background tasks after cancelling them.
    pub shutdown_grace: Duration,
}

/// The longest a failed login may count.
const MAX_LOGIN_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Loopback: a reverse proxy on the same host (see `deploy/nginx`).
pub fn default_trusted_proxies() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Loopback and the private ranges: who may read `/metrics` by default.
pub fn default_metrics_allow() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            redis_url: None,
            redis_prefix: "trovato:".into(),
            data_dir: PathBuf::from("./var"),
            plugin_dir: PathBuf::from("./plugins"),
            log_format: LogFormat::Pretty,
            metrics_allow: default_metrics_allow(),
            session_idle_timeout: Duration::from_secs(2 * 3600),
            cookie_secure: CookieSecure::Auto,
            max_body_bytes: 2 * 1024 * 1024,
            db_max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            plugin_request_deadline: Duration::from_millis(100),
            plugin_background_deadline: Duration::from_secs(30),
            plugin_memory_limit_bytes: 64 * 1024 * 1024,
            plugin_output_limit_bytes: 4 * 1024 * 1024,
            plugin_max_instances: 256,
            cache_l1_capacity: 10_000,
            cache_l1_ttl: Duration::from_secs(60),
            cache_l2_ttl: Duration::from_secs(3600),
            trusted_proxies: default_trusted_proxies(),
            login_address_limit: 50,
            login_address_window: Duration::from_secs(3600),
            login_name_limit: 5,
            login_name_window: Duration::from_secs(6 * 3600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Lays `file` over the defaults; the caller then lays the environment
    /// and flags over the result and calls [`Config::validate`].
    pub fn from_file(file: FileConfig) -> Self {
        let mut c = Config::default();
        c.apply(file);
        c
    }

    /// Overrides every setting that `over` holds.
    pub fn apply(&mut self, over: FileConfig) {
        let FileConfig {
            listen,
            database_url,
            redis_url,
            redis_prefix,
            data_dir,
            plugin_dir,
            log_format,
            metrics_allow,
            session_idle_timeout_secs,
            cookie_secure,
            max_body_bytes,
            db_max_connections,
            connect_timeout_secs,
            plugin_request_deadline_ms,
            plugin_background_deadline_secs,
            plugin_memory_limit_bytes,
            plugin_output_limit_bytes,
            plugin_max_instances,
            cache_l1_capacity,
            cache_l1_ttl_secs,
            cache_l2_ttl_secs,
            trusted_proxies,
            login_address_limit,
            login_address_window_secs,
            login_name_limit,
            login_name_window_secs,
            shutdown_grace_secs,
        } = over;
        if let Some(v) = listen {
            self.listen = v;
        }
        if database_url.is_some() {
            self.database_url = database_url;
        }
        if redis_url.is_some() {
            self.redis_url = redis_url;
        }
        if let Some(v) = redis_prefix {
            self.redis_prefix = v;
        }
        if let Some(v) = data_dir {
            self.data_dir = v;
        }
        if let Some(v) = plugin_dir {
            self.plugin_dir = v;
        }
        if let Some(v) = log_format {
            self.log_format = v;
        }
        if let Some(v) = metrics_allow {
            self.metrics_allow = v;
        }
        if let Some(v) = session_idle_timeout_secs {
            self.session_idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = cookie_secure {
            self.cookie_secure = v;
        }
        if let Some(v) = max_body_bytes {
            self.max_body_bytes = v;
        }
        if let Some(v) = db_max_connections {
            self.db_max_connections = v;
        }
        if let Some(v) = connect_timeout_secs {
            self.connect_timeout = Duration::from_secs(v);
        }
        if let Some(v) = plugin_request_deadline_ms {
            self.plugin_request_deadline = Duration::from_millis(v);
        }
        if let Some(v) = plugin_background_deadline_secs {
            self.plugin_background_deadline = Duration::from_secs(v);
        }
        if let Some(v) = plugin_memory_limit_bytes {
            self.plugin_memory_limit_bytes = v;
        }
        if let Some(v) = plugin_output_limit_bytes {
            self.plugin_output_limit_bytes = v;
        }
        if let Some(v) = plugin_max_instances {
            self.plugin_max_instances = v;
        }
        if let Some(v) = cache_l1_capacity {
            self.cache_l1_capacity = v;
        }
        if let Some(v) = cache_l1_ttl_secs {
            self.cache_l1_ttl = Duration::from_secs(v);
        }
        if let Some(v) = cache_l2_ttl_secs {
            self.cache_l2_ttl = Duration::from_secs(v);
        }
        if let Some(v) = trusted_proxies {
            self.trusted_proxies = v;
        }
        if let Some(v) = login_address_limit {
            self.login_address_limit = v;
        }
        if let Some(v) = login_address_window_secs {
            self.login_address_window = Duration::from_secs(v);
        }
        if let Some(v) = login_name_limit {
            self.login_name_limit = v;
        }
        if let Some(v) = login_name_window_secs {
            self.login_name_window = Duration::from_secs(v);
        }
        if let Some(v) = shutdown_grace_secs {
            self.shutdown_grace = Duration::from_secs(v);
        }
    }

    /// Checks every setting; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            check_url(
                "database_url (DATABASE_URL)",
                url,
                &["postgres", "postgresql"],
            )?;
        }
        if let Some(url) = &self.redis_url {
            check_url(
                "redis_url (REDIS_URL)",
                url,
                &["redis", "rediss", "redis+unix", "unix"],
            )?;
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?' && b != b'[');
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                setting: "redis_prefix (TROVATO_REDIS_PREFIX)",
                message: "must be non-empty printable ASCII without spaces or glob characters"
                    .into(),
            });
        }
        if self.session_idle_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "session_idle_timeout_secs (TROVATO_SESSION_IDLE_TIMEOUT)",
                message: "must be at least 1 second".into(),
            });
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                setting: "max_body_bytes (TROVATO_MAX_BODY_BYTES)",
                message: "must be at least 1 byte".into(),
            });
        }
        self.validate_plugin_bounds()?;
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "db_max_connections (TROVATO_DB_MAX_CONNECTIONS)",
                message: "must be at least 1".into(),
            });
        }
        if self.cache_l1_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "cache_l1_ttl_secs (TROVATO_CACHE_L1_TTL)",
                message: "must be at least 1 second".into(),
            });
        }
        if self.cache_l2_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "cache_l2_ttl_secs (TROVATO_CACHE_L2_TTL)",
                message: "must be at least 1 second".into(),
            });
        }
        for (window, setting) in [
            (
                self.login_address_window,
                "login_address_window_secs (TROVATO_LOGIN_ADDRESS_WINDOW)",
            ),
            (
                self.login_name_window,
                "login_name_window_secs (TROVATO_LOGIN_NAME_WINDOW)",
            ),
        ] {
            if window.is_zero() || window > MAX_LOGIN_WINDOW {
                return Err(ConfigError::Invalid {
                    setting,
                    message: format!(
                        "must be 1 to {} seconds (30 days)",
                        MAX_LOGIN_WINDOW.as_secs()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The failed-login limits.
    pub fn login_limits(&self) -> crate::user::flood::Limits {
        crate::user::flood::Limits {
            per_address: self.login_address_limit,
            address_window: self.login_address_window,
            per_name: self.login_name_limit,
            name_window: self.login_name_window,
        }
    }

    /// The cache tier settings.
    pub fn cache(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            l1_capacity: self.cache_l1_capacity,
            l1_ttl: self.cache_l1_ttl,
            l2_ttl: self.cache_l2_ttl,
        }
    }
}

impl Config {
    fn validate_plugin_bounds(&self) -> Result<(), ConfigError> {
        if self.plugin_request_deadline.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "plugin_request_deadline_ms (TROVATO_PLUGIN_REQUEST_DEADLINE_MS)",
                message: "must be at least 1 ms".into(),
            });
        }
        if self.plugin_background_deadline.is_zero() {
            return Err(ConfigError::Invalid {
                setting: "plugin_background_deadline_secs (TROVATO_PLUGIN_BACKGROUND_DEADLINE)",
                message: "must be at least 1 second".into(),
            });
        }
        // One wasm page is 64 KiB; wasm32 memories stop at 4 GiB.
        if !(64 * 1024..=4 * 1024 * 1024 * 1024).contains(&self.plugin_memory_limit_bytes) {
            return Err(ConfigError::Invalid {
                setting: "plugin_memory_limit_bytes (TROVATO_PLUGIN_MEMORY_LIMIT)",
                message: "must be between 65536 (one wasm page) and 4294967296".into(),
            });
        }
        if self.plugin_output_limit_bytes == 0 {
            return Err(ConfigError::Invalid {
                setting: "plugin_output_limit_bytes (TROVATO_PLUGIN_OUTPUT_LIMIT)",
                message: "must be at least 1 byte".into(),
            });
        }
        if !(1..=10_000).contains(&self.plugin_max_instances) {
            return Err(ConfigError::Invalid {
                setting: "plugin_max_instances (TROVATO_PLUGIN_MAX_INSTANCES)",
                message: "must be between 1 and 10000".into(),
            });
        }
        Ok(())
    }
}

fn check_url(setting: &'static str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| ConfigError::Invalid {
        setting,
        message: format!("not a valid URL ({e})"),
    })?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::Invalid {
            setting,
            message: format!(
                "scheme must be one of {}, not `{}`",
                schemes.join(", "),
                url.scheme()
            ),
        });
    }
    Ok(())
}

/// The URL with any password replaced, for logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which
                // this one evidently can.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_in_file_is_rejected_by_name() {
        let err = toml::from_str::<FileConfig>("listen = \"127.0.0.1:1\"\nlisen = 3\n")
            .expect_err("unknown key must fail");
        assert!(err.message().contains("lisen"), "{}", err.message());
    }

    #[test]
    fn malformed_database_url_names_the_setting() {
        let c = Config {
            database_url: Some("not a url".into()),
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("DATABASE_URL"), "{msg}");
    }

    #[test]
    fn wrong_scheme_for_redis_is_rejected() {
        let c = Config {
            redis_url: Some("http://127.0.0.1:6379".into()),
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("REDIS_URL") && msg.contains("http"), "{msg}");
    }

    #[test]
    fn redis_prefix_with_glob_characters_is_rejected() {
        let c = Config {
            redis_prefix: "a*b".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn file_values_override_defaults() {
        let f: FileConfig =
            toml::from_str("redis_prefix = \"site1:\"\nmax_body_bytes = 10\n").expect("valid toml");
        let c = Config::from_file(f);
        assert_eq!(c.redis_prefix, "site1:");
        assert_eq!(c.max_body_bytes, 10);
        assert_eq!(c.listen, Config::default().listen);
    }

    #[test]
    fn zero_cache_ttl_is_rejected_by_name() {
        let c = Config {
            cache_l1_ttl: Duration::ZERO,
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("TROVATO_CACHE_L1_TTL"), "{msg}");
        let f: FileConfig =
            toml::from_str("cache_l1_capacity = 5\ncache_l2_ttl_secs = 7\n").expect("valid toml");
        let c = Config::from_file(f);
        assert_eq!(c.cache().l1_capacity, 5);
        assert_eq!(c.cache().l2_ttl, Duration::from_secs(7));
    }

    #[test]
    fn login_limits_come_from_the_file_and_a_zero_window_is_rejected_by_name() {
        let f: FileConfig = toml::from_str(
            "login_name_limit = 0\nlogin_address_window_secs = 60\n\
             trusted_proxies = [\"10.0.0.0/8\"]\n",
        )
        .expect("valid toml");
        let c = Config::from_file(f);
        assert_eq!(c.login_limits().per_name, 0);
        assert_eq!(c.login_limits().per_address, 50);
        assert_eq!(c.login_limits().address_window, Duration::from_secs(60));
        assert_eq!(c.trusted_proxies.len(), 1);
        c.validate().expect("valid");
        let c = Config {
            login_name_window: Duration::ZERO,
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("TROVATO_LOGIN_NAME_WINDOW"), "{msg}");
        let c = Config {
            login_address_window: Duration::ZERO,
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("TROVATO_LOGIN_ADDRESS_WINDOW"), "{msg}");
        let c = Config {
            login_name_window: MAX_LOGIN_WINDOW + Duration::from_secs(1),
            ..Config::default()
        };
        let msg = c.validate().expect_err("must fail").to_string();
        assert!(msg.contains("30 days"), "{msg}");
    }

    #[test]
    fn password_is_redacted() {
        let r = redact_url("postgres://u:secret@h/db");
        assert!(!r.contains("secret"), "{r}");
    }
}
