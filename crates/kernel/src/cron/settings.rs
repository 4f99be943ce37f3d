//! The `[cron]` section: the lock's lifetime, each kernel step's time
//! budget, the scheduler key for `POST /cron`, and how many runs are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The shortest lock lifetime: the heartbeat extends it every third of it,
/// and a Redis round trip must fit in that comfortably.
pub const MIN_LOCK_TTL_MS: u64 = 300;

/// The shortest scheduler key accepted: long enough not to be guessed.
pub const MIN_KEY_LEN: usize = 24;

/// The `[cron]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
#[command(next_help_heading = "Cron")]
pub struct CronSettings {
    /// Milliseconds the cron lock lives without a heartbeat; the running server extends it every third of this, so a crashed holder frees it within one lifetime.
    #[arg(
        id = "cron.lock_ttl_ms",
        long = "cron-lock-ttl-ms",
        env = "TROVATO_CRON_LOCK_TTL_MS",
        value_name = "MS"
    )]
    pub lock_ttl_ms: u64,
    /// Seconds each kernel cron step (file cleanup, session bookkeeping, queue processing) may take; plugins' `tap_cron` have `plugin.background_deadline_secs`.
    #[arg(
        id = "cron.step_budget_secs",
        long = "cron-step-budget",
        env = "TROVATO_CRON_STEP_BUDGET",
        value_name = "SECS"
    )]
    pub step_budget_secs: u64,
    /// Key a scheduler sends in the `X-Cron-Key` header of `POST /cron` (at least 24 characters); unset: only administrators may trigger cron over HTTP.
    #[arg(
        id = "cron.key",
        long = "cron-key",
        env = "TROVATO_CRON_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Cron runs kept in the history (`trovato cron status`, `/admin/cron`).
    #[arg(
        id = "cron.runs_kept",
        long = "cron-runs-kept",
        env = "TROVATO_CRON_RUNS_KEPT",
        value_name = "N"
    )]
    pub runs_kept: u32,
}

impl Default for CronSettings {
    fn default() -> Self {
        Self {
            lock_ttl_ms: 60_000,
            step_budget_secs: 300,
            key: None,
            runs_kept: 500,
        }
    }
}

impl CronSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lock_ttl_ms < MIN_LOCK_TTL_MS {
            return Err(ConfigError::invalid::<Self>(
                "cron.lock_ttl_ms",
                format!("must be at least {MIN_LOCK_TTL_MS} ms"),
            ));
        }
        if self.step_budget_secs == 0 {
            return Err(ConfigError::invalid::<Self>(
                "cron.step_budget_secs",
                "must be at least 1 second",
            ));
        }
        if let Some(key) = &self.key
            && key.chars().count() < MIN_KEY_LEN
        {
            return Err(ConfigError::invalid::<Self>(
                "cron.key",
                format!("must be at least {MIN_KEY_LEN} characters"),
            ));
        }
        if self.runs_kept == 0 {
            return Err(ConfigError::invalid::<Self>(
                "cron.runs_kept",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub fn lock_ttl(&self) -> Duration {
        Duration::from_millis(self.lock_ttl_ms)
    }

    pub fn step_budget(&self) -> Duration {
        Duration::from_secs(self.step_budget_secs)
    }
}
