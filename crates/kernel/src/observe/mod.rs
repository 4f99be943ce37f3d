//! Observability: logging, Prometheus metrics, health checks.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod routes;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
pub use logging::LogFormat;

/// The `[observe]` section: how logs are written and who reads metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Observability")]
pub struct ObserveSettings {
    /// `json` or `pretty` log lines; the level comes from `RUST_LOG` (default `info`).
    #[arg(
        id = "observe.log_format",
        long = "log-format",
        env = "TROVATO_LOG_FORMAT",
        value_enum
    )]
    pub log_format: LogFormat,
    /// Comma-separated CIDRs allowed to read `/metrics`; others get 403 (default: loopback and private ranges).
    #[arg(
        id = "observe.metrics_allow",
        long = "metrics-allow",
        env = "TROVATO_METRICS_ALLOW",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub metrics_allow: Vec<IpNet>,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            metrics_allow: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        }
    }
}

impl ObserveSettings {
    /// Every value is valid; kept so each section validates the same way.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
